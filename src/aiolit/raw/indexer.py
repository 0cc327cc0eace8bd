"""LitData's import path of the raw-file indexer; the code lives in :mod:`aiolit.index.raw`."""

from __future__ import annotations

from aiolit.index.raw import (
    INDEX_FILENAME,
    BaseIndexer,
    FileIndexer,
    FileMetadata,
    dump_index,
    load_index_file,
)

__all__ = ["INDEX_FILENAME", "BaseIndexer", "FileIndexer", "FileMetadata", "dump_index", "load_index_file"]
