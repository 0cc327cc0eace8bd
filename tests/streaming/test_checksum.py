"""Chunks carry a sha256 in index.json; a download that does not match it is never decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data import ids, write_dataset

from aiolit.errors import CorruptChunkError
from aiolit.streaming import StreamingDataset


def test_cached_dataset_verifies_checksums(tmp_path: Path) -> None:
    src = tmp_path / "src"
    items = write_dataset(src, 30, chunk_size=7)
    index = json.loads((src / "index.json").read_text())
    assert all(c["checksum"].startswith("sha256:") for c in index["chunks"])
    ds = StreamingDataset(f"local:{src}", cache_dir=str(tmp_path / "cache"))
    assert ids(list(ds)) == ids(items)


def test_a_chunk_corrupted_at_the_source_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_dataset(src, 30, chunk_size=7)
    chunk = src / "chunk-0-1.bin"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped bit in the last sample: only the checksum can tell
    chunk.write_bytes(bytes(data))
    ds = StreamingDataset(f"local:{src}", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(CorruptChunkError, match=r"chunk-0-1\.bin: downloaded twice, still corrupt: sha256"):
        list(ds)
    # nothing corrupt was left in the cache for a later run to trust
    assert not list((tmp_path / "cache").rglob("chunk-0-1.bin"))
