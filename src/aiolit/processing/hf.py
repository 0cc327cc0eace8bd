"""``index_hf_dataset`` lives in :mod:`aiolit.index.hf` (reading needs it too); this path stays."""

from __future__ import annotations

from aiolit.index.hf import build_hf_index, hf_index_dir, index_hf_dataset, index_hf_dataset_async

__all__ = ["build_hf_index", "hf_index_dir", "index_hf_dataset", "index_hf_dataset_async"]
