"""optimize() whose fn keeps no input writes LitData's empty dataset, which opens as empty."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

import aiolit.processing as ld
from aiolit.streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from tests.processing import fns


def drop_all(i: int) -> None:
    return None


def _empty_index_shape(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((path / "index.json").read_text())
    assert isinstance(raw.pop("updated_at"), str)
    return raw


def _assert_empty(path: Path) -> None:
    ds = StreamingDataset(str(path))
    assert len(ds) == 0 and list(ds) == [] and ds[0:5] == []
    with pytest.raises(IndexError, match="out of range for a dataset of length 0"):
        ds[0]

    async def consume() -> list[Any]:
        fresh = StreamingDataset(str(path))
        with pytest.raises(IndexError):
            await fresh.aget(0)
        return [x async for x in fresh]

    assert asyncio.run(consume()) == []
    loader = StreamingDataLoader(StreamingDataset(str(path)), batch_size=2, num_workers=2)
    assert len(loader) == 0 and list(loader) == []
    # an empty dataset has no item layout to disagree with
    assert list(StreamingDataset(str(path), item_loader=TokensLoader(block_size=4))) == []


def test_empty_dataset_written_and_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="produced no samples"):
        ld.optimize(
            drop_all,
            list(range(7)),
            str(out),
            chunk_size=2,
            num_workers=2,
            start_method="fork",
            verbose=False,
        )
    assert sorted(os.listdir(out)) == ["index.json"]
    assert _empty_index_shape(out) == {"chunks": [], "config": None}  # LitData 0.2.76's bytes
    _assert_empty(out)
    # appending to it starts a dataset as if it were not there
    ld.optimize(fns.identity, [5, 6, 7], str(out), chunk_size=2, num_workers=1, mode="append",
                start_method="fork", verbose=False)  # fmt: skip
    assert list(StreamingDataset(str(out))) == [5, 6, 7]


def test_litdata_empty_dataset_opens_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    litdata = pytest.importorskip("litdata")
    for var in ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER", "LITDATA_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "litdata-cache" / var.lower()))
    out = tmp_path / "lit"
    litdata.optimize(fn=drop_all, inputs=list(range(5)), output_dir=str(out), chunk_size=2, num_workers=1,
                     start_method="fork", verbose=False)  # fmt: skip
    ours = tmp_path / "ours"
    with pytest.warns(UserWarning):
        ld.optimize(
            drop_all,
            list(range(5)),
            str(ours),
            chunk_size=2,
            num_workers=1,
            start_method="fork",
            verbose=False,
        )
    assert _empty_index_shape(out) == _empty_index_shape(ours)
    _assert_empty(out)
