"""optimize(align_chunking=..., compression_level=..., compression_batch_size=...), with LitData as oracle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aiolit.processing as ld
from aiolit import StreamingDataLoader, StreamingDataset
from tests.processing import fns, optfns
from tests.processing.readback import read_aiolit, read_litdata


def _index(path: str) -> dict[str, Any]:
    return json.loads(Path(path, "index.json").read_text())  # type: ignore[no-any-return]


def _chunks(path: str) -> list[tuple[str, int]]:
    return [(c["filename"], c["chunk_size"]) for c in _index(path)["chunks"]]


def test_align_chunking_matches_litdata(tmp_path: Path) -> None:
    litdata = pytest.importorskip("litdata")
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    ld.optimize(fns.square_pair, list(range(23)), ours, chunk_size=4, num_workers=2, align_chunking=True,
                start_method="fork", verbose=False)  # fmt: skip
    litdata.optimize(fns.square_pair, list(range(23)), theirs, chunk_size=4, num_workers=2, align_chunking=True,
                     start_method="fork", verbose=False)  # fmt: skip
    # worker 0: two whole chunks; worker 1: the rest; the sizes of a one-worker run
    assert _chunks(ours) == _chunks(theirs) == [
        ("chunk-0-0.bin", 4), ("chunk-0-1.bin", 4),
        ("chunk-1-0.bin", 4), ("chunk-1-1.bin", 4), ("chunk-1-2.bin", 4), ("chunk-1-3.bin", 3),
    ]  # fmt: skip
    assert read_aiolit(ours) == read_litdata(theirs) == [(i, i**2) for i in range(23)]


def test_align_chunking_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`chunk_size` needs to be defined"):
        ld.optimize(fns.identity, [1], str(tmp_path), chunk_bytes=100, align_chunking=True, verbose=False)
    with pytest.raises(ValueError, match="keep_data_ordered=True"):
        ld.optimize(fns.identity, [1], str(tmp_path), chunk_size=2, align_chunking=True, keep_data_ordered=False,
                    verbose=False)  # fmt: skip
    with pytest.warns(UserWarning, match="too large"):
        ld.optimize(fns.identity, list(range(5)), str(tmp_path / "w"), chunk_size=8, num_workers=2,
                    align_chunking=True, start_method="fork", verbose=False)  # fmt: skip
    assert _chunks(str(tmp_path / "w")) == [("chunk-1-0.bin", 5)]


_SAMPLE_FN = optfns.array_sample
_sample = optfns.array_sample


@pytest.mark.parametrize(
    ("level", "batch"), [("batch", None), ("batch", 3), ("sample", None), ("chunk", None)]
)
def test_compression_level_layouts(tmp_path: Path, level: str, batch: int | None) -> None:
    out = str(tmp_path / "out")
    ld.optimize(_SAMPLE_FN, list(range(20)), out, chunk_size=8, num_workers=2,
                compression="zstd:3", compression_level=level, compression_batch_size=batch,
                start_method="fork", verbose=False)  # fmt: skip
    index = _index(out)
    config = index["config"]
    if level == "chunk":
        assert "compression_level" not in config
        assert all(c["filename"].endswith(".zstd:3.bin") for c in index["chunks"])
    else:
        assert config["compression_level"] == level
        assert config.get("compression_batch_size") == ((batch or 256) if level == "batch" else None)
        assert all(".zstd" not in c["filename"] for c in index["chunks"])
        first = (Path(out) / index["chunks"][0]["filename"]).read_bytes()
        assert first.startswith(b"LDFZ01\0\0") == (level == "batch")
    expected = [_sample(i) for i in range(20)]

    def same(got: list[Any]) -> bool:
        return len(got) == 20 and all(
            g["i"] == e["i"] and np.array_equal(g["v"], e["v"]) for g, e in zip(got, expected, strict=True)
        )

    ds = StreamingDataset(f"local:{out}", cache_dir=str(tmp_path / "c"))
    assert same(list(ds)) and same([ds[i] for i in range(20)])
    loaded = [
        {"i": int(b["i"][0]), "v": b["v"][0].numpy()}
        for b in StreamingDataLoader(ds, batch_size=1, num_workers=2)
    ]
    assert same(sorted(loaded, key=lambda s: int(s["i"])))
    assert same(read_litdata(out))  # last: LitData may remove a local dataset's compressed chunks


def test_litdata_batch_layout_is_byte_identical(tmp_path: Path) -> None:
    litdata = pytest.importorskip("litdata")
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    for lib, out in ((ld, ours), (litdata, theirs)):
        lib.optimize(_SAMPLE_FN, list(range(12)), out, chunk_size=5, num_workers=1, compression="zstd",
                     compression_level="batch", compression_batch_size=2, start_method="fork",
                     verbose=False)  # fmt: skip
    for name, _ in _chunks(theirs):
        assert Path(ours, name).read_bytes() == Path(theirs, name).read_bytes()
    mine, reference = _index(ours)["config"], _index(theirs)["config"]
    for key in ("compression", "compression_level", "compression_batch_size", "data_format"):
        assert mine[key] == reference[key]


def test_compression_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="how the zstd frames wrap"):
        ld.optimize(fns.identity, [1], str(tmp_path), chunk_size=2, compression="zstd", compression_level=4,
                    verbose=False)  # fmt: skip
    with pytest.raises(ValueError, match="needs compression='zstd'"):
        ld.optimize(fns.identity, [1], str(tmp_path), chunk_size=2, compression_level="batch", verbose=False)
    with pytest.raises(ValueError, match="compression_batch_size"):
        ld.optimize(fns.identity, [1], str(tmp_path), chunk_size=2, compression="zstd", compression_level="batch",
                    compression_batch_size=0, verbose=False)  # fmt: skip
