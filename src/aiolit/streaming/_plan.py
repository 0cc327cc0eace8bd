"""Who reads which samples, in which order: pure numpy functions of the topology, no I/O.

An epoch is planned in three steps, with LitData's semantics (LITDATA.md §2.3–2.6, §3):

1. :func:`chunk_intervals` turns the chunk sizes into regions of interest (subsample/upsample).
2. :class:`EpochPlan` permutes them per ``(seed, epoch)`` when shuffling, gives every
   (rank, worker) a budget (:func:`worker_budgets`) and cuts the interval walk into
   per-worker :class:`WorkerPlan` steps.
3. :func:`samples_per_worker` turns a loader's sample count into per-worker counts, and
   :meth:`WorkerPlan.locate` turns a count into a resume position.

Everything here is deterministic: the same arguments give the same orders in every process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from aiolit import _fast

__all__ = [
    "EpochPlan",
    "Interval",
    "Piece",
    "PiecePlan",
    "ResumePlan",
    "Topology",
    "WorkerPlan",
    "chunk_intervals",
    "dataset_length",
    "rank_length",
    "remaining",
    "samples_per_worker",
    "worker_budgets",
]

IntArray = npt.NDArray[np.int64]

# Item permutations are keyed by one 64-bit stream: (interval key + 1) << 32 | step start.
_STREAM_SHIFT = 32
_MAX_KEY = (1 << 31) - 1


def _permutation(n: int, seed: int, epoch: int, stream: int) -> IntArray:
    """Return a deterministic permutation of ``range(n)`` for ``(seed, epoch, stream)``.

    The single place that picks the generator (changing it changes every shuffled order).
    ``_fast.permutation`` is platform-independent and seeds in nanoseconds; the numpy
    equivalent would be ``np.random.Generator(np.random.PCG64([seed, epoch, stream])).permutation(n)``.
    """
    return np.asarray(_fast.permutation(n, seed, epoch, stream), dtype=np.int64)


def _check_int(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass; True as a batch size is always a bug.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


@dataclass(frozen=True, slots=True)
class Interval:
    """A region of interest of one chunk: items ``[start, end)`` of chunk ``chunk``.

    Parameters
    ----------
    chunk : int
        Index into the dataset's chunk list (``index.json`` order).
    start : int
        First item within the chunk, inclusive.
    end : int
        Last item within the chunk, exclusive.
    """

    chunk: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.chunk < 0 or self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid Interval(chunk={self.chunk}, start={self.start}, end={self.end})")

    @property
    def size(self) -> int:
        """Number of items in the interval."""
        return self.end - self.start


def _take(intervals: Sequence[Interval], n: int) -> list[Interval]:
    """Return the first ``n`` items of ``intervals``, cutting the last one short."""
    out: list[Interval] = []
    for iv in intervals:
        if n <= 0:
            break
        take = min(n, iv.size)
        out.append(Interval(iv.chunk, iv.start, iv.start + take))
        n -= take
    return out


def chunk_intervals(
    chunk_sizes: Sequence[int], *, subsample: float = 1.0, shuffle: bool = False, seed: int = 42
) -> list[Interval]:
    """Return the regions of interest of a dataset, subsampled or upsampled as LitData does.

    Parameters
    ----------
    chunk_sizes : sequence of int
        Items per chunk (blocks per chunk for ``TokensLoader``), in ``index.json`` order.
    subsample : float
        ``1.0`` keeps every chunk whole. Below 1, keeps ``int(total * subsample)`` items by
        walking the chunk list and cutting the last interval short. Above 1, repeats the full
        list ``floor(subsample)`` times, then appends the fractional part as above.
    shuffle : bool
        Walk shuffled copies of the chunk list, permuted by one ``RandomState([seed])`` shared
        by all copies (so the chunk sets match LitData's ``subsampled_files``).
    seed : int
        Seed of that shuffle.

    Returns
    -------
    list of Interval
        Non-empty intervals in walk order; a chunk may appear several times when upsampling.
    """
    if (
        isinstance(subsample, bool)
        or not isinstance(subsample, (float, int))
        or not math.isfinite(subsample)
        or subsample <= 0
    ):
        raise ValueError(f"subsample must be a float greater than 0, got {subsample!r}")
    shuffle = _check_bool("shuffle", shuffle)
    if shuffle and not 0 <= _check_int("seed", seed, 0) < 2**32:
        raise ValueError(f"seed must be < 2**32 to shuffle chunks (numpy RandomState), got {seed}")
    sizes = np.asarray(chunk_sizes)
    if sizes.ndim != 1 or (sizes.size and (sizes.dtype.kind not in "iu" or sizes.min() < 0)):
        raise ValueError(f"chunk_sizes must be a sequence of ints >= 0, got {chunk_sizes!r:.200}")
    base = [Interval(i, 0, n) for i, n in enumerate(sizes.tolist())]
    if math.isclose(subsample, 1.0):
        return [iv for iv in base if iv.size]

    rng = np.random.RandomState([seed]) if shuffle else None
    total = sum(iv.size for iv in base)
    current = base
    out: list[Interval] = []
    s = float(subsample)
    # Repeated subtraction (not math.modf) keeps LitData's float rounding of the fraction.
    while s >= 1.0:
        if rng is not None:
            # Each copy permutes the previous copy's order, as LitData's shared sampler does.
            current = [current[i] for i in rng.permutation(len(current))]
        out.extend(current)
        s -= 1.0
    if s > 0:
        if rng is not None:
            current = [current[i] for i in rng.permutation(len(current))]
        out.extend(_take(current, int(total * s)))
    return [iv for iv in out if iv.size]


@dataclass(frozen=True, slots=True)
class Topology:
    """Where this process sits: ``rank`` of ``world_size``, with ``num_workers`` loader workers.

    ``num_workers=0`` (loading in the main process) counts as one worker.
    """

    world_size: int = 1
    rank: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        _check_int("world_size", self.world_size, 1)
        _check_int("rank", self.rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be < world_size ({self.world_size}), got {self.rank}")
        if _check_int("num_workers", self.num_workers, 0) == 0:
            object.__setattr__(self, "num_workers", 1)

    @property
    def total_workers(self) -> int:
        """Workers over all ranks."""
        return self.world_size * self.num_workers

    def global_worker_id(self, worker_id: int, rank: int | None = None) -> int:
        """Return ``rank * num_workers + worker_id`` (``rank`` defaults to this rank)."""
        return (self.rank if rank is None else rank) * self.num_workers + worker_id


def worker_budgets(
    num_items: int, world_size: int, num_workers: int, *, batch_size: int = 1, drop_last: bool = False
) -> IntArray:
    """Return the items each (rank, worker) yields in an epoch, LitData's budget rule.

    ``max_batches = num_items // batch_size`` is split evenly over ranks, then over workers
    (the first ``per_rank % num_workers`` workers get one extra batch). With
    ``drop_last=False`` the items left over go to worker ``per_rank % num_workers`` of the last
    rank; otherwise they are dropped, so every rank yields the same count.

    Returns
    -------
    ndarray of int64, shape (world_size, max(num_workers, 1))
    """
    num_items = _check_int("num_items", num_items, 0)
    world_size = _check_int("world_size", world_size, 1)
    num_workers = max(1, _check_int("num_workers", num_workers, 0))
    batch_size = _check_int("batch_size", batch_size, 1)
    per_rank = (num_items // batch_size) // world_size
    base, extra = divmod(per_rank, num_workers)
    batches = np.full(num_workers, base, dtype=np.int64)
    batches[:extra] += 1
    budgets = np.tile(batches * batch_size, (world_size, 1))
    if not _check_bool("drop_last", drop_last):
        budgets[-1, extra] += num_items - int(budgets.sum())
    return budgets


def rank_length(num_items: int, topology: Topology, *, batch_size: int = 1, drop_last: bool = False) -> int:
    """Return the samples ``topology.rank`` yields in an epoch: LitData's ``len(dataset)``."""
    budgets = worker_budgets(
        num_items, topology.world_size, topology.num_workers, batch_size=batch_size, drop_last=drop_last
    )
    return int(budgets[topology.rank].sum())


def dataset_length(
    num_items: int, topology: Topology, *, batch_size: int = 1, drop_last: bool = False
) -> int:
    """Return the samples all ranks together yield in an epoch (``num_items`` minus what is dropped)."""
    budgets = worker_budgets(
        num_items, topology.world_size, topology.num_workers, batch_size=batch_size, drop_last=drop_last
    )
    return int(budgets.sum())


@dataclass(frozen=True, slots=True)
class Piece:
    """A slice ``[lo, hi)`` of the yield order of one worker step: the unit of elastic resume.

    The step is items ``[start, end)`` of chunk ``chunk``, in ascending order (``stream < 0``)
    or permuted by ``stream`` (see :meth:`WorkerPlan.order`); the piece is positions
    ``lo..hi`` of that order. Pieces name samples without listing them, so the samples an
    interrupted epoch has left cost memory per chunk piece, not per sample.
    """

    chunk: int
    start: int
    end: int
    stream: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        """Number of samples in the piece."""
        return self.hi - self.lo

    def items(self, seed: int, epoch: int) -> IntArray:
        """Return the piece's item indices (within the chunk), in yield order."""
        if self.stream < 0:
            return np.arange(self.start + self.lo, self.start + self.hi, dtype=np.int64)
        perm = _permutation(self.end - self.start, seed, epoch, self.stream)[self.lo : self.hi]
        perm += self.start
        return perm


class WorkerPlan:
    """One worker's epoch: the chunk pieces it reads and the item order inside each.

    Parameters
    ----------
    steps : sequence of Interval
        Non-empty chunk pieces in read order.
    streams : ndarray of int64 or None
        Per-step permutation stream when shuffling, ``None`` for ascending item order.
    seed, epoch : int
        Generator keys of the item permutations.
    """

    def __init__(self, steps: Sequence[Interval], streams: IntArray | None, seed: int, epoch: int) -> None:
        self.steps: list[Interval] = list(steps)
        self._streams = streams
        self._seed = seed
        self._epoch = epoch
        sizes = np.fromiter((s.size for s in self.steps), dtype=np.int64, count=len(self.steps))
        # _offsets[k] = samples yielded before step k; _offsets[-1] = length.
        self._offsets: IntArray = np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes)])
        self.length: int = int(self._offsets[-1])

    def __repr__(self) -> str:
        return f"WorkerPlan(steps={len(self.steps)}, length={self.length}, chunks={len(self.chunk_order)})"

    def order(self, k: int) -> IntArray:
        """Return the item indices (within the chunk) of step ``k``, in yield order."""
        step = self.steps[k]
        if self._streams is None:
            return np.arange(step.start, step.end, dtype=np.int64)
        perm = _permutation(step.size, self._seed, self._epoch, int(self._streams[k]))
        perm += step.start
        return perm

    @cached_property
    def chunk_order(self) -> list[int]:
        """Chunk ids in first-use order: what the prefetcher will need, soonest first."""
        return list(dict.fromkeys(s.chunk for s in self.steps))

    def locate(self, n: int) -> tuple[int, int]:
        """Return ``(step, offset into order(step))`` after ``n`` samples were consumed.

        ``n == length`` gives ``(len(steps), 0)``: the epoch is done.
        """
        n = _check_int("n", n, 0)
        if n > self.length:
            raise ValueError(f"n must be <= the worker's length ({self.length}), got {n}")
        k = int(np.searchsorted(self._offsets, n, side="right")) - 1
        return k, n - int(self._offsets[k])

    def _piece(self, k: int) -> Piece:
        step = self.steps[k]
        stream = -1 if self._streams is None else int(self._streams[k])
        return Piece(step.chunk, step.start, step.end, stream, 0, step.size)

    def pieces(self, n: int = 0) -> list[Piece]:
        """Return what is left of this worker's epoch after ``n`` samples, as :class:`Piece` s."""
        k, offset = self.locate(n)
        out = [self._piece(j) for j in range(k, len(self.steps))]
        if out and offset:
            p = out[0]
            out[0] = Piece(p.chunk, p.start, p.end, p.stream, p.lo + offset, p.hi)
        return out

    @cached_property
    def next_reuse(self) -> IntArray:
        """``next_reuse[k]``: the next step after ``k`` reading the same chunk, else ``len(steps)``.

        Lets a cache keep each chunk's next use up to date in O(1) per step (evict the chunk
        whose next use is furthest).
        """
        out = np.full(len(self.steps), len(self.steps), dtype=np.int64)
        seen: dict[int, int] = {}
        for k in range(len(self.steps) - 1, -1, -1):
            chunk = self.steps[k].chunk
            if chunk in seen:
                out[k] = seen[chunk]
            seen[chunk] = k
        return out

    def next_use(self, step: int) -> dict[int, int]:
        """Return ``{chunk: first step >= step reading it}``, in order of that next use.

        Chunks not read again from ``step`` on are absent. O(remaining steps); use
        :attr:`next_reuse` to keep it current step by step.
        """
        step = _check_int("step", step, 0)
        out: dict[int, int] = {}
        for k in range(step, len(self.steps)):
            out.setdefault(self.steps[k].chunk, k)
        return out


