"""ParallelStreamingDataset: one sample from every dataset per step, optionally cycled.

A worker's step ``i`` takes the next sample of each dataset and yields the tuple (or
``transform(samples)`` / ``transform(samples, rngs)``). With ``length=None`` the epoch ends when
the worker's shortest dataset runs out. With an int ``length`` (or ``float("inf")``) every
dataset is cycled: dataset ``d``'s per-worker stream is its epochs 1, 2, 3 ... back to back, and
worker ``w`` takes ``L_w`` steps per epoch (``length`` spread over all workers of all ranks).
With ``resume=True`` epoch ``e`` starts where epoch ``e - 1`` ended (offset ``(e - 1) * L_w`` in
each stream), with ``resume=False`` every epoch starts at offset 0 and yields the same samples.

Positions are pure functions of ``(epoch, worker, step)``, so the loader resumes exactly. The
transform's generators are seeded, as LitData, from ``seed``, the worker and the datasets'
positions when the worker (re)starts: resuming from a state is deterministic, but a transform
that draws random numbers sees a generator reseeded at the resume point, not the continuation
of the interrupted run's (samples without random draws are identical either way).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import numpy as np

from aiolit.streaming._plan import Topology
from aiolit.streaming._wrapper import StreamingWrapper
from aiolit.streaming.dataset import _check_bool

__all__ = ["ParallelStreamingDataset"]


def _transform_nargs(transform: Callable[..., Any]) -> int:
    params = inspect.signature(transform).parameters.values()
    return sum(
        p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params
    )


class ParallelStreamingDataset(StreamingWrapper):
    """Stream several datasets side by side: each sample is a tuple with one sample of each.

    Parameters
    ----------
    datasets : list of datasets
        The datasets: StreamingDatasets, or any sized dataset (``range``, a list, a map-style
        ``Dataset``, an ``IterableDataset`` with ``__len__``). Map-style ones are split over
        ranks and workers like a StreamingDataset and resume exactly; iterable ones are
        iterated whole by every worker and resume by re-iterating and skipping, exact only if
        they yield the same sequence again (see docs/migrating-notes.md).
    length : int, float("inf") or None
        ``None``: stop when a dataset is exhausted. An int: yield ``length`` samples per epoch,
        cycling the datasets. ``float("inf")``: cycle forever.
    force_override_state_dict : bool
        Resume from a state taken with a different topology or dataset settings.
    transform : callable, optional
        ``transform(samples)`` or ``transform(samples, rngs)`` where ``rngs`` holds seeded
        ``"random"`` (``random.Random``), ``"numpy"`` (``numpy.random.Generator``) and
        ``"torch"`` (``torch.Generator``) generators.
    seed : int
        Seed of those generators.
    resume : bool
        When cycling: each epoch continues where the previous one ended (True) or restarts
        at the beginning (False). Ignored when ``length`` is None.
    reset_rngs : bool
        Seed the generators from the positions only (not the epoch or cycle counts), so
        with ``resume=False`` every epoch sees the same random numbers.
    """

    def __init__(
        self,
        datasets: list[Any],
        length: int | float | None = None,
        force_override_state_dict: bool = False,
        transform: Callable[..., Any] | None = None,
        seed: int = 42,
        resume: bool = True,
        reset_rngs: bool = False,
    ) -> None:
        super().__init__(datasets, force_override_state_dict)
        if length is not None and not (
            (isinstance(length, int) and not isinstance(length, bool) and length >= 0) or length == math.inf
        ):
            raise ValueError(f"length must be None, an int >= 0 or float('inf'), got {length!r}")
        nargs = None
        if transform is not None:
            if not callable(transform):
                raise ValueError(f"transform must be callable, got {transform!r}")
            nargs = _transform_nargs(transform)
            if nargs not in (1, 2):
                raise ValueError(f"transform must take 1 or 2 positional arguments, got {nargs}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        _check_bool("resume", resume)
        _check_bool("reset_rngs", reset_rngs)
        self._length = length
        self._transform = transform
        self._transform_nargs = nargs
        self.seed = seed
        self.resume = resume
        self._reset_rngs = reset_rngs
        # (epoch, per-worker stream offsets where it starts): set when an epoch stopped early.
        self._carry: tuple[int, list[int]] | None = None

    def is_cycling(self) -> bool:
        """Whether the datasets are cycled (``length`` is an int or infinite)."""
        return self._length is not None

    def is_infinite(self) -> bool:
        """Whether the dataset never ends."""
        return self._length == math.inf

    # -- lengths and positions ------------------------------------------------------------------

    def _worker_lengths(self, topology: Topology, epoch: int) -> list[int] | None:
        if self._length is None:
            return [min(col) for col in zip(*self._inner_lengths(topology), strict=True)]
        if self._length == math.inf:
            return None
        length = int(self._length)
        total = topology.total_workers
        return [
            length // total + (topology.global_worker_id(w) < length % total)
            for w in range(topology.num_workers)
        ]

    def __len__(self) -> int:
        topology, _ = self._topology()
        lengths = self._worker_lengths(topology, self.current_epoch)
        if lengths is None:
            raise TypeError("ParallelStreamingDataset(length=float('inf')) has no length")
        return sum(lengths)

    def get_len(self, num_workers: int, batch_size: int) -> int | None:
        """This rank's epoch length for a loader with ``num_workers``; ``None`` when infinite."""
        saved = (self.num_workers, self.batch_size)
        self.set_num_workers(num_workers)
        self.set_batch_size(batch_size)
        try:
            return None if self.is_infinite() else len(self)
        finally:
            self.set_num_workers(saved[0])
            self.set_batch_size(saved[1])

    def _carries(self) -> bool:
        """Whether an epoch continues where the previous one stopped (cycling with ``resume``)."""
        return self._length is not None and self.resume

    def _base(self, topology: Topology, worker_id: int, epoch: int) -> int:
        """Offset of the epoch's first step in each cycled stream.

        Epoch ``e`` starts where epoch ``e - 1`` stopped: after whole epochs that is
        ``(e - 1) * L_w``; after a partial one (a ``break``), the position recorded then
        (``self._carry``), plus ``L_w`` per whole epoch since.
        """
        if not self._carries():
            return 0
        carry = self._carry
        if carry is not None and carry[0] <= epoch and len(carry[1]) == topology.num_workers:
            first, offsets = carry
        else:
            first, offsets = 1, [0] * topology.num_workers
        if self._length == math.inf:
            return int(offsets[worker_id])  # an infinite epoch never ends whole
        lengths = self._worker_lengths(topology, epoch)
        assert lengths is not None
        return int(offsets[worker_id]) + (epoch - first) * lengths[worker_id]

    def _stopped(self, topology: Topology, epoch: int, counts: Sequence[int], next_epoch: int) -> None:
        """Record that ``epoch`` stopped after ``counts[w]`` samples of each worker.

        The stream of ``next_epoch`` then starts right there (LitData's ``resume=True``).
        """
        if not self._carries():
            return
        offsets = [self._base(topology, w, epoch) + int(c) for w, c in enumerate(counts)]
        self._carry = (next_epoch, offsets)

    def _cycle_lengths(self, topology: Topology, worker_id: int) -> list[int]:
        lengths = [per[worker_id] for per in self._inner_lengths(topology)]
        for d, n in enumerate(lengths):
            if n == 0:
                raise ValueError(
                    f"ParallelStreamingDataset: dataset {d} gives worker {worker_id} no samples to "
                    "cycle; use fewer workers or a smaller batch size"
                )
        return lengths

    def _positions(
        self, topology: Topology, worker_id: int, epoch: int, count: int
    ) -> tuple[list[int], list[int] | None]:
        k = len(self._datasets)
        if self._length is None:
            return [count] * k, [0] * k
        offset = self._base(topology, worker_id, epoch) + count
        if offset == 0:
            return [0] * k, [0] * k
        lengths = self._cycle_lengths(topology, worker_id)
        return [offset % n for n in lengths], [offset // n for n in lengths]

    def _count_at(
        self, topology: Topology, worker_id: int, epoch: int, counts: list[int], cycles: list[int] | None
    ) -> int:
        if self._length is None or not counts:
            return counts[0] if counts else 0
        cyc = [int(c) for c in cycles] if cycles is not None else [0] * len(counts)
        n0 = self._cycle_lengths(topology, worker_id)[0]
        return cyc[0] * n0 + counts[0] - self._base(topology, worker_id, epoch)

    def _direct_count(self, epoch: int, counts: list[int], cycles: list[int] | None) -> int:
        topology, _ = self._topology()
        if topology.num_workers == 1:
            return self._count_at(topology, 0, epoch, counts, cycles)
        return counts[0]

    def state_dict(
        self, num_workers: int, batch_size: int, num_samples_yielded: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """``{str(i): dataset_i.state_dict(...)}`` plus ``num_cycles`` when cycling.

        Without ``num_samples_yielded`` the main process' own progress is used (exact resume
        with ``num_workers=0``); with workers use the loader's ``state_dict``.
        """
        if num_samples_yielded is not None or self._progress is None:
            return super().state_dict(num_workers, batch_size, num_samples_yielded)
        epoch, n = self._progress
        topology, worker_id = self._topology(iterating=True)
        counts, cycles = self._positions(topology, worker_id, epoch, n)
        out = self._dataset_states(counts, num_workers, batch_size)
        if self.is_cycling():
            out["num_cycles"] = cycles
        self._save_extra(out)
        return out

    def _save_extra(self, out: dict[str, Any]) -> None:
        carry = self._carry
        if carry is not None:
            out["aiolit_carry"] = [int(carry[0]), [int(x) for x in carry[1]]]

    def _load_extra(self, state: dict[str, Any]) -> None:
        carry = state.get("aiolit_carry")
        self._carry = None if carry is None else (int(carry[0]), [int(x) for x in carry[1]])

    # -- iteration ------------------------------------------------------------------------------

    def _rngs(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> dict[str, Any]:
        counts, cycles = self._positions(topology, worker_id, epoch, skip)
        state: tuple[int, ...] = (self.seed, topology.global_worker_id(worker_id), *counts)
        if not self._reset_rngs:
            state = (*state, epoch) if self._length is None else (*state, *(cycles or []))
        seed = int(hashlib.sha256(str(state).encode()).hexdigest(), 16) % (2**32 - 1)
        rngs: dict[str, Any] = {
            "random": random.Random(seed),  # data augmentation, not security
            "numpy": np.random.default_rng(seed),
        }
        if self._transform is not None and self._transform_nargs != 1:
            import torch  # only a transform that takes `rngs` sees it: nobody else pays the import

            rngs["torch"] = torch.Generator().manual_seed(seed)
        return rngs

    def _apply(self, samples: tuple[Any, ...], rngs: dict[str, Any]) -> Any:
        transform = self._transform
        if transform is None:
            return samples
        if self._transform_nargs == 1:
            return transform(samples)
        return transform(samples, rngs)

    def _inner_starts(
        self, topology: Topology, worker_id: int, epoch: int, skip: int
    ) -> tuple[list[int], list[int]]:
        """Each dataset's ``(inner epoch, samples to skip)`` at step ``skip``."""
        k = len(self._datasets)
        if self._length is None:
            return [epoch] * k, [skip] * k
        offset = self._base(topology, worker_id, epoch) + skip
        lengths = self._cycle_lengths(topology, worker_id)
        return [offset // n + 1 for n in lengths], [offset % n for n in lengths]

    def _steps(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> Iterator[int]:
        lengths = self._worker_lengths(topology, epoch)
        if lengths is None:
            return itertools.count(skip)
        return iter(range(skip, lengths[worker_id]))

    def _stream(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> Iterator[Any]:
        steps = self._steps(topology, worker_id, epoch, skip)
        epochs, offsets = self._inner_starts(topology, worker_id, epoch, skip)
        rngs = self._rngs(topology, worker_id, epoch, skip)
        cycling = self.is_cycling()
        datasets = self._datasets
        iters = [ds._iter_at((e, o)) for ds, e, o in zip(datasets, epochs, offsets, strict=True)]
        try:
            for _ in steps:
                samples = []
                for d, it in enumerate(iters):
                    try:
                        samples.append(next(it))
                    except StopIteration:
                        if not cycling:
                            return
                        epochs[d] += 1
                        iters[d] = it = datasets[d]._iter_at((epochs[d], 0))
                        samples.append(next(it))
                yield self._apply(tuple(samples), rngs)
        finally:
            for it in iters:
                it.close()  # type: ignore[attr-defined]

    async def _astream(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> AsyncIterator[Any]:
        steps = self._steps(topology, worker_id, epoch, skip)
        epochs, offsets = self._inner_starts(topology, worker_id, epoch, skip)
        rngs = self._rngs(topology, worker_id, epoch, skip)
        cycling = self.is_cycling()
        datasets = self._datasets
        iters = [ds._aiter_at((e, o)) for ds, e, o in zip(datasets, epochs, offsets, strict=True)]
        try:
            for _ in steps:
                samples = []
                for d in range(len(iters)):
                    try:
                        samples.append(await iters[d].__anext__())
                    except StopAsyncIteration:
                        if not cycling:
                            return
                        epochs[d] += 1
                        iters[d] = datasets[d]._aiter_at((epochs[d], 0))
                        samples.append(await iters[d].__anext__())
                yield self._apply(tuple(samples), rngs)
        finally:
            for it in iters:
                await it.aclose()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"ParallelStreamingDataset(datasets={len(self._datasets)}, length={self._length!r}, resume={self.resume})"
