"""Whole chunks stream from S3 into the cache, hashed as they arrive (SeaweedFS).

The token chunks are larger than the 4 MiB write block, so each download is several blocks of
several body pieces. Every block read remotely is compared with the same loader reading the
local copy; a chunk whose bytes do not match its index's sha256 (corrupt at the source, or only on
one download) and a body cut short are caught before anything is decoded.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aiolit.errors import CorruptChunkError
from aiolit.stores import _SCHEMES as STORE_SCHEMES
from aiolit.stores import Store, register_store
from aiolit.stores._s3 import S3Store
from aiolit.streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from aiolit.streaming._source import _STAMP
from aiolit.testing import FaultPlan, FaultyStore
from tests.streaming._data import upload, write_tokens

pytestmark = pytest.mark.s3

BLOCK = 4096


@pytest.fixture(scope="module")
def tokens_local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streamed-tokens") / "src"
    rng = np.random.default_rng(11)
    seqs = [rng.integers(0, 60_000, size=300_000, dtype=np.uint16) for _ in range(17)]
    write_tokens(root, seqs, chunk_size=3_000_000)  # chunks of 6 MB and 4.2 MB
    return root


@pytest.fixture(scope="module")
def expected(tokens_local: Path) -> list[list[int]]:
    ds = StreamingDataset(str(tokens_local), item_loader=TokensLoader(block_size=BLOCK))
    return [b.tolist() for b in ds]


def _remote(server: Any, local: Path, name: str) -> str:
    return upload(server, local, server.new_url(name))


def _dataset(url: str, opts: dict[str, Any], cache: Path) -> StreamingDataset:
    return StreamingDataset(
        url, item_loader=TokensLoader(block_size=BLOCK), cache_dir=str(cache), storage_options=opts
    )


def test_streamed_chunks_are_byte_exact_through_every_path(
    seaweed_server: Any, tokens_local: Path, expected: list[list[int]], tmp_path: Path
) -> None:
    url, opts = _remote(seaweed_server, tokens_local, "tok"), seaweed_server.storage_options
    index = json.loads((tokens_local / "index.json").read_text())
    assert max(c["chunk_bytes"] for c in index["chunks"]) > 4 * 2**20  # the write block
    ds = _dataset(url, opts, tmp_path / "c1")
    assert [b.tolist() for b in ds] == expected
    # every cached chunk is the source's file, and carries the mark of its streamed verification
    cached = ds.source.cache_dir
    assert cached is not None
    for entry in index["chunks"]:
        path = cached / entry["filename"]
        assert path.read_bytes() == (tokens_local / entry["filename"]).read_bytes()
        try:
            mark = os.getxattr(path, _STAMP).decode()
        except OSError:  # no extended attributes on this file system
            continue
        assert mark.startswith(entry["checksum"] + " ")
    cold = _dataset(url, opts, tmp_path / "c2")
    assert [cold[i].tolist() for i in range(len(cold))] == expected
    loader = StreamingDataLoader(_dataset(url, opts, tmp_path / "c3"), batch_size=3, num_workers=2)
    got = [row for batch in loader for row in torch.as_tensor(batch).tolist()]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)

    async def read_async() -> tuple[list[list[int]], list[list[int]]]:
        streamed = [b.tolist() async for b in _dataset(url, opts, tmp_path / "c4")]
        fresh = _dataset(url, opts, tmp_path / "c5")
        got = [(await fresh.aget(i)).tolist() for i in range(len(fresh))]
        await fresh.aclose()
        return streamed, got

    streamed, got = asyncio.run(read_async())
    assert streamed == expected
    assert got == expected


class _CorruptOnce(FaultyStore):
    """The first streamed GET of ``key`` arrives with one token byte flipped (same size)."""

    def __init__(self, inner: Store, key: str) -> None:
        super().__init__(inner, FaultPlan())
        self.key, self.corrupted = key, False

    async def _iter_get(self, key: str) -> AsyncGenerator[bytes, None]:
        first = key == self.key and not self.corrupted
        self.corrupted |= first
        async for piece in super()._iter_get(key):
            if first:  # the last byte of the first piece: tokens, past the chunk's header
                piece, first = piece[:-1] + bytes([piece[-1] ^ 0xFF]), False
            yield piece


@pytest.fixture
def s3_wrapped() -> Iterator[list[Any]]:
    """``s3_wrapped.append(factory)``: every s3:// store made after is ``factory(S3Store(...))``."""
    wrappers: list[Any] = []
    saved = STORE_SCHEMES["s3"]

    def factory(url: str, storage: dict[str, Any], session: dict[str, Any], transfer: Any) -> Store:
        store = S3Store(url, storage, session, transfer)
        return wrappers[0](store) if wrappers else store

    register_store("s3", factory, overwrite=True)
    try:
        yield wrappers
    finally:
        STORE_SCHEMES["s3"] = saved


def test_a_chunk_corrupt_on_one_download_is_fetched_again(
    seaweed_server: Any, tokens_local: Path, expected: list[list[int]], tmp_path: Path, s3_wrapped: list[Any]
) -> None:
    url = _remote(seaweed_server, tokens_local, "tok")
    made: list[_CorruptOnce] = []
    s3_wrapped.append(lambda inner: made.append(_CorruptOnce(inner, "chunk-0-0.bin")) or made[-1])
    ds = _dataset(url, seaweed_server.storage_options, tmp_path / "c")
    assert [b.tolist() for b in ds] == expected
    assert any(s.corrupted for s in made)
    assert sum(s.calls.get("get", 0) for s in made) >= 4  # index, 2 chunks, chunk 0 once more


def test_a_body_cut_short_is_fetched_again(
    seaweed_server: Any, tokens_local: Path, expected: list[list[int]], tmp_path: Path, s3_wrapped: list[Any]
) -> None:
    url = _remote(seaweed_server, tokens_local, "tok")
    made: list[FaultyStore] = []
    s3_wrapped.append(lambda inner: made.append(FaultyStore(inner, FaultPlan(short_reads=1))) or made[-1])
    ds = _dataset(url, seaweed_server.storage_options, tmp_path / "c")
    ds.read_early = False  # the first chunk's first GET is the short one
    assert [b.tolist() for b in ds] == expected
    assert made and all(s.plan.short_reads == 0 for s in made)


def test_a_chunk_corrupt_at_the_source_is_never_cached(
    seaweed_server: Any, tokens_local: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in tokens_local.iterdir():
        data = bytearray(p.read_bytes())
        if p.name == "chunk-0-1.bin":
            data[len(data) // 2] ^= 0x01  # one bit, same size: only the checksum can tell
        (bad / p.name).write_bytes(bytes(data))
    url = _remote(seaweed_server, bad, "bad")
    ds = _dataset(url, seaweed_server.storage_options, tmp_path / "c")
    with pytest.raises(CorruptChunkError, match=r"chunk-0-1\.bin: downloaded twice, still corrupt: sha256"):
        list(ds)
    assert not list((tmp_path / "c").rglob("chunk-0-1.bin"))
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name.endswith(".tmp")]