class _DealtPlan:
    """A walk of ``num_items`` samples dealt to every (rank, worker) in :func:`worker_budgets`
    shares: worker ``g`` (global id) takes walk positions ``[_bounds[g], _bounds[g + 1])``.
    Shared by :class:`EpochPlan` and :class:`ResumePlan`, whose walks differ."""

    topology: Topology
    batch_size: int
    drop_last: bool

    def _deal(self, sizes: IntArray) -> None:
        """Deal a walk made of parts of ``sizes`` samples each, in walk order."""
        self._ends: IntArray = np.cumsum(sizes)
        self.num_items: int = int(self._ends[-1]) if len(sizes) else 0
        self.budgets: IntArray = worker_budgets(
            self.num_items,
            self.topology.world_size,
            self.topology.num_workers,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
        )
        self._bounds: IntArray = np.concatenate([np.zeros(1, np.int64), np.cumsum(self.budgets.ravel())])

    def _span(self, rank: int, worker_id: int) -> tuple[int, int, int]:
        """Walk positions ``[lo, hi)`` of worker ``worker_id`` of rank ``rank``, and the index of
        the part that holds ``lo``."""
        topo = self.topology
        if not 0 <= _check_int("rank", rank, 0) < topo.world_size:
            raise ValueError(f"rank must be < world_size ({topo.world_size}), got {rank}")
        if not 0 <= _check_int("worker_id", worker_id, 0) < topo.num_workers:
            raise ValueError(f"worker_id must be < num_workers ({topo.num_workers}), got {worker_id}")
        g = topo.global_worker_id(worker_id, rank)
        lo, hi = int(self._bounds[g]), int(self._bounds[g + 1])
        return lo, hi, int(np.searchsorted(self._ends, lo, side="right"))

    @property
    def rank_length(self) -> int:
        """Samples this rank yields in the walk (LitData's ``len(dataset)``)."""
        return int(self.budgets[self.topology.rank].sum())

    @property
    def worker_lengths(self) -> list[int]:
        """Samples each worker of this rank yields (for :func:`samples_per_worker`)."""
        return [int(b) for b in self.budgets[self.topology.rank]]


