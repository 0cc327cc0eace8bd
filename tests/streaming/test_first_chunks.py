"""Cold start of whole chunks with 2 workers: worker 0's first chunk has the link first.

The loader takes batch 0 from worker 0 and batch 1 from worker 1, so worker 1 starts its first
chunk once worker 0's is in the cache (``Run.yield_first``): nothing else is downloaded while
batch 0's chunk is. Checked on moto: every sample exactly once and byte-exact against the
local copy read with the same plan, downloads in that order (a spy on ``DataSource.fetch``
logs start and end of every chunk download, from the forked workers too), the cache budget.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import get_worker_info

from aiolit import _loop
from aiolit.stores import open_store
from aiolit.streaming import StreamingDataLoader, StreamingDataset, _peer
from aiolit.streaming._source import DataSource

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def samples_local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aiolit.format import ChunkWriter, merge_shards

    root = tmp_path_factory.mktemp("first-chunks") / "src"
    writer = ChunkWriter(str(root), chunk_bytes=40_000)
    rng = np.random.default_rng(5)
    for i in range(400):
        writer.add({"i": i, "x": rng.integers(0, 255, size=(int(rng.integers(50, 900)),), dtype=np.uint8)})
    writer.done()
    merge_shards(str(root))
    return root


@pytest.fixture
def samples_remote(s3_server: Any, samples_local: Path) -> str:
    url: str = s3_server.new_url("first-chunks")

    async def put_all() -> None:
        store = open_store(url, s3_server.storage_options)
        try:
            await asyncio.gather(
                *(store.put_file(p.name, str(p)) for p in samples_local.iterdir() if p.is_file())
            )
        finally:
            await store.aclose()

    _loop.run(put_all())
    return url


@pytest.fixture
def fetch_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every whole-chunk download: worker id, chunk, start, end (monotonic clock, system-wide)."""
    log = tmp_path / "fetch.log"
    real = DataSource.fetch

    async def spy(self: DataSource, i: int, tmp: Path, *, parts: int | None = None) -> None:
        started = time.monotonic()
        await real(self, i, tmp, parts=parts)
        info = get_worker_info()
        with open(log, "a") as f:
            f.write(f"{-1 if info is None else info.id} {i} {started} {time.monotonic()}\n")

    monkeypatch.setattr(DataSource, "fetch", spy)
    return log


def _samples(url: str, **kwargs: Any) -> list[dict[str, Any]]:
    ds_args = {k: kwargs.pop(k) for k in ("cache_dir", "storage_options", "max_cache_size") if k in kwargs}
    ds = StreamingDataset(url, shuffle=True, **ds_args)
    out = []
    for batch in StreamingDataLoader(ds, batch_size=16, num_workers=2, **kwargs):
        for j in range(len(batch["i"])):
            out.append({"i": int(batch["i"][j]), "x": batch["x"][j].clone()})
    return out


def _batches_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [s["i"] for s in got] == [s["i"] for s in want]
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a["x"], b["x"]), a["i"]


@pytest.mark.parametrize("max_cache_size", ["100GB", "130kB"])
def test_first_chunks_in_batch_order(
    samples_remote: str,
    samples_local: Path,
    s3_server: Any,
    fetch_log: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_cache_size: str,
) -> None:
    # A loaded CI machine may start worker 0's download late: do not let the grace run out.
    monkeypatch.setattr(_peer, "wait_published", functools.partial(_peer.wait_published, grace=60.0))

    # Same-length samples would collate; these vary in length, so collate per sample by hand.
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return {"i": torch.tensor([s["i"] for s in batch]), "x": [torch.from_numpy(s["x"]) for s in batch]}

    want = _samples(str(samples_local), collate_fn=collate)
    assert sorted(s["i"] for s in want) == list(range(400))  # every sample once
    cache = tmp_path / "cache"
    got = _samples(
        samples_remote,
        cache_dir=str(cache),
        storage_options=s3_server.storage_options,
        max_cache_size=max_cache_size,
        collate_fn=collate,
    )
    _batches_equal(got, want)
    rows = [line.split() for line in fetch_log.read_text().splitlines()]
    fetches = sorted((float(a), float(b), int(c)) for _, c, a, b in rows)  # (start, end, chunk)
    ds = StreamingDataset(samples_remote, shuffle=True, storage_options=s3_server.storage_options)
    ds.set_num_workers(2)
    ds.set_batch_size(16)
    plan = ds._plan(ds._topology()[0], 1)
    firsts = [plan.worker(w).steps[0].chunk for w in (0, 1)]
    assert firsts[0] != firsts[1]  # distinct first chunks (else they share one download)
    a = next(f for f in fetches if f[2] == firsts[0])
    b = next(f for f in fetches if f[2] == firsts[1])
    # Batch 0's chunk had the link alone: every other download started once it was in.
    assert all(f[0] >= a[1] for f in fetches if f is not a)
    assert b[0] >= a[1]
    if max_cache_size == "130kB":  # the budget holds (each worker gets half)
        held = sum(p.stat().st_size for p in cache.rglob("chunk-*.bin"))
        assert held <= 130_000
