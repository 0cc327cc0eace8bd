"""Cold start from S3 (moto): the first token batch read by byte range, whole chunks behind it.

Every batch is compared with the same loader reading the dataset's local copy (same plan, same
order), so a block served twice, skipped or read from the wrong bytes fails. The early reads are
counted through a spy on ``DataSource.fetch_blocks`` that calls the real method (a file counter,
so forked workers report too); faults are injected with ``aiolit.testing.FaultyStore`` between the
retry layer and the real S3 client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aiolit import _loop
from aiolit.stores import open_store
from aiolit.stores._retry import RetryPolicy, RetryStore
from aiolit.streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from aiolit.streaming._source import DataSource
from aiolit.testing import FaultPlan, FaultyStore
from tests.streaming._data import upload, write_tokens

pytestmark = pytest.mark.s3

BLOCK = 16


@pytest.fixture(scope="module")
def tokens_local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cold-tokens")
    rng = np.random.default_rng(7)
    seqs = [rng.integers(0, 60_000, size=int(rng.integers(20, 200)), dtype=np.uint16) for _ in range(60)]
    write_tokens(root / "src", seqs, chunk_size=1500)  # ~4 chunks of ~90 blocks
    return root / "src"


def _upload(server: Any, local: Path, name: str) -> str:
    return upload(server, local, server.new_url(name))


@pytest.fixture
def tokens_remote(s3_server: Any, tokens_local: Path) -> tuple[str, dict[str, Any]]:
    return _upload(s3_server, tokens_local, "tok"), s3_server.storage_options


@pytest.fixture
def early_spy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Record every early read (blocks per call) in a file, from any process."""
    log = tmp_path / "early.log"
    real = DataSource.fetch_blocks

    async def spy(self: DataSource, i: int, blocks: Any, itemsize: int, block_size: int) -> Any:
        chunk = await real(self, i, blocks, itemsize, block_size)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {i} {len(blocks)}\n")
        return chunk

    monkeypatch.setattr(DataSource, "fetch_blocks", spy)
    return log


def _batches(
    url: str, *, cache: Path | None, opts: dict[str, Any] | None, **kwargs: Any
) -> list[torch.Tensor]:
    ds_args = {k: kwargs.pop(k) for k in ("max_cache_size",) if k in kwargs}
    ds = StreamingDataset(
        url,
        cache_dir=None if cache is None else str(cache),
        storage_options=opts,
        item_loader=TokensLoader(BLOCK),
        shuffle=True,
        drop_last=False,
        **ds_args,
    )
    return [b.clone() for b in StreamingDataLoader(ds, **kwargs)]


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == b.dtype and a.shape == b.shape, (i, a.shape, b.shape)
        assert torch.equal(a, b), f"batch {i} differs"


