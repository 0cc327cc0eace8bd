"""aiolit.streaming: StreamingDataset, StreamingDataLoader and the item loaders.

``import aiolit.streaming`` does not import torch, nor does ``StreamingDataset`` (a
``torch.utils.data.IterableDataset`` once torch is imported, see :mod:`aiolit._torch`); the first
access to ``StreamingDataLoader`` imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aiolit.streaming._resolve import Dir
from aiolit.streaming.item_loader import BaseItemLoader, ParquetLoader, PyTreeLoader, TokensLoader

if TYPE_CHECKING:
    from aiolit.streaming.combined import CombinedStreamingDataset
    from aiolit.streaming.dataloader import StreamingDataLoader
    from aiolit.streaming.dataset import StreamingDataset
    from aiolit.streaming.parallel import ParallelStreamingDataset
    from aiolit.streaming.split import train_test_split

__all__ = [
    "BaseItemLoader",
    "CombinedStreamingDataset",
    "Dir",
    "ParallelStreamingDataset",
    "ParquetLoader",
    "PyTreeLoader",
    "StreamingDataLoader",
    "StreamingDataset",
    "TokensLoader",
    "train_test_split",
]

_LAZY = {
    "CombinedStreamingDataset": "aiolit.streaming.combined",
    "ParallelStreamingDataset": "aiolit.streaming.parallel",
    "train_test_split": "aiolit.streaming.split",
    "StreamingDataset": "aiolit.streaming.dataset",
    "StreamingDataLoader": "aiolit.streaming.dataloader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiolit.streaming' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
