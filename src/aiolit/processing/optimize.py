"""``optimize`` / ``optimize_async``: turn inputs into a LitData-format dataset.

The coordinator (this module, on an event loop) reads the input source, partitions the work,
runs self-contained tasks on an executor (each writes and, for remote outputs, uploads its own
chunks and returns its index entries), then merges the entries and writes ``index.json`` last, so
a failed or killed run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Literal

from aiolit.processing._args import (
    Topology,
    aligned_parts,
    check_extra_kwargs,
    ensure_no_running_loop,
    fast_dev_limit,
    resolve_topology,
    weighted_parts,
)
from aiolit.processing._async_fn import is_async_fn, run_async_fn
from aiolit.processing._checkpoint import Resume, load_resume, save_config
from aiolit.processing._checkpoint import clear as clear_checkpoints
from aiolit.processing._checkpoint import clear_node as clear_node_checkpoints
from aiolit.processing._engine import ProgressBar, WorkPlan, run_plan, static_tasks
from aiolit.processing._guards import check_spawn_safe
from aiolit.processing._input_dir import InputDir, check_inputs, detect_input_dir
from aiolit.processing._keys import read_keys, write_keys
from aiolit.processing._nodes import finalize_index, prepare_output
from aiolit.processing._output import Output
from aiolit.processing._sources import Source, batched, open_source, ranges_stream
from aiolit.processing._streaming_inputs import adapt_streaming_inputs
from aiolit.processing._worker import OptimizeTask, TaskResult, run_optimize_task
from aiolit.processing.readers import apply_reader

__all__ = ["optimize", "optimize_async"]

_COMPRESSION = re.compile(r"^zstd(:([1-9]|1[0-9]|2[0-2]))?$")


def _chunk_bytes(value: int | str | None) -> int | None:
    from aiolit.format import parse_chunk_bytes

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"chunk_bytes must be an int or a size string like '64MB', got {value!r}")
    return parse_chunk_bytes(value)


def _item_loader_name(item_loader: Any) -> str:
    from aiolit.streaming.item_loader import PyTreeLoader, TokensLoader

    if item_loader is None or isinstance(item_loader, PyTreeLoader):
        return "PyTreeLoader"
    if isinstance(item_loader, TokensLoader):
        return "TokensLoader"
    raise ValueError(
        f"optimize(item_loader=...) supports PyTreeLoader() and TokensLoader(), got {item_loader!r}"
    )


async def _batched_stream(
    stream: AsyncIterator[tuple[int, Any]], batch_size: int
) -> AsyncIterator[tuple[int, Any]]:
    batch: list[Any] = []
    position = 0
    async for _, item in stream:
        batch.append(item)
        if len(batch) == batch_size:
            yield position, batch
            position, batch = position + 1, []
    if batch:
        yield position, batch


# Inputs per segment of an ordered stream: every segment ends a chunk, so larger segments give
# fewer short chunks; the queue holds two segments per worker (bounded memory).
_SEGMENT = 256


def _in_input_order(results: list[TaskResult]) -> TaskResult:
    """One result whose entries follow the input order of the segments the workers wrote."""
    from aiolit.processing._nodes import node_index

    pieces: list[tuple[int, list[Any], list[Any]]] = []
    for result in results:
        start = first_key = 0
        for segment, end in result.segments:
            entries = list(result.entries[start:end])
            last_key = first_key + sum(entry.chunk_size for entry in entries)
            pieces.append((segment, entries, (result.keys or [])[first_key:last_key]))
            start, first_key = end, last_key
    pieces.sort(key=lambda piece: piece[0])
    merged = node_index(results)  # validates that the workers agree on the config
    with_keys = any(r.keys is not None for r in results)
    return TaskResult(
        rank=0,
        entries=[entry for _, entries, _ in pieces for entry in entries],
        config=None if merged is None else dict(merged.config),
        num_inputs=sum(r.num_inputs for r in results),
        num_samples=sum(r.num_samples for r in results),
        num_bytes=sum(r.num_bytes for r in results),
        keys=[key for _, _, keys in pieces for key in keys] if with_keys else None,
    )


def _input_stream(
    source: Source, items: list[Any] | None, ranges: Sequence[Sequence[int]], batch_size: int | None
) -> AsyncIterator[tuple[int, Any]]:
    """This node's inputs as a stream: the static items of ``ranges``, or the source's own stream."""
    if items is not None:
        return ranges_stream(items, ranges)
    assert source.stream is not None
    return source.stream if batch_size is None else _batched_stream(source.stream, batch_size)


def _check_align_chunking(chunk_size: int | None, ordered: bool, weights: Any, queue: Any) -> None:
    if chunk_size is None:
        raise ValueError("When `align_chunking` is set to True, `chunk_size` needs to be defined.")
    if not ordered:
        raise ValueError("align_chunking requires keep_data_ordered=True (fixed inputs per worker)")
    if weights is not None or queue is not None:
        raise ValueError(
            "align_chunking splits the inputs itself: it cannot be combined with weights= or queue="
        )


def _check_key_fn(key_fn: Any, loader_name: str, topo: Topology) -> None:
    if not callable(key_fn):
        raise ValueError(f"key_fn must be callable (sample -> str or int key), got {key_fn!r}")
    if loader_name == "TokensLoader":
        raise ValueError("optimize(key_fn=...) keys samples, which a TokensLoader dataset does not have")
    if topo.num_nodes > 1:
        raise ValueError("optimize(key_fn=...) is not supported with num_nodes > 1 yet")


def _check_checkpointable(source: Source, fn: Callable[..., Any], ordered: bool) -> None:
    if source.is_queue:
        raise ValueError("optimize(use_checkpoint=True) needs `inputs` known up front, not a queue")
    if not ordered:
        raise ValueError(
            "optimize(use_checkpoint=True) needs keep_data_ordered=True (fixed inputs per worker)"
        )
    if is_async_fn(fn):
        raise ValueError("optimize(use_checkpoint=True) does not support `async def` functions yet")


async def optimize_async(
    fn: Callable[..., Any],
    inputs: Any = None,
    output_dir: Any = "optimized_data",
    queue: Any = None,
    chunk_size: int | None = None,
    chunk_bytes: int | str | None = None,
    compression: str | None = None,
    encryption: Any = None,
    num_workers: int | None = None,
    fast_dev_run: bool | int = False,
    num_nodes: int | None = None,
    mode: Literal["append", "overwrite"] | None = None,
    keep_data_ordered: bool = True,
    item_loader: Any = None,
    reorder_files: bool = True,
    batch_size: int | None = None,
    start_method: str | None = None,
    storage_options: dict[str, Any] | None = None,
    executor: Executor | None = None,
    verbose: bool = True,
    max_concurrency: int | None = None,
    *,
    input_dir: str | None = None,
    weights: list[int] | None = None,
    align_chunking: bool = False,
    compression_level: str | None = None,
    compression_batch_size: int | None = None,
    reader: Any = None,
    use_checkpoint: bool = False,
    key_fn: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> None:
    """Apply ``fn`` to every input and write the samples as an optimized (LitData-format) dataset.

    Parameters
    ----------
    fn
        Called once per input. Returns a sample (``None`` skips the input), or is a generator
        yielding samples. ``async def`` functions and async generators run on the event loop, at
        most ``max_concurrency`` at a time; plain functions run in worker processes.
    inputs
        A sequence, any iterable, an async iterable, an ``asyncio.Queue`` ended by ``ALL_DONE``, a
        ``StreamingDataset`` (``fn`` gets each sample; workers read the dataset themselves) or a
        ``StreamingDataLoader`` (``fn`` gets each batch it yields): re-chunk an existing dataset.
    output_dir
        A local directory or a URL (``s3://``, ``gs://``, ``azure://``).
    queue
        Instead of ``inputs``: a ``multiprocessing.Queue`` (or ``asyncio.Queue``) ended by one
        ``ALL_DONE``, however many workers.
    chunk_size, chunk_bytes
        Exactly one: items (tokens for ``TokensLoader``) per chunk, or bytes per chunk (an int or
        a string with decimal units such as ``"64MB"``).
    compression
        ``None``, ``"zstd"`` or ``"zstd:N"``.
    encryption
        An ``aiolit.format.Encryption`` (e.g. ``FernetEncryption``).
    num_workers
        Worker processes (default ``os.cpu_count()``; 0 means 1).
    fast_dev_run
        ``True`` (10) or N: process only the first N inputs of each worker.
    num_nodes
        Machines running the same call; the node rank comes from env ``DATA_OPTIMIZER_NODE_RANK``
        (or ``NODE_RANK``). The last node merges every node's index.
    mode
        ``None`` (the output must not hold an ``index.json``), ``"append"`` or ``"overwrite"``.
    keep_data_ordered
        ``True``: contiguous input ranges per worker, sample order = input order (an iterator or
        generator is streamed in segments of consecutive inputs, with bounded memory; each segment
        ends a chunk). ``False``: workers pull inputs from a shared queue (load balancing), any order.
    item_loader
        ``TokensLoader()`` for token datasets; default ``PyTreeLoader``.
    reorder_files
        Accepted for LitData compatibility; aiolit keeps the input order.
    batch_size
        Group the inputs into lists of this size before calling ``fn``.
    start_method
        Multiprocessing start method of the default pool (default ``spawn``; ``fork`` in notebooks).
    storage_options
        Options for the output store (including the retry budget: ``retry_max_attempts``,
        ``retry_connect_attempts``, ... or ``retry=RetryPolicy(...)``).
    executor
        Any ``concurrent.futures.Executor`` (e.g. ``dask_client.get_executor()``) instead of the
        default process pool; streamed inputs are then read fully before the tasks start.
    verbose
        Show a progress bar on stderr.
    max_concurrency
        Concurrent calls of an ``async def`` ``fn`` (default 32).
    use_checkpoint
        Save a checkpoint per worker each time one of its chunks is stored; a rerun of a crashed or
        killed call (same inputs, ``num_workers`` and ``mode``) resumes from them instead of
        starting over. Needs ``keep_data_ordered=True`` and static inputs (not a queue).
    input_dir
        A local folder or a URL (``s3://bucket/raw``) that the inputs' string paths point into
        (each input must hold at least one). Remote files are downloaded by each worker, several
        inputs ahead and concurrently, and ``fn`` gets the input with the paths replaced by the
        local copies (deleted after ``fn`` returns). Uses ``storage_options``. Without it, inputs
        naming objects (``s3://bucket/...``, ``gs://``, ``azure://``) are downloaded the same way,
        as LitData does (the bucket is taken from the first input).
    key_fn
        ``sample -> key`` (a str or an int, unique per sample): writes LitData's keys sidecar
        (``keys/shard-00000.parquet``) so that ``StreamingDataset(...)["some-key"]`` (or
        ``get_by_key``) finds the sample. Appends keep the existing keys.
    reader
        A :class:`aiolit.processing.readers.BaseReader` (e.g. ``ParquetReader(num_rows=...)``):
        it turns ``inputs`` into work items and ``fn`` gets ``reader.read(item)`` of each.
    weights
        One positive number per input (its cost): the inputs are packed greedily (heaviest first
        into the least loaded worker, as LitData) so every worker gets about the same total
        weight. Each worker keeps its inputs in input order; with ``keep_data_ordered=False`` the
        shared queue is fed heaviest first.
    align_chunking
        With ``chunk_size``: give every worker but the last a whole number of chunks and the last
        the rest, so the chunk boundaries are those of a one-worker run (when ``fn`` returns one
        sample per input). The last worker gets more work.
    compression_level, compression_batch_size
        LitData 0.2.76's granularity of ``compression="zstd"`` (not the zstd level, which goes in
        ``"zstd:N"``): ``"chunk"`` (aiolit's default) compresses whole files
        (``chunk-R-I.zstd.bin``); ``"batch"`` (LitData's default) writes frames of
        ``compression_batch_size`` (256) items inside ``chunk-R-I.bin``; ``"sample"`` one frame per
        item. Batch/sample chunks can be read item by item without inflating the whole chunk.

    Raises
    ------
    ValueError
        Bad arguments.
    OptimizeError
        ``fn`` raised (the message names the input and holds its traceback), a sample cannot be
        serialized (the message names the field and its type), a worker died, the output already
        holds a dataset and ``mode`` is ``None`` (or another run created one meanwhile), or the
        script would break spawned workers (no ``if __name__ == "__main__":`` guard, read from stdin).
    """
    del reorder_files  # aiolit never reorders: the sample order is the input order
    check_extra_kwargs("optimize", kwargs)
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    if mode not in (None, "append", "overwrite"):
        raise ValueError(f"mode must be None, 'append' or 'overwrite', got {mode!r}")
    parsed_bytes = _chunk_bytes(chunk_bytes)
    if (chunk_size is None) == (parsed_bytes is None):
        raise ValueError("Exactly one of `chunk_size` or `chunk_bytes` must be provided.")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0
    ):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if compression is not None and not _COMPRESSION.match(str(compression)):
        raise ValueError(f"compression must be None, 'zstd' or 'zstd:1'..'zstd:22', got {compression!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0
    ):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if executor is not None and not isinstance(executor, Executor):
        raise ValueError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    concurrency = 32 if max_concurrency is None else max_concurrency
    if concurrency <= 0:
        raise ValueError(f"max_concurrency must be positive, got {max_concurrency!r}")
    limit = fast_dev_limit(fast_dev_run)
    loader_name = _item_loader_name(item_loader)
    from aiolit.format._writer import check_compression_level

    check_compression_level(
        compression, compression_level, compression_batch_size, encryption is not None, loader_name
    )
    if align_chunking:
        _check_align_chunking(chunk_size, keep_data_ordered, weights, queue)
    topo = resolve_topology(num_workers, num_nodes, start_method)
    if executor is None and not is_async_fn(fn):
        check_spawn_safe("optimize", fn, topo.start_method)
    fn, inputs, streamed = adapt_streaming_inputs(
        fn, inputs, "optimize", batch_size=batch_size, weights=weights, is_async=is_async_fn(fn)
    )
    if reader is not None and is_async_fn(fn):
        raise ValueError("optimize(reader=...) needs a plain (not `async def`) fn")
    fn, inputs = apply_reader(fn, inputs, reader, topo.num_workers, "optimize", weights)
    source = open_source(inputs, queue)
    if streamed:
        source.is_queue = True  # a loader's batches are streamed to the workers, never listed
    if use_checkpoint:
        _check_checkpointable(source, fn, keep_data_ordered)
    folder = None if input_dir is None else InputDir(input_dir)
    if (
        folder is None
        and source.items is not None
        and reader is None
        and not streamed
        and not is_async_fn(fn)
    ):
        folder = detect_input_dir(source.items)  # LitData downloads inputs naming s3:// objects
    if key_fn is not None:
        _check_key_fn(key_fn, loader_name, topo)
    if folder is not None and is_async_fn(fn):
        raise ValueError("optimize(input_dir=...) needs a plain (not `async def`) fn")
    output = Output(output_dir, storage_options)

    try:
        existing, starts = await prepare_output(output, mode, topo)
        if key_fn is not None and existing is not None:
            await read_keys(output, existing.num_samples)  # fail before the work, not after it
        run_id = uuid.uuid4().hex[:8]
        writer_options = {
            "chunk_size": chunk_size,
            "chunk_bytes": parsed_bytes,
            "compression": compression,
            "encryption": encryption,
            "item_loader": loader_name,
            "compression_level": compression_level,
            "compression_batch_size": compression_batch_size,
            # A run never adopts or clobbers bytes it did not write: local chunk names are taken
            # exclusively; remote appends (no exclusive create there) tag their names with the run.
            "exclusive": output.is_local,
            "name_tag": f".{run_id}" if mode == "append" and not output.is_local else "",
            "tmp_tag": f"{run_id}.",
        }

        resumes: dict[int, Resume] = {}
        if not use_checkpoint and topo.node_rank == 0:
            await clear_checkpoints(output)  # stale checkpoints must never be resumed later

        async def checkpointing(parts: list[list[Any]]) -> dict[int, int]:
            resumes.update(await load_resume(output, topo.node_rank, topo.rank(0), parts))
            if not resumes:
                await save_config(output, topo.node_rank, parts)
            return {rank: r.inputs_done for rank, r in resumes.items()}

        def make_task(rank: int) -> OptimizeTask:
            return OptimizeTask(
                fn=fn,
                rank=rank,
                num_workers=topo.num_workers,
                num_nodes=topo.num_nodes,
                node_rank=topo.node_rank,
                output_url=output.url,
                local_output=output.is_local,
                storage_options=storage_options,
                writer_options=writer_options,
                chunk_index_start=starts.get(rank, 0),
                use_checkpoint=use_checkpoint,
                resume=resumes.get(rank),
                input_dir=folder,
                key_fn=key_fn,
            )

        started = time.time()
        results = await _run(
            fn,
            source,
            topo,
            make_task,
            keep_data_ordered,
            executor,
            batch_size,
            limit,
            concurrency,
            verbose,
            checkpointing if use_checkpoint else None,
            folder,
            weights,
            chunk_size if align_chunking else None,
        )
        if not any(result.num_samples for result in results) and topo.num_nodes == 1 and existing is None:
            warnings.warn(
                f"optimize() produced no samples (fn returned None for every input); {output.url} "
                "holds an empty dataset",
                stacklevel=2,
            )
            from aiolit.format import Index

            # LitData's empty dataset: {"chunks": [], "config": null, "updated_at": ...}
            await output.write("index.json", Index([], {}, str(started)).to_json())
            if use_checkpoint:
                await clear_node_checkpoints(output, topo.node_rank, [topo.rank(0)])
            return
        extra = None
        if key_fn is not None:
            extra = await write_keys(output, results, existing)
        await finalize_index(output, results, existing, topo, updated_at=str(started), extra=extra)
        if use_checkpoint:
            ranks = [topo.rank(w) for w in range(topo.num_workers)]
            await clear_node_checkpoints(output, topo.node_rank, ranks)
    finally:
        await output.aclose()


async def _run(
    fn: Callable[..., Any],
    source: Source,
    topo: Topology,
    make_task: Callable[[int], OptimizeTask],
    ordered: bool,
    executor: Executor | None,
    batch_size: int | None,
    limit: int | None,
    concurrency: int,
    verbose: bool,
    checkpointing: Callable[[list[list[Any]]], Awaitable[dict[int, int]]] | None = None,
    input_dir: InputDir | None = None,
    weights: Any = None,
    align_chunking: int | None = None,
) -> list[Any]:
    """Partition the inputs and run the tasks; return one result per writer.

    ``checkpointing`` gets each worker's inputs and returns how many of them each rank already
    finished (``use_checkpoint``).
    """
    async_fn = is_async_fn(fn)
    # Foreign executors cannot share a queue with the loop: they get the inputs up front. Ordered
    # streams (generators, iterators) go through the queue in segments of consecutive inputs, read
    # only as fast as the workers take them; the chunks are put back in input order at the end.
    # Checkpoints, weights and aligned chunks need every worker's inputs up front too.
    needs_items = checkpointing is not None or weights is not None or align_chunking is not None
    if source.items is None and (executor is not None or (needs_items and not source.is_queue)):
        await source.materialize()
    segmented = ordered and source.items is None and not source.is_queue and not async_fn
    items = source.items
    if items is not None and batch_size is not None:
        items = batched(items, batch_size)
    if items is not None and input_dir is not None:
        check_inputs(items, input_dir, "optimize")

    ranges: list[Sequence[int]] = []
    if items is not None:
        static = ordered or executor is not None
        if align_chunking is not None:
            ranges = list(aligned_parts(len(items), topo, align_chunking))
        elif weights is None:
            ranges = list(topo.node_ranges(len(items)))
        else:
            ranges = list(weighted_parts(weights, len(items), topo, static, "optimize"))
    total = None if items is None else sum(len(p) if limit is None else min(len(p), limit) for p in ranges)
    done: dict[int, int] = {}
    if checkpointing is not None:
        assert items is not None
        done = await checkpointing([[items[i] for i in part[:limit]] for part in ranges])
        total = (total or 0) - sum(done.values())
    stream_limit = None if limit is None else limit * topo.num_workers  # shared by all workers
    bar = ProgressBar(verbose, total, "optimize")
    try:
        if async_fn:
            result = await run_async_fn(
                make_task(topo.rank(0)),
                _input_stream(source, items, ranges, batch_size),
                ordered=ordered,
                concurrency=concurrency,
                limit=total if items is not None else stream_limit,
                bar=bar,
            )
            results = [result]
        else:
            if items is not None and (ordered or executor is not None):
                plan = WorkPlan(
                    run_optimize_task, static_tasks(make_task, items, ranges, topo.rank(0), limit, done)
                )
            else:
                plan = WorkPlan(
                    run_optimize_task,
                    [
                        (dataclasses.replace(make_task(topo.rank(w)), segmented=segmented), None)
                        for w in range(topo.num_workers)
                    ],
                    stream=_input_stream(source, items, ranges, batch_size),
                    limit=stream_limit,
                    segment=_SEGMENT if segmented else None,
                )
            results = await run_plan(plan, executor=executor, start_method=topo.start_method, bar=bar)
            if segmented:
                results = [_in_input_order(results)]
        bar.finish(sum(r.num_inputs for r in results), sum(r.num_bytes for r in results))
        return results
    finally:
        bar.close()


def optimize(
    fn: Callable[..., Any],
    inputs: Any = None,
    output_dir: Any = "optimized_data",
    queue: Any = None,
    chunk_size: int | None = None,
    chunk_bytes: int | str | None = None,
    compression: str | None = None,
    encryption: Any = None,
    num_workers: int | None = None,
    fast_dev_run: bool | int = False,
    num_nodes: int | None = None,
    mode: Literal["append", "overwrite"] | None = None,
    keep_data_ordered: bool = True,
    item_loader: Any = None,
    reorder_files: bool = True,
    batch_size: int | None = None,
    start_method: str | None = None,
    storage_options: dict[str, Any] | None = None,
    executor: Executor | None = None,
    verbose: bool = True,
    max_concurrency: int | None = None,
    *,
    input_dir: str | None = None,
    weights: list[int] | None = None,
    align_chunking: bool = False,
    compression_level: str | None = None,
    compression_batch_size: int | None = None,
    reader: Any = None,
    use_checkpoint: bool = False,
    key_fn: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> None:
    """Blocking :func:`optimize_async` (same arguments), for scripts; see it for the parameters.

    It runs its own event loop (``asyncio.run``), so it cannot be called from a thread that is
    already running one: there, ``await optimize_async(...)``.

    Raises
    ------
    LoopError
        Called from inside a running event loop.
    """
    ensure_no_running_loop("optimize")
    asyncio.run(
        optimize_async(
            fn,
            inputs=inputs,
            output_dir=output_dir,
            queue=queue,
            chunk_size=chunk_size,
            chunk_bytes=chunk_bytes,
            compression=compression,
            encryption=encryption,
            num_workers=num_workers,
            fast_dev_run=fast_dev_run,
            num_nodes=num_nodes,
            mode=mode,
            keep_data_ordered=keep_data_ordered,
            item_loader=item_loader,
            reorder_files=reorder_files,
            batch_size=batch_size,
            start_method=start_method,
            storage_options=storage_options,
            executor=executor,
            verbose=verbose,
            max_concurrency=max_concurrency,
            input_dir=input_dir,
            weights=weights,
            align_chunking=align_chunking,
            compression_level=compression_level,
            compression_batch_size=compression_batch_size,
            reader=reader,
            use_checkpoint=use_checkpoint,
            key_fn=key_fn,
            **kwargs,
        )
    )
