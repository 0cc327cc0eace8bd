"""Run self-contained tasks on an executor, feed a shared queue, report progress, fail fast.

Two ways to hand inputs to workers:

* static: each task carries its own list of ``(position, input)`` (ordered mode, and any foreign
  executor such as Dask's, where a queue cannot be shared);
* shared queue: aiolit's own process pool gets one long-running task per worker that pulls pickled
  inputs from a bounded ``multiprocessing.Queue`` the loop feeds (load balancing, streaming inputs).

On the first failure the pool's processes are killed (never left orphaned) and the error is raised
as :class:`~aiolit.errors.OptimizeError`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import queue as queue_module
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from aiolit._units import human_bytes
from aiolit.errors import OptimizeError
from aiolit.processing._worker import TaskResult, describe_input, init_worker

__all__ = ["ProgressBar", "WorkPlan", "run_plan", "static_tasks"]


class ProgressBar:
    """A tqdm bar of inputs processed with the bytes written as a postfix (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self._bar: Any = None
        self._bytes = 0
        self._lock = threading.Lock()
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="item", smoothing=0.1, dynamic_ncols=True)

    def update(self, items: int, nbytes: int) -> None:
        if self._bar is None:
            return
        with self._lock:
            self._bytes += nbytes
            self._bar.update(items)
            if nbytes:
                self._bar.set_postfix_str(human_bytes(self._bytes), refresh=False)

    def finish(self, items: int, nbytes: int) -> None:
        """Set the exact totals (the worker reports are throttled) and close."""
        if self._bar is None:
            return
        with self._lock:
            self._bar.n = items
            self._bar.set_postfix_str(human_bytes(nbytes), refresh=False)
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass
class WorkPlan:
    """The tasks to run: ``(task, inputs)`` pairs; ``inputs=None`` means "pull from ``stream``"."""

    worker_fn: Callable[[Any, list[tuple[int, Any]] | None], TaskResult]
    tasks: list[tuple[Any, list[tuple[int, Any]] | None]]
    stream: AsyncIterator[tuple[int, Any]] | None = None
    limit: int | None = None  # stop reading the stream after this many inputs (fast_dev_run)
    segment: int | None = None  # send the stream as runs of this many consecutive inputs


