"""Keyed lookup ``ds["item-3"]`` on datasets written with ``optimize(key_fn=...)``.

The keys sidecar (``keys/shard-*.parquet``, or the legacy ``keys.parquet``) is read once per
dataset object and kept as a dict ``key -> (global index, chunk index)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiolit.errors import ObjectNotFoundError

__all__ = ["load_key_rows", "locate_key"]


def _shard_order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)


async def load_key_rows(source: Any) -> dict[Any, tuple[int, int]]:
    """Read the sidecar of ``source`` (a ``DataSource``).

    Raises
    ------
    KeyError
        The dataset has no keys sidecar (it was not written with ``key_fn``).
    """
    from aiolit.format._keys import read_key_rows

    files: list[bytes] = []
    if source.dir.url is None:
        root = Path(source.dir.path)
        shards = sorted(
            (p for p in (root / "keys").glob("shard-*.parquet")), key=lambda p: _shard_order(p.name)
        )
        if not shards and (root / "keys.parquet").is_file():
            shards = [root / "keys.parquet"]
        files = [p.read_bytes() for p in shards]
    else:
        store = source.store()
        names = sorted(
            [m.key async for m in store.list("keys/") if os.path.basename(m.key).startswith("shard-")],
            key=lambda n: _shard_order(os.path.basename(n)),
        )
        if not names:
            try:
                files = [bytes(await store.get("keys.parquet"))]
            except (ObjectNotFoundError, FileNotFoundError):
                files = []
        else:
            files = [bytes(await store.get(name)) for name in names]
    if not files:
        raise KeyError(
            f"{source.url} has no keys sidecar (keys/shard-*.parquet): keyed access ds['...'] needs a "
            "dataset written with optimize(..., key_fn=...)"
        )
    return read_key_rows(files)


def locate_key(rows: dict[Any, tuple[int, int]], sizes: list[int], key: Any) -> tuple[int, int]:
    """``(chunk position, item in chunk)`` of ``key``.

    Raises
    ------
    KeyError
        No sample has this key.
    """
    import bisect
    import itertools

    from aiolit.format._keys import normalize_key

    try:
        found = rows.get(normalize_key(key))
    except TypeError:
        found = None
    if found is None:
        raise KeyError(key)
    index, chunk = found
    starts = [0, *itertools.accumulate(sizes)]
    if chunk < 0:
        chunk = bisect.bisect_right(starts, index) - 1
    if not 0 <= chunk < len(sizes) or not starts[chunk] <= index < starts[chunk + 1]:
        raise KeyError(f"the keys sidecar places {key!r} at sample {index}, outside the dataset's chunks")
    return chunk, index - starts[chunk]
