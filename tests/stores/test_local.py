"""LocalStore: the conformance suite on a temp dir, plus local specifics."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiolit.stores import LocalStore, RetryStore, Store, TransferOptions, open_store
from aiolit.testing.store_suite import StoreSuite

SMALL = TransferOptions(part_size=1 << 20, multipart_threshold=2 << 20)


class TestLocalStore(StoreSuite):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = open_store(str(tmp_path / "root"), None)
        assert isinstance(store, LocalStore)
        store = LocalStore(store.url, SMALL)
        yield store
        await store.aclose()


def test_open_store_local_forms(tmp_path: Path) -> None:
    plain = open_store(str(tmp_path))
    assert isinstance(plain, LocalStore) and plain.is_local and plain.root == str(tmp_path)
    cached = open_store(f"local:{tmp_path}")
    assert isinstance(cached, LocalStore) and not cached.is_local and cached.root == str(tmp_path)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert open_store(str(tmp_path), {"part_size": 1024}).transfer.part_size == 1024
    with pytest.raises(ValueError, match="storage_options"):
        open_store(str(tmp_path), {"endpoint_url": "x"})
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        open_store("ftp://host/x")


def test_remote_stores_are_wrapped_in_retry() -> None:
    store = open_store("s3://bucket/prefix", {"endpoint_url": "http://127.0.0.1:1"})
    assert isinstance(store, RetryStore) and store.url == "s3://bucket/prefix" and not store.is_local
    assert not isinstance(open_store("s3://b", retry=False), RetryStore)


async def test_writes_are_atomic_and_listing_skips_temp_files(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    await store.put("a/b.bin", b"data")
    (tmp_path / "a" / ".b.bin.aiolit-tmp-123").write_bytes(b"partial")
    assert [m.key async for m in store.list()] == ["a/b.bin"]
    assert sorted(os.listdir(tmp_path / "a")) == [".b.bin.aiolit-tmp-123", "b.bin"]
