"""Splits and subsets of a StreamingDataset: ``train_test_split`` and ``StreamingDataset.subset``.

Both return copies of the dataset whose regions of interest (LitData's ``subsampled_files`` and
``region_of_interest``) are cut from the source's, so the copies stream only their own samples
and their resume states name their own regions.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import warnings
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from aiolit.streaming._plan import Interval

__all__ = ["subset", "train_test_split"]


@runtime_checkable
class _Regions(Protocol):
    """What a split reads and sets on a ``StreamingDataset`` (typed structurally, so this module
    does not import ``dataset.py``, which imports it for ``StreamingDataset.subset``)."""

    intervals: list[Interval]
    _starts: list[int]
    _resume: dict[str, Any] | None
    current_epoch: int


# A TypeVar named after the class it stands for: signatures read as before, and a subclass comes back.
StreamingDataset = TypeVar("StreamingDataset", bound=_Regions)


def _with_intervals(dataset: StreamingDataset, intervals: list[Interval]) -> StreamingDataset:
    """A copy of ``dataset`` reading ``intervals``, with a fresh iteration state."""
    new = copy.copy(dataset)  # shares the DataSource (index, cache): both are read-only config
    new.intervals = intervals
    new._starts = [0, *itertools.accumulate(iv.size for iv in intervals)]
    new.__dict__["_fixed_intervals"] = True  # set_shuffle() must not recompute them
    new._resume = None
    new.current_epoch = 1
    return new


def _take(intervals: list[Interval], n: int) -> tuple[list[Interval], list[Interval]]:
    """The first ``n`` items of ``intervals`` and the rest (an interval may be cut in two)."""
    head: list[Interval] = []
    for j, iv in enumerate(intervals):
        if n <= 0:
            return head, intervals[j:]
        if iv.size <= n:
            head.append(iv)
            n -= iv.size
            continue
        head.append(Interval(iv.chunk, iv.start, iv.start + n))
        return head, [Interval(iv.chunk, iv.start + n, iv.end), *intervals[j + 1 :]]
    return head, []


def train_test_split(
    dataset: StreamingDataset, splits: Sequence[float], seed: int = 42, shuffle: bool = True
) -> list[StreamingDataset]:
    """Split a dataset into non-overlapping datasets of the given proportions.

    Parameters
    ----------
    dataset : StreamingDataset
        The dataset to split (subsampled or upsampled datasets split their own regions).
    splits : sequence of float
        Proportions in ``[0, 1]`` summing to at most 1; split ``i`` gets
        ``int(len(dataset) * splits[i])`` samples.
    seed : int
        Seed of the region shuffle.
    shuffle : bool
        Shuffle the dataset's regions (``RandomState([seed])``) before cutting them in order;
        ``False`` cuts the regions in index order (contiguous splits).

    Returns
    -------
    list of StreamingDataset
        One dataset per split, in order.

    Raises
    ------
    ValueError
        A split that is not a float in ``[0, 1]``, or splits summing to more than 1.
    """
    if not isinstance(dataset, _Regions):
        raise ValueError(f"train_test_split needs a StreamingDataset, got {type(dataset).__name__}")
    splits = list(splits)
    if not splits or any(isinstance(s, bool) or not isinstance(s, float) for s in splits):
        raise ValueError(f"splits must be a non-empty list of floats, got {splits!r}")
    if not all(0.0 <= s <= 1.0 for s in splits):
        raise ValueError(f"each split must be a float in [0, 1], got {splits!r}")
    if sum(splits) > 1.0 + 1e-9:
        raise ValueError(f"the splits must sum to at most 1, got {sum(splits)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    intervals = list(dataset.intervals)
    total = sum(iv.size for iv in intervals)
    if shuffle:
        order = np.random.RandomState([seed]).permutation(len(intervals))
        intervals = [intervals[int(j)] for j in order]
    counts = [int(total * s) for s in splits]
    if any(c == 0 for c in counts):
        warnings.warn(f"train_test_split: some splits are empty ({counts} samples)", stacklevel=2)
    out = []
    for count in counts:
        head, intervals = _take(intervals, count)
        out.append(_with_intervals(dataset, head))
    return out


def subset(dataset: StreamingDataset, indices: Sequence[int] | slice) -> StreamingDataset:
    """A copy of ``dataset`` holding samples ``indices`` (global order), in the given order.

    Consecutive indices of one chunk become one region, so a slice or a sorted range costs
    one region per chunk.

    Raises
    ------
    ValueError
        An index outside ``[0, len(dataset))``.
    """
    starts = dataset._starts
    total = starts[-1]
    if isinstance(indices, slice):
        indices = range(*indices.indices(total))
    out: list[Interval] = []
    for raw in indices:
        if isinstance(raw, bool) or not isinstance(raw, int | np.integer):
            raise ValueError(f"subset indices must be ints, got {raw!r}")
        idx = int(raw)
        if not 0 <= idx < total:
            raise ValueError(f"subset index {idx} is outside [0, {total}) for this dataset")
        j = bisect.bisect_right(starts, idx) - 1
        iv = dataset.intervals[j]
        k = iv.start + idx - starts[j]
        last = out[-1] if out else None
        if last is not None and last.chunk == iv.chunk and last.end == k:
            out[-1] = Interval(last.chunk, last.start, k + 1)
        else:
            out.append(Interval(iv.chunk, k, k + 1))
    return _with_intervals(dataset, out)
