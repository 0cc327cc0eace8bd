"""`async for` and `await ds.aget(i)` on the caller's own loop, for local data."""

from __future__ import annotations

import asyncio
from typing import Any

from aiolit.streaming import StreamingDataset


async def test_async_for_local(make_dataset: Any) -> None:
    path, items = make_dataset(30)
    ds = StreamingDataset(path)
    assert [x async for x in ds] == items
    assert await ds.aget(4) == items[4]


async def test_async_for_through_the_cache_interleaves_with_other_tasks(make_dataset: Any) -> None:
    path, items = make_dataset(30, chunk_size=4)
    ds = StreamingDataset(f"local:{path}", shuffle=True)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    got = [x async for x in ds]
    task.cancel()
    assert sorted(got, key=lambda x: x["i"]) == items
    assert ticks > 0
