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
import functools
import os
import threading
import time
import types
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Generator, Iterator
from typing import Any, TypeVar

from aiolit.errors import LoopError

__all__ = ["ensure_no_running_loop", "get_loop", "hop", "in_loop_thread", "iterate", "run"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def _reset_after_fork() -> None:
    # The loop thread does not survive fork; its loop object may be mid-operation. Drop both.
    global _lock, _loop, _thread, _pid
    _lock = threading.Lock()
    _outgoing.clear()
    _finished.clear()
    _flush_due[0] = False
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


async def hop(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run on aiolit's loop thread, from any running loop (no thread blocks).

    The caller's loop only waits: the coroutine's own work (HTTP clients, request signing,
    response parsing) costs that loop nothing. On aiolit's loop thread itself, ``coro`` is
    simply awaited.

    Hand-overs are batched both ways (see :class:`_Job`): the coroutines one iteration of the
    caller's loop hops reach aiolit's loop in one cross-thread call, and results finished
    together come back in one, so a burst of concurrent calls wakes each loop once per batch, not
    once per call. Cancelling the awaiting task cancels the coroutine on aiolit's loop.
    """
    if in_loop_thread():
        return await coro
    loop = asyncio.get_running_loop()
    job = _Job(coro, loop)
    _submit(job)
    try:
        result: T = await job.future
    except asyncio.CancelledError:
        _abandon_job(job)
        raise
    return result


# -- batched hand-over between a caller's loop and aiolit's loop ------------------------------------
#
# Why batches and time slices: a burst of 200 ``aget`` calls used to cost two cross-thread calls
# per call (each a self-pipe write and a wake-up of the other loop), and aiolit's loop then ran the
# 200 requests (signing, sending, parsing: ~0.5-1.5 ms of CPU each) in one iteration. That
# thread gives the GIL up for every socket call, but only for microseconds, and a thread waiting
# for the GIL does not ask for it while it keeps changing hands that way: the caller's loop
# stalled for the whole iteration (50-250 ms), whatever ``sys.setswitchinterval`` said. So the
# work of hopped coroutines runs in slices of :data:`_SLICE_CPU` seconds of CPU, after each of
# which aiolit's thread hands finished results over and sleeps :data:`_YIELD_S` seconds, which
# lets a waiting thread take the GIL.

_SLICE_CPU = 0.002
_YIELD_S = 0.0001

# Cross-thread hand-overs, for tests: ``to_aiolit`` batches of coroutines sent, ``to_caller``
# batches of results returned.
handoffs = {"to_aiolit": 0, "to_caller": 0}


class _Job:
    """One hopped coroutine: made on the caller's loop, run on aiolit's, its outcome handed back."""

    __slots__ = ("cancelled", "coro", "error", "future", "loop", "result", "sent", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.coro = coro
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.task: asyncio.Task[Any] | None = None
        self.sent = False  # handed to aiolit's loop
        self.cancelled = False  # the caller gave up
        self.error: BaseException | None = None
        self.result: Any = None


# Caller side (each entry touched only by its loop's thread): jobs not yet sent, per loop.
_outgoing: dict[int, tuple[asyncio.AbstractEventLoop, list[_Job]]] = {}
# aiolit side (touched only by aiolit's thread): finished jobs not yet handed back, per loop.
_finished: dict[int, tuple[asyncio.AbstractEventLoop, list[_Job]]] = {}
_flush_due = [False]
_slice_start = [0.0]
_CANCELLED = asyncio.CancelledError()


def _submit(job: _Job) -> None:
    key = id(job.loop)
    entry = _outgoing.get(key)
    if entry is None or entry[0] is not job.loop:
        entry = _outgoing[key] = (job.loop, [])
        job.loop.call_soon(_send, job.loop)
    entry[1].append(job)


def _send(loop: asyncio.AbstractEventLoop) -> None:
    entry = _outgoing.pop(id(loop), None)
    if entry is None:
        return
    jobs = []
    for job in entry[1]:
        if job.cancelled:
            job.coro.close()
        else:
            job.sent = True
            jobs.append(job)
    if jobs:
        handoffs["to_aiolit"] += 1
        get_loop().call_soon_threadsafe(_start, jobs)


def _abandon_job(job: _Job) -> None:
    # On the caller's thread, after its wait was cancelled.
    job.cancelled = True  # not sent yet: never started; started: its task is cancelled
    aiolit_loop = _loop
    if job.sent and aiolit_loop is not None and _pid == os.getpid():
        with _suppress_closed():
            aiolit_loop.call_soon_threadsafe(_cancel_task, job)


def _cancel_task(job: _Job) -> None:
    if job.task is not None:
        job.task.cancel()


def _start(jobs: list[_Job]) -> None:
    loop = asyncio.get_running_loop()
    for job in jobs:
        if job.cancelled:
            job.coro.close()
            continue
        task = loop.create_task(_paced_run(job.coro))
        job.task = task
        task.add_done_callback(functools.partial(_finish, job))


def _finish(job: _Job, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        job.error = _CANCELLED
    else:
        job.error = task.exception()  # retrieved here either way: no "never retrieved" log
        if job.error is None:
            job.result = task.result()
    job.task = None
    # A task cancelled before its first step never started the coroutine: close it, or Python
    # warns "never awaited" when it is collected. Closing a finished coroutine does nothing.
    job.coro.close()
    job.coro = None  # type: ignore[assignment]
    if job.cancelled:
        return
    key = id(job.loop)
    entry = _finished.get(key)
    if entry is None:
        entry = _finished[key] = (job.loop, [])
    entry[1].append(job)
    if not _flush_due[0]:
        _flush_due[0] = True
        asyncio.get_running_loop().call_soon(_hand_back)


def _hand_back() -> None:
    _flush_due[0] = False
    batches = list(_finished.values())
    _finished.clear()
    for loop, jobs in batches:
        handoffs["to_caller"] += 1
        with _suppress_closed():
            loop.call_soon_threadsafe(_deliver, jobs)


def _deliver(jobs: list[_Job]) -> None:
    for job in jobs:
        future = job.future
        if future.done():
            continue
        if job.error is _CANCELLED:
            future.cancel()
        elif job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)
        job.error = job.result = None


class _suppress_closed:
    """Ignore ``RuntimeError`` from ``call_soon_threadsafe`` on a loop that has closed."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        return kind is RuntimeError


def _yield_gil() -> None:
    """On aiolit's thread, after :data:`_SLICE_CPU` of CPU: hand results back, let others run."""
    now = time.thread_time()
    if now - _slice_start[0] < _SLICE_CPU:
        return
    if _finished:
        _hand_back()
    time.sleep(_YIELD_S)
    _slice_start[0] = time.thread_time()


@types.coroutine
def _paced(coro: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    """``await coro``, one step at a time, with :func:`_yield_gil` before each step."""
    value: Any = None
    error: BaseException | None = None
    while True:
        _yield_gil()
        try:
            signal = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            error = None
        try:
            value = yield signal
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # CancelledError and the like: into the coroutine
            error, value = exc, None


async def _paced_run(coro: Coroutine[Any, Any, T]) -> T:
    return await _paced(coro)


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
