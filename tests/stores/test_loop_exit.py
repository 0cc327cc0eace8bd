"""Closers registered with close_at_loop_exit run when asyncio.run ends, even when the close that
should have run them was cancelled; forgotten ones never run and leave nothing on the loop."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path

import aiolit
from aiolit.stores._util import _EXITS, close_at_loop_exit, forget_at_loop_exit

SRC = Path(aiolit.__file__).resolve().parents[1]


def test_a_registered_closer_runs_when_asyncio_run_ends() -> None:
    calls: list[str] = []

    async def closer() -> None:
        await asyncio.sleep(0)  # closers may await at the loop's exit
        calls.append("closed")

    async def main() -> None:
        close_at_loop_exit(asyncio.get_running_loop(), closer)

    asyncio.run(main())
    assert calls == ["closed"]
    assert not _EXITS


def test_a_close_cancelled_by_asyncio_run_is_finished_at_exit() -> None:
    calls: list[str] = []
    started = asyncio.Event()

    async def closer() -> None:  # like an SDK close: the second call finishes what the first began
        calls.append("start")
        if len(calls) == 1:
            started.set()
            await asyncio.sleep(10)  # the first call is cancelled here by asyncio.run
        calls.append("end")

    async def close_then_forget() -> None:
        await closer()
        forget_at_loop_exit(asyncio.get_running_loop(), closer)

    async def main() -> None:
        close_at_loop_exit(asyncio.get_running_loop(), closer)
        asyncio.get_running_loop().create_task(close_then_forget())
        await started.wait()  # returns while the close is in flight

    asyncio.run(main())
    assert calls == ["start", "start", "end"]
    assert not _EXITS


def test_forgotten_closers_never_run_and_a_manual_loop_closes_quietly() -> None:
    # A loop closed without shutdown_asyncgens() must not find a live keeper generator.
    code = r"""
import asyncio, gc
from aiolit.stores._util import _EXITS, close_at_loop_exit, forget_at_loop_exit
calls = []
async def closer():
    calls.append("closed")
async def main():
    loop = asyncio.get_running_loop()
    close_at_loop_exit(loop, closer)
    assert _EXITS
    forget_at_loop_exit(loop, closer)
    assert not _EXITS
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
loop.close()
del loop
gc.collect()
assert calls == [], calls
print("OK")
"""
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(SRC), "PATH": ""},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"
    assert out.stderr == ""


def test_aiolits_own_loop_is_not_tracked() -> None:
    from aiolit import _loop

    async def closer() -> None:
        return None

    async def register() -> bool:
        close_at_loop_exit(asyncio.get_running_loop(), closer)
        return bool(_EXITS)

    assert _loop.run(register()) is False
    gc.collect()
