"""The sync facade: one loop thread per process, safe across fork/spawn/forkserver."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import pytest

from aiolit import _loop
from aiolit.errors import LoopError


async def _double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def _boom() -> None:
    raise KeyError("inner failure")


def test_run_returns_result_on_the_loop_thread() -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert _loop.run(_double(21)) == 42
    assert _loop.run(where()) == "aiolit-loop"
    assert _loop.get_loop() is _loop.get_loop()


def test_exception_is_carried_back_with_its_type() -> None:
    with pytest.raises(KeyError, match="inner failure"):
        _loop.run(_boom())


def test_blocking_call_from_inside_the_loop_is_a_clear_error() -> None:
    async def nested() -> int:
        return _loop.run(_double(1))

    with pytest.raises(LoopError, match="from inside aiolit's event loop"):
        _loop.run(nested())


def test_timeout_cancels() -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s"):
        _loop.run(slow(), timeout=0.2)
    assert cancelled.wait(5)


async def _count(n: int, closed: list[bool]) -> AsyncIterator[int]:
    try:
        for i in range(n):
            await asyncio.sleep(0)
            yield i
    finally:
        closed.append(True)


def test_iterate_yields_everything_in_order() -> None:
    closed: list[bool] = []
    assert list(_loop.iterate(_count(1000, closed))) == list(range(1000))
    assert closed == [True]


def test_iterate_abandoned_iterator_is_closed() -> None:
    closed: list[bool] = []
    it = _loop.iterate(_count(10_000, closed))
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()  # type: ignore[attr-defined]
    assert closed == [True]


def _child_uses_loop(q: mp.Queue) -> None:  # type: ignore[type-arg]
    q.put((_loop.run(_double(5)), os.getpid(), id(_loop.get_loop())))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_child_processes_get_their_own_loop(method: str) -> None:
    parent_loop = _loop.get_loop()  # the parent has a running loop thread before the child starts
    assert _loop.run(_double(1)) == 2
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_child_uses_loop, args=(q,))
    p.start()
    value, pid, _ = q.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    assert value == 10 and pid != os.getpid()
    assert _loop.get_loop() is parent_loop  # the parent's loop is untouched


_CTRL_C_SCRIPT = """
import asyncio, os, signal, threading
from aiolit import _loop

cancelled = threading.Event()

async def forever():
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        cancelled.set()
        raise

threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    _loop.run(forever())
except KeyboardInterrupt:
    print("interrupted", cancelled.wait(5))
"""


def test_ctrl_c_interrupts_a_wait() -> None:
    # In a child process: a real SIGINT must not be able to stop the test session itself.
    proc = subprocess.run(
        [sys.executable, "-c", _CTRL_C_SCRIPT], capture_output=True, text=True, timeout=50, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "interrupted True"


def test_a_hop_cancelled_before_its_first_step_closes_its_coroutine() -> None:
    """Cancelled between reaching aiolit's loop and its first step: no "never awaited" warning."""
    import gc
    import warnings

    async def work() -> int:
        return 1

    async def main() -> None:
        job = _loop._Job(work(), asyncio.get_running_loop())

        def start_then_cancel() -> None:  # on aiolit's loop, in one callback: no step in between
            _loop._start([job])
            assert job.task is not None
            job.task.cancel()

        _loop.get_loop().call_soon_threadsafe(start_then_cancel)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(job.future, 10)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
