"""Type stubs for :mod:`aiolit._fast._header` (Cython)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

# ndarray only declares __buffer__ for Python >= 3.12 in numpy's stubs, so name it explicitly.
_Buf = Buffer | npt.NDArray[Any]

def parse_header(buf: _Buf, expected_items: int = -1) -> npt.NDArray[np.uint32]:
    """Validate a classic chunk header; return its N+1 offsets as a zero-copy uint32 view."""

def parse_offsets(
    buf: _Buf, offset: int, n_items: int, first: int = 0, limit: int = -1
) -> npt.NDArray[np.uint32]:
    """Validate and view ``n_items + 1`` little-endian u32 offsets stored at byte ``offset``."""
