"""Datasets that are not StreamingDatasets inside Combined/ParallelStreamingDataset.

LitData's wrappers iterate whatever they are given; aiolit's wrappers need each dataset's
per-worker length and a way to start a worker's stream at a position. :class:`ForeignDataset`
gives both for any sized dataset:

* **map-style** (``__len__`` and ``__getitem__``, not an ``IterableDataset``: ``range``, a list,
  a ``torch.utils.data.Dataset``): split over ranks and workers as a StreamingDataset is
  (LitData's budgets: whole batches per worker, contiguous index ranges in rank/worker order),
  read with ``dataset[i]`` in index order. Resume is exact.
* **iterable** (an ``IterableDataset``, a generator-backed object ...): every loader worker
  iterates the whole dataset, as torch's ``DataLoader`` does (a dataset that should be split
  over workers splits itself with ``get_worker_info()``); ``len(dataset)`` is taken as what
  each worker yields. Resume re-iterates the worker's stream and skips what was already
  yielded: exact when the dataset yields the same sequence again for that epoch.

Anything without ``__len__`` is refused with a clear error: the wrappers' lengths and exact
resume are computed from the datasets' lengths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np

from aiolit._torch import is_torch_iterable
from aiolit._torch import worker_info as get_worker_info
from aiolit.errors import StateDictError
from aiolit.streaming._plan import Topology, worker_budgets

__all__ = ["ForeignDataset"]


class ForeignDataset:
    """Adapter of a sized, non-streaming dataset for the wrappers (not public).

    Attributes not defined here are read from the wrapped dataset, so ``wrapper._datasets[i].x``
    sees the user's object as in LitData.
    """

    def __init__(self, dataset: Any, position: int) -> None:
        try:
            n = len(dataset)
        except TypeError:
            raise ValueError(
                f"datasets[{position}] ({type(dataset).__name__}) has no len(): aiolit's "
                "CombinedStreamingDataset and ParallelStreamingDataset need each dataset's length "
                "(to size the epoch and resume exactly); give it a __len__"
            ) from None
        self.dataset = dataset
        self.num_items = int(n)
        self.map_style = hasattr(dataset, "__getitem__") and not is_torch_iterable(dataset)
        if not self.map_style and not hasattr(dataset, "__iter__"):
            raise ValueError(
                f"datasets[{position}] ({type(dataset).__name__}) is neither indexable nor iterable"
            )
        self.batch_size = 1
        self.num_workers = 0
        self.current_epoch = 1
        self.drop_last: bool | None = None
        self._world: tuple[int, int] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- what the wrappers call -----------------------------------------------------------------

    def _forward(self, method: str, *args: Any) -> None:
        fn = getattr(self.dataset, method, None)
        if callable(fn):
            fn(*args)

    def set_epoch(self, current_epoch: int) -> None:
        self.current_epoch = int(current_epoch)
        self._forward("set_epoch", current_epoch)

    def set_shuffle(self, shuffle: bool) -> None:
        self._forward("set_shuffle", shuffle)

    def set_drop_last(self, drop_last: bool) -> None:
        self.drop_last = drop_last
        self._forward("set_drop_last", drop_last)

    def set_batch_size(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._forward("set_batch_size", batch_size)

    def set_num_workers(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self._forward("set_num_workers", num_workers)

    def capture_world(self) -> None:
        from aiolit.streaming.dataset import _distributed

        self._world = _distributed()

    def reset_state_dict(self) -> None:
        self._forward("reset_state_dict")

    def _topology(self, iterating: bool = False) -> tuple[Topology, int]:
        from aiolit.streaming.dataset import StreamingDataset

        # The same rule as a StreamingDataset's (it reads only ``_world`` and ``num_workers``).
        return StreamingDataset._topology(self, iterating)  # type: ignore[arg-type]

    def _drop_last(self, topology: Topology) -> bool:
        return self.drop_last if self.drop_last is not None else topology.world_size > 1

    def _budgets(self, topology: Topology) -> Any:
        return worker_budgets(
            self.num_items,
            topology.world_size,
            topology.num_workers,
            batch_size=self.batch_size,
            drop_last=self._drop_last(topology),
        )

    def worker_lengths(self, topology: Topology) -> list[int]:
        """Samples each worker of this rank takes per epoch."""
        if not self.map_style:
            return [self.num_items] * topology.num_workers
        return [int(b) for b in self._budgets(topology)[topology.rank]]

    def __len__(self) -> int:
        topology, _ = self._topology()
        return sum(self.worker_lengths(topology))

    def _iter_at(self, at: tuple[int, int]) -> Iterator[Any]:
        """This worker's samples of epoch ``at[0]`` after its first ``at[1]``."""
        epoch, skip = at
        topology, worker_id = self._topology(iterating=True)
        if epoch != self.current_epoch:
            # A cycled stream's next pass (ParallelStreamingDataset): the dataset sees that
            # epoch; this adapter keeps the wrapper's (its state_dict reports it).
            self._forward("set_epoch", epoch)
        if self.map_style:
            budgets = self._budgets(topology)
            flat = np.concatenate([[0], np.cumsum(budgets.reshape(-1))])
            g = topology.global_worker_id(worker_id)
            start, end = int(flat[g]), int(flat[g + 1])
            dataset = self.dataset
            return (dataset[i] for i in range(start + skip, end))
        return _skipped(iter(self.dataset), skip)

    async def _aiter_at(self, at: tuple[int, int]) -> AsyncIterator[Any]:
        for item in self._iter_at(at):
            yield item

    def state_dict(self, num_samples_yielded: int, num_workers: int, batch_size: int) -> dict[str, Any]:
        """The position the wrappers resume from (LitData's keys for it)."""
        return {
            "num_samples_yielded": int(num_samples_yielded),
            "num_workers": int(num_workers),
            "batch_size": int(batch_size),
            "current_epoch": int(self.current_epoch),
            "dataset_type": type(self.dataset).__name__,
            "world_size": self._topology()[0].world_size if get_worker_info() is None else None,
        }

    def validate(self, state: Any) -> None:
        """Check a state from :meth:`state_dict` (StateDictError when it is not one)."""
        keys = ("num_samples_yielded", "num_workers", "batch_size", "current_epoch")
        if not isinstance(state, dict) or any(k not in state for k in keys):
            raise StateDictError(
                f"state_dict for a {type(self.dataset).__name__} dataset needs the keys {list(keys)}, got "
                f"{sorted(state) if isinstance(state, dict) else type(state).__name__}"
            )


def _skipped(it: Iterator[Any], skip: int) -> Iterator[Any]:
    for _ in range(skip):
        try:
            next(it)
        except StopIteration:
            return
    yield from it