def _early_calls(log: Path) -> list[tuple[int, int, int]]:
    if not log.exists():
        return []
    return [tuple(int(x) for x in line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


@pytest.mark.parametrize(("batch_size", "num_workers"), [(8, 0), (5, 2)])
def test_first_batch_by_range_then_whole_chunks(
    tokens_remote: Any, tokens_local: Path, early_spy: Path, tmp_path: Path, batch_size: int, num_workers: int
) -> None:
    url, opts = tokens_remote
    want = _batches(str(tokens_local), cache=None, opts=None, batch_size=batch_size, num_workers=num_workers)
    got = _batches(url, cache=tmp_path / "cache", opts=opts, batch_size=batch_size, num_workers=num_workers)
    _assert_same(got, want)
    calls = _early_calls(early_spy)
    # At most one early read per reading process, of at most one batch of blocks. A worker whose
    # first chunk a co-worker already put in the shared cache (a slow start, under load) reads it
    # from there instead: one early read at least, not one per worker.
    assert 1 <= len(calls) <= max(1, num_workers)
    assert len({pid for pid, _, _ in calls}) == len(calls)
    assert all(0 < n <= batch_size for _, _, n in calls)
    # The whole chunks still arrived: a second epoch reads the cache, with no early reads.
    early_spy.unlink()
    again = _batches(url, cache=tmp_path / "cache", opts=opts, batch_size=batch_size, num_workers=num_workers)
    assert sorted(b.sum().item() for b in again) == sorted(b.sum().item() for b in want)
    assert _early_calls(early_spy) == []


def test_read_early_off_waits_for_whole_chunks(
    tokens_remote: Any, tokens_local: Path, early_spy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, opts = tokens_remote
    monkeypatch.setattr(StreamingDataset, "read_early", False)
    want = _batches(str(tokens_local), cache=None, opts=None, batch_size=8, num_workers=0)
    _assert_same(_batches(url, cache=tmp_path / "cache", opts=opts, batch_size=8, num_workers=0), want)
    assert _early_calls(early_spy) == []


def test_cache_budget_holds_with_early_reads(
    tokens_remote: Any, tokens_local: Path, early_spy: Path, tmp_path: Path
) -> None:
    url, opts = tokens_remote
    sizes = sorted(p.stat().st_size for p in tokens_local.glob("chunk-*.bin"))
    budget = sizes[-1] + sizes[-2]  # two chunks: eviction happens during the epoch
    want = _batches(str(tokens_local), cache=None, opts=None, batch_size=8, num_workers=0)
    got = _batches(
        url, cache=tmp_path / "cache", opts=opts, batch_size=8, num_workers=0, max_cache_size=budget
    )
    _assert_same(got, want)
    assert len(_early_calls(early_spy)) == 1
    cached = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("chunk-*.bin"))
    # Early copies live in memory only; the chunk files stay within the budget plus the chunk in use.
    assert cached <= budget + sizes[-1]
    assert not list((tmp_path / "cache").rglob("*.tmp*"))


def _faulty_dataset(
    url: str, opts: dict[str, Any], cache: Path, plan: FaultPlan
) -> tuple[StreamingDataset, FaultyStore]:
    ds = StreamingDataset(
        url, cache_dir=str(cache), storage_options=opts, item_loader=TokensLoader(BLOCK), shuffle=True
    )
    faulty = FaultyStore(open_store(url, opts, retry=False), plan)
    store = RetryStore(faulty, RetryPolicy(initial_backoff=0.001, max_backoff=0.01))
    loop = _loop.get_loop()
    old = ds.source._stores.get(id(loop))
    ds.source._stores[id(loop)] = (loop, store)  # this process's store on aiolit's loop thread
    if old is not None:
        _loop.run(old[1].aclose())
    return ds, faulty


@pytest.mark.parametrize("fault", ["failure", "short_read"])
def test_failed_range_read_is_retried(
    tokens_remote: Any, tokens_local: Path, early_spy: Path, tmp_path: Path, fault: str
) -> None:
    url, opts = tokens_remote
    want = _batches(str(tokens_local), cache=None, opts=None, batch_size=8, num_workers=0)
    plan = (
        FaultPlan(failures=2, ops=frozenset({"get_range"}))
        if fault == "failure"
        else FaultPlan(short_reads=2)
    )
    ds, faulty = _faulty_dataset(url, opts, tmp_path / "cache", plan)
    got = [b.clone() for b in StreamingDataLoader(ds, batch_size=8, num_workers=0)]
    _assert_same(got, want)
    assert plan.failures == 0 and plan.short_reads == 0  # every injected fault was hit
    early = _early_calls(early_spy)
    assert len(early) == 1
    # The early blocks (one coalesced range: these chunks are small) took the two faults and a
    # third request; the whole chunks came through the same store, one GET each.
    assert faulty.calls["get_range"] == 3
    assert faulty.calls["get"] == len(ds.source.names)


def test_early_read_that_keeps_failing_raises(tokens_remote: Any, tmp_path: Path) -> None:
    from aiolit.errors import RetriesExhaustedError

    url, opts = tokens_remote
    plan = FaultPlan(failures=10_000, ops=frozenset({"get_range"}))
    ds, faulty = _faulty_dataset(url, opts, tmp_path / "cache", plan)
    store = ds.source._stores[id(_loop.get_loop())][1]
    assert isinstance(store, RetryStore)
    store._policy = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.001)
    with pytest.raises(RetriesExhaustedError, match="injected failure"):
        next(iter(StreamingDataLoader(ds, batch_size=8, num_workers=0)))
    assert faulty.calls["get_range"] >= 3


@pytest.mark.parametrize("read_early", [True, False])
def test_requests_per_epoch(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_early: bool
) -> None:
    """One GET per chunk; the first chunk split in range GETs only when no early read fed the
    reader, and into at most 1 + 20 % of the epoch's chunks."""
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, 60_000, size=int(rng.integers(20, 200)), dtype=np.uint16) for _ in range(60)]
    write_tokens(tmp_path / "src", seqs, chunk_size=400)
    url = _upload(s3_server, tmp_path / "src", "tok-parts")
    monkeypatch.setattr(StreamingDataset, "read_early", read_early)
    part = 200
    opts = {**s3_server.storage_options, "multipart_threshold": part, "part_size": part, "coalesce": 0}
    want = _batches(str(tmp_path / "src"), cache=None, opts=None, batch_size=4, num_workers=0)
    ds, counter = _faulty_dataset(url, opts, tmp_path / "cache", FaultPlan())
    got = [b.clone() for b in StreamingDataLoader(ds, batch_size=4, num_workers=0)]
    _assert_same(got, want)
    n = len(ds.source.names)
    assert n >= 10
    if read_early:
        assert counter.calls["get"] == n  # every whole chunk with one GET
        assert 1 <= counter.calls["get_range"] <= 4  # the first batch's blocks (coalesce=0: one each)
    else:
        first = ds.source.names[ds._plan(ds._topology()[0], 1).worker(0).steps[0].chunk]
        size = (tmp_path / "src" / first).stat().st_size
        assert counter.calls["get"] == n - 1
        assert counter.calls["get_range"] == min(1 + int(0.2 * n), -(-size // part)) > 1
