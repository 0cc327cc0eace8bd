"""index_hf_dataset and StreamingDataset over hf:// against the local Hub look-alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiolit.errors import FormatError, ObjectNotFoundError, StorePermissionError
from aiolit.processing import index_hf_dataset, index_parquet_dataset
from aiolit.processing.hf import hf_index_dir, index_hf_dataset_async
from aiolit.streaming import ParquetLoader
from aiolit.streaming.dataset import StreamingDataset
from tests.hf.hub_server import HubServer

# name -> rows; part-3 is large enough (> 64 KiB) that its footer read is a true tail range.
FILES = {"part-0.parquet": 13, "part-1.parquet": 7, "part-3.parquet": 6000, "part-10.parquet": 21}


def write_parquet(path: Path, n: int, offset: int) -> list[dict[str, Any]]:
    table = pa.table(
        {
            "id": pa.array(range(offset, offset + n), pa.int64()),
            "text": pa.array([f"row {offset + i} " + "x" * (i % 17) for i in range(n)], pa.string()),
            "vec": pa.array([[float(i), float(i) / 2] for i in range(n)], pa.list_(pa.float32())),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=max(1, n // 3))
    return table.to_pylist()


def make_local(root: Path, files: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    offset = 0
    for name, n in files.items():
        rows[name] = write_parquet(root / name, n, offset)
        offset += n
    return rows


def in_order(rows: dict[str, list[dict[str, Any]]], names: list[str]) -> list[dict[str, Any]]:
    return [r for name in names for r in rows[name]]


@pytest.fixture
def published(
    hub: HubServer, repo_id: str, tmp_path: Path
) -> tuple[str, Path, dict[str, list[dict[str, Any]]]]:
    """A dataset repo with parquet files under data/ (and stray files); (url, local copy, rows)."""
    local = tmp_path / "local" / "data"
    rows = make_local(local, FILES)
    hub.add_dir(repo_id, local, "data")
    hub.add_file(repo_id, "data/README.md", b"# not parquet")
    hub.add_file(repo_id, "other/ignored.parquet", (local / "part-0.parquet").read_bytes())
    return f"hf://datasets/{repo_id}/data", local, rows


def test_index_equals_local_index(
    hub: HubServer, published: tuple[str, Path, dict[str, list[dict[str, Any]]]], tmp_path: Path
) -> None:
    url, local, _ = published
    options = {"endpoint": hub.endpoint}
    hub.requests.clear()
    index_dir = index_hf_dataset(url, cache_dir=tmp_path / "hfcache", storage_options=options)
    assert Path(index_dir) == hf_index_dir(url, tmp_path / "hfcache", options)
    assert Path(index_dir).parent.name == "hf-index"
    remote = json.loads((Path(index_dir) / "index.json").read_text())
    expected = json.loads(index_parquet_dataset(local, cache_dir=tmp_path / "localidx").to_json())
    assert remote["chunks"] == expected["chunks"]
    assert remote["config"] == expected["config"]
    assert [c["filename"] for c in remote["chunks"]] == [
        "part-0.parquet",
        "part-1.parquet",
        "part-3.parquet",
        "part-10.parquet",
    ]
    assert float(remote["updated_at"]) > 0
    # Only footers were read: every parquet GET is a ranged tail read.
    gets = [r for r in hub.requests if r.role == "cdn"]
    assert len(gets) == len(FILES) and all(r.range is not None for r in gets)
    big = (local / "part-3.parquet").stat().st_size
    assert big > 64 * 1024
    big_ranges = [r.range for r in gets if r.range and r.range.endswith(f"-{big - 1}")]
    assert big_ranges == [f"bytes={big - 65536}-{big - 1}"]
    # A second call reuses the cached index without touching the Hub.
    hub.requests.clear()
    assert index_hf_dataset(url, cache_dir=tmp_path / "hfcache", storage_options=options) == index_dir
    assert hub.requests == []


def test_nested_files_keep_relative_paths(hub: HubServer, repo_id: str, tmp_path: Path) -> None:
    local = tmp_path / "nested"
    rows = make_local(local, {"train/0.parquet": 5, "train/1.parquet": 4, "test/0.parquet": 3})
    hub.add_dir(repo_id, local, "", revision="refs/convert/parquet")
    url = f"hf://datasets/{repo_id}@refs/convert/parquet"
    options = {"endpoint": hub.endpoint}
    index_dir = index_hf_dataset(url, cache_dir=tmp_path / "c", storage_options=options)
    index = json.loads((Path(index_dir) / "index.json").read_text())
    names = [c["filename"] for c in index["chunks"]]
    assert names == ["test/0.parquet", "train/0.parquet", "train/1.parquet"]
    ds = StreamingDataset(
        url,
        item_loader=ParquetLoader(),
        index_path=index_dir,
        storage_options=options,
        cache_dir=tmp_path / "c",
    )
    assert len(ds) == 12
    assert list(ds) == in_order(rows, names)


def test_stream_every_row(
    hub: HubServer, published: tuple[str, Path, dict[str, list[dict[str, Any]]]], tmp_path: Path
) -> None:
    url, _, rows = published
    options = {"endpoint": hub.endpoint}
    index_dir = index_hf_dataset(url, storage_options=options)  # default root: next to the chunk cache
    assert Path(index_dir).is_relative_to(tmp_path / "cache")
    ds = StreamingDataset(url, item_loader=ParquetLoader(), index_path=index_dir, storage_options=options)
    names = ["part-0.parquet", "part-1.parquet", "part-3.parquet", "part-10.parquet"]
    expected = in_order(rows, names)
    assert len(ds) == len(expected) == 6041
    assert list(ds) == expected
    assert ds[6040] == expected[6040] and ds[14] == expected[14]
    shuffled = StreamingDataset(
        url, item_loader=ParquetLoader(), index_path=index_dir, storage_options=options, shuffle=True
    )
    assert sorted(shuffled, key=lambda r: r["id"]) == expected


def test_readme_index_parquet_dataset_variant(
    hub: HubServer, published: tuple[str, Path, dict[str, list[dict[str, Any]]]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    url, _, rows = published
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.chdir(tmp_path)
    # The README's two steps: index into "hf-index-dir" (the upload to the read-only Hub only
    # warns), then stream with index_path.
    index_parquet_dataset(url, "hf-index-dir")
    assert (tmp_path / "hf-index-dir" / "index.json").is_file()
    ds = StreamingDataset(url, item_loader=ParquetLoader(), index_path="hf-index-dir")
    names = ["part-0.parquet", "part-1.parquet", "part-3.parquet", "part-10.parquet"]
    assert list(ds) == in_order(rows, names)
    # index_hf_dataset(url, cache_dir) reuses {cache_dir}/index.json, as LitData does.
    assert index_hf_dataset(url, "hf-index-dir") == str(tmp_path / "hf-index-dir")


def test_streaming_dataset_finds_the_index_itself(
    hub: HubServer, published: tuple[str, Path, dict[str, list[dict[str, Any]]]], tmp_path: Path
) -> None:
    url, _, rows = published
    options = {"endpoint": hub.endpoint}
    cache = str(tmp_path / "cache")
    ds = StreamingDataset(url, item_loader=ParquetLoader(), storage_options=options, cache_dir=cache)
    assert list((tmp_path / "cache" / "hf-index").glob("*/index.json"))  # indexed once, cached
    names = ["part-0.parquet", "part-1.parquet", "part-3.parquet", "part-10.parquet"]
    assert list(ds) == in_order(rows, names)


def test_streaming_an_hf_dataset_needs_the_parquet_loader(
    hub: HubServer, published: tuple[str, Path, dict[str, list[dict[str, Any]]]], tmp_path: Path
) -> None:
    url, _, _ = published
    with pytest.raises(ValueError, match=r"item_loader=ParquetLoader\(\)"):
        StreamingDataset(url, storage_options={"endpoint": hub.endpoint}, cache_dir=str(tmp_path))


def test_gated_dataset(hub: HubServer, repo_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo(repo_id, token="hf_gated")
    rows = make_local(tmp_path / "g", {"a.parquet": 4, "b.parquet": 5})
    hub.add_dir(repo_id, tmp_path / "g")
    url = f"hf://datasets/{repo_id}"
    with pytest.raises(StorePermissionError, match="HF_TOKEN"):
        index_hf_dataset(url, tmp_path / "c", {"endpoint": hub.endpoint})
    monkeypatch.setenv("HF_TOKEN", "hf_gated")
    index_dir = index_hf_dataset(url, tmp_path / "c", {"endpoint": hub.endpoint})
    ds = StreamingDataset(
        url, item_loader=ParquetLoader(), index_path=index_dir, storage_options={"endpoint": hub.endpoint}
    )
    assert list(ds) == rows["a.parquet"] + rows["b.parquet"]


async def test_errors(hub: HubServer, repo_id: str, tmp_path: Path) -> None:
    options = {"endpoint": hub.endpoint}
    with pytest.raises(ValueError, match="must start with 'hf://'"):
        await index_hf_dataset_async("s3://bucket/data", tmp_path)
    hub.add_file(repo_id, "data/notes.txt", b"no parquet here")
    with pytest.raises(ObjectNotFoundError, match=r"no \.parquet files"):
        await index_hf_dataset_async(f"hf://datasets/{repo_id}/data", tmp_path, options)
    write_parquet(tmp_path / "x.parquet", 3, 0)
    pq.write_table(pa.table({"other": pa.array([1.5])}), tmp_path / "y.parquet")
    hub.add_file(repo_id, "mixed/x.parquet", (tmp_path / "x.parquet").read_bytes())
    hub.add_file(repo_id, "mixed/y.parquet", (tmp_path / "y.parquet").read_bytes())
    with pytest.raises(FormatError, match="schemas differ"):
        await index_hf_dataset_async(f"hf://datasets/{repo_id}/mixed", tmp_path, options)
    hub.add_file(repo_id, "bad/z.parquet", b"definitely not a parquet file")
    with pytest.raises(FormatError, match="not a parquet file"):
        await index_hf_dataset_async(f"hf://datasets/{repo_id}/bad", tmp_path, options)
    assert not any((tmp_path / "hf-index").glob("*/index.json"))


def test_dataloader_workers(
    hub: HubServer, published: tuple[str, Path, dict[str, list[dict[str, Any]]]], tmp_path: Path
) -> None:
    from aiolit.streaming.dataloader import StreamingDataLoader

    url = published[0]
    options = {"endpoint": hub.endpoint, "token": "hf_unused"}  # the token travels to the workers
    index_dir = index_hf_dataset(url, tmp_path / "c", options)
    ds = StreamingDataset(url, item_loader=ParquetLoader(), index_path=index_dir, storage_options=options)
    loader = StreamingDataLoader(ds, batch_size=64, num_workers=2, collate_fn=lambda batch: batch)
    hub.requests.clear()
    seen = [row["id"] for batch in loader for row in batch]
    assert sorted(seen) == list(range(6041))
    tokens = {r.authorization for r in hub.requests if r.role == "hub" and "/resolve/" in r.path}
    assert tokens == {"Bearer hf_unused"}