def _blocking_put(q: Any, payload: bytes, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(payload, timeout=0.2)
            return
        except queue_module.Full:
            continue


async def _feed(plan: WorkPlan, q: Any, num_workers: int, stop: threading.Event) -> None:
    async def put(payload: bytes) -> None:
        try:
            q.put_nowait(payload)
        except queue_module.Full:
            await asyncio.to_thread(_blocking_put, q, payload, stop)

    def dumps(position: int, item: Any) -> bytes:
        try:
            # Pickle here, not in the queue's feeder thread, which would drop the input silently.
            return pickle.dumps((position, item), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise OptimizeError(f"{describe_input(position, item)} cannot be pickled: {exc!r}") from exc

    assert plan.stream is not None
    count = 0
    run: list[tuple[int, Any]] = []
    async for position, item in plan.stream:
        if plan.limit is not None and count >= plan.limit:
            break
        count += 1
        if plan.segment is None:
            await put(dumps(position, item))
            continue
        run.append((position, item))
        if len(run) == plan.segment:
            await put(_dump_segment(run))
            run = []
    if run:
        await put(_dump_segment(run))
    for _ in range(num_workers):
        await put(b"")  # one end marker per worker


def _dump_segment(run: list[tuple[int, Any]]) -> bytes:
    """A segment of consecutive inputs, keyed by its first position (the order of the segments)."""
    try:
        return pickle.dumps((run[0][0], run), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        for position, item in run:  # name the input that cannot be pickled
            try:
                pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise OptimizeError(f"{describe_input(position, item)} cannot be pickled: {exc!r}") from exc
        raise


def _drain_progress(q: Any, bar: ProgressBar, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            items, nbytes = q.get(timeout=0.1)
        except queue_module.Empty:
            continue
        except (EOFError, OSError):
            return
        bar.update(items, nbytes)


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    # Keep the pool's own process table, not a copy: its manager thread may still be starting a
    # worker while we kill the others, and that late one must not be left running.
    table: dict[Any, Any] = getattr(pool, "_processes", None) or {}
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 10
    killed: set[int] = set()
    while True:
        processes = list(table.values())
        for process in processes:
            if process.is_alive():
                process.kill()
            killed.add(id(process))
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        if manager is not None:
            manager.join(timeout=max(0.0, deadline - time.monotonic()))
        late = [p for p in list(table.values()) if id(p) not in killed]
        if not late or time.monotonic() > deadline:
            break


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _close_queue(q: Any) -> None:
    if q is not None:
        q.cancel_join_thread()
        q.close()


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, OptimizeError | asyncio.CancelledError | KeyboardInterrupt):
        return exc
    if isinstance(exc, BrokenProcessPool):
        return OptimizeError(
            "A worker process died unexpectedly (killed by a signal, os._exit, a segfault or the "
            f"out-of-memory killer?); the run was stopped and no index.json was written. ({exc})"
        )
    hint = ""
    if isinstance(exc, pickle.PicklingError | TypeError | AttributeError) and "pickle" in str(exc):
        hint = " (fn and the inputs must be picklable: define fn at module level, not as a lambda)"
    return OptimizeError(f"A task failed: {type(exc).__name__}: {exc}{hint}")


async def run_plan(
    plan: WorkPlan,
    *,
    executor: Executor | None,
    start_method: str,
    bar: ProgressBar,
) -> list[TaskResult]:
    """Run every task of ``plan``; return their results in task order.

    Raises
    ------
    OptimizeError
        The first task failure (the pool is killed first) or a worker process death.
    """
    own_pool = executor is None
    num_tasks = len(plan.tasks)
    item_q: Any = None
    progress_q: Any = None
    pool: Executor
    if executor is None:
        ctx = multiprocessing.get_context(start_method)
        if plan.stream is not None:
            # Bounded: a stream is read only as fast as the workers take it (a few segments each).
            item_q = ctx.Queue(maxsize=max(64, 16 * num_tasks) if plan.segment is None else 2 * num_tasks)
        progress_q = ctx.Queue()
        pool = ProcessPoolExecutor(
            max_workers=max(1, num_tasks),
            mp_context=ctx,
            initializer=init_worker,
            initargs=(item_q, progress_q, os.getpid()),
        )
    else:
        if plan.stream is not None:
            raise ValueError("a streaming input needs aiolit's own process pool (materialize it first)")
        pool = executor

    stop = threading.Event()
    progress_thread: threading.Thread | None = None
    if progress_q is not None:
        progress_thread = threading.Thread(
            target=_drain_progress, args=(progress_q, bar, stop), name="aiolit-progress", daemon=True
        )
        progress_thread.start()

    futures: list[asyncio.Future[TaskResult]] = []
    pending: set[asyncio.Future[Any]] = set()
    ok = False
    try:
        for task, inputs in plan.tasks:
            futures.append(asyncio.wrap_future(pool.submit(plan.worker_fn, task, inputs)))
        pending.update(futures)
        if item_q is not None:
            pending.add(asyncio.ensure_future(_feed(plan, item_q, num_tasks, stop)))
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                if exc is not None:
                    raise _translate(exc) from exc
                result = future.result()
                if not own_pool and isinstance(result, TaskResult):
                    bar.update(result.num_inputs, result.num_bytes)
        ok = True
        return [future.result() for future in futures]
    finally:
        stop.set()
        for future in pending:
            future.cancel()
        for future in futures:
            # The first failure was raised; the others (a broken pool fails every task) must be
            # retrieved, or asyncio prints "Future exception was never retrieved" at exit.
            future.add_done_callback(_retrieve)
        if own_pool:
            assert isinstance(pool, ProcessPoolExecutor)
            if ok:
                await asyncio.to_thread(pool.shutdown, wait=True)
            else:
                await asyncio.to_thread(_kill_pool, pool)
            _close_queue(item_q)
            _close_queue(progress_q)
        else:
            for future in futures:
                future.cancel()
        if progress_thread is not None:
            await asyncio.to_thread(progress_thread.join)


def static_tasks(
    make_task: Callable[[int], Any],
    items: Sequence[Any],
    parts: Sequence[Sequence[int]],
    first_rank: int,
    limit: int | None,
    done: dict[int, int] | None = None,
) -> list[tuple[Any, list[tuple[int, Any]] | None]]:
    """One task per part of ``items``: ``(make_task(rank), [(position, input), ...])``.

    ``done`` maps a rank to the number of its first inputs to leave out (a checkpoint's resume point).
    """
    tasks: list[tuple[Any, list[tuple[int, Any]] | None]] = []
    for offset, part in enumerate(parts):
        chosen = part if limit is None else part[:limit]
        chosen = chosen[(done or {}).get(first_rank + offset, 0) :]
        tasks.append((make_task(first_rank + offset), [(i, items[i]) for i in chosen]))
    return tasks
