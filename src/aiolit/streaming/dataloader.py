"""StreamingDataLoader: a torch DataLoader that knows its StreamingDataset's plan.

It forwards ``shuffle``/``drop_last``/``batch_size``/``num_workers`` to the dataset (the epoch is
partitioned by the dataset, not by a sampler), sets the epoch on every ``iter()``, and keeps the
sample count that :meth:`state_dict` needs. Resuming is exact: the dataset recomputes every
worker's position from the pure plan, and the worker round-robin restarts at the worker whose
batch would have come next, so the resumed loader yields exactly what the uninterrupted epoch
would have yielded from that point on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import (
    _BaseDataLoaderIter,
    _MultiProcessingDataLoaderIter,
    _SingleProcessDataLoaderIter,
)

from aiolit import _trace
from aiolit.errors import StateDictError
from aiolit.streaming._bundle import Bundle, Unbundle
from aiolit.streaming._wrapper import StreamingWrapper
from aiolit.streaming.dataset import StreamingDataset

__all__ = ["StreamingDataLoader"]


def batch_schedule(worker_lengths: list[int], batch_size: int) -> tuple[np.ndarray[Any, Any], int]:
    """Batches per worker and the epoch's total under torch's in-order round-robin."""
    batches = np.array([-(-n // batch_size) for n in worker_lengths], dtype=np.int64)
    return batches, int(batches.sum())


def worker_of_batch(k: int, batches: np.ndarray[Any, Any]) -> int:
    """The worker that yields batch ``k`` (0-based) when round ``r`` visits the workers with > r batches."""
    max_rounds = int(batches.max(initial=0))
    per_round = np.array([(batches > r).sum() for r in range(max_rounds)], dtype=np.int64)
    ends = np.cumsum(per_round)
    r = int(np.searchsorted(ends, k, side="right"))
    offset = k - (int(ends[r - 1]) if r else 0)
    return int(np.flatnonzero(batches > r)[offset])


def _cannot_tell() -> bool:
    return True  # a torch without the check below: assume recording, take torch's iterator


# Whether torch's profiler is recording (a C function: ~0.07 µs a call).
_profiler_enabled: Callable[[], bool] = (
    getattr(getattr(torch._C, "_autograd", None), "_profiler_enabled", None) or _cannot_tell
)


def _as_is(batch: Any) -> Any:
    """The collate function of pre-batched token datasets: batches are already built.

    Workers may yield numpy arrays (cheaper to send than shared-memory tensors); the loader turns
    them into tensors in the main process, where ``default_convert`` would have in the worker.
    """
    return batch


# -- tracing ----------------------------------------------------------------------------------------

# How long the main process may wait for the workers' trace files (at the N-th batch, and again at
# the end of the epoch for the files still missing).
_PROFILE_WAIT = 1.0

# This DataLoader worker's profiling state: {"left": batches to trace, "owned": tracing was off}.
_worker_profile: dict[str, Any] = {}


class _TraceWorkerInit:
    """``worker_init_fn`` of a profiled epoch: trace this worker into ``directory``.

    ``limits[worker_id]``: how many of the profiled batches this worker produces; after the last
    one it writes its file (and stops tracing if it was off before).
    """

    def __init__(self, directory: str, limits: list[int], inner: Callable[[int], None] | None) -> None:
        self.directory, self.limits, self.inner = directory, limits, inner

    def __call__(self, worker_id: int) -> None:
        owned = not _trace.on or _trace.directory() is None
        if owned:
            _trace.enable(self.directory)
        _trace.set_process_name(f"DataLoader worker {worker_id}")
        _trace.instant("worker start", "dataloader", worker=worker_id)
        _worker_profile.update(left=self.limits[worker_id], owned=owned)
        if self.inner is not None:
            self.inner(worker_id)


class _TraceCollate:
    """A worker's ``collate_fn`` with a ``collate`` span per batch (and the profile's cut-off)."""

    def __init__(self, inner: Callable[[Any], Any]) -> None:
        self.inner = inner

    def __call__(self, data: Any) -> Any:
        if not _trace.on:
            return self.inner(data)
        started = _trace.now()
        out = self.inner(data)
        _trace.complete("collate", "dataloader", started, _trace.now())
        left = _worker_profile.get("left")
        if left is not None:
            _worker_profile["left"] = left = left - (len(data.rows) if type(data) is Bundle else 1)
            if left <= 0:
                # The last profiled batch of this worker: the file must exist before the main
                # process receives this batch.
                _trace.flush()
                if _worker_profile["owned"]:
                    _trace.disable()
                _worker_profile.clear()
        return out


class _Profile:
    """One ``profile_batches`` session: batch waits in the main process + the workers' traces.

    Writes ``{out_dir}/result.json`` once the main process has yielded ``n`` batches and every
    worker's file is there (waiting at most ``_PROFILE_WAIT``), else again at the end of the
    epoch with what arrived by then.
    """

    def __init__(self, n: int, out_dir: str) -> None:
        self.n = n
        self.out = os.path.join(out_dir, "result.json")
        self.owned = not _trace.on
        shared = _trace.directory() if _trace.on else None
        self.private = shared is None
        self.directory = shared if shared is not None else tempfile.mkdtemp(prefix="aiolit-profile-")
        if self.owned:
            _trace.enable()  # main process: in memory (fork workers inherit the switch)
        self.mark = _trace.mark()
        self.since = _trace.now()
        self.wall = time.time()
        self.until: float | None = None
        self.main_events: list[dict[str, Any]] = []
        self.batches = 0
        self.pids: list[int] = []
        self.done = False

    def bind(self, iterator: Any) -> None:
        self.pids = [int(w.pid) for w in getattr(iterator, "_workers", []) if w.pid is not None]

    def batch(self, started: float, ended: float) -> None:
        _trace.complete("batch wait", "dataloader", started, ended, {"batch": self.batches})
        self.batches += 1
        if self.batches == self.n:
            self.stop()
            self.merge(final=False)

    def stop(self) -> None:
        if self.until is None:
            self.until = _trace.now()
            self.main_events = _trace.events(self.mark)
            if self.owned:
                _trace.disable()
                _trace.truncate(self.mark)

    def _ready(self) -> list[str]:
        missing = []
        for pid in self.pids:
            path = _trace.file_of(pid, self.directory)
            assert path is not None
            try:
                # A shared directory may hold this worker's file of an earlier pass.
                if self.private or os.stat(path).st_mtime >= self.wall - 0.05:
                    continue
            except FileNotFoundError:
                pass
            missing.append(path)
        return missing

    def merge(self, *, final: bool) -> None:
        """Write ``result.json``; ``final``: whatever the workers have written by now."""
        if self.done:
            return
        self.stop()
        deadline = time.monotonic() + _PROFILE_WAIT
        while (missing := self._ready()) and time.monotonic() < deadline:
            time.sleep(0.01)
        files = [p for p in (_trace.file_of(pid, self.directory) for pid in self.pids) if p is not None]
        os.makedirs(os.path.dirname(self.out), exist_ok=True)
        _trace.merge(files, self.out, extra=self.main_events, since=self.since, until=self.until)
        if missing and not final:
            return  # written as it is; the end of the epoch writes it again
        self.done = True
        if self.private:
            shutil.rmtree(self.directory, ignore_errors=True)


class _ResumingIter(_MultiProcessingDataLoaderIter):
    """torch's worker iterator, with the round-robin starting at ``first_worker``."""

    def __init__(self, loader: DataLoader[Any], first_worker: int) -> None:
        self._aiolit_skip = first_worker
        self._aiolit_worker = -1  # the worker of the batch just returned
        super().__init__(loader)

    def _process_data(self, data: Any, worker_idx: int) -> Any:
        self._aiolit_worker = worker_idx
        return super()._process_data(data, worker_idx)  # type: ignore[no-untyped-call]

    def _try_put_index(self) -> None:
        if self._aiolit_skip:
            # _reset() has just rebuilt the cycle at worker 0: advance it once.
            for _ in range(self._aiolit_skip):
                next(self._worker_queue_idx_cycle)
            self._aiolit_skip = 0
        super()._try_put_index()


