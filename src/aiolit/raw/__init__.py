"""Raw files as a dataset: :class:`StreamingRawDataset` streams files as they are, no conversion.

``import aiolit.raw`` does not import torch; the dataset works with ``torch.utils.data.DataLoader``
through ``__len__``/``__getitem__``/``__getitems__``.
"""

from __future__ import annotations

from aiolit.index.raw import BaseIndexer, FileIndexer, FileMetadata
from aiolit.raw.dataset import StreamingRawDataset

__all__ = ["BaseIndexer", "FileIndexer", "FileMetadata", "StreamingRawDataset"]
