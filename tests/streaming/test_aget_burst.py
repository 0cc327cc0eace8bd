"""Issue 10: a burst of concurrent ``aget`` calls, and the S3 client an ``async for`` builds.

What is asserted here is what does not depend on timing: every sample of a burst, one request per
call, the cross-thread hand-overs of a burst batched (one to aiolit's loop, few back),
cancellation that leaves nothing behind under ``-W error``, and an S3 client built on aiolit's
loop thread but serving the caller's loop. The lag figures are in ``benchmarks/bench_async.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import aiolit
from aiolit import _loop
from aiolit.stores._s3 import S3Store, _lazy_http_sessions
from aiolit.streaming import StreamingDataset
from aiolit.testing import FaultyStore
from tests.streaming._data import requests, upload, write_dataset

REPO = Path(__file__).resolve().parents[2]
SRC = Path(aiolit.__file__).resolve().parents[1]  # the tree under test


# -- hop: the hand-overs of a burst are batched ------------------------------------------------------


@pytest.mark.filterwarnings("error")
async def test_a_burst_of_hops_crosses_threads_once_each_way_per_batch() -> None:
    aiolit_loop = _loop.get_loop()
    gate = asyncio.Event()  # set on aiolit's loop once every coroutine waits on it
    waiting = 0

    async def job(i: int) -> tuple[int, str]:
        nonlocal waiting
        waiting += 1
        await gate.wait()
        if i == 7:
            raise KeyError(i)
        return i * 3, threading.current_thread().name

    before = dict(_loop.handoffs)
    calls = [asyncio.ensure_future(_loop.hop(job(i))) for i in range(200)]
    while waiting < 200:  # on aiolit's loop, all 200 started
        await asyncio.sleep(0.005)
    assert _loop.handoffs["to_aiolit"] - before["to_aiolit"] == 1  # 200 calls, one hand-over
    aiolit_loop.call_soon_threadsafe(gate.set)
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(got[7], KeyError)
    assert [g for i, g in enumerate(got) if i != 7] == [(3 * i, "aiolit-loop") for i in range(200) if i != 7]
    # 200 results that finish together come back in a few batches (split only by the time slices
    # aiolit's thread gives the GIL away after), not one cross-thread call each.
    back = _loop.handoffs["to_caller"] - before["to_caller"]
    assert 1 <= back <= 10, back


@pytest.mark.filterwarnings("error")
async def test_cancelling_hops_cancels_their_coroutines_on_aiolit_loop() -> None:
    started: list[int] = []
    finished: list[int] = []
    cancelled: list[int] = []

    async def job(i: int) -> int:
        started.append(i)
        try:
            await asyncio.sleep(30 if i % 2 or i == 0 else 0.01)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        finished.append(i)
        return i

    calls = [asyncio.ensure_future(_loop.hop(job(i))) for i in range(40)]
    await asyncio.sleep(0)
    calls[0].cancel()  # cancelled right after the call: started or not, it ends
    while len(started) < 39:
        await asyncio.sleep(0.005)
    for call in calls[1::2]:  # the slow ones, running on aiolit's loop
        call.cancel()
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(got[i], asyncio.CancelledError) for i in [0, *range(1, 40, 2)])
    assert [got[i] for i in range(2, 40, 2)] == list(range(2, 40, 2))
    slow = [0, *range(1, 40, 2)] if 0 in started else list(range(1, 40, 2))
    for _ in range(200):  # the cancellations reach aiolit's loop asynchronously
        if len(cancelled) == len(slow):
            break
        await asyncio.sleep(0.005)
    assert sorted(cancelled) == slow
    assert sorted(finished) == list(range(2, 40, 2))


# -- aget bursts on S3 ---------------------------------------------------------------------------------


@pytest.mark.s3
async def test_a_burst_of_200_agets_is_one_request_each_and_one_hand_over(
    s3_server: Any, tmp_path: Path, counting_s3: list[FaultyStore]
) -> None:
    items = write_dataset(tmp_path / "src", 240, chunk_size=60)
    url = s3_server.new_url("ds")
    upload(s3_server, tmp_path / "src", url)
    ds = StreamingDataset(url, storage_options=s3_server.storage_options, cache_dir=str(tmp_path / "c"))
    ids = [(i * 37) % 240 for i in range(200)]  # every chunk, some items twice
    for burst in ("offsets unknown", "offsets known"):
        before, handed = requests(counting_s3), _loop.handoffs["to_aiolit"]
        got = await asyncio.gather(*(ds.aget(i) for i in ids))
        assert got == [items[i] for i in ids], burst
        headers = 4 if burst == "offsets unknown" else 0  # one header GET per chunk, shared
        assert requests(counting_s3) - before == 200 + headers, burst
        assert _loop.handoffs["to_aiolit"] - handed == 1, burst
    await ds.aclose()


CHILD = r"""
import asyncio, gc, json, sys

