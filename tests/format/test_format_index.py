"""index.json: validation, unsafe names, extra keys, merge, shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiolit.errors import FormatError, NotOptimizedError, UnsafeFilenameError
from aiolit.format import (
    ChunkEntry,
    Index,
    list_shards,
    load_index,
    merge_indexes,
    merge_shards,
    natural_sort_key,
    shard_name,
    validate_chunk_filename,
)

CONFIG = {"chunk_bytes": None, "chunk_size": 2, "compression": None, "data_format": ["int"],
          "data_spec": None, "encryption": None, "item_loader": "PyTreeLoader"}  # fmt: skip


def _index_json(*filenames: str, **extra: object) -> str:
    chunks = [{"chunk_bytes": 20, "chunk_size": 1, "dim": None, "filename": f, **extra} for f in filenames]
    return json.dumps({"chunks": chunks, "config": CONFIG})


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x.bin", "contains a path separator"),
        ("a/b.bin", "contains a path separator"),
        ("a\\b.bin", "contains a path separator"),
        ("/etc/passwd", "is an absolute path"),
        ("C:evil.bin", "is an absolute path"),
        ("..", "contains an empty, '.' or '..' path component"),
        ("x\x00.bin", "contains a NUL byte"),
        ("", "must be a non-empty string"),
    ],
)
def test_unsafe_filenames_are_rejected(name: str, problem: str) -> None:
    with pytest.raises(UnsafeFilenameError, match=problem):
        Index.from_json(_index_json(name), source="s3://b/ds/index.json")
    with pytest.raises(UnsafeFilenameError, match=r"s3://b/ds/index\.json chunk #0: chunk filename"):
        Index.from_json(_index_json(name), source="s3://b/ds/index.json")


def test_parquet_index_may_name_subdirs_but_not_escape() -> None:
    assert validate_chunk_filename("data/part-0.parquet", allow_subdirs=True) == "data/part-0.parquet"
    with pytest.raises(UnsafeFilenameError, match=r"'\.\.' path component"):
        validate_chunk_filename("data/../../x.parquet", allow_subdirs=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "index.json is not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"config": {}}', "lacks the required key 'chunks'"),
        ('{"chunks": []}', "lacks the required key 'config'"),
        ('{"chunks": [], "config": {"data_format": "int"}}', "'data_format' must be a list"),
        ('{"chunks": {}, "config": {"data_format": []}}', "'chunks' must be a list"),
        ('{"chunks": [{"filename": "a.bin"}], "config": {"data_format": []}}', "lacks the required key"),
        (
            '{"chunks": [{"filename": "a.bin", "chunk_size": -1}], "config": {"data_format": []}}',
            "'chunk_size' must be a non-negative integer, got -1",
        ),
        (
            '{"chunks": [{"filename": "a.bin", "chunk_size": 1, "dim": "x"}], "config": {"data_format": []}}',
            "'dim' must be a non-negative integer",
        ),
        ('{"shards": []}', "MosaicML MDS index"),
    ],
)
def test_invalid_index(raw: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Index.from_json(raw)


def test_extra_chunk_keys_survive_round_trip() -> None:
    index = Index.from_json(_index_json("chunk-0-0.bin", checksum="xxh64:abc"))
    assert index.chunks[0].extra == {"checksum": "xxh64:abc"}
    assert json.loads(index.to_json())["chunks"][0]["checksum"] == "xxh64:abc"


def test_to_json_is_litdata_layout() -> None:
    index = Index([ChunkEntry("chunk-0-0.bin", 3, 40)], dict(CONFIG), updated_at="1.5")
    expected = json.dumps(
        {"chunks": [{"chunk_bytes": 40, "chunk_size": 3, "dim": None, "filename": "chunk-0-0.bin"}],
         "config": CONFIG, "updated_at": "1.5"}, sort_keys=True)  # fmt: skip
    assert index.to_json() == expected.encode()
    assert index.num_samples == 3 and index.item_loader == "PyTreeLoader"


def test_item_loader_inferred_for_old_token_indexes() -> None:
    cfg = {k: v for k, v in CONFIG.items() if k != "item_loader"}
    assert Index([], {**cfg, "data_format": ["no_header_tensor:16"]}).item_loader == "TokensLoader"
    assert Index([], cfg).item_loader == "PyTreeLoader"


def test_merge_requires_same_config_and_fuses_types() -> None:
    a = Index([ChunkEntry("chunk-0-0.bin", 1, 20)], {**CONFIG, "types": {"x": "int"}})
    b = Index([ChunkEntry("chunk-1-0.bin", 2, 30)], {**CONFIG, "types": {"y": "str"}})
    merged = merge_indexes([a, b], updated_at="7")
    assert [c.filename for c in merged.chunks] == ["chunk-0-0.bin", "chunk-1-0.bin"]
    assert merged.config["types"] == {"x": "int", "y": "str"} and merged.updated_at == "7"
    c = Index([], {**CONFIG, "chunk_size": 3, "compression": "zstd"})
    with pytest.raises(
        FormatError, match=r"isn't consistent between index #0 and #1: keys \['chunk_size', 'compression'\]"
    ):
        merge_indexes([a, c], updated_at=None)
    with pytest.raises(FormatError, match="at least one index"):
        merge_indexes([], updated_at=None)


def test_natural_sort() -> None:
    names = [shard_name(r) for r in (10, 2, 1, 0)]
    assert sorted(names, key=natural_sort_key) == [
        "0.index.json",
        "1.index.json",
        "2.index.json",
        "10.index.json",
    ]


def test_merge_shards_and_missing_index(tmp_path: Path) -> None:
    for rank in (10, 2):
        shard = Index([ChunkEntry(f"chunk-{rank}-0.bin", rank, 4 * (rank + 2))], dict(CONFIG))
        (tmp_path / shard_name(rank)).write_bytes(shard.to_json())
    (tmp_path / "2-index.json").write_text("node-level files are not writer shards")
    assert list_shards(str(tmp_path)) == ["2.index.json", "10.index.json"]
    in_memory = load_index(str(tmp_path))
    assert [c.filename for c in in_memory.chunks] == ["chunk-2-0.bin", "chunk-10-0.bin"]
    assert in_memory.updated_at is None and (tmp_path / "2.index.json").exists()
    merged = merge_shards(str(tmp_path))
    assert float(merged.updated_at or "0") > 0
    assert list_shards(str(tmp_path)) == []
    on_disk = load_index(str(tmp_path))
    assert on_disk == merged and on_disk.num_samples == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2-index.json", "index.json"]


def test_load_index_of_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(NotOptimizedError, match=r"is not an optimized dataset: it has no index\.json"):
        load_index(str(tmp_path))
    assert issubclass(NotOptimizedError, FileNotFoundError)
    with pytest.raises(FormatError, match="holds no"):
        merge_shards(str(tmp_path))