class EpochPlan(_DealtPlan):
    """The partition of one epoch over every (rank, worker), as LitData partitions it.

    Parameters
    ----------
    intervals : sequence of Interval
        The dataset's regions of interest (:func:`chunk_intervals`).
    topology : Topology
        World size, this rank and the loader's worker count.
    batch_size : int
        Loader batch size: budgets are whole batches (see :func:`worker_budgets`).
    drop_last : bool
        Drop the items that do not fill a batch on every rank, instead of giving them to the
        last rank.
    shuffle : bool
        Permute the interval order per ``(seed, epoch)`` before assignment, and the items of
        every step with a generator keyed by ``(seed, epoch, interval, step start)``.
    seed : int
        Shuffle seed (>= 0).
    epoch : int
        Epoch number (LitData starts at 1).
    """

    def __init__(
        self,
        intervals: Sequence[Interval],
        topology: Topology,
        *,
        batch_size: int = 1,
        drop_last: bool = False,
        shuffle: bool = False,
        seed: int = 42,
        epoch: int = 1,
    ) -> None:
        if not isinstance(topology, Topology):
            raise ValueError(f"topology must be a Topology, got {topology!r}")
        self.topology = topology
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.drop_last = _check_bool("drop_last", drop_last)
        self.shuffle = _check_bool("shuffle", shuffle)
        self.seed = _check_int("seed", seed, 0)
        self.epoch = _check_int("epoch", epoch, 0)
        ivs = list(intervals)
        for iv in ivs:
            if not isinstance(iv, Interval):
                raise ValueError(f"intervals must hold Interval objects, got {iv!r}")
        if self.shuffle and (len(ivs) > _MAX_KEY or any(iv.end >= 1 << _STREAM_SHIFT for iv in ivs)):
            raise ValueError("intervals: shuffling supports < 2**31 intervals of chunks below 2**32 items")
        # _keys[j] = position in `intervals` of the j-th interval walked: it names the
        # interval in the item-permutation stream, independently of the epoch's order.
        if self.shuffle:
            self._keys = _permutation(len(ivs), self.seed, self.epoch, 0)
        else:
            self._keys = np.arange(len(ivs), dtype=np.int64)
        self.intervals: list[Interval] = [ivs[j] for j in self._keys]
        self._deal(np.fromiter((iv.size for iv in self.intervals), dtype=np.int64, count=len(ivs)))

    def __repr__(self) -> str:
        return (
            f"EpochPlan(items={self.num_items}, intervals={len(self.intervals)}, {self.topology}, "
            f"batch_size={self.batch_size}, drop_last={self.drop_last}, shuffle={self.shuffle}, "
            f"seed={self.seed}, epoch={self.epoch})"
        )

    def worker(self, worker_id: int) -> WorkerPlan:
        """Return the plan of worker ``worker_id`` of this rank."""
        return self.global_worker(self.topology.rank, worker_id)

    def global_worker(self, rank: int, worker_id: int) -> WorkerPlan:
        """Return the plan of worker ``worker_id`` of rank ``rank``."""
        # The worker owns items [lo, hi) of the walk over the (permuted) intervals.
        lo, hi, j0 = self._span(rank, worker_id)
        if lo >= hi:
            return WorkerPlan([], np.zeros(0, np.int64) if self.shuffle else None, self.seed, self.epoch)
        # Walk intervals j0..j1 hold items [lo, hi): whole ones in between (kept as they are, in
        # O(1) Python work each: a pass over a dataset of many chunks starts with this on the
        # caller's loop), cut ones at both ends. Empty intervals (user-built lists) are skipped;
        # neither end can be one.
        ends = self._ends
        j1 = int(np.searchsorted(ends, hi, side="left"))
        js = np.arange(j0, j1 + 1, dtype=np.int64)
        if j1 - j0 > 1:
            inner = np.flatnonzero(ends[j0 + 1 : j1] != ends[j0 : j1 - 1]) + (j0 + 1)
            js = np.concatenate([js[:1], inner, js[-1:]])
        intervals = self.intervals
        steps = [intervals[j] for j in js.tolist()]
        for pos, j in ((0, j0), (len(steps) - 1, j1)):
            iv = intervals[j]
            walk_start = int(ends[j]) - iv.size
            first = iv.start + max(lo, walk_start) - walk_start
            last = iv.start + min(hi, int(ends[j])) - walk_start
            if (first, last) != (iv.start, iv.end):
                steps[pos] = Interval(iv.chunk, first, last)
        streams = None
        if self.shuffle:
            starts = np.fromiter((s.start for s in steps), dtype=np.int64, count=len(steps))
            streams = ((self._keys[js] + 1) << _STREAM_SHIFT) | starts
        return WorkerPlan(steps, streams, self.seed, self.epoch)


