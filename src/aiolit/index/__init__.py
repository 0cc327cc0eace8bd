"""Index builders: ``index.json`` for data that was not written by ``optimize``.

Below both reading (``aiolit.streaming``, ``aiolit.raw``) and writing (``aiolit.processing``):
``StreamingDataset("hf://...")`` indexes a Hub dataset on open, and ``aiolit.processing`` re-exports
the public functions under LitData's names.

- :mod:`aiolit.index.parquet`: ``index_parquet_dataset`` (footers read with range GETs);
- :mod:`aiolit.index.hf`: ``index_hf_dataset`` (a Hub dataset's Parquet files, index cached);
- :mod:`aiolit.index.raw`: the file index of ``StreamingRawDataset`` (LitData's ``index.json.zstd``).

Importing this package imports neither torch nor the builders (each loads on first use).
"""

from __future__ import annotations
