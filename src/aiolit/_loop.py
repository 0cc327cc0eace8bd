"""The sync facade: one asyncio event loop per process, on a daemon thread.

Every I/O path in aiolit is a coroutine. Sync callers (a torch ``DataLoader`` worker, a plain
script) reach them through :func:`run` and :func:`iterate`, which hand the coroutine to this
process's loop thread and wait for the result in the caller's thread.

- The loop is created lazily, on first use.
- After ``os.fork()`` the child forgets the parent's loop (the thread does not exist in the
  child) and builds its own on first use; ``spawn``/``forkserver`` children start clean anyway.
- Exceptions raised by the coroutine are re-raised in the caller, with their traceback.
- A blocking call from inside the loop thread would deadlock, so it raises :class:`LoopError`.
- Ctrl-C in the waiting thread cancels the coroutine and propagates ``KeyboardInterrupt``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from aiolit.errors import LoopError

__all__ = ["ensure_no_running_loop", "get_loop", "in_loop_thread", "iterate", "run"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def _reset_after_fork() -> None:
    # The loop thread does not survive fork; its loop object may be mid-operation. Drop both.
    global _lock, _loop, _thread, _pid
    _lock = threading.Lock()
    _loop = None
    _thread = None
    _pid = None


os.register_at_fork(after_in_child=_reset_after_fork)


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    loop.run_forever()


def get_loop() -> asyncio.AbstractEventLoop:
    """Return this process's aiolit loop, starting its thread on first use."""
    global _loop, _thread, _pid
    loop = _loop
    if loop is not None and _pid == os.getpid() and _thread is not None and _thread.is_alive():
        return loop
    with _lock:
        if _loop is None or _pid != os.getpid() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            started = threading.Event()
            thread = threading.Thread(target=_serve, args=(loop, started), name="aiolit-loop", daemon=True)
            thread.start()
            started.wait()
            _loop, _thread, _pid = loop, thread, os.getpid()
        assert _loop is not None
        return _loop


def in_loop_thread() -> bool:
    """True when called from aiolit's loop thread (where blocking on the loop would deadlock)."""
    return _thread is not None and _pid == os.getpid() and threading.current_thread() is _thread


def _wait(future: concurrent.futures.Future[T], timeout: float | None) -> T:
    try:
        return future.result(timeout)
    except KeyboardInterrupt:
        # Lock waits are interruptible on POSIX: cancel the coroutine, then let Ctrl-C through.
        future.cancel()
        raise
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"aiolit: operation did not finish within {timeout} s") from None


def run(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run ``coro`` on this process's loop thread and return its result.

    Parameters
    ----------
    coro
        The coroutine to run. Its exception, if any, is re-raised here.
    timeout
        Seconds to wait before cancelling it and raising ``TimeoutError``; ``None`` waits forever.

    Raises
    ------
    LoopError
        When called from inside aiolit's loop thread (it would deadlock); await the coroutine there.
    """
    if in_loop_thread():
        coro.close()
        raise LoopError(
            "aiolit: a blocking call was made from inside aiolit's event loop thread; "
            "await the async API instead (e.g. `await ds.aget(i)`, `async for ...`, `await optimize_async(...)`)"
        )
    future = asyncio.run_coroutine_threadsafe(coro, get_loop())
    return _wait(future, timeout)


async def _take(iterator: AsyncIterator[T], n: int, holder: list[asyncio.Task[Any]]) -> tuple[list[T], bool]:
    task = asyncio.current_task()
    assert task is not None
    holder[:] = [task]
    items: list[T] = []
    try:
        while len(items) < n:
            items.append(await iterator.__anext__())
    except StopAsyncIteration:
        return items, True
    return items, False


async def _abandon(iterator: AsyncIterator[Any], holder: list[asyncio.Task[Any]]) -> None:
    # Stop the in-flight pull first: aclose() on a generator that is mid-__anext__ raises.
    for task in holder:
        task.cancel()
        await asyncio.wait([task])
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def iterate(iterable: AsyncIterable[T], *, max_run: int = 64) -> Iterator[T]:
    """Iterate an async iterable from sync code, running it on the loop thread.

    Items are handed over in runs (growing from 1 to ``max_run``) and the next run is already
    being produced on the loop while the caller consumes the current one, so the two threads
    overlap and the per-item cost is a list pop, not a thread hop.
    """
    if in_loop_thread():
        raise LoopError("aiolit: iterate() called from inside aiolit's loop thread; use `async for` there")
    loop = get_loop()

    async def _start() -> AsyncIterator[T]:
        return iterable.__aiter__()

    iterator = run(_start())
    holder: list[asyncio.Task[Any]] = []
    n = 1
    pending = asyncio.run_coroutine_threadsafe(_take(iterator, n, holder), loop)
    finished = False
    try:
        while True:
            items, finished = _wait(pending, None)
            if not finished:
                n = min(max_run, n * 2)
                pending = asyncio.run_coroutine_threadsafe(_take(iterator, n, holder), loop)
            yield from items
            if finished:
                return
    finally:
        if not finished and _pid == os.getpid() and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_abandon(iterator, holder), loop).result(10)
            except Exception:  # best-effort cleanup of an abandoned iterator
                pass


def ensure_no_running_loop(name: str) -> None:
    """The sync facade of ``name`` blocks; inside a running loop it would deadlock or stall that loop.

    Raises
    ------
    LoopError
        When called from a thread that runs an asyncio event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise LoopError(
        f"aiolit.{name}() blocks and cannot be called from inside a running event loop; "
        f"use `await aiolit.{name}_async(...)` instead."
    )
