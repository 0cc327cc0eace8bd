"""optimize_async: async fns on the loop, async sources, use from inside a running loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import aiolit.processing as ld
from aiolit.errors import OptimizeError
from tests.processing import fns
from tests.processing.readback import read_aiolit, read_litdata


async def test_optimize_async_inside_running_loop(tmp_path: Path) -> None:
    out = str(tmp_path)
    await ld.optimize_async(fns.square_pair, list(range(30)), out, chunk_size=4, num_workers=2,
                            start_method="fork", verbose=False)  # fmt: skip
    assert read_aiolit(out) == [(i, i**2) for i in range(30)]


async def test_async_fn_keeps_input_order(tmp_path: Path) -> None:
    out = str(tmp_path)
    await ld.optimize_async(fns.async_double, list(range(50)), out, chunk_size=7, max_concurrency=8,
                            verbose=False)  # fmt: skip
    expected = [i * 2 for i in range(50)]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected


async def test_async_fn_unordered(tmp_path: Path) -> None:
    out = str(tmp_path)
    await ld.optimize_async(fns.async_double, list(range(50)), out, chunk_size=7, keep_data_ordered=False,
                            verbose=False)  # fmt: skip
    assert sorted(read_aiolit(out)) == [i * 2 for i in range(50)]


def test_async_generator_fn_from_sync_optimize(tmp_path: Path) -> None:
    out = str(tmp_path)
    ld.optimize(fns.async_gen, list(range(10)), out, chunk_size=3, verbose=False)
    expected = [f"{i}-{k}" for i in range(10) for k in range(i % 3)]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected


async def test_async_iterable_input(tmp_path: Path) -> None:
    async def numbers():  # type: ignore[no-untyped-def]
        for i in range(25):
            await asyncio.sleep(0)
            yield i

    out = str(tmp_path / "a")
    await ld.optimize_async(fns.square_pair, numbers(), out, chunk_size=4, num_workers=2, start_method="fork",
                            verbose=False)  # fmt: skip
    assert read_aiolit(out) == [(i, i**2) for i in range(25)]
    out = str(tmp_path / "b")
    await ld.optimize_async(fns.square_pair, numbers(), out, chunk_size=4, num_workers=2, start_method="fork",
                            keep_data_ordered=False, verbose=False)  # fmt: skip
    assert sorted(read_aiolit(out)) == [(i, i**2) for i in range(25)]


async def test_asyncio_queue_input_with_live_producer(tmp_path: Path) -> None:
    q: asyncio.Queue[object] = asyncio.Queue(maxsize=5)

    async def produce() -> None:
        for i in range(40):
            await q.put(i)
        await q.put(ld.ALL_DONE)

    out = str(tmp_path)
    producer = asyncio.create_task(produce())
    await ld.optimize_async(fns.identity, queue=q, output_dir=out, chunk_size=8, num_workers=2,
                            start_method="fork", verbose=False)  # fmt: skip
    await producer
    assert sorted(read_aiolit(out)) == list(range(40))

    # the same queue as `inputs=`, consumed by an async fn
    q2: asyncio.Queue[object] = asyncio.Queue()
    for i in range(10):
        q2.put_nowait(i)
    q2.put_nowait(ld.ALL_DONE)
    await ld.optimize_async(fns.async_double, q2, str(tmp_path / "b"), chunk_size=8, verbose=False)
    assert sorted(read_aiolit(str(tmp_path / "b"))) == [i * 2 for i in range(10)]


async def test_async_fn_exception(tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match=r"input #3 \(3\)") as info:
        await ld.optimize_async(fns.async_fail, list(range(20)), str(tmp_path), chunk_size=2, verbose=False)
    assert "KeyError: 'no such page'" in str(info.value)
    assert not os.path.exists(tmp_path / "index.json")
    assert "DATA_OPTIMIZER_GLOBAL_RANK" not in os.environ  # restored after the run


_NO_TORCH = """
import asyncio, json, sys
import aiolit as ld

async def twice(i):
    await asyncio.sleep(0)
    return {"i": i, "twice": 2 * i}

async def main():
    before = "torch" in sys.modules
    await ld.optimize_async(twice, list(range(40)), "out", chunk_size=8, verbose=False)
    print(json.dumps({"before": before, "after": "torch" in sys.modules}))

asyncio.run(main())
"""


def test_optimize_async_of_plain_inputs_does_not_import_torch(tmp_path: Path) -> None:
    # Importing torch takes seconds of the caller's loop (the once-per-run stall of issue 10):
    # plain inputs cannot be a StreamingDataset or StreamingDataLoader, so it is never needed.
    import json
    import subprocess
    import sys

    from tests.reliability._helpers import env

    done = subprocess.run([sys.executable, "-c", _NO_TORCH], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"before": False, "after": False}
    assert read_aiolit(str(tmp_path / "out")) == [{"i": i, "twice": 2 * i} for i in range(40)]
