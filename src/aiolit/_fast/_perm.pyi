"""Type stubs for :mod:`aiolit._fast._perm` (Cython)."""

from typing import SupportsIndex

import numpy as np
import numpy.typing as npt

def permutation(
    n: SupportsIndex, seed: SupportsIndex, epoch: SupportsIndex, stream: SupportsIndex = 0
) -> npt.NDArray[np.int64]:
    """A deterministic permutation of ``range(n)`` for ``(seed, epoch, stream)`` (not numpy's order)."""

def permute_within(
    indices: npt.ArrayLike, seed: SupportsIndex, epoch: SupportsIndex, stream: SupportsIndex = 0
) -> npt.NDArray[np.int64]:
    """A new int64 array holding ``indices`` shuffled deterministically for ``(seed, epoch, stream)``."""
