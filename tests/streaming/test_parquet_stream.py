"""Streaming Parquet datasets (LitData's index_parquet_dataset layout) with ParquetLoader."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow")

from aiolit.streaming import ParquetLoader, StreamingDataLoader, StreamingDataset

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def _cases() -> Any:
    spec = importlib.util.spec_from_file_location("golden_cases_parquet", GOLDEN / "cases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases = _cases()


@pytest.fixture
def pq_dir(tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    """A copy of the golden parquet dataset and its rows in index order."""
    path = tmp_path / "parquet"
    shutil.copytree(GOLDEN / "0.2.76" / "parquet", path)
    index = json.loads((path / "index.json").read_text())
    rows = [r for c in index["chunks"] for r in cases.parquet_file_rows(c["filename"])]
    return str(path), rows


@pytest.mark.parametrize(
    "loader", [ParquetLoader(), ParquetLoader(low_memory=False), ParquetLoader(pre_load_chunk=True)]
)
def test_rows_in_order_and_random_access(pq_dir: Any, loader: ParquetLoader) -> None:
    path, rows = pq_dir
    dataset = StreamingDataset(path, item_loader=loader)
    assert len(dataset) == 40
    assert dataset[0] == rows[0] == {"id": 20, "name": "name-20", "score": 5.0}
    assert list(dataset) == rows
    assert [dataset[k] for k in range(40)] == rows
    assert dataset[5:9] == rows[5:9]


def test_readme_parquet_loader_example(pq_dir: Any) -> None:
    path, rows = pq_dir
    dataset = StreamingDataset(path, item_loader=ParquetLoader())
    assert dataset[0] == rows[0]
    dataloader = StreamingDataLoader(dataset, batch_size=4)
    got = []
    for sample in dataloader:
        got += [
            {"id": int(i), "name": n, "score": float(s)}
            for i, n, s in zip(sample["id"], sample["name"], sample["score"], strict=True)
        ]
    assert got == rows


def test_shuffle_with_two_workers(pq_dir: Any) -> None:
    path, rows = pq_dir
    by_id = {r["id"]: r for r in rows}
    dataset = StreamingDataset(path, item_loader=ParquetLoader(), shuffle=True, seed=3)
    loader = StreamingDataLoader(dataset, batch_size=4, num_workers=2)  # fork: pyarrow, no polars
    got = []
    for batch in loader:
        for i, n, s in zip(batch["id"].tolist(), batch["name"], batch["score"].tolist(), strict=True):
            assert by_id[i] == {"id": i, "name": n, "score": s}
            got.append(i)
    assert sorted(got) == list(range(40))
    assert got != [r["id"] for r in rows]


def test_shuffle_and_resume_in_process(pq_dir: Any) -> None:
    path, rows = pq_dir

    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(
            StreamingDataset(path, item_loader=ParquetLoader(), shuffle=True), batch_size=3
        )

    reference = [b["id"].tolist() for b in loader()]
    assert sorted(i for b in reference for i in b) == sorted(r["id"] for r in rows)
    first = loader()
    seen = []
    for b in first:
        seen.append(b["id"].tolist())
        if len(seen) == 4:
            break
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + [b["id"].tolist() for b in resumed] == reference


def test_columns_and_cached_copy(pq_dir: Any, tmp_path: Path) -> None:
    path, rows = pq_dir
    # "local:" copies the files through the cache and prefetcher, as a remote dataset
    dataset = StreamingDataset(f"local:{path}", item_loader=ParquetLoader(columns=["id", "score"]))
    assert list(dataset) == [{"id": r["id"], "score": r["score"]} for r in rows]
    assert dataset[39] == {"id": rows[39]["id"], "score": rows[39]["score"]}


def test_missing_parquet_loader_is_a_clear_error(pq_dir: Any) -> None:
    path, _ = pq_dir
    with pytest.raises(ValueError, match=r"item_loader=ParquetLoader\(\)"):
        StreamingDataset(path)
    with pytest.raises(ValueError, match="ParquetLoader"):
        ParquetLoader(columns="id")  # type: ignore[arg-type]
