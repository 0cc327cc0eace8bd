"""``async def`` functions: run on the event loop with bounded concurrency, one writer.

An I/O-bound ``fn`` (scraping, API calls) gains nothing from processes; it runs as tasks on the
loop, at most ``concurrency`` at a time. Samples are written by one ``ChunkWriter`` on one helper
thread (serialization and file writes must not stall the loop); remote outputs are uploaded as each
chunk completes.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import tempfile
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiolit.errors import FormatError, OptimizeError
from aiolit.processing._engine import ProgressBar
from aiolit.processing._worker import OptimizeTask, TaskResult, describe_input, finish_writer, set_env

__all__ = ["is_async_fn", "run_async_fn"]


def is_async_fn(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` function or async generator function (partials too)."""
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    return (
        inspect.iscoroutinefunction(fn)
        or inspect.isasyncgenfunction(fn)
        or (not inspect.isfunction(fn) and inspect.iscoroutinefunction(call))
        or (not inspect.isfunction(fn) and inspect.isasyncgenfunction(call))
    )


async def _samples(fn: Callable[..., Any], position: int, item: Any) -> list[Any]:
    try:
        result = fn(item)
        if inspect.isasyncgen(result):
            return [sample async for sample in result if sample is not None]
        value = await result
        if inspect.isgenerator(value):
            return [sample for sample in value if sample is not None]
        return [] if value is None else [value]
    except Exception:
        raise OptimizeError(
            f"fn raised on {describe_input(position, item)}:\n{traceback.format_exc()}"
        ) from None


async def run_async_fn(
    task: OptimizeTask,
    stream: AsyncIterator[tuple[int, Any]],
    *,
    ordered: bool,
    concurrency: int,
    limit: int | None,
    bar: ProgressBar,
) -> TaskResult:
    """Run the async ``task.fn`` over ``stream`` and write its samples as writer ``task.rank``.

    Raises
    ------
    OptimizeError
        ``fn`` raised (names the input, carries the traceback); the other calls are cancelled.
    """
    from aiolit.format import ChunkWriter

    saved = {k: os.environ.get(k) for k in ("DATA_OPTIMIZER_GLOBAL_RANK", "DATA_OPTIMIZER_NUM_WORKERS")}
    set_env(task.rank, task.num_workers, task.num_nodes, task.node_rank)
    write_dir = task.output_url if task.local_output else tempfile.mkdtemp(prefix="aiolit-optimize-")
    store: Any = None
    if not task.local_output:
        from aiolit.stores import open_store

        store = open_store(task.output_url, task.storage_options)
    writer_thread = ThreadPoolExecutor(1, thread_name_prefix="aiolit-writer")
    loop = asyncio.get_running_loop()
    writer = ChunkWriter(
        write_dir, rank=task.rank, chunk_index_start=task.chunk_index_start, **task.writer_options
    )
    uploads: set[asyncio.Task[None]] = set()
    upload_slots = asyncio.Semaphore(8)
    finished: set[str] = set()
    counts = {"inputs": 0, "samples": 0, "bytes": 0}
    keys: list[Any] | None = None if task.key_fn is None else []

    async def upload(name: str) -> None:
        async with upload_slots:
            path = os.path.join(write_dir, name)
            await store.put_file(name, path)
            os.remove(path)

    def chunk_done(entry: Any) -> None:
        if entry.filename in finished:
            return
        finished.add(entry.filename)
        counts["bytes"] += entry.chunk_bytes
        bar.update(0, entry.chunk_bytes)
        if store is not None:
            uploads.add(asyncio.ensure_future(upload(entry.filename)))

    def add_all(samples: list[Any]) -> list[Any]:
        try:
            return [entry for sample in samples for entry in writer.add(sample)]
        except FormatError as exc:
            raise OptimizeError(f"a sample fn returned cannot be written: {exc}") from None

    async def write(samples: list[Any]) -> None:
        if keys is not None and samples:
            from aiolit.format._keys import normalize_key

            assert task.key_fn is not None
            keys.extend(normalize_key(task.key_fn(sample)) for sample in samples)
        if samples:
            for entry in await loop.run_in_executor(writer_thread, add_all, samples):
                chunk_done(entry)
            counts["samples"] += len(samples)
        counts["inputs"] += 1
        bar.update(1, 0)
        for done in [u for u in uploads if u.done()]:
            uploads.discard(done)
            done.result()

    in_flight: deque[asyncio.Task[list[Any]]] = deque()
    try:
        count = 0
        async for position, item in stream:
            if limit is not None and count >= limit:
                break
            count += 1
            in_flight.append(asyncio.ensure_future(_samples(task.fn, position, item)))
            while len(in_flight) >= concurrency:
                if ordered:
                    await write(await in_flight.popleft())
                else:
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for finished_task in done:
                        in_flight.remove(finished_task)
                        await write(finished_task.result())
        while in_flight:
            await write(await in_flight.popleft())
        entries: list[Any] = []
        config: dict[str, Any] | None = None
        if counts["samples"]:
            entries, config = await loop.run_in_executor(
                writer_thread, finish_writer, writer, write_dir, task.rank
            )
            for entry in entries:
                chunk_done(entry)
        await asyncio.gather(*uploads)
        return TaskResult(
            task.rank, entries, config, counts["inputs"], counts["samples"], counts["bytes"], keys=keys
        )
    finally:
        for pending in [*in_flight, *uploads]:
            pending.cancel()
        await asyncio.gather(*in_flight, *uploads, return_exceptions=True)
        writer_thread.shutdown(wait=True)
        if store is not None:
            await store.aclose()
            shutil.rmtree(write_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
