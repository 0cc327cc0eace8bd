"""Type stubs for :mod:`aiolit._fast._tokens` (Cython)."""

from typing import Any

import numpy as np
import numpy.typing as npt

def token_blocks_locate(
    block_ids: npt.ArrayLike, cumulative_blocks: npt.ArrayLike, block_size: int = 1
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(chunk_ids, in_chunk * block_size)`` for each global block id (binary search)."""

def gather_token_blocks(
    tokens: npt.NDArray[Any],
    order: npt.ArrayLike,
    pos: int,
    take: int,
    block_size: int,
    out: Any,
    row: int = 0,
) -> None:
    """Copy blocks ``order[pos : pos + take]`` of ``tokens`` into rows ``row...`` of ``out`` (array or CPU tensor)."""