class PiecePlan(WorkerPlan):
    """A worker's plan made of :class:`Piece` s: its share of an interrupted epoch's rest."""

    def __init__(self, pieces: Sequence[Piece], seed: int, epoch: int) -> None:
        self._pieces = list(pieces)
        # Only .chunk and .size of the steps are read outside order(): the bounds are nominal.
        steps = [Interval(p.chunk, p.start + p.lo, p.start + p.hi) for p in self._pieces]
        super().__init__(steps, None, seed, epoch)

    def order(self, k: int) -> IntArray:
        """Return the item indices (within the chunk) of step ``k``, in yield order."""
        return self._pieces[k].items(self._seed, self._epoch)

    def _piece(self, k: int) -> Piece:
        return self._pieces[k]


def remaining(plan: EpochPlan | ResumePlan, counts: Sequence[Sequence[int]]) -> list[Piece]:
    """Return the samples of ``plan`` not consumed when worker ``(r, w)`` had produced ``counts[r][w]``.

    In the plan's global walk order (rank by rank, worker by worker), which keeps every
    worker's chunk locality.
    """
    topo = plan.topology
    if len(counts) != topo.world_size or any(len(row) != topo.num_workers for row in counts):
        raise ValueError(f"counts must be {topo.world_size} x {topo.num_workers}, got {counts!r:.200}")
    out: list[Piece] = []
    for r in range(topo.world_size):
        for w in range(topo.num_workers):
            wp = plan.global_worker(r, w)
            out.extend(wp.pieces(min(_check_int("counts", counts[r][w], 0), wp.length)))
    return out


