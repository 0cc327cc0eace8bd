"""Output preparation (modes) and the final index: one writer, one node, or many nodes.

The merged ``index.json`` is always written last. With ``num_nodes > 1`` every node writes a
``{node_rank}-index.json`` (hyphen, as LitData) and the last node waits for all of them, merges
them (after any existing index when appending) and writes ``index.json``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
from collections.abc import Sequence
from typing import Any

from aiolit.errors import FormatError, OptimizeError
from aiolit.processing._args import Topology
from aiolit.processing._output import Output, chunk_rank_and_counter
from aiolit.processing._worker import TaskResult

__all__ = ["finalize_index", "node_index", "prepare_output"]

# The dataset's files, plus the temp files a killed run can leave behind (chunk and index temps).
_OVERWRITE_PATTERNS = ("*.bin", "*index.json", ".chunk-*.tmp", ".index.*.tmp", ".*index.json.*.tmp")


async def prepare_output(output: Output, mode: str | None, topo: Topology) -> tuple[Any, dict[int, int]]:
    """Check the output against ``mode``; return (existing index when appending, chunk counter per rank).

    Raises
    ------
    OptimizeError
        ``mode=None`` and the output already holds an ``index.json``.
    """
    from aiolit.format import Index

    output.make_local_dir()
    if mode is None:
        if await output.exists("index.json"):
            raise OptimizeError(
                f"The provided output_dir `{output.url}` already contains an optimized immutable dataset "
                "(index.json). Pass mode='append' to add to it or mode='overwrite' to replace it."
            )
        output.index_condition = "new"
        return None, {}
    if mode == "overwrite":
        # With several nodes only node 0 clears the output, so it does not delete the chunks
        # another node has already written.
        if topo.node_rank == 0:
            names = await output.names()
            doomed = [
                name
                for name in names
                if name.startswith(".checkpoints/")
                or ("/" not in name and any(fnmatch.fnmatch(name, p) for p in _OVERWRITE_PATTERNS))
            ]
            await asyncio.gather(*(output.delete(name) for name in doomed))
        return None, {}
    data, version = await output.read_versioned("index.json")
    output.index_condition, output.index_version = "version", version
    if data is None:
        return None, {}
    existing = Index.from_json(data, source=f"{output.url}/index.json")
    if not existing.chunks:  # an empty dataset (fn kept no input): nothing to append to
        return None, {}
    starts: dict[int, int] = {}
    for entry in existing.chunks:
        parsed = chunk_rank_and_counter(entry.filename)
        if parsed is not None:
            rank, counter = parsed
            starts[rank] = max(starts.get(rank, 0), counter + 1)
    return existing, starts


def _merge(indexes: Sequence[Any], updated_at: str | None, what: str) -> Any:
    from aiolit.format import merge_indexes

    try:
        return merge_indexes(indexes, updated_at=updated_at)
    except FormatError as exc:
        raise OptimizeError(
            f"cannot merge {what}: {exc}. Every sample must have the same structure and types, and an "
            "appended dataset the same options (compression, encryption, chunk size) as the existing one."
        ) from exc


def node_index(results: Sequence[TaskResult]) -> Any:
    from aiolit.format import Index

    parts = [
        Index(list(r.entries), dict(r.config)) for r in sorted(results, key=lambda r: r.rank) if r.config
    ]
    return _merge(parts, None, "the workers' indexes") if parts else None


async def finalize_index(
    output: Output,
    results: Sequence[TaskResult],
    existing: Any,
    topo: Topology,
    *,
    updated_at: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``index.json`` (or this node's ``{node_rank}-index.json``) from the task results.

    ``extra`` adds top-level sections to a single node's ``index.json``.

    Raises
    ------
    OptimizeError
        The workers (or the existing dataset) disagree on the config.
    """
    node = node_index(results)
    if topo.num_nodes == 1:
        await _write_index(output, existing, node, updated_at, extra)
        return
    # An empty node still reports, so the last node knows it finished.
    node_json = node.to_json() if node is not None else json.dumps({"chunks": [], "config": None}).encode()
    await output.write(f"{topo.node_rank}-index.json", node_json)
    if topo.node_rank != topo.num_nodes - 1:
        return
    await _merge_nodes(output, existing, topo, updated_at)


async def _write_index(
    output: Output, existing: Any, node: Any, updated_at: str, extra: dict[str, Any] | None = None
) -> None:
    """Write ``existing + node`` as ``index.json`` unless another writer got there first.

    Appending: when a concurrent append changed the index since this run read it, merge this run's
    chunks (their names are unique to this run) after the new index and try again. A new dataset
    (``mode=None``) that another run created meanwhile is an error: nothing is merged into it.
    """
    from aiolit.errors import PreconditionFailedError
    from aiolit.format import Index

    for _ in range(20):
        parts = [p for p in (existing, node) if p is not None]
        if not parts:
            return
        data = _merge(parts, updated_at, "the index").to_json()
        if extra:  # top-level sections LitData adds (e.g. "keys"), kept next to chunks/config
            data = json.dumps({**json.loads(data), **extra}, sort_keys=True).encode("utf-8")
        if output.index_condition == "any":
            await output.write("index.json", data)
            return
        expected = output.index_version if output.index_condition == "version" else None  # None: absent
        if output.index_condition == "version" and expected is None and existing is not None:
            await output.write("index.json", data)  # a store without version tokens: last writer wins
            return
        try:
            await output.write_if_version("index.json", data, expected)
            return
        except PreconditionFailedError:
            pass
        current, version = await output.read_versioned("index.json")
        if current is not None and node is not None and node.chunks:
            mine = node.chunks[0].filename
            if any(entry.filename == mine for entry in Index.from_json(current).chunks):
                return  # a retried request had already written our index
        if output.index_condition == "new" and current is not None:
            raise OptimizeError(
                f"another optimize created {output.url}/index.json while this run was writing; this run's "
                "samples were not added to it. Run again with mode='append' to add them, or "
                "mode='overwrite' to replace that dataset."
            )
        existing = None if current is None else Index.from_json(current, source=f"{output.url}/index.json")
        output.index_version = version
    raise OptimizeError(f"gave up writing {output.url}/index.json: other writers kept changing it")


async def _merge_nodes(output: Output, existing: Any, topo: Topology, updated_at: str) -> None:
    from aiolit.format import Index

    names = [f"{n}-index.json" for n in range(topo.num_nodes)]
    timeout = float(os.environ.get("DATA_OPTIMIZER_TIMEOUT", "0") or 0)  # 0: wait as long as it takes
    waited, delay = 0.0, 0.05
    while True:
        present = await asyncio.gather(*(output.exists(name) for name in names))
        if all(present):
            break
        if timeout and waited >= timeout:
            missing = [name for name, ok in zip(names, present, strict=True) if not ok]
            raise OptimizeError(f"gave up waiting {timeout:.0f} s for the other nodes' indexes {missing}")
        # Other machines finish on their own schedule and there is nothing to subscribe to: poll.
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 2.0)
    parts = [existing] if existing is not None else []
    for name in names:
        data = await output.read(name)
        assert data is not None
        if json.loads(data).get("config") is not None:
            parts.append(Index.from_json(data, source=f"{output.url}/{name}"))
    if parts:
        await output.write("index.json", _merge(parts, updated_at, "the nodes' indexes").to_json())
    await asyncio.gather(*(output.delete(name) for name in names))
