"""What CombinedStreamingDataset and ParallelStreamingDataset share: setters, topology, resume.

A wrapper's stream in one loader worker is a pure function of ``(seed, epoch, topology,
worker)``: the inner datasets' worker plans are pure, and the wrapper's own choices (which
dataset next, where a cycle starts) are drawn from a generator seeded with the same numbers.
So, like a plain :class:`~aiolit.streaming.dataset.StreamingDataset`, a wrapper resumes from
nothing but the loader's batch count: every worker recomputes how many samples it had produced
(:func:`~aiolit.streaming._plan.samples_per_worker` over the wrapper's per-worker lengths),
rebuilds its stream and starts each inner dataset at its own position without decoding the
skipped samples. No per-sample bookkeeping travels from the workers to the loader.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aiolit._torch import worker_info
from aiolit.errors import StateDictError
from aiolit.streaming import _state
from aiolit.streaming._foreign import ForeignDataset
from aiolit.streaming._plan import Topology, samples_per_worker, worker_budgets
from aiolit.streaming.dataset import StreamingDataset, _check_bool

if TYPE_CHECKING:
    from torch.utils.data import IterableDataset as _IterableBase
else:
    from aiolit._torch import IterableBase as _IterableBase

__all__ = ["StreamingWrapper"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class StreamingWrapper(_IterableBase[Any]):
    """Base of the dataset wrappers (not public).

    Parameters
    ----------
    datasets : list of datasets
        The wrapped datasets (at least one): StreamingDatasets, or any sized map-style or
        iterable dataset (see :mod:`aiolit.streaming._foreign` for how those are split and resumed).
    force_override_state_dict : bool
        Resume from a state taken with a different loader topology or dataset settings.
    """

    def __init__(self, datasets: Sequence[Any], force_override_state_dict: bool) -> None:
        super().__init__()
        if isinstance(datasets, StreamingDataset) or not isinstance(datasets, Sequence) or not datasets:
            raise ValueError(f"datasets must be a non-empty list of datasets, got {datasets!r}")
        self._check_datasets(datasets)
        _check_bool("force_override_state_dict", force_override_state_dict)
        self._datasets: list[StreamingDataset | ForeignDataset] = [
            ds if isinstance(ds, StreamingDataset) else ForeignDataset(ds, i) for i, ds in enumerate(datasets)
        ]
        self._force_override_state_dict = force_override_state_dict
        self.current_epoch = 1
        self.num_workers = 0
        self.batch_size: int | list[int] = 1
        # Pending resume: {"epoch", "num_samples_yielded" (loader count), "num_workers", "batch_size"}.
        self._resume: dict[str, int] | None = None
        # Main-process progress (epoch, samples yielded) for state_dict() without a loader.
        self._progress: tuple[int, int] | None = None

    def _check_datasets(self, datasets: Sequence[Any]) -> None:
        """Refuse what cannot be wrapped (LitData's hook; subclasses may override it)."""
        for i, ds in enumerate(datasets):
            if isinstance(ds, StreamingWrapper):
                raise RuntimeError(
                    f"datasets[{i}] is a {type(ds).__name__}: wrappers cannot be nested; pass its datasets"
                )

    @property
    def datasets(self) -> list[Any]:
        """The wrapped datasets, as given."""
        return [ds.dataset if isinstance(ds, ForeignDataset) else ds for ds in self._datasets]

    # -- LitData setters ------------------------------------------------------------------------

    def set_epoch(self, current_epoch: int) -> None:
        """Set the epoch (ignored while a resume state is pending)."""
        if self._resume is None:
            self.current_epoch = int(current_epoch)
            for ds in self._datasets:
                ds.set_epoch(current_epoch)

    def set_shuffle(self, shuffle: bool) -> None:
        """Forward ``shuffle`` to every dataset."""
        for ds in self._datasets:
            ds.set_shuffle(shuffle)

    def set_drop_last(self, drop_last: bool) -> None:
        """Forward ``drop_last`` to every dataset."""
        for ds in self._datasets:
            ds.set_drop_last(drop_last)

    def set_batch_size(self, batch_size: int | Sequence[int]) -> None:
        """The batch size, or one per dataset (``per_stream`` batching uses them as run lengths)."""
        if isinstance(batch_size, Sequence):
            sizes = [_positive_int("batch_size", b) for b in batch_size]
            if len(sizes) != len(self._datasets):
                raise ValueError(f"batch_size: {len(sizes)} sizes given for {len(self._datasets)} datasets")
            self.batch_size = sizes
        else:
            sizes = [_positive_int("batch_size", batch_size)] * len(self._datasets)
            self.batch_size = sizes[0]
        for ds, b in zip(self._datasets, sizes, strict=True):
            ds.set_batch_size(b)

    def set_num_workers(self, num_workers: int) -> None:
        """Forward the loader's worker count to every dataset."""
        for ds in self._datasets:
            ds.set_num_workers(num_workers)
        self.num_workers = num_workers

    def capture_world(self) -> None:
        """Record the world size/rank (the loader calls it before starting its workers)."""
        for ds in self._datasets:
            ds.capture_world()

    def reset_state_dict(self) -> None:
        """Forget a loaded resume state."""
        self._resume = None
        for ds in self._datasets:
            ds.reset_state_dict()

    # -- topology -------------------------------------------------------------------------------

    def _loader_batch_size(self) -> int:
        bs = self.batch_size
        return bs if isinstance(bs, int) else bs[0]

    def _topology(self, iterating: bool = False) -> tuple[Topology, int]:
        return self._datasets[0]._topology(iterating)

    def _inner_lengths(self, topology: Topology, epoch: int | None = None) -> list[list[int]]:
        """``[d][w]``: samples dataset ``d`` gives worker ``w`` of this rank per epoch.

        With ``epoch``: of that epoch, which is the rest of an interrupted one for a dataset
        resumed elastically.
        """
        out = []
        for ds in self._datasets:
            if isinstance(ds, ForeignDataset):
                out.append(ds.worker_lengths(topology))
                continue
            if epoch is not None and ds._elastic is not None and ds._elastic[0] == epoch:
                out.append(ds._plan(topology, epoch).worker_lengths)
                continue
            budgets = worker_budgets(
                ds._starts[-1],
                topology.world_size,
                topology.num_workers,
                batch_size=ds.batch_size,
                drop_last=ds._drop_last(topology),
            )
            out.append([int(b) for b in budgets[topology.rank]])
        return out

    # -- to implement ---------------------------------------------------------------------------

    def _worker_lengths(self, topology: Topology, epoch: int) -> list[int] | None:
        """Samples each worker of this rank yields in ``epoch``; ``None``: infinite."""
        raise NotImplementedError

    def _stream(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> Iterator[Any]:
        """Worker ``worker_id``'s samples of ``epoch`` after its first ``skip``."""
        raise NotImplementedError

    def _astream(self, topology: Topology, worker_id: int, epoch: int, skip: int) -> AsyncIterator[Any]:
        """:meth:`_stream` for ``async for``."""
        raise NotImplementedError

    def _positions(
        self, topology: Topology, worker_id: int, epoch: int, count: int
    ) -> tuple[list[int], list[int] | None]:
        """LitData's per-dataset ``num_samples_yielded`` (and ``num_cycles``) of a worker at ``count``."""
        raise NotImplementedError

    def _count_at(
        self, topology: Topology, worker_id: int, epoch: int, counts: list[int], cycles: list[int] | None
    ) -> int:
        """Inverse of :meth:`_positions`: the worker's sample count."""
        raise NotImplementedError

    def _stopped(self, topology: Topology, epoch: int, counts: Sequence[int], next_epoch: int) -> None:
        """``epoch`` stopped after ``counts[w]`` samples of each worker (a ``break``)."""

    def _save_extra(self, out: dict[str, Any]) -> None:
        """Add this wrapper's own resume keys to a state."""

    def _load_extra(self, state: dict[str, Any]) -> None:
        """Read what :meth:`_save_extra` added."""

    def _counts_after(self, topology: Topology, n: int, num_workers: int, batch_size: int, epoch: int) -> Any:
        """What :meth:`_resume_counts` gives for a loader that yielded ``n`` samples of ``epoch``."""
        saved = self._resume
        self._resume = {
            "epoch": epoch,
            "num_samples_yielded": n,
            "num_workers": num_workers,
            "batch_size": batch_size,
        }
        try:
            return self._resume_counts(topology)[1]
        finally:
            self._resume = saved

    def _loader_stopped(self, n: int, num_workers: int, batch_size: int, epoch: int) -> None:
        """A loader pass of ``epoch`` ended after ``n`` samples (counted as whole batches)."""
        topology, _ = self._topology()
        counts = self._counts_after(topology, n, num_workers, batch_size, epoch)
        self._stopped(topology, epoch, counts, epoch + 1)
        self._progress = None

    # -- iteration ------------------------------------------------------------------------------

    def _start(self) -> tuple[Topology, int, int, int]:
        """``(topology, worker_id, epoch, samples to skip)`` for a new pass."""
        topology, worker_id = self._topology(iterating=True)
        progress = self._progress
        if progress is not None and self._resume is None and progress[0] == self.current_epoch:
            # The previous pass in this process stopped early: a continuing wrapper goes on
            # from there (the others restart the epoch).
            self._stopped(topology, progress[0], [progress[1]], progress[0])
            self._progress = None
        if self._resume is None:
            return topology, worker_id, self.current_epoch, 0
        epoch, counts = self._resume_counts(topology)
        return topology, worker_id, epoch, counts[worker_id]

    # Whether a topology change resumes elastically (else it is a StateDictError).
    _elastic_resume = False

    def _settle_resume(self) -> int | None:
        """Fit a pending resume state to the loader's topology; return the count to continue from."""
        if self._resume is None:
            return None
        self._settle(self._topology()[0])
        return int(self._resume["num_samples_yielded"])

    @contextmanager
    def _batch_of_state(self, batch_size: int) -> Iterator[None]:
        """Plan with the batch size a state was taken with (run lengths, per_stream counts)."""
        if batch_size == self._loader_batch_size():
            yield
            return
        saved_bs = self.batch_size
        saved_batch = self.__dict__.get("_loader_batch")
        self.set_batch_size(batch_size)
        if saved_batch is not None:
            # A loader taking per_stream runs as batches: its counts are in the state's batches.
            self.__dict__["_loader_batch"] = (batch_size, *saved_batch[1:])
        try:
            yield
        finally:
            self.set_batch_size(saved_bs)
            if saved_batch is not None:
                self.__dict__["_loader_batch"] = saved_batch

    def _settle(self, topology: Topology) -> None:
        """A changed topology: deal the rest of the epoch of every dataset to this one.

        Each dataset's consumed samples follow from the wrapper's positions on the state's
        topology (every rank yielded the same number of batches); each dataset then resumes
        elastically (``StreamingDataset`` semantics) and the wrapper draws afresh over the
        rests, as from the start of an epoch.
        """
        state = self._resume
        assert state is not None
        world = int(state.get("world_size", topology.world_size))
        nw, bs = max(1, state["num_workers"]), state["batch_size"]
        foreign = any(isinstance(ds, ForeignDataset) for ds in self._datasets)
        if (
            not self._elastic_resume
            or foreign
            or (world, nw, bs)
            == (
                topology.world_size,
                topology.num_workers,
                self._loader_batch_size(),
            )
        ):
            return
        epoch, n = state["epoch"], state["num_samples_yielded"]
        with self._batch_of_state(bs):
            per_dataset: list[list[list[int]]] = [[] for _ in self._datasets]
            for r in range(world):
                old = Topology(world, r, nw)
                lengths = self._worker_lengths(old, epoch)
                assert lengths is not None
                cap = sum(-(-x // bs) for x in lengths) * bs
                counts = samples_per_worker(min(n, cap), nw, bs, lengths, count_short_batches_as_full=True)
                rows = [
                    self._positions(old, w, epoch, min(c, x))[0]
                    for w, (c, x) in enumerate(zip(counts, lengths, strict=True))
                ]
                for d in range(len(self._datasets)):
                    per_dataset[d].append([row[d] for row in rows])
            drops = [ds._drop_last(Topology(world, 0, nw)) for ds in self._datasets]
        for ds, counts_d, drop in zip(self._datasets, per_dataset, drops, strict=True):
            assert isinstance(ds, StreamingDataset)
            segments = list(ds._elastic[1]) if ds._elastic is not None and ds._elastic[0] == epoch else []
            segments.append(
                {
                    "world_size": world,
                    "num_workers": nw,
                    "batch_size": bs,
                    "drop_last": drop,
                    "counts": counts_d,
                }
            )
            ds._elastic = (epoch, segments)
        self._resume = {
            "epoch": epoch,
            "num_samples_yielded": 0,
            "num_workers": topology.num_workers,
            "batch_size": self._loader_batch_size(),
            "world_size": topology.world_size,
        }
        self.__dict__.pop("_schedules", None)

    def _resume_counts(self, topology: Topology) -> tuple[int, list[int]]:
        assert self._resume is not None
        self._settle(topology)
        state = self._resume
        bs = self._loader_batch_size()
        checks = {
            "num_workers": (max(1, state["num_workers"]), topology.num_workers),
            "batch_size": (state["batch_size"], bs),
        }
        bad = [k for k, (a, b) in checks.items() if a != b]
        if bad and not self._force_override_state_dict:
            detail = ", ".join(f"{k}: state has {checks[k][0]}, loader has {checks[k][1]}" for k in bad)
            raise StateDictError(f"state_dict was taken with a different topology ({detail})")
        epoch = state["epoch"]
        n = state["num_samples_yielded"]
        nw = topology.num_workers
        lengths = self._worker_lengths(topology, epoch)
        if lengths is None:
            done = n // bs
            return epoch, [(done // nw + (w < done % nw)) * bs for w in range(nw)]
        cap = sum(-(-x // bs) for x in lengths) * bs
        counts = samples_per_worker(min(n, cap), nw, bs, lengths, count_short_batches_as_full=True)
        return epoch, [min(c, x) for c, x in zip(counts, lengths, strict=True)]

    def _finish_epoch(self) -> None:
        self._resume = None
        self._progress = None
        self.current_epoch += 1

    def __iter__(self) -> Iterator[Any]:
        topology, worker_id, epoch, skip = self._start()
        main = worker_info() is None
        n = skip
        for item in self._stream(topology, worker_id, epoch, skip):
            if main:
                n += 1
                self._progress = (epoch, n)
            yield item
        self._finish_epoch()

    async def __aiter__(self) -> AsyncIterator[Any]:
        """Iterate on the caller's running event loop."""
        topology, worker_id, epoch, skip = self._start()
        n = skip
        async for item in self._astream(topology, worker_id, epoch, skip):
            n += 1
            self._progress = (epoch, n)
            yield item
        self._finish_epoch()

    async def aclose(self) -> None:
        """Close every inner dataset (:meth:`StreamingDataset.aclose`)."""
        for ds in self._datasets:
            await ds.aclose()

    def close(self) -> None:
        """Close every inner dataset, from sync code."""
        for ds in self._datasets:
            ds.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state ----------------------------------------------------------------------------------

    def _dataset_states(self, totals: Sequence[int], num_workers: int, batch_size: int) -> dict[str, Any]:
        return {
            str(i): ds.state_dict(int(t), num_workers, batch_size)
            for i, (ds, t) in enumerate(zip(self._datasets, totals, strict=True))
        }

    def state_dict(
        self, num_workers: int, batch_size: int, num_samples_yielded: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """``{str(i): dataset_i.state_dict(...)}`` as LitData.

        Parameters
        ----------
        num_workers, batch_size : int
            The loader's.
        num_samples_yielded : list of int, optional
            Samples taken from each dataset; default: this process' progress (iteration in the
            main process, ``num_workers=0``).
        """
        if num_samples_yielded is None:
            counts = [0] * len(self._datasets)
            if self._progress is not None:
                epoch, n = self._progress
                topology, worker_id = self._topology(iterating=True)
                counts, _ = self._positions(topology, worker_id, epoch, n)
            num_samples_yielded = counts
        if len(num_samples_yielded) != len(self._datasets):
            raise ValueError("num_samples_yielded needs one count per dataset")
        return self._dataset_states(num_samples_yielded, num_workers, batch_size)

    def _validate(self, state: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(state, dict):
            raise StateDictError(f"state_dict must be a dict, got {type(state).__name__}")
        missing = [str(i) for i in range(len(self._datasets)) if str(i) not in state]
        if missing:
            raise StateDictError(
                f"state_dict has no entry for datasets {missing}; was it taken from "
                f"a {type(self).__name__} of {len(self._datasets)} datasets?"
            )
        for i, ds in enumerate(self._datasets):
            if isinstance(ds, ForeignDataset):
                ds.validate(state[str(i)])
                continue
            saved = ds.current_epoch
            if _state.validate(ds, state[str(i)]) is None:
                ds.current_epoch = saved
                raise StateDictError(
                    f"state_dict of dataset {i} does not match it (another dataset or other settings); "
                    "pass force_override_state_dict=True to resume anyway"
                )
        return state["0"]  # type: ignore[no-any-return]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume at the next iteration from :meth:`state_dict` (validated, see StateDictError).

        The position is exact with one worker (or ``num_workers=0``). With several workers it
        assumes the per-dataset counts came from whole batches; the loader's own
        ``load_state_dict`` carries the per-worker counts and is always exact.
        """
        if not state_dict:
            return
        first = self._validate(state_dict)
        self._load_extra(state_dict)
        epoch = int(first["current_epoch"])
        counts = [int(state_dict[str(i)]["num_samples_yielded"]) for i in range(len(self._datasets))]
        total = self._direct_count(epoch, counts, state_dict.get("num_cycles"))
        self._set_resume(
            epoch, total, int(first["num_workers"]), int(first["batch_size"]), first.get("world_size")
        )

    def _direct_count(self, epoch: int, counts: list[int], cycles: list[int] | None) -> int:
        """The loader count a direct ``load_state_dict`` resumes from (default: the sum)."""
        return sum(counts)

    def _set_resume(
        self, epoch: int, n: int, num_workers: int, batch_size: int, world_size: int | None = None
    ) -> None:
        self._resume = {
            "epoch": epoch,
            "num_samples_yielded": n,
            "num_workers": num_workers,
            "batch_size": batch_size,
        }
        if world_size is not None:
            self._resume["world_size"] = world_size
        self.current_epoch = epoch
        for ds in self._datasets:
            ds.current_epoch = epoch

    # -- the loader's side ----------------------------------------------------------------------

    def _loader_state(self, n: int, num_workers: int, batch_size: int, epoch: int) -> dict[str, Any]:
        """LitData's loader state pieces after the loader yielded ``n`` (batches x batch_size)."""
        topology, _ = self._topology()
        counts = self._counts_after(topology, n, num_workers, batch_size, epoch)
        yielded: dict[int, list[int]] = {}
        cycles: dict[int, list[int]] = {}
        totals = [0] * len(self._datasets)
        for w, c in enumerate(counts):
            per, cyc = self._positions(topology, w, epoch, c)
            yielded[w] = per
            if cyc is not None:
                cycles[w] = cyc
            totals = [a + b for a, b in zip(totals, per, strict=True)]
        out: dict[str, Any] = {
            "dataset": self._dataset_states(totals, num_workers, batch_size),
            "num_samples_yielded": yielded,
        }
        if cycles:
            out["num_cycles"] = cycles
        out["aiolit_rank"] = topology.rank
        self._save_extra(out)
        return out

    def _load_loader_state(self, obj: dict[str, Any]) -> int:
        """Load a loader state; return the loader's sample count (batches x batch_size)."""
        first = self._validate(obj["dataset"])
        self._load_extra(obj)
        epoch = int(obj.get("current_epoch", first["current_epoch"]))
        nw = int(first["num_workers"])
        bs = int(first["batch_size"])
        per_worker = obj["num_samples_yielded"]
        if isinstance(per_worker, int):
            n = per_worker
        else:
            if not isinstance(per_worker, dict):
                raise StateDictError("num_samples_yielded must be a dict of worker -> per-dataset counts")
            here, _ = self._topology()
            # The counts are those of the rank and topology that took the state.
            world = int(first.get("world_size") or here.world_size)
            rank = int(obj.get("aiolit_rank", here.rank))
            topology = Topology(world, min(rank, world - 1), max(1, nw))
            cycles = obj.get("num_cycles") or {}
            n = 0
            with self._batch_of_state(bs):
                for key, counts in per_worker.items():
                    w = int(key)
                    cyc = cycles.get(key, cycles.get(w))
                    c = self._count_at(topology, w, epoch, [int(x) for x in counts], cyc)
                    n += -(-c // bs) * bs
        self._set_resume(epoch, n, nw, bs, first.get("world_size"))
        return n

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_schedules", None)
        return state