class ResumePlan(_DealtPlan):
    """The rest of an interrupted epoch (a list of :class:`Piece` s) dealt to a new topology.

    Budgets follow :func:`worker_budgets` over the remaining count; each (rank, worker) takes
    the next contiguous run of the remaining walk. Same interface as :class:`EpochPlan` for
    its users (``worker``, ``global_worker``, ``worker_lengths``, ``rank_length``).
    """

    def __init__(
        self,
        pieces: Sequence[Piece],
        topology: Topology,
        *,
        batch_size: int = 1,
        drop_last: bool = False,
        seed: int = 42,
        epoch: int = 1,
    ) -> None:
        self.topology = topology
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.drop_last = _check_bool("drop_last", drop_last)
        self.seed = seed
        self.epoch = epoch
        self.pieces = [p for p in pieces if p.size]
        self._deal(np.fromiter((p.size for p in self.pieces), dtype=np.int64, count=len(self.pieces)))

    def __repr__(self) -> str:
        return f"ResumePlan(items={self.num_items}, pieces={len(self.pieces)}, {self.topology})"

    def worker(self, worker_id: int) -> PiecePlan:
        """Return the plan of worker ``worker_id`` of this rank."""
        return self.global_worker(self.topology.rank, worker_id)

    def global_worker(self, rank: int, worker_id: int) -> PiecePlan:
        """Return the plan of worker ``worker_id`` of rank ``rank``."""
        lo, hi, j = self._span(rank, worker_id)
        out: list[Piece] = []
        while lo < hi:
            p = self.pieces[j]
            walk_start = int(self._ends[j]) - p.size
            take = min(hi, int(self._ends[j])) - lo
            first = p.lo + lo - walk_start
            out.append(Piece(p.chunk, p.start, p.end, p.stream, first, first + take))
            lo += take
            j += 1
        return PiecePlan(out, self.seed, self.epoch)


