"""`async for` and `aget` share the caller's loop: ticks between samples, one GET per remote aget."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aiolit import _loop
from aiolit.streaming import StreamingDataset
from aiolit.testing import FaultyStore
from tests.streaming._data import requests, upload, write_dataset


class Ticker:
    """A task that counts how often the loop lets it run."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


async def ticks_between_samples(ds: StreamingDataset) -> tuple[list[Any], list[int]]:
    ticker = Ticker()
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0)
    samples, gaps = [], []
    seen = ticker.ticks
    try:
        async for sample in ds:
            samples.append(sample)
            gaps.append(ticker.ticks - seen)
            seen = ticker.ticks
    finally:
        task.cancel()
    return samples, gaps


async def test_long_async_for_over_local_data_lets_other_tasks_run(make_dataset: Any) -> None:
    path, items = make_dataset(20_000, chunk_size=2_000)
    samples, gaps = await ticks_between_samples(StreamingDataset(path))
    assert samples == items
    # On the loop, never per sample: most samples come without a pause, some after one.
    assert sum(1 for g in gaps if g) >= 1
    assert sum(1 for g in gaps if g) < len(items) // 10


async def test_slow_samples_hand_the_loop_back_after_each_one(make_dataset: Any) -> None:
    path, items = make_dataset(100, chunk_size=50)

    def slow(sample: Any) -> Any:  # a blocking transform: 1 ms per sample, the whole slice
        time.sleep(0.001)
        return sample

    samples, gaps = await ticks_between_samples(StreamingDataset(path, transform=slow))
    assert samples == items
    # The first decode batch (32 samples) measures the pace; from then on every sample is
    # followed by a pause, in both chunks.
    assert sum(1 for g in gaps[33:] if g) >= len(items) - 34


async def test_many_small_chunks_do_not_restart_the_slice(make_dataset: Any) -> None:
    # Opening an in-place chunk does not suspend, so it must not restart the slice: with chunks
    # shorter than a slice, the loop would otherwise never be handed back during the pass.
    path, items = make_dataset(120, chunk_size=2)

    def slow(sample: Any) -> Any:  # 0.2 ms per sample: a chunk is well under the 1 ms slice
        time.sleep(0.0002)
        return sample

    samples, gaps = await ticks_between_samples(StreamingDataset(path, transform=slow))
    assert samples == items
    # Five samples take at least a slice: never more than five in a row without a hand-back.
    longest = run = 0
    for g in gaps:
        run = 0 if g else run + 1
        longest = max(longest, run)
    assert longest <= 5, gaps


async def test_a_task_whose_timer_is_due_runs_at_every_hand_back(make_dataset: Any) -> None:
    # A sleeping task (a heartbeat, a timeout) whose deadline passed during a slice runs at the
    # next hand-back, before the iterator's next slice: not two slices later, as it would after
    # `await asyncio.sleep(0)` (its timer fires in one loop iteration, it runs in the next).
    path, items = make_dataset(100, chunk_size=50)

    def slow(sample: Any) -> Any:  # 1 ms per sample: each one is a whole slice, then a hand-back
        time.sleep(0.001)
        return sample

    wakes = 0

    async def sleeper() -> None:
        nonlocal wakes
        while True:
            await asyncio.sleep(0.0001)  # due long before the sample in progress is done
            wakes += 1

    task = asyncio.create_task(sleeper())
    samples, gaps, seen = [], [], wakes
    try:
        async for sample in StreamingDataset(path, transform=slow):
            samples.append(sample)
            gaps.append(wakes - seen)
            seen = wakes
    finally:
        task.cancel()
    assert samples == items
    # After the first decode batch (32 samples, which measures the pace): a wake before every
    # sample, in both chunks.
    assert all(g >= 1 for g in gaps[33:]), gaps


