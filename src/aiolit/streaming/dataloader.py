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
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _BaseDataLoaderIter, _MultiProcessingDataLoaderIter

from aiolit.errors import StateDictError
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


def _as_is(batch: Any) -> Any:
    """The collate function of pre-batched token datasets: batches are already built.

    Workers may yield numpy arrays (cheaper to send than shared-memory tensors); the loader turns
    them into tensors in the main process, where ``default_convert`` would have in the worker.
    """
    return batch


class _ResumingIter(_MultiProcessingDataLoaderIter):
    """torch's worker iterator, with the round-robin starting at ``first_worker``."""

    def __init__(self, loader: DataLoader[Any], first_worker: int) -> None:
        self._aiolit_skip = first_worker
        super().__init__(loader)

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
        super().__init__(
            dataset,
            batch_size=None if self._dataset_batches else batch_size,
            num_workers=num_workers,
            collate_fn=_as_is if self._dataset_batches else collate_fn,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            **kwargs,
        )
        if self._dataset_batches:
            # What the caller asked for (torch's setter refuses it after __init__).
            object.__setattr__(self, "batch_size", batch_size)
        self.current_epoch = 0
        self._num_samples_yielded = 0
        self._restore = False
        self._first_worker = 0
        self._profile_n = profile_n
        self._profile_dir = os.fspath(profile_dir) if profile_dir is not None else None
        self._trace: list[dict[str, Any]] = []

    @property
    def _streaming(self) -> StreamingDataset | StreamingWrapper:
        ds = self.dataset
        assert isinstance(ds, StreamingDataset | StreamingWrapper)
        return ds

    def _worker_lengths(self) -> list[int] | None:
        ds = self._streaming
        topology, _ = ds._topology()
        if isinstance(ds, StreamingWrapper):
            # Weighted draws depend on the epoch; before the first iter() it is epoch 1.
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

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds = self._streaming
        ds.capture_world()
        self._first_worker = 0
        fresh = True
        if self._restore:
            self._restore = False
            done = self._num_samples_yielded // (self.batch_size or 1)
            infinite = self._worker_lengths() is None
            if infinite or done < self._schedule()[1]:
                fresh = False
                self._first_worker = self._worker_of_batch(done) if self.num_workers else 0
        if fresh:
            ds.reset_state_dict()
            self.current_epoch += 1
            self._num_samples_yielded = 0
            ds.set_epoch(self.current_epoch)
        if self._dataset_batches:
            # Workers copy the dataset (and a single-process iterator calls iter(dataset)) while
            # the iterator is built: only the loader's own iterators see the flag.
            assert isinstance(ds, StreamingDataset)
            ds._loader_batch = (self.batch_size or 1, not self.pin_memory)
            try:
                iterator = super().__iter__()
            finally:
                ds._loader_batch = None
        else:
            iterator = super().__iter__()
        profiling = self._profile_n > 0 and self.current_epoch == 1
        step = self.batch_size or 1
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            if profiling:
                self._record(started, time.perf_counter())
            self._num_samples_yielded += step
            if type(batch) is np.ndarray:
                batch = torch.from_numpy(batch)  # a token batch from a worker (see _as_is)
            yield batch
        ds.reset_state_dict()

    def _record(self, started: float, ended: float) -> None:
        self._trace.append(
            {
                "name": f"batch {len(self._trace)}",
                "cat": "dataloader",
                "ph": "X",
                "ts": started * 1e6,
                "dur": (ended - started) * 1e6,
                "pid": os.getpid(),
                "tid": 0,
            }
        )
        if len(self._trace) == self._profile_n:
            directory = self._profile_dir or os.getcwd()
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "result.json"), "w") as f:
                json.dump({"traceEvents": self._trace, "displayTimeUnit": "ms"}, f)

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """LitData's loader state: ``dataset``, ``current_epoch``, ``num_samples_yielded``, ``latest_worker_idx``."""
        ds = self._streaming
        done = self._num_samples_yielded // (self.batch_size or 1)
        latest = 0
        if self.num_workers and done:
            if self._worker_lengths() is not None:
                done = min(done, self._schedule()[1])
            latest = self._worker_of_batch(done - 1)
        if isinstance(ds, StreamingWrapper):
            # LitData's shape: per-dataset states and {worker: [per-dataset counts]}.
            out = ds._loader_state(
                self._num_samples_yielded, self.num_workers, self.batch_size or 1, self.current_epoch
            )
            out["current_epoch"] = self.current_epoch
            out["latest_worker_idx"] = latest
            return out
        state = ds.state_dict(self._num_samples_yielded, self.num_workers, self.batch_size or 1)
        state["current_epoch"] = self.current_epoch
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
            self._num_samples_yielded = ds._load_loader_state(obj)
            self.current_epoch = ds.current_epoch
            self._restore = True
            return
        state = dict(obj["dataset"])
        epoch: Any = obj.get("current_epoch", state.get("current_epoch", 1))
        state["current_epoch"] = int(epoch)
        ds.load_state_dict(state)
        self.current_epoch = int(epoch)
        self._num_samples_yielded = int(obj["num_samples_yielded"])
        self._restore = True
