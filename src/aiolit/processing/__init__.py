"""Writing datasets: ``optimize``, ``map`` and ``merge_datasets`` (each with an ``_async`` twin).

``optimize`` runs ``fn`` over the inputs in worker processes (or on the event loop for ``async def``
functions), writes LitData-format chunks and writes ``index.json`` last.
"""

from __future__ import annotations

from aiolit.index.hf import index_hf_dataset, index_hf_dataset_async
from aiolit.index.parquet import index_parquet_dataset, index_parquet_dataset_async
from aiolit.processing._sources import ALL_DONE
from aiolit.processing.map import map, map_async
from aiolit.processing.merge import merge_datasets, merge_datasets_async
from aiolit.processing.optimize import optimize, optimize_async
from aiolit.processing.walk import walk

__all__ = [
    "ALL_DONE",
    "index_hf_dataset",
    "index_hf_dataset_async",
    "index_parquet_dataset",
    "index_parquet_dataset_async",
    "map",
    "map_async",
    "merge_datasets",
    "merge_datasets_async",
    "optimize",
    "optimize_async",
    "walk",
]