class StreamingDataLoader(DataLoader[Any]):
    """A ``torch.utils.data.DataLoader`` for :class:`StreamingDataset` with exact resume.

    Parameters
    ----------
    dataset : StreamingDataset, CombinedStreamingDataset or ParallelStreamingDataset
        The dataset (it partitions the epoch itself).
    batch_size, num_workers, collate_fn, pin_memory, persistent_workers, prefetch_factor
        As torch's ``DataLoader``.
    shuffle, drop_last : bool, optional
        Forwarded to the dataset (not to a sampler).
    profile_batches : bool or int
        Record a Chrome trace (``result.json``) of the first N batch fetches (True: 50).
    profile_dir : str, optional
        Where ``result.json`` goes (default: the working directory).
    **kwargs
        Any other ``DataLoader`` argument (``multiprocessing_context``, ``timeout`` ...).
    """

    def __init__(
        self,
        dataset: StreamingDataset | StreamingWrapper,
        batch_size: int = 1,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        profile_batches: bool | int = False,
        profile_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(dataset, StreamingDataset | StreamingWrapper):
            raise RuntimeError(
                "StreamingDataLoader only supports StreamingDataset, CombinedStreamingDataset and "
                f"ParallelStreamingDataset, got {type(dataset).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if isinstance(profile_batches, bool):
            profile_n = 50 if profile_batches else 0
        elif isinstance(profile_batches, int) and profile_batches >= 0:
            profile_n = profile_batches
        else:
            raise ValueError(f"profile_batches must be a bool or an int >= 0, got {profile_batches!r}")
        if profile_dir is not None and not isinstance(profile_dir, str | os.PathLike):
            raise ValueError(f"profile_dir must be a path, got {profile_dir!r}")
        if kwargs.pop("sampler", None) is not None or kwargs.pop("batch_sampler", None) is not None:
            raise ValueError("sampler/batch_sampler: a StreamingDataset partitions itself; do not pass one")
        if shuffle is not None:
            dataset.set_shuffle(shuffle)
        if drop_last is not None:
            dataset.set_drop_last(drop_last)
        dataset.set_batch_size(batch_size)
        dataset.set_num_workers(num_workers)
        if num_workers == 0:
            prefetch_factor = None
        # Token blocks with the default collate: the dataset yields whole batches, each copied
        # into one tensor, and torch's automatic batching is off (batch_size=None below).
        self._dataset_batches = (
            collate_fn is None and isinstance(dataset, StreamingDataset) and dataset._can_batch_tokens()
        )
        # CombinedStreamingDataset(batching_method="per_stream"): workers yield one collated
        # batch per run, so no batch mixes datasets (a run cut short gives a short batch).
        self._run_batches = getattr(dataset, "_batching_method", None) == "per_stream"
        self._run_collate = collate_fn
        super().__init__(
            dataset,
            batch_size=None if self._dataset_batches or self._run_batches else batch_size,
            num_workers=num_workers,
            collate_fn=_as_is if self._dataset_batches or self._run_batches else collate_fn,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            **kwargs,
        )
        if self._dataset_batches or self._run_batches:
            # What the caller asked for (torch's setter refuses it after __init__).
            object.__setattr__(self, "batch_size", batch_size)
        self.current_epoch = 0
        self._num_samples_yielded = 0
        self._restore = False
        self._first_worker = 0
        # An iter() that started an epoch and has not reached its end (a break): persistent
        # workers then hold a stale position and are restarted at the next iter().
        self._epoch_open = False
        # Batches each worker delivered this epoch, counted when in_order=False (then the
        # round-robin does not tell which worker a batch came from).
        self._worker_batches: list[int] = [0] * max(1, num_workers)
        self._profile_n = profile_n
        self._profile_dir = os.fspath(profile_dir) if profile_dir is not None else None
        self._trace: list[dict[str, Any]] = []  # batch waits of a profile without workers
        self._profiled = False

    @property
    def _streaming(self) -> StreamingDataset | StreamingWrapper:
        ds = self.dataset
        assert isinstance(ds, StreamingDataset | StreamingWrapper)
        return ds

    def _unordered(self) -> bool:
        """Whether batches come in completion order (``in_order=False`` with workers)."""
        return bool(self.num_workers) and not getattr(self, "in_order", True)

    @contextmanager
    def _runs_as_batches(self) -> Iterator[None]:
        """While the loader plans, saves or starts a per_stream epoch: batches are runs."""
        ds = self._streaming
        if not self._run_batches:
            yield
            return
        from torch.utils.data import default_collate

        ds._loader_batch = (self.batch_size or 1, self._run_collate or default_collate)  # type: ignore[union-attr]
        try:
            yield
        finally:
            ds._loader_batch = None  # type: ignore[union-attr]

    def _worker_lengths(self) -> list[int] | None:
        ds = self._streaming
        topology, _ = ds._topology()
        if isinstance(ds, StreamingWrapper):
            # Weighted draws depend on the epoch; before the first iter() it is epoch 1.
            with self._runs_as_batches():
                return ds._worker_lengths(topology, max(1, self.current_epoch))
        return ds._plan(topology, self.current_epoch).worker_lengths

    def _schedule(self) -> tuple[np.ndarray[Any, Any], int]:
        lengths = self._worker_lengths()
        if lengths is None:
            raise TypeError("the dataset is infinite: its loader has no length")
        return batch_schedule(lengths, self.batch_size or 1)

    def _worker_of_batch(self, k: int) -> int:
        """The worker yielding batch ``k`` (round-robin forever for an infinite dataset)."""
        if self._worker_lengths() is None:
            return k % max(1, self.num_workers)
        return worker_of_batch(k, self._schedule()[0])

    def __len__(self) -> int:
        return self._schedule()[1]

    def _get_iterator(self) -> _BaseDataLoaderIter:
        if self.num_workers == 0:
            return super()._get_iterator()
        self.check_worker_number_rationality()
        return _ResumingIter(self, self._first_worker)

    def _settle(self) -> None:
        """Fit a loaded state to this loader's topology (elastic resume when it changed)."""
        with self._runs_as_batches():
            settled = self._streaming._settle_resume()
        if settled is not None and settled != self._num_samples_yielded:
            self._num_samples_yielded = settled
            self._worker_batches = [0] * max(1, self.num_workers)

    def _drop_stale_workers(self) -> None:
        """Shut persistent workers down when their copy of the dataset is out of date.

        A persistent worker keeps its dataset between epochs and only moves to the next epoch
        when it finishes one. After a ``break`` (or a ``load_state_dict``) its position is not
        the one the next pass needs, so torch's ``_reset`` would replay a stale stream; new
        workers start from the main process' dataset, which has the right epoch and position.
        """
        iterator = getattr(self, "_iterator", None)
        if iterator is None or not (self._epoch_open or self._restore):
            return
        iterator._shutdown_workers()
        self._iterator = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds = self._streaming
        ds.capture_world()
        self._drop_stale_workers()
        self._first_worker = 0
        fresh = True
        if self._restore:
            self._restore = False
            self._settle()
            done = self._num_samples_yielded // (self.batch_size or 1)
            infinite = self._worker_lengths() is None
            if infinite or done < self._schedule()[1]:
                fresh = False
                self._first_worker = self._worker_of_batch(done) if self.num_workers else 0
        if fresh:
            self._worker_batches = [0] * max(1, self.num_workers)
            if self._epoch_open and isinstance(ds, StreamingWrapper) and self.current_epoch:
                # The previous pass stopped early: a wrapper that continues across epochs
                # (ParallelStreamingDataset resume=True) starts the next one there.
                ds._loader_stopped(
                    self._num_samples_yielded, self.num_workers, self.batch_size or 1, self.current_epoch
                )
            ds.reset_state_dict()
            self.current_epoch += 1
            self._num_samples_yielded = 0
            ds.set_epoch(self.current_epoch)
        profiling = self._profile_n > 0 and self.current_epoch == 1 and not self._profiled
        session: _Profile | None = None
        if profiling and self.num_workers:
            self._profiled = True
            session = _Profile(self._profile_n, self._profile_dir or os.getcwd())
        saved = self.worker_init_fn, self.collate_fn
        if self.num_workers and (session is not None or _trace.on):
            # Workers copy these when they start: trace them (and cut the profile off) there.
            self.collate_fn = _TraceCollate(self.collate_fn)
            if session is not None:
                limits = self._profile_limits(self._num_samples_yielded // (self.batch_size or 1))
                self.worker_init_fn = _TraceWorkerInit(session.directory, limits, self.worker_init_fn)
        try:
            iterator = self._new_iterator()
        finally:
            self.worker_init_fn, self.collate_fn = saved
        if session is not None:
            session.bind(iterator)
        if self._dataset_batches and self.num_workers and not self._unordered():
            iterator = Unbundle(
                iterator, lambda it=iterator: it._aiolit_worker, self.num_workers, self._first_worker
            )
        # Batches built by the dataset without workers: taken from the dataset's iterator itself
        # (what torch's iterator would hand on unchanged), except while torch's profiler runs.
        items = self._dataset_items(iterator)
        profiler_on = _profiler_enabled
        step = self.batch_size or 1
        unordered = self._unordered()
        if len(self._worker_batches) != max(1, self.num_workers):
            self._worker_batches = [0] * max(1, self.num_workers)
        self._epoch_open = True
        fields = self.__dict__
        try:
            while True:
                timed = profiling or _trace.on
                started = _trace.now() if timed else 0.0
                try:
                    batch = next(iterator if items is None or profiler_on() else items)
                except StopIteration:
                    self._epoch_open = False
                    break
                if timed:
                    ended = _trace.now()
                    if session is not None and session.until is None:
                        session.batch(started, ended)  # the main process traces until the N-th
                        profiling = session.until is None
                    elif _trace.on:
                        _trace.complete("batch wait", "dataloader", started, ended)
                    if profiling and session is None:
                        self._record(started, ended)
                        profiling = not self._profiled
                # Straight into the instance dict: DataLoader.__setattr__ is Python code (~0.5 µs
                # a batch) that guards other attributes.
                fields["_num_samples_yielded"] += step
                if unordered:
                    self._worker_batches[iterator._aiolit_worker] += 1  # type: ignore[attr-defined]
                if type(batch) is np.ndarray:
                    batch = torch.from_numpy(batch)  # a token batch from a worker (see _as_is)
                yield batch
        finally:
            if session is not None:
                session.merge(final=True)
            elif self._trace and not self._profiled:
                self._write_profile()
        ds.reset_state_dict()

    def _new_iterator(self) -> Iterator[Any]:
        ds = self._streaming
        if self._dataset_batches:
            # Workers copy the dataset (and a single-process iterator calls iter(dataset)) while
            # the iterator is built: only the loader's own iterators see the flag.
            assert isinstance(ds, StreamingDataset)
            # Bundles only where the round-robin is known (in order); see _bundle.
            bundle = bool(self.num_workers) and not self._unordered()
            ds._loader_batch = (self.batch_size or 1, not self.pin_memory, bundle)
            try:
                return super().__iter__()
            finally:
                ds._loader_batch = None
        with self._runs_as_batches():
            return super().__iter__()

    def _dataset_items(self, iterator: Iterator[Any]) -> Iterator[Any] | None:
        """The dataset iterator behind torch's single-process ``iterator``, when it adds nothing.

        With batches built by the dataset (``_dataset_batches``), no workers and no
        ``pin_memory``, torch's iterator hands each item of the dataset's iterator on unchanged
        (its collate is :func:`_as_is`), at a cost of ~12 µs per batch, mostly its profiler span
        (``record_function``): the loader then takes the items from the dataset's iterator
        directly. torch's iterator is still built (it draws a base seed from torch's RNG and
        calls ``iter(dataset)``) and is used while torch's profiler runs. None otherwise.
        """
        if not self._dataset_batches or self.num_workers or self.pin_memory:
            return None
        if type(iterator) is not _SingleProcessDataLoaderIter:
            return None
        fetcher = getattr(iterator, "_dataset_fetcher", None)
        items = getattr(fetcher, "dataset_iter", None)
        if (
            items is None
            or getattr(fetcher, "auto_collation", True)
            or getattr(fetcher, "collate_fn", None) is not _as_is
        ):
            return None
        return items  # type: ignore[no-any-return]

    def _profile_limits(self, done: int) -> list[int]:
        """How many of the next ``profile_n`` batches (from batch ``done``) each worker yields."""
        counts = [0] * self.num_workers
        if self._worker_lengths() is None:
            for k in range(done, done + self._profile_n):
                counts[k % self.num_workers] += 1
        else:
            batches, total = self._schedule()
            for k in range(done, min(done + self._profile_n, total)):
                counts[worker_of_batch(k, batches)] += 1
        # A worker with none of them still writes its file (after its first batch or at its end).
        return [max(1, c) for c in counts]

    def _record(self, started: float, ended: float) -> None:
        # Without workers, result.json holds the batch waits only (use enable_tracer() for more).
        self._trace.append(
            {
                "name": "batch wait",
                "cat": "dataloader",
                "ph": "X",
                "ts": started * 1e6,
                "dur": (ended - started) * 1e6,
                "pid": os.getpid(),
                "tid": 0,
                "args": {"batch": len(self._trace)},
            }
        )
        if len(self._trace) == self._profile_n:
            self._write_profile()

    def _write_profile(self) -> None:
        self._profiled = True
        directory = self._profile_dir or os.getcwd()
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "result.json"), "w") as f:
            json.dump({"traceEvents": self._trace, "displayTimeUnit": "ms"}, f)

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """LitData's loader state: ``dataset``, ``current_epoch``, ``num_samples_yielded``, ``latest_worker_idx``."""
        ds = self._streaming
        if self._restore:
            self._settle()  # a state loaded but not iterated yet: in this loader's terms
        done = self._num_samples_yielded // (self.batch_size or 1)
        latest = 0
        if self.num_workers and done:
            if self._worker_lengths() is not None:
                done = min(done, self._schedule()[1])
            latest = self._worker_of_batch(done - 1)
        if isinstance(ds, StreamingWrapper):
            if self._unordered():
                raise StateDictError(
                    f"{type(ds).__name__} cannot resume exactly from a loader with in_order=False "
                    "(batches arrive in completion order); use in_order=True to take states"
                )
            # LitData's shape: per-dataset states and {worker: [per-dataset counts]}.
            with self._runs_as_batches():
                out = ds._loader_state(
                    self._num_samples_yielded, self.num_workers, self.batch_size or 1, self.current_epoch
                )
            out["current_epoch"] = self.current_epoch
            out["latest_worker_idx"] = latest
            return out
        state = ds.state_dict(self._num_samples_yielded, self.num_workers, self.batch_size or 1)
        state["current_epoch"] = self.current_epoch
        if self._unordered() and self.current_epoch:
            lengths = self._worker_lengths()
            assert lengths is not None
            bs = self.batch_size or 1
            state["worker_counts"] = [
                min(b * bs, n) for b, n in zip(self._worker_batches, lengths, strict=True)
            ]
        return {
            "dataset": state,
            "current_epoch": self.current_epoch,
            "num_samples_yielded": self._num_samples_yielded,
            "latest_worker_idx": latest,
        }

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Resume at the next ``iter()`` from a :meth:`state_dict` (see StateDictError)."""
        if not isinstance(obj, dict) or "dataset" not in obj or "num_samples_yielded" not in obj:
            raise StateDictError("state_dict must come from StreamingDataLoader.state_dict()")
        ds = self._streaming
        if isinstance(ds, StreamingWrapper):
            with self._runs_as_batches():
                self._num_samples_yielded = ds._load_loader_state(obj)
            self.current_epoch = ds.current_epoch
            self._restore = True
        else:
            state = dict(obj["dataset"])
            epoch: Any = obj.get("current_epoch", state.get("current_epoch", 1))
            state["current_epoch"] = int(epoch)
            ds.load_state_dict(state)
            self.current_epoch = int(epoch)
            self._num_samples_yielded = int(obj["num_samples_yielded"])
            self._restore = ds._resume is not None
            given = state.get("worker_counts")
            if given is not None and len(given) == max(1, self.num_workers):
                bs = self.batch_size or 1
                self._worker_batches = [-(-int(c) // bs) for c in given]
            if not self._restore:
                # The end of an epoch of another dataset: the next pass is the next epoch.
                self._num_samples_yielded = 0
                self._epoch_open = getattr(self, "_iterator", None) is not None
        if self.current_epoch < 1:
            # Taken before the first iter(): nothing was consumed, the next pass is epoch 1.
            ds.reset_state_dict()
            self.current_epoch = 0
            self._num_samples_yielded = 0
            self._restore = False
            self._epoch_open = getattr(self, "_iterator", None) is not None
