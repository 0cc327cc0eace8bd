"""``optimize(key_fn=...)``: collect the workers' keys and write LitData's keys sidecar."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiolit.errors import OptimizeError
from aiolit.processing._output import Output
from aiolit.processing._worker import TaskResult

__all__ = ["read_keys", "write_keys"]


async def read_keys(output: Output, num_samples: int) -> list[Any]:
    """The keys of an existing dataset in sample order (for appends).

    Raises
    ------
    OptimizeError
        The dataset has samples but no keys sidecar, or the sidecar does not cover them.
    """
    from aiolit.format._keys import KEYS_SHARD, read_key_rows

    data = await output.read(KEYS_SHARD)
    if data is None:
        if num_samples == 0:
            return []
        raise OptimizeError(
            f"optimize(key_fn=..., mode='append'): {output.url} has no {KEYS_SHARD}, so its "
            f"{num_samples} samples have no keys; rewrite it with key_fn (mode='overwrite')"
        )
    rows = read_key_rows([data])
    by_index = sorted((index, key) for key, (index, _) in rows.items())
    if [index for index, _ in by_index] != list(range(num_samples)):
        raise OptimizeError(f"{output.url}/{KEYS_SHARD} does not list one key per sample of index.json")
    return [key for _, key in by_index]


async def write_keys(output: Output, results: Sequence[TaskResult], existing: Any) -> dict[str, Any]:
    """Write ``keys/shard-00000.parquet`` for the dataset about to be indexed; return the index section.

    Samples are numbered as the index will list them: the existing chunks, then every writer's
    chunks in rank order.

    Raises
    ------
    OptimizeError
        Duplicate keys (the message names one).
    """
    from aiolit.format._keys import KEYS_CONFIG, KEYS_SHARD, encode_keys

    keys: list[Any] = []
    sizes: list[int] = []
    if existing is not None:
        sizes += [entry.chunk_size for entry in existing.chunks]
        keys += await read_keys(output, sum(sizes))
    for result in sorted(results, key=lambda r: r.rank):
        if result.config is None:
            continue
        sizes += [entry.chunk_size for entry in result.entries]
        keys += result.keys or []
    try:
        data = encode_keys(keys, sizes)
    except ValueError as exc:
        raise OptimizeError(f"optimize(key_fn=...): {exc}") from None
    await output.write(KEYS_SHARD, data)
    return {"keys": dict(KEYS_CONFIG)}
