"""optimize/map with inputs= a StreamingDataset or a StreamingDataLoader (re-chunk a dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import aiolit.processing as ld
from aiolit import StreamingDataLoader, StreamingDataset
from tests.processing import optfns
from tests.processing.readback import read_aiolit, read_litdata

EXPECTED = [{"i": i, "sq": i * i, "j": i + 1} for i in range(30)]


@pytest.fixture()
def source(tmp_path: Path) -> str:
    out = str(tmp_path / "src")
    ld.optimize(optfns.logged_square, list(range(30)), out, chunk_size=4, num_workers=2, start_method="fork",
                verbose=False)  # fmt: skip
    return out


def _chunk_sizes(path: str) -> list[int]:
    return [c["chunk_size"] for c in json.loads(Path(path, "index.json").read_text())["chunks"]]


def test_rechunk_a_streaming_dataset(source: str, tmp_path: Path) -> None:
    ds = StreamingDataset(f"local:{source}", cache_dir=str(tmp_path / "c"))
    out = str(tmp_path / "out")
    ld.optimize(optfns.plus_one, ds, out, chunk_size=7, num_workers=2, start_method="fork", verbose=False)
    assert read_aiolit(out) == EXPECTED  # dataset order kept
    assert read_litdata(out) == EXPECTED
    assert _chunk_sizes(out) == [7, 7, 1, 7, 7, 1]  # 15 samples per worker, chunks of 7


def test_rechunk_with_an_async_fn(source: str, tmp_path: Path) -> None:
    ds = StreamingDataset(f"local:{source}", cache_dir=str(tmp_path / "c"))
    out = str(tmp_path / "out")
    ld.optimize(optfns.async_plus_one, ds, out, chunk_size=10, verbose=False)
    assert read_aiolit(out) == EXPECTED


def test_rechunk_from_a_streaming_dataloader(source: str, tmp_path: Path) -> None:
    ds = StreamingDataset(f"local:{source}", cache_dir=str(tmp_path / "c"))
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2)
    out = str(tmp_path / "out")
    ld.optimize(optfns.unbatch, loader, out, chunk_size=8, num_workers=2, start_method="fork", verbose=False)
    got = read_aiolit(out)
    assert sorted(got, key=lambda s: s["i"]) == EXPECTED  # every sample once (loader order varies)
    with pytest.raises(ValueError, match="batch_size to the dataloader"):
        ld.optimize(optfns.unbatch, loader, str(tmp_path / "x"), chunk_size=8, batch_size=2, verbose=False)


def test_map_over_a_streaming_dataset(source: str, tmp_path: Path) -> None:
    ds = StreamingDataset(f"local:{source}", cache_dir=str(tmp_path / "c"))
    out = tmp_path / "mapped"
    ld.map(optfns.plus_one_map, ds, str(out), num_workers=2, start_method="fork", verbose=False)
    assert {p.name: p.read_text() for p in out.iterdir()} == {f"{i}.txt": str(i * i + 1) for i in range(30)}