from aiolit import _loop
from aiolit.streaming import StreamingDataset

url, opts, cache = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]


def expected(i):
    return {"i": i, "s": "x" * (i % 7)}


async def hopped_left():
    async def count():
        return sum(1 for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "_paced_run") - 1

    for _ in range(400):
        left = await _loop.hop(count())
        if left == 0:
            return 0
        await asyncio.sleep(0.01)
    return left


async def burst(ds, n):
    calls = [asyncio.ensure_future(ds.aget(i % 48)) for i in range(n)]
    for call in calls[::6]:  # before they reach aiolit's loop
        call.cancel()
    await asyncio.sleep(0.002)
    for call in calls[3::6]:  # while their requests are in flight, or done
        call.cancel()
    got = await asyncio.gather(*calls, return_exceptions=True)
    for i, g in enumerate(got):
        if i % 6 == 0:
            assert isinstance(g, asyncio.CancelledError), (i, g)
        elif i % 6 != 3:
            assert g == expected(i % 48), (i, g)
        else:
            assert g == expected(i % 48) or isinstance(g, asyncio.CancelledError), (i, g)
    assert await hopped_left() == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def main():
    ds = StreamingDataset(url, storage_options=opts, cache_dir=cache + "/a")
    for _ in range(3):
        await burst(ds, 120)
    await ds.aclose()


async def abandon(ds, c):
    for i in range(60):  # the loop ends with these in flight: asyncio.run cancels them
        asyncio.ensure_future(ds.aget(i % 48))
    await asyncio.sleep(0.004 * c)  # before they are handed over, or with requests in flight


asyncio.run(main())
ds = StreamingDataset(url, storage_options=opts, cache_dir=cache + "/b")
for c in range(4):
    asyncio.run(abandon(ds, c))
asyncio.run(main())
del ds
gc.collect()
print("DONE", flush=True)
"""


@pytest.mark.s3
def test_cancelled_agets_in_bursts_leave_nothing_behind(s3_server: Any, tmp_path: Path) -> None:
    write_dataset(tmp_path / "src", 48, chunk_size=8)
    url = s3_server.new_url("ds")
    upload(s3_server, tmp_path / "src", url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", CHILD, url,
         json.dumps(s3_server.storage_options), str(tmp_path / "cache")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "DONE"
    for problem in ("Task was destroyed", "Unclosed", "Warning", "Exception ignored", "never awaited"):
        assert problem not in out.stderr, out.stderr[-3000:]


# -- the S3 client of an `async for` is built off the caller's loop ------------------------------------


@pytest.mark.s3
@pytest.mark.skipif(not _lazy_http_sessions(), reason="this aiobotocore binds its HTTP session when built")
async def test_async_for_builds_its_s3_client_on_aiolit_thread_and_uses_it_on_the_callers_loop(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = write_dataset(tmp_path / "src", 30, chunk_size=7)
    url = s3_server.new_url("ds")
    upload(s3_server, tmp_path / "src", url)
    built: list[str] = []
    build = S3Store._build_client

    async def spy(self: S3Store) -> tuple[Any, Any]:
        built.append(threading.current_thread().name)
        return await build(self)

    monkeypatch.setattr(S3Store, "_build_client", spy)
    ds = StreamingDataset(url, storage_options=s3_server.storage_options, cache_dir=str(tmp_path / "c"))
    built.clear()  # the index was read by aiolit's loop for its own store
    seen = [s async for s in ds]
    assert seen == items
    assert built == ["aiolit-loop"]  # the caller's loop's client, built on aiolit's thread
    # ... and used on the caller's loop: its aiohttp session belongs to this loop.
    store = ds.source.store()
    assert await store.get_range(ds.source.names[0], 0, 4) == (7).to_bytes(4, "little")
    assert built == ["aiolit-loop", "aiolit-loop"]  # the iterator closed the first at its end
    client = await store._inner._c()  # type: ignore[attr-defined]
    sessions = list(client._endpoint.http_session._sessions.values())
    assert sessions
    assert all(s._loop is asyncio.get_running_loop() for s in sessions)
    await ds.aclose()
