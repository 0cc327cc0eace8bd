"""``map`` / ``map_async``: run ``fn(input, output_dir)`` over inputs in parallel.

``fn`` writes whatever files it likes into the directory it receives: the output itself when it
is local, a temp directory when it is remote (new files are then uploaded with their relative
paths kept, and removed locally).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from aiolit.processing._args import (
    check_extra_kwargs,
    ensure_no_running_loop,
    fast_dev_limit,
    resolve_topology,
    weighted_parts,
)
from aiolit.processing._engine import ProgressBar, WorkPlan, run_plan, static_tasks
from aiolit.processing._guards import check_spawn_safe
from aiolit.processing._input_dir import InputDir, check_inputs, detect_input_dir
from aiolit.processing._output import Output
from aiolit.processing._sources import batched, open_source, ranges_stream
from aiolit.processing._streaming_inputs import adapt_streaming_inputs
from aiolit.processing._worker import MapTask, run_map_task
from aiolit.processing.readers import apply_reader

__all__ = ["map", "map_async"]


async def map_async(
    fn: Callable[..., Any],
    inputs: Any,
    output_dir: Any,
    num_workers: int | None = None,
    fast_dev_run: bool | int = False,
    num_nodes: int | None = None,
    reorder_files: bool = True,
    error_when_not_empty: bool = False,
    batch_size: int | None = None,
    start_method: str | None = None,
    storage_options: dict[str, Any] | None = None,
    keep_data_ordered: bool | None = None,
    executor: Executor | None = None,
    verbose: bool = True,
    *,
    input_dir: str | None = None,
    weights: list[int] | None = None,
    reader: Any = None,
    **kwargs: Any,
) -> None:
    """Call ``fn(input, output_dir)`` for every input in worker processes.

    Parameters
    ----------
    fn
        ``fn(input, output_dir)`` (optionally with an ``is_last`` keyword) writing files into
        ``output_dir``.
    inputs
        A sequence or any (async) iterable of inputs.
    output_dir
        A local directory or a URL (``s3://`` ...); remote outputs get the files ``fn`` wrote.
    num_workers
        Worker processes (default ``os.cpu_count()``).
    fast_dev_run
        ``True`` (10) or N: only the first N inputs of each worker.
    num_nodes
        Machines running the same call (node rank from env ``DATA_OPTIMIZER_NODE_RANK``).
    reorder_files
        Accepted for LitData compatibility (ignored).
    error_when_not_empty
        Raise if the output already holds files.
    batch_size
        Group the inputs into lists of this size before calling ``fn``.
    start_method
        Start method of the default process pool.
    storage_options
        Options for the output store.
    keep_data_ordered
        ``False`` (or ``None``): workers pull inputs from a shared queue; ``True``: contiguous ranges.
    executor
        Any ``concurrent.futures.Executor`` instead of the default process pool.
    verbose
        Show a progress bar.
    input_dir
        A local folder or a URL the inputs' string paths point into; remote files are downloaded
        ahead of ``fn``, which gets local paths (see :func:`aiolit.optimize`).
    weights
        One positive number per input: balance the workers by total weight (see
        :func:`aiolit.optimize`).
    reader
        A :class:`aiolit.processing.readers.BaseReader`; ``fn`` gets ``reader.read(item)``.

    Raises
    ------
    ValueError
        Bad arguments, or a non-empty output with ``error_when_not_empty=True``.
    OptimizeError
        ``fn`` raised (names the input, carries the traceback) or a worker died.
    """
    del reorder_files
    check_extra_kwargs("map", kwargs)
    folder = None if input_dir is None else InputDir(input_dir)
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0
    ):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    limit = fast_dev_limit(fast_dev_run)
    topo = resolve_topology(num_workers, num_nodes, start_method)
    if executor is None:
        check_spawn_safe("map", fn, topo.start_method)
    given = inputs
    fn, inputs, _ = adapt_streaming_inputs(
        fn, inputs, "map", batch_size=batch_size, weights=weights, is_async=False
    )
    streamed = inputs is not given  # a StreamingDataset/Loader: its items name no files
    fn, inputs = apply_reader(fn, inputs, reader, topo.num_workers, "map", weights)
    source = open_source(inputs, None)
    output = Output(output_dir, storage_options)
    try:
        if error_when_not_empty and await output.names():
            raise ValueError(f"The output directory {output.url} is not empty (error_when_not_empty=True).")
        output.make_local_dir()
        items = await source.materialize()
        if batch_size is not None:
            items = batched(items, batch_size)
        if folder is None and reader is None and not streamed:
            folder = detect_input_dir(items)  # LitData downloads inputs naming s3:// objects
        if folder is not None:
            check_inputs(items, folder, "map")
        static = bool(keep_data_ordered) or executor is not None
        ranges: list[Sequence[int]] = list(topo.node_ranges(len(items)))
        if weights is not None:
            ranges = list(weighted_parts(weights, len(items), topo, static, "map"))

        def make_task(rank: int) -> MapTask:
            return MapTask(
                fn=fn,
                rank=rank,
                num_workers=topo.num_workers,
                num_nodes=topo.num_nodes,
                node_rank=topo.node_rank,
                output_url=output.url,
                local_output=output.is_local,
                storage_options=storage_options,
                input_dir=folder,
            )

        total = sum(len(r) if limit is None else min(len(r), limit) for r in ranges)
        if static:
            plan = WorkPlan(run_map_task, static_tasks(make_task, items, ranges, topo.rank(0), limit))
        else:
            plan = WorkPlan(
                run_map_task,
                [(make_task(topo.rank(w)), None) for w in range(topo.num_workers)],
                stream=ranges_stream(items, ranges),
                limit=None if limit is None else limit * topo.num_workers,
            )
        bar = ProgressBar(verbose, total, "map")
        try:
            results = await run_plan(plan, executor=executor, start_method=topo.start_method, bar=bar)
            bar.finish(sum(r.num_inputs for r in results), 0)
        finally:
            bar.close()
    finally:
        await output.aclose()


def map(
    fn: Callable[..., Any],
    inputs: Any,
    output_dir: Any,
    num_workers: int | None = None,
    fast_dev_run: bool | int = False,
    num_nodes: int | None = None,
    reorder_files: bool = True,
    error_when_not_empty: bool = False,
    batch_size: int | None = None,
    start_method: str | None = None,
    storage_options: dict[str, Any] | None = None,
    keep_data_ordered: bool | None = None,
    executor: Executor | None = None,
    verbose: bool = True,
    *,
    input_dir: str | None = None,
    weights: list[int] | None = None,
    reader: Any = None,
    **kwargs: Any,
) -> None:
    """Blocking :func:`map_async` (same arguments), for scripts.

    Raises
    ------
    LoopError
        Called from inside a running event loop (use ``await map_async(...)``).
    """
    ensure_no_running_loop("map")
    asyncio.run(
        map_async(
            fn,
            inputs,
            output_dir,
            num_workers=num_workers,
            fast_dev_run=fast_dev_run,
            num_nodes=num_nodes,
            reorder_files=reorder_files,
            error_when_not_empty=error_when_not_empty,
            batch_size=batch_size,
            start_method=start_method,
            storage_options=storage_options,
            keep_data_ordered=keep_data_ordered,
            executor=executor,
            verbose=verbose,
            input_dir=input_dir,
            weights=weights,
            reader=reader,
            **kwargs,
        )
    )
