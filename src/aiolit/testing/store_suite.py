"""A conformance suite every :class:`~aiolit.stores.Store` backend's tests subclass.

Subclass :class:`StoreSuite` in a test module and provide an async ``store`` fixture yielding a
store rooted at a fresh, empty location whose ``transfer.multipart_threshold`` and ``part_size``
are below :attr:`StoreSuite.large_size` (so multipart uploads and ranged downloads run)::

    class TestMyStore(StoreSuite):
        @pytest.fixture
        async def store(self, tmp_path):
            s = open_store(str(tmp_path))
            yield s
            await s.aclose()
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import pickle
import random
from pathlib import Path
from typing import Any

import pytest

from aiolit.errors import CorruptChunkError, ObjectNotFoundError
from aiolit.stores import Store

__all__ = ["StoreSuite"]


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _child_roundtrip(store: Store, src: str, dest: str) -> None:
    """In a child process: read ``src`` and write it back to ``dest`` with a suffix."""

    async def run() -> None:
        data = await store.get(src)
        part = await store.get_range(src, 1, 4)
        await store.put(dest, data + part + str(os.getpid()).encode())
        await store.aclose()

    asyncio.run(run())


def _run_child(method: str, store: Store, src: str, dest: str) -> None:
    ctx: Any = multiprocessing.get_context(method)
    proc = ctx.Process(target=_child_roundtrip, args=(store, src, dest))
    proc.start()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        proc.join()
    assert proc.exitcode == 0, f"{method} child failed with exit code {proc.exitcode}"


class StoreSuite:
    """Behaviour every store must share. Subclasses provide the ``store`` fixture."""

    #: Size of the "large" object: above the fixture store's multipart threshold and part size.
    large_size: int = 12 * 1024 * 1024
    #: Keys for the pagination test (more than one 1000-key page).
    many_keys: int = 1050

    async def test_put_get_roundtrip(self, store: Store) -> None:
        for i, size in enumerate([1, 17, 4096, 65537]):
            data = _payload(size, i)
            await store.put(f"obj-{size}.bin", data)
            assert await store.get(f"obj-{size}.bin") == data
        await store.put("obj-1.bin", b"replaced")
        assert await store.get("obj-1.bin") == b"replaced"
        await store.put("nested/deeper/key.bin", bytearray(b"xyz"))
        assert await store.get("nested/deeper/key.bin") == b"xyz"
        await store.put("view.bin", memoryview(b"abcdef")[1:4])
        assert await store.get("view.bin") == b"bcd"

    async def test_empty_object(self, store: Store) -> None:
        await store.put("empty", b"")
        assert await store.get("empty") == b""
        assert (await store.head("empty")).size == 0
        assert await store.get_range("empty", 0, 0) == b""
        assert await store.get_range("empty", 0, 10) == b""
        assert await store.get_ranges("empty", [(0, 0), (0, 5)]) == [b"", b""]

    async def test_range_reads_at_edges(self, store: Store) -> None:
        data = _payload(1000, 1)
        await store.put("r.bin", data)
        for start, end in [(0, 1), (999, 1000), (0, 1000), (10, 20), (500, 500), (1000, 1000)]:
            assert await store.get_range("r.bin", start, end) == data[start:end], (start, end)

    async def test_ranges_past_the_end_are_clamped(self, store: Store) -> None:
        data = _payload(1000, 2)
        await store.put("r.bin", data)
        assert await store.get_range("r.bin", 990, 2000) == data[990:]
        assert await store.get_range("r.bin", 0, 10**9) == data
        assert await store.get_range("r.bin", 1000, 1010) == b""
        assert await store.get_range("r.bin", 5000, 6000) == b""

    async def test_invalid_ranges_and_keys(self, store: Store) -> None:
        await store.put("r.bin", b"abc")
        with pytest.raises(ValueError):
            await store.get_range("r.bin", -1, 2)
        with pytest.raises(ValueError):
            await store.get_range("r.bin", 3, 2)
        for bad in ["", "/abs", "../up", "a/../b", "a//b"]:
            with pytest.raises(ValueError):
                await store.get(bad)

    async def test_missing_keys(self, store: Store, tmp_path: Path) -> None:
        with pytest.raises(ObjectNotFoundError):
            await store.get("missing")
        with pytest.raises(ObjectNotFoundError):
            await store.get_range("missing", 0, 10)
        with pytest.raises(ObjectNotFoundError):
            await store.head("missing/deep")
        with pytest.raises(ObjectNotFoundError):
            await store.get_to_file("missing", tmp_path / "out.bin")
        with pytest.raises(FileNotFoundError):  # ObjectNotFoundError is a FileNotFoundError
            await store.get("missing")
        assert not await store.exists("missing")
        assert not (tmp_path / "out.bin").exists()
        await store.delete("missing")  # deleting a missing key is not an error

    async def test_head_and_exists(self, store: Store) -> None:
        await store.put("h/a.bin", b"x" * 123)
        meta = await store.head("h/a.bin")
        assert (meta.key, meta.size) == ("h/a.bin", 123)
        assert meta.etag
        assert meta.mtime is not None and meta.mtime > 0
        assert await store.exists("h/a.bin")
        assert not await store.exists("h/a")

    async def test_delete(self, store: Store) -> None:
        await store.put("d.bin", b"1")
        await store.delete("d.bin")
        assert not await store.exists("d.bin")
        with pytest.raises(ObjectNotFoundError):
            await store.get("d.bin")

    async def test_list_prefixes(self, store: Store) -> None:
        for key in ["a/b/c", "a/bc", "ab", "b"]:
            await store.put(key, key.encode())
        assert [m.key async for m in store.list("a/")] == ["a/b/c", "a/bc"]
        assert [m.key async for m in store.list("a")] == ["a/b/c", "a/bc", "ab"]
        assert [m.key async for m in store.list("zz")] == []
        metas = {m.key: m.size async for m in store.list()}
        assert metas == {"a/b/c": 5, "a/bc": 4, "ab": 2, "b": 1}

    async def test_list_paginates(self, store: Store) -> None:
        keys = [f"many/{i:05d}" for i in range(self.many_keys)]
        sem = asyncio.Semaphore(32)

        async def put(key: str) -> None:
            async with sem:
                await store.put(key, key.encode()[-3:])

        await asyncio.gather(*(put(k) for k in keys))
        listed = [m async for m in store.list("many/")]
        assert [m.key for m in listed] == keys
        assert all(m.size == 3 for m in listed)
        assert len([m async for m in store.list("many/0010")]) == 10

    async def test_get_ranges_equal_slices(self, store: Store) -> None:
        data = _payload(3 * 1024 * 1024 + 7, 3)
        await store.put("big.bin", data)
        rng = random.Random(4)
        ranges = [(0, 1), (5, 5), (len(data) - 10, len(data)), (100, 200), (150, 250), (100, 200)]
        ranges += [(s, s + rng.randint(0, 300_000)) for s in rng.sample(range(len(data)), 20)]
        ranges += [(0, len(data)), (len(data) - 5, len(data) + 100)]
        many = await asyncio.gather(*(store.get_ranges("big.bin", ranges) for _ in range(3)))
        expected = [data[s:e] for s, e in ranges]
        for got in many:
            assert got == expected

    async def test_large_multipart_put_and_get_to_file(self, store: Store, tmp_path: Path) -> None:
        size = self.large_size
        assert store.transfer.multipart_threshold < size and store.transfer.part_size < size
        data = _payload(size, 5)
        await store.put("large.bin", data)
        assert (await store.head("large.bin")).size == size
        assert await store.get("large.bin") == data
        dest = tmp_path / "dl" / "large.bin"
        assert await store.get_to_file("large.bin", dest) == size
        assert dest.read_bytes() == data
        assert sorted(os.listdir(dest.parent)) == ["large.bin"]  # no temp files left
        src = tmp_path / "src.bin"
        src.write_bytes(data[::-1])
        await store.put_file("from-file.bin", src)
        assert await store.get_to_file("from-file.bin", dest, size=size) == size
        assert dest.read_bytes() == data[::-1]
        for parts in (1, 2, 1000):  # one GET however large; at most two ranges; capped by part_size
            assert await store.get_to_file("large.bin", dest, size=size, parts=parts) == size
            assert dest.read_bytes() == data, parts
        assert sorted(os.listdir(dest.parent)) == ["large.bin"]

    async def test_get_to_file_small(self, store: Store, tmp_path: Path) -> None:
        await store.put("small.bin", b"hello")
        assert await store.get_to_file("small.bin", tmp_path / "a.bin") == 5
        assert (tmp_path / "a.bin").read_bytes() == b"hello"
        await store.put("empty.bin", b"")
        assert await store.get_to_file("empty.bin", str(tmp_path / "e.bin"), size=0) == 0
        assert (tmp_path / "e.bin").read_bytes() == b""

    async def test_get_to_file_checks_a_checksum(self, store: Store, tmp_path: Path) -> None:
        data = _payload(self.large_size, 9)
        await store.put("sum.bin", data)
        good = "sha256:" + hashlib.sha256(data).hexdigest()
        bad = "sha256:" + hashlib.sha256(data + b"!").hexdigest()
        folder = tmp_path / "sums"
        for parts in (1, 2):  # hashed as it streams; hashed from the file once the ranges are in
            dest = folder / f"{parts}.bin"
            assert await store.get_to_file(
                "sum.bin", dest, size=len(data), parts=parts, checksum=good
            ) == len(data)
            assert dest.read_bytes() == data
            with pytest.raises(CorruptChunkError, match="sha256 checksum"):
                await store.get_to_file(
                    "sum.bin", folder / "bad.bin", size=len(data), parts=parts, checksum=bad
                )
        assert sorted(os.listdir(folder)) == ["1.bin", "2.bin"]  # nothing from the failed ones

    async def test_pickle_after_use(self, store: Store) -> None:
        await store.put("p.bin", b"pickled")
        clone = pickle.loads(pickle.dumps(store))
        assert clone.url == store.url and type(clone) is type(store)
        assert await clone.get("p.bin") == b"pickled"
        await clone.aclose()

    @pytest.mark.parametrize("method", ["fork", "spawn"])
    async def test_use_in_child_process(self, store: Store, method: str) -> None:
        await store.put("src.bin", b"from parent")
        assert await store.get("src.bin") == b"from parent"  # the parent has a live client now
        dest = f"from-{method}.bin"
        # Blocking the loop is fine here; forking from an executor thread is not (CPython's
        # executor atexit hook then joins the current thread in the child and exits with 1).
        _run_child(method, store, "src.bin", dest)
        got = await store.get(dest)
        assert got.startswith(b"from parentrom")
        assert int(got[len(b"from parentrom") :]) != os.getpid()
