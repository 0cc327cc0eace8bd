"""The keys sidecar of ``optimize(key_fn=...)``, in LitData 0.2.76's layout.

``keys/shard-00000.parquet`` next to ``index.json`` holds one row per sample, sorted by key:

* ``key``: int64 when every key is an int, else string;
* ``index``: int64, the sample's global index in the dataset;
* ``chunk_index``: int32, the position of its chunk in ``index.json``'s ``chunks``;
* ``chunk_offset``: int32, the value LitData passes as ``ChunkedIndex.index`` (the global index).

``index.json`` gets ``"keys": {"version": 1, "num_shards": 1, "sharding": "none"}``. LitData
writes and reads it with Polars; aiolit with pyarrow (the bytes are plain Parquet). Readers also
accept several ``shard-*.parquet`` files (LitData's hash-sharded layout) and the legacy
``keys.parquet``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

__all__ = [
    "KEYS_CONFIG",
    "KEYS_SHARD",
    "decode_keys",
    "encode_keys",
    "normalize_key",
    "read_key_rows",
]

KEYS_SHARD = "keys/shard-00000.parquet"
KEYS_CONFIG: dict[str, Any] = {"version": 1, "num_shards": 1, "sharding": "none"}


def normalize_key(key: Any) -> str | int:
    """A key as LitData stores it: an int or a str (bytes are decoded as UTF-8).

    Raises
    ------
    TypeError
        ``None``, a bool or any other type.
    """
    if isinstance(key, bool) or key is None:
        raise TypeError(f"key_fn must return a str or an int, got {key!r}")
    if isinstance(key, int | str):
        return key
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key).decode("utf-8")
    import numpy as np

    if isinstance(key, np.integer):
        return int(key)
    raise TypeError(f"key_fn must return a str or an int, got {type(key).__name__} ({key!r})")


def encode_keys(keys: Sequence[str | int], chunk_sizes: Sequence[int]) -> bytes:
    """The Parquet bytes of the sidecar for ``keys`` (one per sample, in dataset order).

    Raises
    ------
    ValueError
        Two samples share a key, or the keys do not match the number of samples.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(keys) != sum(chunk_sizes):
        raise ValueError(f"{len(keys)} keys for {sum(chunk_sizes)} samples")
    if len(set(keys)) != len(keys):
        seen: set[str | int] = set()
        duplicate = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(
            f"key_fn returned the key {duplicate!r} for more than one sample; keys must be unique"
        )
    chunk_of: list[int] = []
    for chunk, size in enumerate(chunk_sizes):
        chunk_of.extend([chunk] * size)
    all_ints = bool(keys) and all(isinstance(k, int) for k in keys)
    key_values: list[Any] = list(keys) if all_ints else [str(k) for k in keys]
    order = sorted(range(len(keys)), key=lambda i: key_values[i])
    table = pa.table(
        {
            "key": pa.array([key_values[i] for i in order], pa.int64() if all_ints else pa.string()),
            "index": pa.array(order, pa.int64()),
            "chunk_index": pa.array([chunk_of[i] for i in order], pa.int32()),
            "chunk_offset": pa.array(order, pa.int32()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=max(1, min(1_000_000, len(keys))))
    return sink.getvalue()


def decode_keys(data: bytes) -> list[tuple[str | int, int, int]]:
    """``(key, global index, chunk index or -1)`` rows of one sidecar Parquet file."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    keys = table.column("key").to_pylist()
    indices = table.column("index").to_pylist()
    chunks = table.column("chunk_index").to_pylist() if "chunk_index" in table.column_names else None
    return [
        (k, int(i), -1 if chunks is None or chunks[n] is None else int(chunks[n]))
        for n, (k, i) in enumerate(zip(keys, indices, strict=True))
    ]


def read_key_rows(files: Sequence[bytes]) -> dict[str | int, tuple[int, int]]:
    """Every sidecar file's rows as ``{key: (global index, chunk index or -1)}``."""
    rows: dict[str | int, tuple[int, int]] = {}
    for data in files:
        for key, index, chunk in decode_keys(data):
            rows[key] = (index, chunk)
    return rows
