"""``inputs=`` a ``StreamingDataset`` or ``StreamingDataLoader``: re-chunk an existing dataset.

* A ``StreamingDataset`` becomes the sample indices ``range(len(ds))``; each worker opens the
  dataset itself and calls ``fn(ds[i])``, so the samples never pass through the coordinator and
  the output keeps the dataset's order (``keep_data_ordered=True``). An ``async def`` ``fn``
  iterates the dataset on the loop instead.
* A ``StreamingDataLoader`` is iterated once by the coordinator (its own worker processes read
  the data) and ``fn`` gets each batch it yields, as in LitData. The batches are streamed to the
  optimize workers like a queue's items: the output order is the loader's order only with
  ``num_workers=1``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["adapt_streaming_inputs"]


class _ReadSample:
    """``fn(ds[i])`` for an index ``i`` (picklable: the dataset travels to the worker once per task)."""

    def __init__(self, dataset: Any, fn: Callable[..., Any]) -> None:
        from aiolit.processing.readers import _keep_signature

        self.dataset = dataset
        self.fn = fn
        _keep_signature(self, fn)

    def __call__(self, index: int, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.dataset[index], *args, **kwargs)


class _LoaderBatches:
    """The batches of a loader as a plain iterable (so the source streams it, never lists it)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Any:
        return iter(self.loader)


def adapt_streaming_inputs(
    fn: Callable[..., Any], inputs: Any, name: str, *, batch_size: int | None, weights: Any, is_async: bool
) -> tuple[Callable[..., Any], Any, bool]:
    """Return ``(fn, inputs, streamed)`` with aiolit's streaming objects turned into plain inputs.

    ``streamed`` is True for a loader (its batches must not be listed up front).

    Raises
    ------
    ValueError
        ``batch_size`` or ``weights`` with a loader (as LitData: batch with the loader instead).
    """
    # Looked up, not imported: an object of a class whose module is not loaded cannot be one of
    # its instances, and importing the loader's module imports torch (seconds of CPU, and on
    # optimize_async's path it would stall the caller's loop for that long).
    loaders = sys.modules.get("aiolit.streaming.dataloader")
    datasets = sys.modules.get("aiolit.streaming.dataset")
    if loaders is not None and isinstance(inputs, loaders.StreamingDataLoader):
        if batch_size is not None:
            raise ValueError(
                f"{name}(inputs=StreamingDataLoader): pass the batch_size to the dataloader, not to {name}()"
            )
        if weights is not None:
            raise ValueError(f"{name}(inputs=StreamingDataLoader) does not take weights")
        return fn, _LoaderBatches(inputs), True
    if datasets is not None and isinstance(inputs, datasets.StreamingDataset):
        if is_async:
            return fn, iter(inputs), True
        return _ReadSample(inputs, fn), list(range(len(inputs))), False
    return fn, inputs, False
