"""ParallelStreamingDataset(length=..., resume=True): an epoch continues where the last stopped."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from aiolit import ParallelStreamingDataset, StreamingDataLoader, StreamingDataset
from tests.streaming._data import write_dataset


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOLIT_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("WORLD_SIZE", "RANK", "GLOBAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    os.environ.pop("MASTER_ADDR", None)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    write_dataset(tmp_path / "a", 24, chunk_size=5)
    write_dataset(tmp_path / "b", 17, chunk_size=4)
    return str(tmp_path / "a"), str(tmp_path / "b")


def _pds(dirs: tuple[str, str], length: int | float) -> ParallelStreamingDataset:
    return ParallelStreamingDataset([StreamingDataset(d) for d in dirs], length=length, resume=True)


def _pairs(items: Any) -> list[tuple[int, int]]:
    return [(int(a["i"]), int(b["i"])) for a, b in items]


def _batches(loader: StreamingDataLoader, stop: int | None = None) -> list[list[tuple[int, int]]]:
    out = []
    for a, b in loader:
        out.append(list(zip(a["i"].tolist(), b["i"].tolist(), strict=True)))
        if stop is not None and len(out) == stop:
            break
    return out


@pytest.mark.parametrize("length", [30, math.inf])
def test_parallel_resume_true_partial_epoch_continues_without_loader(
    dirs: tuple[str, str], length: float
) -> None:
    stream = []
    for x in _pds(dirs, math.inf):
        stream.append(x)
        if len(stream) == 70:
            break
    reference = _pairs(stream)
    ds = _pds(dirs, length)
    got: list[tuple[int, int]] = []
    for stop in (7, 12, 5):
        it = iter(ds)
        got += _pairs(next(it) for _ in range(stop))
        it.close()  # type: ignore[attr-defined]
    assert got == reference[:24]
    if length == 30:
        got += _pairs(ds)  # a whole epoch from there
        assert got == reference[:54]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("length", [32, math.inf])
def test_parallel_resume_true_partial_epoch_continues_with_loader(
    dirs: tuple[str, str], num_workers: int, length: float
) -> None:
    reference = _batches(
        StreamingDataLoader(_pds(dirs, math.inf), batch_size=2, num_workers=num_workers), stop=40
    )
    loader = StreamingDataLoader(_pds(dirs, length), batch_size=2, num_workers=num_workers)
    got = _batches(loader, stop=4)  # an even count: both workers stopped after 2 batches
    got += _batches(loader, stop=6)
    state = loader.state_dict()
    assert got == reference[:10]
    if length == 32:
        got += _batches(loader)  # the whole next epoch: 16 batches
        assert got == reference[:26]
    # A resumed loader continues from the state, then carries on across the break.
    resumed = StreamingDataLoader(_pds(dirs, length), batch_size=2, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert _batches(resumed, stop=4) == reference[10:14]
