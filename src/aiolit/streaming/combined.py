"""CombinedStreamingDataset: one stream drawn from several datasets, LitData's API and semantics.

Each loader worker draws, sample by sample (``"stratified"``) or run by run (``"per_stream"``),
which dataset its next sample comes from. The whole sequence of draws of a worker's epoch is
computed up front from a generator seeded with ``(seed, epoch, rank, worker)`` and the
datasets' per-worker lengths (:func:`schedule`), so a worker knows its exact length and a
resumed worker knows, without reading anything, how far each dataset had got.

Differences from LitData, all deliberate:

* The draws depend on the epoch and the worker (LitData reuses ``random.Random(seed)`` in every
  worker and epoch, so all workers pick the same dataset sequence).
* ``len()`` is exact in every mode (LitData returns ``None`` when ``iterate_over_all=False``).
* Resume is exact in every mode, weighted ones included (LitData replays the draws
  approximately), and needs no per-sample counters from the workers.
* ``per_stream`` batches never mix datasets (LitData's do when a dataset's run ends inside a
  batch): through :class:`~aiolit.StreamingDataLoader` each worker yields one batch per run,
  so the last run of a dataset in a worker gives a short batch rather than borrowing samples
  from the next dataset.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from aiolit.streaming._foreign import ForeignDataset
from aiolit.streaming._plan import Topology
from aiolit.streaming._wrapper import StreamingWrapper
from aiolit.streaming.dataset import _check_bool

__all__ = ["CombinedStreamingDataset", "schedule"]

BatchingMethod = Literal["stratified", "per_stream"]

_BLOCK = 1 << 16
_END = object()  # end of an inner stream


def _pick(
    rng: np.random.Generator, live: npt.NDArray[np.int64], weights: npt.NDArray[np.float64], n: int
) -> Any:
    """``n`` draws among ``live`` with probabilities ``weights[live]`` (only ``random()`` is used)."""
    w = weights[live]
    cdf = np.cumsum(w)
    total = cdf[-1]
    if not total > 0:
        w = np.ones(len(live))
        cdf = np.cumsum(w)
        total = cdf[-1]
    j = np.searchsorted(cdf, rng.random(n) * total, side="right")
    return live[np.minimum(j, len(live) - 1)]


def schedule(
    weights: Sequence[float],
    lengths: Sequence[int],
    *,
    seed: Sequence[int],
    iterate_over_all: bool,
    run_lengths: Sequence[int] | None = None,
) -> npt.NDArray[Any]:
    """Return the dataset index of every sample of one worker's epoch.

    Parameters
    ----------
    weights : sequence of float
        Sampling weights (normalised here; a dataset of weight 0 is never drawn).
    lengths : sequence of int
        Samples each dataset gives this worker in the epoch.
    seed : sequence of int
        Entropy of the draws (``(seed, epoch, rank, worker)``).
    iterate_over_all : bool
        True: an exhausted dataset leaves the draw and the rest continue until all are
        exhausted. False: the epoch ends at the first draw of an exhausted dataset.
    run_lengths : sequence of int, optional
        ``per_stream`` batching: each draw takes ``run_lengths[d]`` consecutive samples of
        dataset ``d``, and the next draw picks a different dataset when another is left.

    Returns
    -------
    numpy.ndarray
        One small int per sample.
    """
    k = len(lengths)
    w = np.asarray(weights, dtype=np.float64)
    remaining = np.asarray(lengths, dtype=np.int64).copy()
    rng = np.random.default_rng([int(x) for x in seed])
    dtype = np.min_scalar_type(max(k - 1, 0))
    parts: list[npt.NDArray[Any]] = []
    if iterate_over_all:
        live = np.flatnonzero(remaining > 0)
    else:
        live = np.flatnonzero(w > 0)
        if len(live) == 0:
            return np.zeros(0, dtype=dtype)
    if run_lengths is not None:
        runs = [int(r) for r in run_lengths]
        current = -1
        while len(live):
            candidates = live[live != current] if len(live) > 1 else live
            d = int(_pick(rng, candidates, w, 1)[0])
            take = min(runs[d], int(remaining[d]))
            parts.append(np.full(take, d, dtype=dtype))
            remaining[d] -= take
            if iterate_over_all:
                if remaining[d] == 0:
                    live = live[live != d]
            elif take < runs[d]:
                break
            current = d
    elif iterate_over_all:
        while len(live) > 1:
            size = int(min(remaining[live].sum(), _BLOCK))
            picks = _pick(rng, live, w, size)
            cut = size  # up to and including the first draw that empties a dataset
            for d in live.tolist():
                at = np.flatnonzero(picks == d)
                r = int(remaining[d])
                if len(at) >= r:
                    cut = min(cut, int(at[r - 1]) + 1)
            taken = picks[:cut]
            parts.append(taken.astype(dtype))
            remaining -= np.bincount(taken, minlength=k)
            live = live[remaining[live] > 0]
        if len(live) == 1:
            d = int(live[0])
            parts.append(np.full(int(remaining[d]), d, dtype=dtype))
    else:
        while True:
            size = int(min(remaining[live].sum() + 1, _BLOCK))
            picks = _pick(rng, live, w, size)
            stop = size
            for d in live.tolist():
                at = np.flatnonzero(picks == d)
                r = int(remaining[d])
                if len(at) > r:
                    stop = min(stop, int(at[r]))
            taken = picks[:stop]
            parts.append(taken.astype(dtype))
            remaining -= np.bincount(taken, minlength=k)
            if stop < size:
                break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def run_bounds(picks: npt.NDArray[Any], run_lengths: Sequence[int]) -> npt.NDArray[np.int64]:
    """Where each ``per_stream`` run of a :func:`schedule` starts, then ``len(picks)``.

    A run of dataset ``d`` is ``run_lengths[d]`` samples (fewer when ``d`` runs out); the runs of
    a stretch of one dataset (once it is the only one left) are cut every ``run_lengths[d]``.
    """
    n = len(picks)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(picks[1:] != picks[:-1]) + 1, [n]])
    out: list[int] = []
    for s, e in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        out.extend(range(s, e, int(run_lengths[int(picks[s])])))
    out.append(n)
    return np.asarray(out, dtype=np.int64)


class CombinedStreamingDataset(StreamingWrapper):
    """Stream several datasets as one, drawing each sample's dataset at random.

    Parameters
    ----------
    datasets : list of datasets
        The datasets to combine: StreamingDatasets, or any sized dataset LitData's wrappers
        iterate (``range``, a list, a map-style ``Dataset``, an ``IterableDataset`` with
        ``__len__``). Map-style ones are split over ranks and workers like a StreamingDataset
        and resume exactly; iterable ones are iterated whole by every worker (as torch's
        ``DataLoader`` does) and resume by re-iterating and skipping what was yielded, which is
        exact only if they yield the same sequence again. See docs/migrating-notes.md.
    seed : int
        Seed of the draws.
    weights : sequence of float, optional
        Sampling weights (normalised to sum to 1). Default: each dataset's length over the
        total. Needs ``iterate_over_all=False``.
    iterate_over_all : bool
        True: iterate until every dataset is exhausted (an exhausted dataset leaves the draw).
        False: stop at the first draw of an exhausted dataset.
    batching_method : {"stratified", "per_stream"}
        ``stratified`` draws a dataset for every sample; ``per_stream`` keeps a dataset for a
        run of ``batch_size`` samples (``set_batch_size([..])`` sets one per dataset), then
        draws a different one. Through :class:`~aiolit.StreamingDataLoader` every batch is one
        run, so it holds samples of a single dataset only; a run cut short by the end of its
        dataset gives a short batch (iterating the dataset itself yields the runs' samples).
    force_override_state_dict : bool
        Resume from a state taken with a different topology or dataset settings.

    Notes
    -----
    Every mode resumes exactly with :class:`~aiolit.StreamingDataLoader` (``state_dict()`` ->
    ``load_state_dict()`` yields exactly the batches the uninterrupted epoch had left), with
    weights too: a worker's draws are a pure function of ``(seed, epoch, rank, worker,
    per-worker dataset lengths)``. On another topology (workers, batch size, world size) the
    resume is elastic: the rest of every dataset is dealt to the new workers and drawn afresh
    (see ``docs/resume.md``).
    """

    def __init__(
        self,
        datasets: list[Any],
        seed: int = 42,
        weights: Sequence[float] | None = None,
        iterate_over_all: bool = True,
        batching_method: BatchingMethod = "stratified",
        force_override_state_dict: bool = False,
    ) -> None:
        super().__init__(datasets, force_override_state_dict)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        _check_bool("iterate_over_all", iterate_over_all)
        if batching_method not in ("stratified", "per_stream"):
            raise ValueError(f"batching_method must be 'stratified' or 'per_stream', got {batching_method!r}")
        if iterate_over_all and weights is not None:
            raise ValueError(
                "weights cannot be given with iterate_over_all=True: the weights are then each "
                "dataset's share of the samples; pass iterate_over_all=False to sample by weight"
            )
        if weights is None:
            # Each dataset's whole size, not its rank's share: the draws are then the same on
            # every rank and topology (an elastic resume recomputes the old ranks' draws).
            lens = [
                ds.num_items if isinstance(ds, ForeignDataset) else ds._starts[-1] for ds in self._datasets
            ]
            if sum(lens) == 0:
                raise ValueError("CombinedStreamingDataset: every dataset is empty")
            norm = [n / sum(lens) for n in lens]
        else:
            given = list(weights)
            if len(given) != len(self._datasets):
                raise ValueError(f"weights: {len(given)} weights for {len(self._datasets)} datasets")
            for x in given:
                if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < 0:
                    raise ValueError(f"weights must be finite numbers >= 0, got {given!r}")
            if not sum(given) > 0:
                raise ValueError(f"weights must not all be 0, got {given!r}")
            norm = [float(x) / sum(given) for x in given]
        self.seed = seed
        self._weights = norm
        self._iterate_over_all = iterate_over_all
        self._batching_method: BatchingMethod = batching_method
        self._schedules: dict[tuple[Any, ...], npt.NDArray[Any]] = {}
        # (batch size, collate_fn) while a StreamingDataLoader batches per_stream runs itself
        # (it sets it around its own calls; loader workers keep their copy's).
        self._loader_batch: tuple[int, Callable[[list[Any]], Any]] | None = None

    @property
    def weights(self) -> list[float]:
        """The normalised sampling weights."""
        return list(self._weights)

    # -- the draws ------------------------------------------------------------------------------

    def _run_lengths(self) -> list[int] | None:
        if self._batching_method != "per_stream":
            return None
        bs = self.batch_size
        return list(bs) if isinstance(bs, list) else [bs] * len(self._datasets)

    def _schedule(self, topology: Topology, worker_id: int, epoch: int) -> npt.NDArray[Any]:
        lengths = tuple(per[worker_id] for per in self._inner_lengths(topology, epoch))
        runs = self._run_lengths()
        key = (epoch, topology, worker_id, lengths, None if runs is None else tuple(runs))
        cache = self.__dict__.setdefault("_schedules", {})
        found: npt.NDArray[Any] | None = cache.get(key)
        if found is None:
            found = schedule(
                self._weights,
                lengths,
                seed=(self.seed, epoch, topology.rank, worker_id),
                iterate_over_all=self._iterate_over_all,
                run_lengths=runs,
            )
            if len(cache) >= 64:
                cache.clear()
            cache[key] = found
        return found

    def _batches_of_runs(self) -> int | None:
        """The loader's batch size while it takes one batch per ``per_stream`` run, else None.

        Its sample counts then count every batch as ``batch_size`` samples (as LitData's
        loader does for a short last batch): a worker's count ``c`` means ``c // batch_size``
        runs.
        """
        batch = self.__dict__.get("_loader_batch")
        return None if batch is None or self._batching_method != "per_stream" else batch[0]

    def _bounds(self, topology: Topology, worker_id: int, epoch: int) -> npt.NDArray[np.int64]:
        runs = self._run_lengths()
        assert runs is not None
        return run_bounds(self._schedule(topology, worker_id, epoch), runs)

    def _worker_lengths(self, topology: Topology, epoch: int) -> list[int]:
        bs = self._batches_of_runs()
        if bs is not None:
            return [(len(self._bounds(topology, w, epoch)) - 1) * bs for w in range(topology.num_workers)]
        if self._iterate_over_all:
            per = self._inner_lengths(topology, epoch)
            return [sum(col) for col in zip(*per, strict=True)]
        return [len(self._schedule(topology, w, epoch)) for w in range(topology.num_workers)]

    def __len__(self) -> int:
        topology, _ = self._topology()
        saved, self._loader_batch = self.__dict__.get("_loader_batch"), None
        try:
            return sum(self._worker_lengths(topology, self.current_epoch))
        finally:
            self._loader_batch = saved

    def get_len(self, num_workers: int, batch_size: int) -> int:
        """This rank's epoch length for a loader with ``num_workers`` and ``batch_size``."""
        saved = (self.num_workers, self.batch_size)
        self.set_num_workers(num_workers)
        self.set_batch_size(batch_size)
        try:
            return len(self)
        finally:
            self.set_num_workers(saved[0])
            self.set_batch_size(saved[1])

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        bs = self._batches_of_runs()
        if bs is None:
            return super().__iter__()
        assert self._loader_batch is not None
        collate = self._loader_batch[1]
        topology, worker_id, epoch, skip = self._start()  # now: the loader's flag is set now
        return self._run_batches(topology, worker_id, epoch, skip // bs, collate)

    def _run_batches(
        self, topology: Topology, worker_id: int, epoch: int, first: int, collate: Callable[[list[Any]], Any]
    ) -> Iterator[Any]:
        """One collated batch per ``per_stream`` run, from run ``first`` on."""
        bounds = self._bounds(topology, worker_id, epoch).tolist()
        first = min(first, len(bounds) - 1)
        samples = self._stream(topology, worker_id, epoch, bounds[first])
        try:
            for start, end in zip(bounds[first:-1], bounds[first + 1 :], strict=True):
                yield collate(list(itertools.islice(samples, end - start)))
        finally:
            samples.close()  # type: ignore[attr-defined]
        self._finish_epoch()

    def _iterators_at(self, picks: npt.NDArray[Any], epoch: int, skip: int, *, sync: bool) -> list[Any]:
        done = np.bincount(picks[:skip], minlength=len(self._datasets))
        if sync:
            return [ds._iter_at((epoch, int(c))) for ds, c in zip(self._datasets, done, strict=True)]
        return [ds._aiter_at((epoch, int(c))) for ds, c in zip(self._datasets, done, strict=True)]

    def _stream(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> Iterator[Any]:
        picks = self._schedule(topology, worker_id, epoch)
        iters = self._iterators_at(picks, epoch, skip, sync=True)
        try:
            for d in picks[skip:].tolist():
                # A foreign iterable may yield fewer than its len(): its remaining draws are skipped.
                item = next(iters[d], _END)
                if item is not _END:
                    yield item
        finally:
            for it in iters:
                it.close()

    async def _astream(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> AsyncIterator[Any]:
        picks = self._schedule(topology, worker_id, epoch)
        iters = self._iterators_at(picks, epoch, skip, sync=False)
        try:
            for d in picks[skip:].tolist():
                item = await anext(iters[d], _END)
                if item is not _END:
                    yield item
        finally:
            for it in iters:
                await it.aclose()

    # -- state ----------------------------------------------------------------------------------

    _elastic_resume = True

    def _positions(
        self, topology: Topology, worker_id: int, epoch: int, count: int
    ) -> tuple[list[int], list[int] | None]:
        picks = self._schedule(topology, worker_id, epoch)
        bs = self._batches_of_runs()
        if bs is not None:  # count // bs runs done
            bounds = self._bounds(topology, worker_id, epoch)
            count = int(bounds[min(count // bs, len(bounds) - 1)])
        return [int(x) for x in np.bincount(picks[:count], minlength=len(self._datasets))], None

    def _count_at(
        self, topology: Topology, worker_id: int, epoch: int, counts: list[int], cycles: list[int] | None
    ) -> int:
        bs = self._batches_of_runs()
        if bs is not None:  # samples -> runs done (a run begun counts as done, as a batch)
            bounds = self._bounds(topology, worker_id, epoch)
            return int(np.searchsorted(bounds, sum(counts), side="left")) * bs
        return sum(counts)

    def __repr__(self) -> str:
        return (
            f"CombinedStreamingDataset(datasets={len(self._datasets)}, weights={[round(w, 4) for w in self._weights]}, "
            f"iterate_over_all={self._iterate_over_all}, batching_method={self._batching_method!r})"
        )
