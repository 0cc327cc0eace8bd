"""optimize/map(reader=...): ParquetReader streams Parquet files in row slices; custom BaseReaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import aiolit.processing as ld
from aiolit.processing.readers import BaseReader, ParquetReader
from tests.processing import optfns
from tests.processing.readback import read_aiolit, read_litdata


def _parquet(tmp_path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, rows = [], []
    start = 0
    for name, n in (("a.parquet", 20), ("b.parquet", 13)):
        ids = list(range(start, start + n))
        table = pa.table({"id": ids, "label": [f"l{i % 3}" for i in ids], "junk": [0.5] * n})
        path = tmp_path / name
        pq.write_table(table, path, row_group_size=7)  # slices of 5 rows cross row groups
        files.append(str(path))
        rows += [{"id": i, "label": f"l{i % 3}"} for i in ids]
        start += n
    return files, rows


@pytest.mark.parametrize("columns", [None, ["id", "label"]])
def test_parquet_reader_streams_every_row_in_order(tmp_path: Path, columns: Any) -> None:
    files, rows = _parquet(tmp_path)
    out = str(tmp_path / "out")
    reader = ParquetReader(str(tmp_path / "cache"), num_rows=5, to_pandas=False, columns=columns)
    ld.optimize(optfns.parquet_rows, files, out, reader=reader, chunk_size=6, num_workers=2,
                start_method="fork", verbose=False)  # fmt: skip
    assert read_aiolit(out) == rows
    assert not (tmp_path / "cache").exists()  # no resharded copies


def test_parquet_reader_slices_and_filters(tmp_path: Path) -> None:
    files, _ = _parquet(tmp_path)
    reader = ParquetReader(num_rows=5, to_pandas=False, columns=["id"], filters=[("id", ">=", 18)])
    slices = reader.remap_items(files, 2)
    assert [(Path(s.path).name, s.start, s.end) for s in slices] == [
        ("a.parquet", 0, 5), ("a.parquet", 5, 10), ("a.parquet", 10, 15), ("a.parquet", 15, 20),
        ("b.parquet", 0, 5), ("b.parquet", 5, 10), ("b.parquet", 10, 13),
    ]  # fmt: skip
    assert [reader.read(s).column("id").to_pylist() for s in slices] == [
        [],
        [],
        [],
        [18, 19],
        [20, 21, 22, 23, 24],
        [25, 26, 27, 28, 29],
        [30, 31, 32],
    ]
    with pytest.raises(ValueError, match=r"cannot read .* as Parquet"):
        reader.remap_items([str(tmp_path / "missing.parquet")], 1)


def test_litdata_oracle_parquet_reader(tmp_path: Path) -> None:
    litdata = pytest.importorskip("litdata")
    from litdata.processing.readers import ParquetReader as LitParquetReader

    files, rows = _parquet(tmp_path)
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    ld.optimize(optfns.parquet_rows, files, ours, reader=ParquetReader(num_rows=5, to_pandas=False),
                chunk_size=6, num_workers=1, start_method="fork", verbose=False)  # fmt: skip
    litdata.optimize(optfns.parquet_rows, files, theirs, chunk_size=6, num_workers=1, start_method="fork",
                     reader=LitParquetReader(str(tmp_path / "litcache"), num_rows=5, to_pandas=False),
                     verbose=False)  # fmt: skip
    assert read_litdata(theirs) == read_aiolit(ours) == rows


def test_map_with_parquet_reader(tmp_path: Path) -> None:
    files, _ = _parquet(tmp_path)
    out = tmp_path / "mapped"
    ld.map(optfns.parquet_summary, files, str(out), reader=ParquetReader(num_rows=8, to_pandas=False, columns=["id"]),
           num_workers=2, start_method="fork", verbose=False)  # fmt: skip
    expected = {"0-7", "8-15", "16-19", "20-27", "28-32"}
    assert {p.stem for p in out.iterdir()} == expected
    assert (out / "28-32.txt").read_text() == "28,29,30,31,32"
    # fn's own parameters show through the reader: is_last reaches it (ordered: last slice of each worker)
    flagged = tmp_path / "flagged"
    ld.map(optfns.parquet_is_last, files, str(flagged), reader=ParquetReader(num_rows=8, to_pandas=False,
           columns=["id"]), num_workers=1, keep_data_ordered=True, start_method="fork", verbose=False)  # fmt: skip
    assert {p.stem: p.read_text() for p in flagged.iterdir()} == {
        "0": "8 False", "8": "8 False", "16": "4 False", "20": "8 False", "28": "5 True"
    }  # fmt: skip


class Batches(BaseReader):
    """A custom reader: groups int inputs in threes, reads a group as the list of its ints."""

    def remap_items(self, items: Any, num_workers: int) -> list[Any]:
        return [tuple(items[i : i + 3]) for i in range(0, len(items), 3)]

    def read(self, item: Any) -> Any:
        return list(item)


def test_custom_base_reader_and_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    ld.optimize(optfns.sum_batch, list(range(10)), out, reader=Batches(), chunk_size=2, num_workers=2,
                start_method="fork", verbose=False)  # fmt: skip
    assert read_aiolit(out) == [{"first": i, "total": sum(range(i, min(i + 3, 10)))} for i in range(0, 10, 3)]
    with pytest.raises(ValueError, match="must be a BaseReader"):
        ld.optimize(optfns.sum_batch, [1], str(tmp_path / "x"), reader=object(), chunk_size=2, verbose=False)
