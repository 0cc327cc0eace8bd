"""index_parquet_dataset: LitData's parquet index.json from the footers, local and on S3."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiolit import _loop
from aiolit.errors import FormatError, LoopError, ObjectNotFoundError
from aiolit.processing.parquet import index_parquet_dataset, index_parquet_dataset_async
from aiolit.stores import open_store

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "0.2.76" / "parquet"


def golden_copy(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("part-0.parquet", "part-1.parquet"):
        shutil.copy(GOLDEN / name, dest / name)
    return dest


def by_name(index: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(index["chunks"], key=lambda c: c["filename"])


def assert_same_as_golden(written: dict[str, Any]) -> None:
    golden = json.loads((GOLDEN / "index.json").read_text())
    assert by_name(written) == by_name(golden)
    assert written["config"] == golden["config"]
    assert float(written["updated_at"]) > 0
    assert [c["filename"] for c in written["chunks"]] == ["part-0.parquet", "part-1.parquet"]


def test_matches_litdata_golden(tmp_path: Path) -> None:
    data = golden_copy(tmp_path / "pq")
    (data / "notes.txt").write_text("not parquet")
    (data / "sub").mkdir()
    shutil.copy(GOLDEN / "part-0.parquet", data / "sub" / "nested.parquet")  # subdirs are not indexed
    index = index_parquet_dataset(data)
    written = json.loads((data / "index.json").read_text())
    assert_same_as_golden(written)
    assert json.loads(index.to_json()) == written
    # The file is LitData's byte layout: sort_keys JSON.
    assert (data / "index.json").read_bytes() == json.dumps(written, sort_keys=True).encode()


def test_cache_dir_and_natural_order(tmp_path: Path) -> None:
    data = tmp_path / "pq"
    data.mkdir()
    rows = {"part-2.parquet": 3, "part-10.parquet": 5, "part-1.parquet": 7}
    for name, n in rows.items():
        table = pa.table(
            {"x": pa.array(range(n), pa.int32()), "t": pa.array([[1.0]] * n, pa.list_(pa.float32()))}
        )
        pq.write_table(table, data / name)
    index_parquet_dataset(str(data), cache_dir=str(tmp_path / "cache"))
    assert not (data / "index.json").exists()
    written = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert [(c["filename"], c["chunk_size"]) for c in written["chunks"]] == [
        ("part-1.parquet", 7),
        ("part-2.parquet", 3),
        ("part-10.parquet", 5),
    ]
    assert [c["chunk_bytes"] for c in written["chunks"]] == [
        (data / n).stat().st_size for n in ("part-1.parquet", "part-2.parquet", "part-10.parquet")
    ]
    assert written["config"]["data_format"] == ["int32", "list<element: float>"]


def test_footer_larger_than_first_read(tmp_path: Path) -> None:
    # ~1500 columns make a footer well over the 64 KiB first range read.
    data = tmp_path / "wide"
    data.mkdir()
    table = pa.table(
        {f"column_with_a_long_name_{i:05d}": pa.array([i, i + 1], pa.int16()) for i in range(1500)}
    )
    pq.write_table(table, data / "wide.parquet")
    raw = (data / "wide.parquet").read_bytes()
    assert int.from_bytes(raw[-8:-4], "little") > 64 * 1024
    index = index_parquet_dataset(data, num_workers=1)
    assert index.chunks[0].chunk_size == 2
    assert index.config["data_format"] == ["int16"] * 1500


def test_reads_only_the_tail_of_a_large_file(tmp_path: Path) -> None:
    # The footer parser sees a file whose bytes before the tail are missing (it raises if it reads
    # them), so indexing a 2 MB file proves only the footer was read.
    data = tmp_path / "big"
    data.mkdir()
    pq.write_table(
        pa.table({"blob": [os.urandom(500_000) for _ in range(4)]}), data / "big.parquet", compression="none"
    )
    size = (data / "big.parquet").stat().st_size
    assert size > 2_000_000
    index = index_parquet_dataset(data)
    assert (index.chunks[0].chunk_size, index.chunks[0].chunk_bytes) == (4, size)
    assert index.config["data_format"] == ["binary"]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        index_parquet_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObjectNotFoundError, match=r"no \.parquet files"):
        index_parquet_dataset(tmp_path / "empty")

    bad = golden_copy(tmp_path / "bad")
    (bad / "part-2.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    with pytest.raises(FormatError, match=r"part-2\.parquet is not a parquet file"):
        index_parquet_dataset(bad)

    mixed = golden_copy(tmp_path / "mixed")
    pq.write_table(pa.table({"id": [1], "name": ["a"]}), mixed / "part-2.parquet")
    with pytest.raises(FormatError, match="schemas differ") as info:
        index_parquet_dataset(mixed)
    assert "part-2.parquet" in str(info.value)
    assert not (mixed / "index.json").exists()


async def test_async_api_and_sync_guard(tmp_path: Path) -> None:
    data = golden_copy(tmp_path / "pq")
    with pytest.raises(LoopError, match="index_parquet_dataset_async"):
        index_parquet_dataset(data)
    index = await index_parquet_dataset_async(data)
    assert [c.chunk_size for c in index.chunks] == [20, 20]
    assert_same_as_golden(json.loads((data / "index.json").read_text()))


def test_litdata_writes_the_same_index(tmp_path: Path) -> None:
    pytest.importorskip(
        "polars", reason="litdata's index_parquet_dataset needs polars, which is not installed"
    )
    import litdata

    ours, theirs = golden_copy(tmp_path / "ours"), golden_copy(tmp_path / "theirs")
    index_parquet_dataset(ours)
    litdata.index_parquet_dataset(str(theirs))
    a, b = json.loads((ours / "index.json").read_text()), json.loads((theirs / "index.json").read_text())
    assert by_name(a) == by_name(b) and a["config"] == b["config"]


@pytest.mark.s3
def test_s3(s3_server: Any, tmp_path: Path) -> None:
    url = s3_server.new_url("datasets/pq")
    opts = s3_server.storage_options

    async def upload() -> None:
        store = open_store(url, opts)
        try:
            for name in ("part-0.parquet", "part-1.parquet"):
                await store.put_file(name, GOLDEN / name)
            await store.put("readme.md", b"# not parquet")
            await store.put("nested/part-9.parquet", (GOLDEN / "part-0.parquet").read_bytes())
        finally:
            await store.aclose()

    async def fetch_index() -> bytes:
        store = open_store(url, opts)
        try:
            return await store.get("index.json")
        finally:
            await store.aclose()

    _loop.run(upload())
    index = index_parquet_dataset(url, cache_dir=tmp_path / "cache", storage_options=opts, num_workers=2)
    uploaded = _loop.run(fetch_index())
    assert uploaded == index.to_json()
    assert_same_as_golden(json.loads(uploaded))
    assert (tmp_path / "cache" / "index.json").read_bytes() == uploaded

    # Without cache_dir the index only goes to the bucket.
    again = index_parquet_dataset(url, storage_options=opts)
    assert again.chunks == index.chunks
