"""TokensLoader block arithmetic: blocks never cross chunks and each chunk's tail is dropped."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["TokenBlocks"]


class TokenBlocks:
    """Where block ``i`` of a token dataset lives.

    Chunk ``c`` holds ``dim_c`` tokens and gives ``dim_c // block_size`` blocks; block ``j`` of a
    chunk is tokens ``[j*B, (j+1)*B)`` of its token stream. Blocks are numbered across chunks in
    index order.

    Parameters
    ----------
    chunk_dims
        ``dim`` (tokens) of every chunk, in index order.
    block_size
        Tokens per block (``TokensLoader(block_size)``).
    """

    def __init__(self, chunk_dims: Sequence[int], block_size: int) -> None:
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size <= 0:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        dims = np.asarray(list(chunk_dims), dtype=np.int64)
        if (dims < 0).any():
            raise ValueError(f"chunk dims must be >= 0, got {dims.tolist()}")
        self.block_size = block_size
        self.blocks_per_chunk: npt.NDArray[np.int64] = dims // block_size
        # cumulative[c] = first block of chunk c; cumulative[-1] = num_blocks
        self.cumulative: npt.NDArray[np.int64] = np.concatenate(([0], np.cumsum(self.blocks_per_chunk)))
        self.num_blocks = int(self.cumulative[-1])

    def __len__(self) -> int:
        return self.num_blocks

    def locate(self, i: int) -> tuple[int, int]:
        """``(chunk, token_offset)`` of block ``i``: the block is ``tokens[off : off + B]`` of that chunk."""
        if not 0 <= i < self.num_blocks:
            raise IndexError(f"block {i} out of range for {self.num_blocks} blocks")
        chunk = int(np.searchsorted(self.cumulative, i, side="right")) - 1
        return chunk, (i - int(self.cumulative[chunk])) * self.block_size

    def locate_many(self, blocks: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Vectorised :meth:`locate`: ``(chunks, token_offsets)`` arrays."""
        ids = np.asarray(blocks, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_blocks):
            raise IndexError(f"block ids must be in [0, {self.num_blocks})")
        chunks = np.searchsorted(self.cumulative, ids, side="right") - 1
        return chunks, (ids - self.cumulative[chunks]) * self.block_size