async def test_the_plan_of_a_pass_over_many_chunks_is_built_off_the_loop(
    make_dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiolit.streaming import dataset as dataset_module

    path, items = make_dataset(60, chunk_size=4)  # 15 chunks
    threads: list[int] = []
    new_run = StreamingDataset._new_run

    def recording(self: StreamingDataset, *args: Any) -> Any:
        threads.append(threading.get_ident())
        return new_run(self, *args)

    monkeypatch.setattr(StreamingDataset, "_new_run", recording)
    ds = StreamingDataset(path, shuffle=True, seed=1)
    expected = list(ds)  # the sync pass: in this thread
    ds.set_epoch(1)
    monkeypatch.setattr(dataset_module, "_PLAN_INLINE", 10)  # "many" chunks: more than 10
    samples, gaps = await ticks_between_samples(ds)
    assert samples == expected
    assert sorted(samples, key=lambda s: s["i"]) == items
    assert gaps[0] >= 1  # the loop ran other tasks while the plan was built
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()
    # Below the threshold the plan is built inline, on the loop.
    monkeypatch.setattr(dataset_module, "_PLAN_INLINE", 15)
    ds.set_epoch(1)
    assert [s async for s in ds] == expected
    assert threads[2] == threading.get_ident()


async def test_shuffled_async_for_matches_sync_iteration(make_dataset: Any) -> None:
    path, items = make_dataset(3000, chunk_size=300)
    ds = StreamingDataset(path, shuffle=True, seed=3)
    sync_order = list(ds)
    ds.set_epoch(1)
    samples, _ = await ticks_between_samples(ds)
    assert samples == sync_order
    assert sorted(samples, key=lambda s: s["i"]) == items


# -- remote aget: one range GET per call -------------------------------------------------------------


@pytest.mark.s3
async def test_remote_aget_is_one_range_get_once_offsets_are_known(
    s3_server: Any, tmp_path: Path, counting_s3: list[FaultyStore]
) -> None:
    items = write_dataset(tmp_path / "src", 60, chunk_size=20)
    url = s3_server.new_url("ds")
    upload(s3_server, tmp_path / "src", url)
    ds = StreamingDataset(url, storage_options=s3_server.storage_options, cache_dir=str(tmp_path / "c"))
    before = requests(counting_s3)
    # A burst on a chunk whose offsets are unknown: one header GET shared by all, one GET each.
    got = await asyncio.gather(*(ds.aget(i) for i in range(20, 40)))
    assert got == items[20:40]
    assert requests(counting_s3) - before == 20 + 1
    # Known offsets: exactly one request per call, repeated or not, async or sync.
    before = requests(counting_s3)
    got = await asyncio.gather(*(ds.aget(i) for i in [25, 25, 39, 21]))
    assert got == [items[25], items[25], items[39], items[21]]
    assert requests(counting_s3) - before == 4
    before = requests(counting_s3)
    assert await asyncio.to_thread(ds.__getitem__, 30) == items[30]
    assert requests(counting_s3) - before == 1
    # Nothing was downloaded whole; the reads ran on aiolit's loop thread, not on this loop.
    assert not list((tmp_path / "c").rglob("chunk-*.bin"))
    assert id(asyncio.get_running_loop()) not in ds.source._stores
    assert id(_loop.get_loop()) in ds.source._stores
    await ds.aclose()
    assert not ds.source._stores


@pytest.mark.s3
def test_max_connections_is_a_storage_option(s3_server: Any, tmp_path: Path) -> None:
    from aiolit.stores import open_store

    store = open_store("s3://b/p", {**s3_server.storage_options, "max_connections": 256})
    assert store.transfer.max_connections == 256
    assert open_store("s3://b/p", s3_server.storage_options).transfer.max_connections == 64

    async def pool_size() -> int:
        inner = store._inner  # type: ignore[attr-defined]
        client = await inner._c()
        size: int = client.meta.config.max_pool_connections
        await store.aclose()
        return size

    assert _loop.run(pool_size()) == 256
    with pytest.raises(ValueError, match="max_connections"):
        open_store("s3://b/p", {**s3_server.storage_options, "max_connections": 0})


async def test_combined_dataset_closes_its_datasets(make_dataset: Any, tmp_path: Path) -> None:
    from aiolit.streaming import CombinedStreamingDataset

    (a, items_a), (b, items_b) = make_dataset(20, chunk_size=4), make_dataset(12, chunk_size=4)
    parts = [StreamingDataset(f"local:{p}", cache_dir=str(tmp_path / "c")) for p in (a, b)]
    async with CombinedStreamingDataset(parts, iterate_over_all=True, seed=1) as combined:
        async for sample in combined:
            assert sample in items_a or sample in items_b
            break
        assert any(ds.source.async_runs for ds in parts)  # the abandoned iteration is still open
    assert not any(ds.source.async_runs for ds in parts)
    assert all(not ds.source._stores for ds in parts)
