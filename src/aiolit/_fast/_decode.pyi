"""Type stubs for :mod:`aiolit._fast._decode` (Cython)."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

# ndarray only declares __buffer__ for Python >= 3.12 in numpy's stubs, so name it explicitly.
_Buf = Buffer | npt.NDArray[Any]

K_CODES: dict[str, int]
OPS: dict[str, int]

class ItemDecoder:
    """Decoder of one dataset's items; built once per (data_format, data_spec)."""

    def __init__(
        self,
        kinds: bytes,
        serializers: list[Any],
        template: tuple[Any, ...],
        dtypes: list[np.dtype[Any] | None],
        numpy_dtypes: tuple[np.dtype[Any], ...],
    ) -> None: ...
    def decode(self, payload: _Buf) -> Any:
        """The sample stored in one item payload (any C-contiguous buffer)."""

    def decode_many(self, data: _Buf, offsets: npt.NDArray[np.uint32], indices: Iterable[int]) -> list[Any]:
        """Samples ``indices`` of a plain chunk: item k is ``data[offsets[k]:offsets[k + 1]]``."""
