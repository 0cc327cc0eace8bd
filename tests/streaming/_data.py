"""Helpers of the streaming tests: small datasets written with aiolit.format.ChunkWriter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from aiolit import _loop
from aiolit.format import ChunkWriter, merge_shards
from aiolit.stores import open_store


def sample(i: int) -> dict[str, Any]:
    """The i-th sample of every test dataset."""
    return {"i": i, "s": "x" * (i % 7)}


def write_dataset(path: Path, n: int, *, chunk_size: int = 7, **kwargs: Any) -> list[dict[str, Any]]:
    """Write samples ``sample(0..n)`` to ``path`` (index.json merged) and return them."""
    writer = ChunkWriter(str(path), chunk_size=chunk_size, **kwargs)
    items = [sample(i) for i in range(n)]
    for item in items:
        writer.add(item)
    writer.done()
    merge_shards(str(path))
    return items


def write_tokens(path: Path, seqs: list[np.ndarray], *, chunk_size: int) -> None:
    """Write token sequences as a TokensLoader dataset."""
    from aiolit.streaming import TokensLoader

    writer = ChunkWriter(str(path), chunk_size=chunk_size, item_loader=TokensLoader())
    for seq in seqs:
        writer.add(seq)
    writer.done()
    merge_shards(str(path))


def ids(items: list[Any]) -> list[int]:
    """The ``i`` field of a list of samples."""
    return [int(x["i"]) for x in items]


def upload(server: Any, local: Path, url: str) -> str:
    """Put every file of the folder ``local`` under ``url`` on a test server; return ``url``."""

    async def put_all() -> None:
        store = open_store(url, server.storage_options)
        try:
            await asyncio.gather(*(store.put_file(p.name, str(p)) for p in local.iterdir() if p.is_file()))
        finally:
            await store.aclose()

    _loop.run(put_all())
    return url


def requests(made: list[Any]) -> int:
    """Requests made through the counting stores of the ``counting_s3`` fixture."""
    return sum(sum(s.calls.values()) for s in made)
