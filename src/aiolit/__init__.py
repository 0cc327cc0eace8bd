"""aiolit: asyncio-first, LitData-compatible chunked streaming datasets.

A LitData user switches by changing one import (``import aiolit as ld``): the public names and
their arguments are LitData's, plus the async ones (``optimize_async``, ``map_async``,
``async for sample in dataset``, ``await dataset.aget(i)``).

``import aiolit`` never imports torch. Names are loaded lazily on first access, so
``aiolit.optimize``, ``aiolit.StreamingDataset`` or ``aiolit.FernetEncryption`` stay torch-free, while
``aiolit.StreamingDataLoader`` (a ``torch.utils.data.DataLoader``) imports torch when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from aiolit._version import __version__ as __version__

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # streaming
    "StreamingDataset": "aiolit.streaming.dataset",
    "StreamingDataLoader": "aiolit.streaming.dataloader",
    "Dir": "aiolit.streaming._resolve",
    "CombinedStreamingDataset": "aiolit.streaming.combined",
    "ParallelStreamingDataset": "aiolit.streaming.parallel",
    "train_test_split": "aiolit.streaming.split",
    "TokensLoader": "aiolit.streaming.item_loader",
    "ParquetLoader": "aiolit.streaming.item_loader",
    "PyTreeLoader": "aiolit.streaming.item_loader",
    # processing
    "optimize": "aiolit.processing.optimize",
    "optimize_async": "aiolit.processing.optimize",
    "map": "aiolit.processing.map",
    "map_async": "aiolit.processing.map",
    "merge_datasets": "aiolit.processing.merge",
    "merge_datasets_async": "aiolit.processing.merge",
    "ALL_DONE": "aiolit.processing._sources",
    "index_parquet_dataset": "aiolit.index.parquet",
    "index_parquet_dataset_async": "aiolit.index.parquet",
    "walk": "aiolit.processing.walk",
    "Machine": "aiolit.processing.machine",
    "index_hf_dataset": "aiolit.index.hf",
    "index_hf_dataset_async": "aiolit.index.hf",
    "StreamingRawDataset": "aiolit.raw",
    # format
    "FernetEncryption": "aiolit.format",
    "Encryption": "aiolit.format",
    # stores
    "open_store": "aiolit.stores",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiolit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
