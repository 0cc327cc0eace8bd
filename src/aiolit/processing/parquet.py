"""``index_parquet_dataset`` lives in :mod:`aiolit.index.parquet` (reading needs it too); this path stays."""

from __future__ import annotations

from aiolit.index.parquet import build_parquet_index, index_parquet_dataset, index_parquet_dataset_async

__all__ = ["build_parquet_index", "index_parquet_dataset", "index_parquet_dataset_async"]
