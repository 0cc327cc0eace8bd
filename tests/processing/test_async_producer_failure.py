"""optimize_async fed by a producer that fails: the documented patterns end the run with the
producer's error and write no index (docs/async.md, "Ingestion")."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiolit.processing as ld
from tests.processing import fns
from tests.processing.readback import read_aiolit


class ProducerBroke(RuntimeError):
    pass


async def fetch(i: int) -> dict[str, int]:
    await asyncio.sleep(0.001)  # an I/O-bound fn: awaits between inputs
    return {"i": i}


async def produce_then_fail(q: asyncio.Queue[Any], n: int) -> None:
    for i in range(n):
        await q.put(i)
        await asyncio.sleep(0)
    raise ProducerBroke(f"producer failed after {n} inputs")


def written(out: Path) -> list[str]:
    return sorted(os.listdir(out)) if out.exists() else []


needs_task_group = pytest.mark.skipif(
    not hasattr(asyncio, "TaskGroup"), reason="asyncio.TaskGroup: Python 3.11+"
)


@needs_task_group
@pytest.mark.parametrize("fn", [fetch, fns.square_pair], ids=["async-fn", "process-fn"])
async def test_task_group_ends_the_run_when_the_queue_producer_fails(fn: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    q: asyncio.Queue[Any] = asyncio.Queue()
    with pytest.raises(Exception) as info:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce_then_fail(q, 10))
            tg.create_task(
                ld.optimize_async(
                    fn, queue=q, output_dir=str(out), chunk_size=4, num_workers=1, verbose=False
                )
            )
    assert type(info.value).__name__ == "ExceptionGroup"
    assert [type(e) for e in info.value.exceptions] == [ProducerBroke]  # type: ignore[attr-defined]
    assert "index.json" not in written(out)
    assert not [n for n in written(out) if n.endswith(".json")]


async def test_async_iterable_input_ends_the_run_with_the_producer_error(tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def inputs() -> AsyncIterator[int]:
        for i in range(10):
            yield i
        raise ProducerBroke("producer failed after 10 inputs")

    with pytest.raises(ProducerBroke, match="after 10 inputs"):
        await ld.optimize_async(fetch, inputs(), str(out), chunk_size=4, verbose=False)
    assert not [n for n in written(out) if n.endswith(".json")]


@needs_task_group
async def test_task_group_with_a_producer_that_succeeds_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    q: asyncio.Queue[Any] = asyncio.Queue()

    async def produce() -> None:
        for i in range(10):
            await q.put(i)
        await q.put(ld.ALL_DONE)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce())
        tg.create_task(ld.optimize_async(fetch, queue=q, output_dir=str(out), chunk_size=4, verbose=False))
    assert sorted(x["i"] for x in read_aiolit(str(out))) == list(range(10))
