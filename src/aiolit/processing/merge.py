"""``merge_datasets``: concatenate optimized datasets into a new one.

Chunks are copied (concurrently, local or remote) under new names ``chunk-0-{counter}[.{comp}].bin``
and the indexes are concatenated in input order. The merged ``index.json`` is written last.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from aiolit.processing._args import ensure_no_running_loop
from aiolit.processing._output import Output

__all__ = ["merge_datasets", "merge_datasets_async"]

_COMPRESSED_SUFFIX = re.compile(r"\.(zstd(?::\d+)?)\.bin$")


def _new_name(old: str, counter: int) -> str:
    match = _COMPRESSED_SUFFIX.search(old)
    return f"chunk-0-{counter}.{match.group(1)}.bin" if match else f"chunk-0-{counter}.bin"


async def _copy(source: Output, target: Output, old: str, new: str, slots: asyncio.Semaphore) -> None:
    async with slots:
        if source.local_path is not None:
            await target.put_file(new, os.path.join(source.local_path, old))
            return
        # Remote source: stream through a local temp file so large chunks never sit in memory.
        fd, tmp = tempfile.mkstemp(prefix="aiolit-merge-")
        os.close(fd)
        try:
            await source._remote().get_to_file(old, tmp)
            await target.put_file(new, tmp)
        finally:
            os.remove(tmp)


async def merge_datasets_async(
    input_dirs: Sequence[Any],
    output_dir: Any,
    max_workers: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Merge optimized datasets into ``output_dir``.

    Parameters
    ----------
    input_dirs
        At least two dataset directories or URLs; their samples are concatenated in this order.
    output_dir
        A new (empty) directory or URL.
    max_workers
        Concurrent chunk copies (default 16).
    storage_options
        Options for every store involved.

    Raises
    ------
    ValueError
        Fewer than two inputs, an output that already holds an ``index.json``, an input without
        one, or inputs whose ``data_format``/``compression``/config differ.
    """
    from aiolit.format import Index

    if isinstance(input_dirs, str) or len(input_dirs) < 2:
        raise ValueError("merge_datasets needs a list of at least two input directories")
    sources = [Output(d, storage_options) for d in input_dirs]
    target = Output(output_dir, storage_options)
    if target.url in {s.url for s in sources}:
        raise ValueError(f"output_dir {target.url} is also one of the input_dirs")
    try:
        if await target.exists("index.json"):
            raise ValueError(
                f"The output_dir {target.url} already contains an optimized dataset (index.json)"
            )
        indexes = []
        for source in sources:
            data = await source.read("index.json")
            if data is None:
                raise ValueError(f"{source.url} has no index.json: it is not an optimized dataset")
            indexes.append(Index.from_json(data, source=f"{source.url}/index.json"))
        first = indexes[0].config
        for source, index in zip(sources[1:], indexes[1:], strict=True):
            for key in ("data_format", "compression"):
                if index.config.get(key) != first.get(key):
                    raise ValueError(
                        f"cannot merge: {key} of {source.url} ({index.config.get(key)!r}) differs from "
                        f"{sources[0].url} ({first.get(key)!r})"
                    )
            other = {k: v for k, v in index.config.items() if k != "types"}
            mine = {k: v for k, v in first.items() if k != "types"}
            if other != mine:
                keys = sorted(k for k in set(other) | set(mine) if other.get(k) != mine.get(k))
                raise ValueError(f"cannot merge: the config of {source.url} differs in {keys}")
        target.make_local_dir()
        slots = asyncio.Semaphore(max_workers or 16)
        chunks: list[Any] = []
        copies = []
        for source, index in zip(sources, indexes, strict=True):
            for entry in index.chunks:
                new = _new_name(entry.filename, len(chunks))
                copies.append(_copy(source, target, entry.filename, new, slots))
                chunks.append(
                    type(entry)(new, entry.chunk_size, entry.chunk_bytes, entry.dim, dict(entry.extra))
                )
        await asyncio.gather(*copies)
        # LitData's merged index keeps the first config (and has no updated_at; aiolit writes one
        # so readers' caches tell this dataset from an earlier one at the same URL).
        await target.write("index.json", Index(chunks, dict(first), str(time.time())).to_json())
    finally:
        for output in (*sources, target):
            await output.aclose()


def merge_datasets(
    input_dirs: Sequence[Any],
    output_dir: Any,
    max_workers: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Blocking :func:`merge_datasets_async` (same arguments).

    Raises
    ------
    LoopError
        Called from inside a running event loop.
    """
    ensure_no_running_loop("merge_datasets")
    asyncio.run(merge_datasets_async(input_dirs, output_dir, max_workers, storage_options))
