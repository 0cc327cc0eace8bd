"""StreamingDataset on S3 (moto): epochs, resume, range reads, cache layout, async iteration."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from aiolit.streaming import StreamingDataLoader, StreamingDataset
from tests.streaming._data import ids, upload, write_dataset

pytestmark = pytest.mark.s3


@pytest.fixture
def remote(s3_server: Any, tmp_path: Path) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    items = write_dataset(tmp_path / "src", 45, chunk_size=6)
    url = s3_server.new_url("ds")
    upload(s3_server, tmp_path / "src", url)
    return url, items, s3_server.storage_options


def test_full_epoch_and_cache_layout(remote: Any, tmp_path: Path) -> None:
    url, items, opts = remote
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "cache"), storage_options=opts)
    assert list(ds) == items
    cache_dir = ds.source.cache_dir
    assert cache_dir is not None and cache_dir.parent.parent == tmp_path / "cache"
    assert cache_dir.name == ds.source.index.updated_at
    assert (cache_dir / "index.json").exists()
    # A second dataset object reuses the cached chunks.
    again = StreamingDataset(url, cache_dir=str(tmp_path / "cache"), storage_options=opts, shuffle=True)
    assert sorted(ids(list(again))) == list(range(45))


def test_reoptimized_dataset_invalidates_the_cache(remote: Any, tmp_path: Path) -> None:
    url, _, opts = remote
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "cache"), storage_options=opts)
    list(ds)
    old = ds.source.cache_dir
    assert old is not None
    stale = old.parent / "1.0"
    stale.mkdir()
    (stale / "chunk-0-0.bin").write_bytes(b"old")
    os.utime(stale, (0, 0))  # past the grace period and with no live reader's lease: stale
    StreamingDataset(url, cache_dir=str(tmp_path / "cache"), storage_options=opts)
    assert not stale.exists() and old.exists()


def test_getitem_reads_only_the_sample_range(remote: Any, tmp_path: Path) -> None:
    url, items, opts = remote
    ds = StreamingDataset(
        url, cache_dir=str(tmp_path / "c"), storage_options=opts, transform=lambda x: x["i"]
    )
    assert [ds[i] for i in (0, 13, 44)] == [0, 13, 44]
    assert ds[-2] == 43
    assert ds.source.cache_dir is not None
    assert not [p for p in os.listdir(ds.source.cache_dir) if p.startswith("chunk-")]  # nothing downloaded
    assert ds[2:5] == items[2:5]


def test_dataloader_with_workers_and_resume(remote: Any, tmp_path: Path) -> None:
    url, _, opts = remote

    def loader() -> StreamingDataLoader:
        ds = StreamingDataset(url, cache_dir=str(tmp_path / "c"), storage_options=opts, shuffle=True)
        return StreamingDataLoader(ds, batch_size=4, num_workers=2)

    full = [b["i"].tolist() for b in loader()]
    assert sorted(i for b in full for i in b) == list(range(45))
    first = loader()
    it = iter(first)
    head = [next(it)["i"].tolist() for _ in range(5)]
    state = first.state_dict()
    del it
    second = loader()
    second.load_state_dict(state)
    assert head + [b["i"].tolist() for b in second] == full


def test_small_budget_on_s3(remote: Any, tmp_path: Path) -> None:
    url, items, opts = remote
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "c"), storage_options=opts, max_cache_size=400)
    assert list(ds) == items
    cache = ds.source._cache
    assert cache is not None and cache.evictions > 0
    assert cache.peak_bytes <= 400 + max(e.chunk_bytes for e in ds.source.entries)


async def test_async_iteration_on_a_running_loop(remote: Any, tmp_path: Path) -> None:
    url, items, opts = remote
    ds = await asyncio.to_thread(StreamingDataset, url, cache_dir=str(tmp_path / "c"), storage_options=opts)
    got = [item async for item in ds]
    assert got == items
    assert await ds.aget(7) == items[7]
