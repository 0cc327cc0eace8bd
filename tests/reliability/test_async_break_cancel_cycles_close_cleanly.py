"""Issue 8 item 15: 20 cycles of `break` and task cancellation of `async for` on S3, with a manual
loop and with asyncio.run, under -W error::ResourceWarning: no unclosed session, no pending task.

"asyncio.run each" ends an ``asyncio.run`` right after every cycle: the abandoned iterator's close
is then still pending (or in flight) when asyncio.run cancels what is left. Before closers ran at
the loop's exit (``stores/_util.close_at_loop_exit``) this left an unclosed aiohttp session in
every run of 20, and one in four runs of the single-loop case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import aiolit
from tests.streaming._data import write_dataset
from tests.streaming.test_remote import upload

pytestmark = pytest.mark.s3

REPO = Path(__file__).resolve().parents[2]
SRC = Path(aiolit.__file__).resolve().parents[1]  # the tree under test

CHILD = r"""
import asyncio, contextlib, gc, json, sys

from aiolit.streaming import StreamingDataset

url, opts, cache, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
seen = []


async def consume(ds):
    async for sample in ds:
        seen.append(sample["i"])
        await asyncio.sleep(0)


async def cycle(ds, c):
    task = asyncio.create_task(consume(ds))
    await asyncio.sleep(0.01 * (c % 4))  # cancelled before, during or after its first downloads
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    async for sample in ds:  # abandoned by break, its prefetcher mid-download
        seen.append(sample["i"])
        break


async def main():
    for c in range(20):
        kwargs = dict(storage_options=opts, cache_dir=f"{cache}/{c}", max_pre_download=4)
        if mode == "asyncio.run":  # no explicit close: abandoned iterators close themselves
            await cycle(StreamingDataset(url, **kwargs), c)
        else:  # a manual loop closed right after main(): close explicitly
            async with StreamingDataset(url, **kwargs) as ds:
                await cycle(ds, c)


if mode == "manual":
    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
elif mode == "asyncio.run each":
    for c in range(20):
        ds = StreamingDataset(url, storage_options=opts, cache_dir=f"{cache}/{c}", max_pre_download=4)
        asyncio.run(cycle(ds, c))  # returns with the `break`'s close not yet done
        del ds
else:
    asyncio.run(main())
gc.collect()
assert seen.count(0) >= 20, seen  # every break read the first sample
print("DONE", flush=True)
"""


@pytest.mark.parametrize("mode", ["manual", "asyncio.run", "asyncio.run each"])
def test_twenty_break_and_cancel_cycles_leave_nothing_behind(
    s3_server: Any, tmp_path: Path, mode: str
) -> None:
    write_dataset(tmp_path / "src", 24, chunk_size=4)
    url = s3_server.new_url("ds")
    upload(s3_server, tmp_path / "src", url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", CHILD, url,
         json.dumps(s3_server.storage_options), str(tmp_path / "cache"), mode],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "DONE"
    for problem in (
        "Task was destroyed",
        "Unclosed",
        "ResourceWarning",
        "Exception ignored",
        "never awaited",
    ):
        assert problem not in out.stderr, out.stderr[-3000:]
