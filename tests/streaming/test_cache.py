"""ChunkCache accounting/eviction, the Prefetcher's look-ahead, and the budget during an epoch."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from aiolit.streaming import StreamingDataset
from aiolit.streaming._cache import ChunkCache, parse_size
from aiolit.streaming._prefetch import Prefetcher


def test_parse_size() -> None:
    assert parse_size("100GB") == 100 * 10**9
    assert parse_size("64MB") == 64_000_000
    assert parse_size("1MiB") == 2**20
    assert parse_size(123) == 123
    for bad in ("lots", -1, "1XB", True):
        with pytest.raises(ValueError, match="max_cache_size"):
            parse_size(bad)  # type: ignore[arg-type]


def _publish(cache: ChunkCache, name: str, size: int, next_use: Any, pinned: tuple[str, ...] = ()) -> bool:
    if not cache.reserve(name, size, next_use=next_use, pinned=pinned):
        return False
    tmp = cache.temp_path(name)
    tmp.write_bytes(b"x" * size)
    cache.commit(name, tmp)
    return True


def test_eviction_by_furthest_next_use(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=30)
    uses = {"a": 5.0, "b": 1.0, "c": math.inf, "d": 2.0}
    for name in "abc":
        assert _publish(cache, name, 10, uses.__getitem__)
    assert cache.used_bytes == 30
    assert _publish(cache, "d", 10, uses.__getitem__)  # evicts c (never used again)
    assert not (tmp_path / "c").exists() and cache.used_bytes == 30
    uses["e"] = 3.0
    assert _publish(cache, "e", 10, uses.__getitem__)  # then a (next use 5, after e's 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "d", "e"]
    uses["f"] = 9.0
    assert not _publish(cache, "f", 10, uses.__getitem__)  # everything else is needed sooner
    assert cache.peak_bytes == 30


def test_has_forgets_files_deleted_by_others(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=100)
    _publish(cache, "a", 5, lambda n: 0.0)
    (tmp_path / "a").unlink()
    assert not cache.has("a") and cache.used_bytes == 0
    (tmp_path / "b").write_bytes(b"12345")
    assert cache.adopt("b", 5) and not cache.adopt("missing", 5) and cache.used_bytes == 5


async def test_prefetcher_keeps_depth_and_order(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**6)
    uses = ["c0", "c1", "c1", "c2", "c3", "c4"]
    fetched: list[str] = []
    inflight = 0
    peak = 0

    async def fetch(name: str, tmp: Path) -> None:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.001)
        fetched.append(name)
        tmp.write_bytes(b"z" * 10)
        inflight -= 1

    pre = Prefetcher(cache, uses, dict.fromkeys(uses, 10), fetch, depth=2)
    for step in range(len(uses)):
        path = await pre.get(step)
        assert path.read_bytes() == b"z" * 10
    await pre.aclose()
    assert fetched == ["c0", "c1", "c2", "c3", "c4"]  # each once, in first-use order
    assert peak <= 3  # the current chunk + depth look-ahead


async def test_prefetcher_reports_errors_when_needed(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10**6)

    async def fetch(name: str, tmp: Path) -> None:
        if name == "bad":
            raise OSError("boom: bad")
        tmp.write_bytes(b"ok")

    pre = Prefetcher(cache, ["good", "bad"], {"good": 2, "bad": 2}, fetch, depth=1)
    await pre.get(0)
    with pytest.raises(OSError, match="boom"):
        await pre.get(1)
    await pre.aclose()
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


def _disk_bytes(directory: Path) -> int:
    return sum(
        p.stat().st_size for p in directory.iterdir() if p.name.startswith("chunk-") and ".tmp." not in p.name
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_budget_holds_during_an_epoch(make_dataset: Any, shuffle: bool) -> None:
    path, items = make_dataset(80, chunk_size=5)
    probe = StreamingDataset(f"local:{path}")
    sizes = [e.chunk_bytes for e in probe.source.entries]
    budget = 3 * max(sizes)
    ds = StreamingDataset(f"local:{path}", max_cache_size=budget, shuffle=shuffle, max_pre_download=4)
    assert ds.source.cache_dir is not None
    seen = []
    for item in ds:
        seen.append(item)
        assert _disk_bytes(ds.source.cache_dir) <= budget + max(sizes)
    assert sorted(seen, key=lambda x: x["i"]) == items
    cache = ds.source._cache
    assert cache is not None and cache.evictions > 0
    assert cache.peak_bytes <= budget + max(sizes)


def test_chunks_stay_cached_between_epochs_when_they_fit(make_dataset: Any) -> None:
    path, items = make_dataset(40, chunk_size=5)
    ds = StreamingDataset(f"local:{path}")
    assert list(ds) == items
    cache = ds.source._cache
    assert cache is not None
    assert list(ds) == items
    assert cache.evictions == 0