def samples_per_worker(
    num_samples_yielded: int,
    num_workers: int,
    batch_size: int,
    worker_lengths: Sequence[int] | None = None,
    *,
    count_short_batches_as_full: bool = False,
) -> list[int]:
    """Return how many samples each worker had produced when the loader had yielded a count.

    The model is torch's ``DataLoader`` over an ``IterableDataset`` (in-order, the default):
    index requests go to workers round-robin and each batch comes whole from one worker, so
    batch ``j`` of worker ``w`` is yielded in round ``j``, rounds in worker order. A worker
    whose plan is exhausted (after ``ceil(length / batch_size)`` batches, the last possibly
    short) answers ``StopIteration`` and torch skips it from then on; the others keep their
    round-robin order. Without ``worker_lengths`` every worker is taken as never exhausted,
    which is LitData's ``_replay_sampling``.

    Parameters
    ----------
    num_samples_yielded : int
        Samples the loader yielded on this rank this epoch.
    num_workers : int
        Loader workers (0 counts as 1).
    batch_size : int
        Loader batch size.
    worker_lengths : sequence of int, optional
        Each worker's epoch length (:attr:`EpochPlan.worker_lengths`).
    count_short_batches_as_full : bool
        ``num_samples_yielded`` counts ``batch_size`` for every batch, even a short one, as
        LitData's ``StreamingDataLoader`` counter does.

    Returns
    -------
    list of int
        Samples produced per worker; they sum to ``num_samples_yielded`` unless short batches
        were counted as full.
    """
    n = _check_int("num_samples_yielded", num_samples_yielded, 0)
    nw = max(1, _check_int("num_workers", num_workers, 0))
    bs = _check_int("batch_size", batch_size, 1)
    if worker_lengths is None:
        rounds, rem = divmod(n, nw * bs)
        return [rounds * bs + min(bs, max(0, rem - w * bs)) for w in range(nw)]

    lengths = np.array([_check_int("worker_lengths[i]", x, 0) for x in worker_lengths], dtype=np.int64)
    if len(lengths) != nw:
        raise ValueError(f"worker_lengths must have num_workers ({nw}) entries, got {len(lengths)}")
    batches = -(-lengths // bs)

    def counted(rounds: int) -> int:
        """Samples counted after ``rounds`` complete rounds."""
        if count_short_batches_as_full:
            return int((np.minimum(batches, rounds) * bs).sum())
        return int(np.minimum(lengths, rounds * bs).sum())

    max_rounds = int(batches.max(initial=0))
    if n > counted(max_rounds):
        raise ValueError(f"num_samples_yielded ({n}) exceeds the epoch's {counted(max_rounds)} samples")
    lo, hi = 0, max_rounds  # the last round count whose total is <= n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if counted(mid) <= n else (lo, mid - 1)
    out = np.minimum(lengths, lo * bs)
    rem = n - counted(lo)
    # The remainder is part of round `lo`, whose batches come in worker order.
    for w in range(nw):
        if rem <= 0:
            break
        if batches[w] > lo:
            size = min(bs, int(lengths[w]) - lo * bs)
            out[w] += min(size, rem)
            rem -= bs if count_short_batches_as_full else min(size, rem)
    return [int(x) for x in out]
