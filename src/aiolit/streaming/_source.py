"""Where a dataset's chunks come from: its index, the local files or the cache and the store.

:class:`DataSource` is built once in the main process (it reads the index) and pickled into
DataLoader workers as configuration only; every process builds its own store, cache and
prefetchers lazily. :class:`OpenChunk` is one chunk opened from an mmap (or bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import os
import struct
import threading
import weakref
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiolit import _trace
from aiolit.errors import CorruptChunkError, ObjectNotFoundError
from aiolit.stores._util import checksum_mismatch, hash_file, parse_checksum
from aiolit.streaming._cache import ChunkCache
from aiolit.streaming._resolve import (
    Dir,
    cache_key,
    cache_root,
    drop_lease,
    take_lease,
    versioned_cache_dir,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    from aiolit.format import ChunkEntry, ChunkView, Encryption, Index
    from aiolit.stores import Store

__all__ = ["DataSource", "OpenChunk", "finish_through_cancel", "map_file"]

_INDEX = "index.json"
# Offset tables larger than this are not fetched whole (remote ``aget`` then reads two offsets).
_MAX_TABLE_BYTES = 4 * 2**20


class OffsetTables:
    """A bounded LRU of parsed chunk offset tables (chunk id -> N+1 item offsets), thread-safe.

    Lets a remote ``ds[i]``/``aget`` read an item with one range GET once its chunk's header was
    read. Holds at most ``max_bytes`` of tables.
    """

    def __init__(self, max_bytes: int = 32 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._tables: OrderedDict[int, npt.NDArray[np.uint32]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes}  # pickles empty (into DataLoader workers)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]

    def get(self, chunk: int) -> npt.NDArray[np.uint32] | None:
        with self._lock:
            table = self._tables.get(chunk)
            if table is not None:
                self._tables.move_to_end(chunk)
            return table

    def put(self, chunk: int, table: npt.NDArray[np.uint32]) -> None:
        with self._lock:
            old = self._tables.pop(chunk, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._tables[chunk] = table
            self._bytes += table.nbytes
            while self._bytes > self.max_bytes and len(self._tables) > 1:
                _, dropped = self._tables.popitem(last=False)
                self._bytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._tables)


def map_file(path: str | os.PathLike[str]) -> mmap.mmap | bytes:
    """Map ``path`` read-only (an empty file gives ``b""``; mmap refuses empty files)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class OpenChunk:
    """One chunk's bytes as stored locally (after whole-file decompression), opened lazily."""

    __slots__ = ("__dict__", "config", "covers", "data", "encryption", "entry")

    def __init__(
        self,
        data: mmap.mmap | bytes | bytearray,
        entry: ChunkEntry,
        config: dict[str, Any],
        encryption: Any,
        covers: int | None = None,
    ) -> None:
        self.data = data
        self.entry = entry
        self.config = config
        self.encryption = encryption
        # None: the whole chunk. An int: a sparse early copy (DataSource.fetch_blocks) that holds
        # only the first ``covers`` items the reader asked for; it must not be used for others.
        self.covers = covers

    @cached_property
    def view(self) -> ChunkView:
        """The parsed chunk (header, per-item decryption/decompression)."""
        from aiolit.format import open_chunk

        return open_chunk(self.data, self.entry, self.config, encryption=self.encryption)

    def tokens(self, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        """The chunk's concatenated token stream (zero-copy for plain classic chunks)."""
        cached: npt.NDArray[Any] | None = self.__dict__.get("_tokens")
        if cached is not None:
            return cached
        plain = not self.config.get("encryption") and self.config.get("compression_level") not in (
            "batch",
            "sample",
        )
        if plain:
            n = int(np.frombuffer(self.data, dtype="<u4", count=1)[0])
            start = 4 * (n + 2)
            tokens = np.frombuffer(
                self.data, dtype=dtype, offset=start, count=(len(self.data) - start) // dtype.itemsize
            )
        else:
            view = self.view
            joined = b"".join(bytes(view.item(k)) for k in range(view.num_items))
            tokens = np.frombuffer(joined, dtype=dtype)
        self.__dict__["_tokens"] = tokens
        return tokens


def _checksum_problem(path: Path, entry: ChunkEntry) -> str | None:
    """Compare a chunk file with the checksum its index entry carries, if any."""
    parsed = parse_checksum(entry.extra.get("checksum") if isinstance(entry.extra, dict) else None)
    if parsed is None:
        return None
    algo, expected = parsed
    digest = hash_file(path, algo)
    return None if digest == expected else checksum_mismatch(algo, digest, expected)


# Files this process already hashed: (path, device, inode, size, mtime) -> the checksum they matched.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}
_VERIFIED_LOCK = threading.Lock()
# On a cache file: "<checksum> <size> <mtime_ns>" of the last verification that passed, so other
# processes (a new loader worker each epoch) skip hashing an unchanged, already verified file.
_STAMP = "user.aiolit.verified"


def stream_checksum(entry: ChunkEntry) -> str | None:
    """The entry's ``"<algo>:<hex>"`` checksum when a download can hash it as it streams in."""
    spec = entry.extra.get("checksum") if isinstance(entry.extra, dict) else None
    parsed = parse_checksum(spec)
    return spec if parsed is not None and parsed[1] else None


def _record_verified(path: Path, spec: str, st: os.stat_result, *, stamp: bool) -> None:
    """Remember that ``path`` (as ``st`` found it) matched ``spec``: in this process, and with
    ``stamp`` in the file's extended attribute for later processes."""
    with _VERIFIED_LOCK:
        if len(_VERIFIED) > 100_000:
            _VERIFIED.clear()
        _VERIFIED[(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = spec
    if stamp:
        with contextlib.suppress(OSError, AttributeError):
            os.setxattr(path, _STAMP, f"{spec} {st.st_size} {st.st_mtime_ns}".encode())


def mark_verified(path: Path, entry: ChunkEntry) -> None:
    """Record that the cache file ``path`` matched its entry's checksum (hashed as it arrived).

    The same records :func:`verify_file` keeps after hashing a file itself, so no reader hashes
    the file again.
    """
    spec = entry.extra.get("checksum") if isinstance(entry.extra, dict) else None
    if isinstance(spec, str):
        _record_verified(path, spec, os.stat(path), stamp=True)


def verify_file(path: Path, entry: ChunkEntry, *, stamp: bool = False) -> str | None:
    """:func:`_checksum_problem`, done once for an unchanged file (None: it matches).

    A file that was replaced or rewritten since (new inode, size or mtime) is hashed again.
    ``stamp``: record a pass in an extended attribute of the file (cache files only, never a
    user's dataset), which later processes trust while the file's size and mtime are unchanged.
    """
    spec = entry.extra.get("checksum") if isinstance(entry.extra, dict) else None
    if not isinstance(spec, str):
        return None
    st = os.stat(path)
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        if _VERIFIED.get(key) == spec:
            return None
    mark = f"{spec} {st.st_size} {st.st_mtime_ns}".encode()
    problem: str | None = None
    try:
        stamped = stamp and os.getxattr(path, _STAMP) == mark
    except (OSError, AttributeError):  # no such attribute, or no xattr support here
        stamped = False
    if not stamped:
        problem = _checksum_problem(path, entry)
    if problem is None:
        _record_verified(path, spec, st, stamp=stamp and not stamped)
    return problem


class DataSource:
    """A dataset's index and the way to its chunks, for one ``input_dir``.

    Parameters
    ----------
    input_dir
        The resolved location (:func:`~aiolit.streaming._resolve.resolve_dir`).
    cache_dir
        Root of the chunk cache (``None``: ``$AIOLIT_CACHE_DIR`` or ``~/.cache/aiolit/chunks``).
    index_path
        An ``index.json`` (or its directory) to use when the dataset's own index is missing.
    storage_options, session_options
        Passed to :func:`aiolit.stores.open_store`.
    encryption
        Key for encrypted datasets.
    """

    def __init__(
        self,
        input_dir: Dir,
        *,
        cache_dir: str | os.PathLike[str] | None,
        index_path: str | None,
        storage_options: dict[str, Any] | None,
        session_options: dict[str, Any] | None,
        encryption: Encryption | None,
        verify: bool = False,
    ) -> None:
        from aiolit.format import plain_filename

        self.dir = input_dir
        self.verify = verify
        self.storage_options = storage_options
        self.session_options = session_options
        self.encryption = encryption
        self._pid = os.getpid()
        self._stores = self._track_stores()
        self._cache: ChunkCache | None = None
        self._cache_lock = threading.Lock()
        self.offset_tables = OffsetTables()
        self._table_reads: dict[tuple[int, int], asyncio.Future[npt.NDArray[np.uint32]]] = {}
        self._users: dict[int, int] = {}  # loop id -> async runs holding that loop's store
        self.async_runs: weakref.WeakSet[Any] = weakref.WeakSet()  # unfinished async runs (aclose())
        self.url: str = input_dir.url or input_dir.path or ""
        self.index: Index = self._read_index(index_path)
        self.entries: list[ChunkEntry] = list(self.index.chunks)
        self.names = [plain_filename(e.filename) for e in self.entries]
        self.compressed = [n != e.filename for n, e in zip(self.names, self.entries, strict=True)]
        # A plain local directory is read in place unless it holds whole-file compressed chunks.
        self.in_place = input_dir.url is None and not any(self.compressed)
        if self.in_place and self.index.item_loader != "ParquetLoader":
            self._check_unknown_sizes()
        self.cache_dir: Path | None = None
        if not self.in_place:
            if input_dir.url is not None and input_dir.path is not None:
                self.cache_dir = Path(input_dir.path)
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            else:
                url = input_dir.url or f"local:{input_dir.path}"
                # No updated_at (shards merged in memory): the index's own bytes name the version.
                version = self.index.updated_at or "idx-" + hashlib.md5(self.index.to_json()).hexdigest()
                self.cache_dir = versioned_cache_dir(
                    cache_root(cache_dir), cache_key(url, storage_options), version, url=url
                )
                # While this source lives, no other process deletes this version (docs/architecture/cache.md).
                weakref.finalize(self, drop_lease, take_lease(self.cache_dir), os.getpid())
            index_copy = self.cache_dir / _INDEX
            if not index_copy.exists():
                tmp = index_copy.with_name(f"{_INDEX}.tmp.{os.getpid()}")
                tmp.write_bytes(self.index.to_json())
                os.replace(tmp, index_copy)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stores"] = {}
        state["_cache"] = None
        del state["_cache_lock"]
        state["offset_tables"] = OffsetTables()
        state["_table_reads"] = {}
        state["_users"] = {}
        del state["async_runs"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()
        self._stores = self._track_stores()
        self.async_runs = weakref.WeakSet()

    def _track_stores(self) -> dict[int, tuple[asyncio.AbstractEventLoop, Store]]:
        # This process's stores, closed when the source is collected or at interpreter exit.
        stores: dict[int, tuple[asyncio.AbstractEventLoop, Store]] = {}
        weakref.finalize(self, _close_stores, stores, os.getpid())
        return stores

    def _after_fork(self) -> None:
        # Clients inherited through fork stay referenced and untouched (the parent uses them).
        from aiolit.stores._util import _FORK_ORPHANS

        _FORK_ORPHANS.extend(store for _, store in self._stores.values())
        self._pid, self._stores, self._cache = os.getpid(), self._track_stores(), None
        self._cache_lock = threading.Lock()
        self.offset_tables, self._table_reads = OffsetTables(), {}
        self._users, self.async_runs = {}, weakref.WeakSet()

    def _check_unknown_sizes(self) -> None:
        # chunk_bytes 0 (unknown): the file's size bounds chunk_size before anything uses it.
        from aiolit.errors import FormatError

        assert self.dir.path is not None
        for pos, (entry, name) in enumerate(zip(self.entries, self.names, strict=True)):
            if entry.chunk_bytes:
                continue
            try:
                size = os.stat(os.path.join(self.dir.path, name)).st_size
            except FileNotFoundError:
                continue  # reported when the chunk is opened
            if 4 * (entry.chunk_size + 2) > size:
                raise FormatError(
                    f"{self.url}/index.json chunk #{pos}: 'chunk_size' {entry.chunk_size} items need a "
                    f"{4 * (entry.chunk_size + 2)}-byte header but {name} has {size} bytes"
                )

    # -- index ----------------------------------------------------------------------------------

    def _read_index(self, index_path: str | None) -> Index:
        from aiolit import _loop
        from aiolit.format import Index, load_index

        if index_path is not None:
            path = Path(index_path)
            path = path / _INDEX if path.is_dir() else path
            if not path.is_file():
                raise FileNotFoundError(f"index_path: no index file at {path}")
            source_has_index = False
            if self.dir.url is None and self.dir.path is not None:
                source_has_index = (Path(self.dir.path) / _INDEX).exists()
            if not source_has_index:
                return Index.from_json(path.read_bytes(), source=str(path))
        if self.dir.url is None:
            assert self.dir.path is not None
            if not os.path.isdir(self.dir.path):
                raise FileNotFoundError(f"input_dir: {self.dir.path} is not a directory")
            return load_index(self.dir.path)
        if self.dir.path is not None and (Path(self.dir.path) / _INDEX).exists():
            cached = Path(self.dir.path) / _INDEX
            return Index.from_json(cached.read_bytes(), source=str(cached))
        return _loop.run(self._fetch_index())

    async def _fetch_index(self) -> Index:
        from aiolit.format import Index, merge_indexes, natural_sort_key

        store = self.store()
        try:
            return Index.from_json(await store.get(_INDEX), source=f"{self.url}/{_INDEX}")
        except ObjectNotFoundError:
            shards = [
                m.key async for m in store.list("") if m.key.endswith(".index.json") and m.key[0].isdigit()
            ]
            if not shards:
                from aiolit.errors import NotOptimizedError
                from aiolit.format._index import not_optimized_message

                raise NotOptimizedError(not_optimized_message(self.url)) from None
            shards.sort(key=natural_sort_key)
            parts = await asyncio.gather(*(store.get(k) for k in shards))
            indexes = [
                Index.from_json(p, source=f"{self.url}/{k}") for k, p in zip(shards, parts, strict=True)
            ]
            return merge_indexes(indexes, updated_at=None)

    # -- per-process resources ------------------------------------------------------------------

    def store(self) -> Store:
        """This dataset's store for the running loop (stores bind their clients to one loop)."""
        from aiolit.stores import open_store

        if self._pid != os.getpid():
            self._after_fork()
        loop = asyncio.get_running_loop()
        entry = self._stores.get(id(loop))
        if entry is None or entry[0] is not loop:
            source = self.dir.url or self.dir.path
            assert source is not None
            store = open_store(
                source, storage_options=self.storage_options, session_options=self.session_options
            )
            self._stores[id(loop)] = (loop, store)
            return store
        return entry[1]

    async def close_store(self) -> None:
        """Close the running loop's store (the caller's loop may end after an ``async for``)."""
        entry = self._stores.pop(id(asyncio.get_running_loop()), None)
        self._users.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await _close_through_cancel(entry[1])

    def retain_store(self) -> Store:
        """The running loop's store, held until :meth:`release_store` (reference counted)."""
        store = self.store()
        key = id(asyncio.get_running_loop())
        self._users[key] = self._users.get(key, 0) + 1
        return store

    async def release_store(self) -> None:
        """Drop one hold on the running loop's store; the last one closes it."""
        key = id(asyncio.get_running_loop())
        left = self._users.get(key, 0) - 1
        if left > 0:
            self._users[key] = left
            return
        await self.close_store()

    async def aclose(self) -> None:
        """Stop this loop's unfinished async runs and close the stores nobody holds any more.

        The running loop's store is closed here; stores of other loops that still run (aiolit's
        own loop thread: ``ds[i]``, ``aget``, sync iteration) are closed on their loop.
        """
        loop = asyncio.get_running_loop()
        for run in [r for r in self.async_runs if r.loop is loop]:
            await run.aclose()
        await self.close_store()
        for key, (other, store) in list(self._stores.items()):
            if self._users.get(key) or other.is_closed() or not other.is_running():
                continue
            self._stores.pop(key, None)
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(store.aclose(), other))

    def close(self) -> None:
        """:meth:`aclose` for sync code: close every store on its own loop (unfinished async
        runs of a running loop are left to their iterators)."""
        stores = {k: v for k, v in self._stores.items() if not self._users.get(k)}
        for key in stores:
            self._stores.pop(key, None)
        _close_stores(stores, os.getpid())

    def cache(self, max_bytes: int) -> ChunkCache:
        """This process's cache (same object for every epoch, so its accounting carries over)."""
        assert self.cache_dir is not None
        if self._pid != os.getpid():
            self._after_fork()
        with self._cache_lock:  # sync iteration and `async for` on another thread share it
            if self._cache is None:
                by_name = dict(zip(self.names, self.entries, strict=True))
                self._cache = ChunkCache(
                    self.cache_dir,
                    max_bytes,
                    verify=lambda name, path: verify_file(path, by_name[name], stamp=True),
                )
            self._cache.max_bytes = max_bytes
            return self._cache

    def sizes(self) -> dict[str, int]:
        """Bytes of every chunk once in the cache (decompressed)."""
        return {n: int(e.chunk_bytes) for n, e in zip(self.names, self.entries, strict=True)}

    # -- reading ----------------------------------------------------------------------------------

    def open_local(self, i: int, path: str | os.PathLike[str] | None = None) -> OpenChunk:
        """Open chunk ``i`` from ``path`` (default: its in-place file) through an mmap."""
        entry = self.entries[i]
        if path is None:
            assert self.dir.path is not None
            path = os.path.join(self.dir.path, self.names[i])
            if self.verify:
                problem = verify_file(Path(path), entry)
                if problem is not None:
                    raise CorruptChunkError(f"{path}: does not match its index entry: {problem}")
        chunk = OpenChunk(map_file(path), entry, self.index.config, self.encryption)
        if not entry.chunk_bytes and self.index.item_loader != "ParquetLoader":
            # Size unknown: check the header's item count against chunk_size before anything is
            # sized by chunk_size (a walk allocates its item order from it).
            chunk.view  # noqa: B018
        return chunk

    async def open_random(self, i: int, max_bytes: int) -> OpenChunk:
        """Open chunk ``i`` through the cache for random access (``ds[i]``, ``aget``).

        The chunk is adopted (verified) or downloaded like iteration does, and room is made by
        evicting the least recently opened chunks, so ``max_bytes`` holds for random access too.
        """
        cache = self.cache(max_bytes)
        name = self.names[i]
        size = self.sizes()[name]
        if not (cache.has(name) or cache.adopt(name, size)):
            tmp = cache.temp_path(name)
            cache.reserve(name, size, next_use=cache.recency_order(name), force=True)
            try:
                await self.fetch(i, tmp)
                cache.commit(name, tmp)
            except BaseException:
                cache.cancel(name)
                tmp.unlink(missing_ok=True)
                raise
        cache.touch(name)
        try:
            return self.open_local(i, cache.path(name))
        except FileNotFoundError:  # evicted by another reader in between: once more
            cache.forget([name])
            return await self.open_random(i, max_bytes)

    async def fetch(self, i: int, tmp: Path, *, parts: int | None = None) -> None:
        """Download chunk ``i`` into ``tmp`` (decompressed), verifying its size and checksum.

        ``parts``: an uncompressed chunk above the store's ``multipart_threshold`` comes as that
        many concurrent range GETs (at most one per ``part_size``); 1 is one GET however large
        (object stores bill per request; look-ahead downloads overlap each other anyway). None
        lets the store split it by ``part_size``. A chunk that arrives corrupt is fetched once
        more before :class:`CorruptChunkError`.
        """
        entry = self.entries[i]
        store = self.store()
        problem = ""
        for _attempt in range(2):
            started = _trace.now() if _trace.on else None
            streamed: str | None = None
            if self.compressed[i]:
                ztmp = tmp.with_name(tmp.name + ".z")
                try:
                    await store.get_to_file(entry.filename, ztmp)
                    if started is not None:
                        _trace.complete(
                            "get",
                            "store",
                            started,
                            _trace.now(),
                            {"key": entry.filename, "attempt": _attempt + 1},
                        )
                        inflated = _trace.now()
                    await asyncio.to_thread(_decompress_to, ztmp, tmp, entry.filename, entry.chunk_bytes)
                    if started is not None:
                        _trace.complete(
                            "decompress", "store", inflated, _trace.now(), {"key": entry.filename}
                        )
                finally:
                    ztmp.unlink(missing_ok=True)
            else:
                # The checksum is computed as the bytes stream in (no second pass over the file);
                # a mismatch leaves no file behind.
                streamed = stream_checksum(entry)
                try:
                    await store.get_to_file(
                        entry.filename, tmp, size=int(entry.chunk_bytes), parts=parts, checksum=streamed
                    )
                except CorruptChunkError as exc:
                    problem = str(exc).removeprefix(f"{store.url_for(entry.filename)}: ")
                    if _trace.on:
                        _trace.instant("corrupt chunk", "store", key=entry.filename, problem=problem)
                    continue
                if started is not None:
                    _trace.complete(
                        "get",
                        "store",
                        started,
                        _trace.now(),
                        {"key": entry.filename, "bytes": int(entry.chunk_bytes), "attempt": _attempt + 1},
                    )
            size = tmp.stat().st_size
            if entry.chunk_bytes and size != int(entry.chunk_bytes):  # 0: size unknown
                problem = f"{size} bytes instead of the {entry.chunk_bytes} the index lists"
                if _trace.on:
                    _trace.instant("corrupt chunk", "store", key=entry.filename, problem=problem)
                continue
            if streamed is not None:
                await asyncio.to_thread(mark_verified, tmp, entry)
                return
            checksum = await asyncio.to_thread(verify_file, tmp, entry, stamp=True)
            if checksum is None:
                return
            problem = checksum
            if _trace.on:
                _trace.instant("corrupt chunk", "store", key=entry.filename, problem=problem)
        raise CorruptChunkError(f"{self.url}/{entry.filename}: downloaded twice, still corrupt: {problem}")

    def block_ranges(self, i: int, itemsize: int, block_size: int) -> tuple[int, int] | None:
        """``(tokens_start_byte, block_bytes)`` of plain token chunk ``i``, or None when unknown.

        The byte offset of block ``b`` is ``tokens_start_byte + b * block_bytes``: the header of a
        classic chunk is ``4 * (items + 2)`` bytes, and the index's ``chunk_bytes`` must equal that
        plus ``dim`` tokens (else the entry is not trusted and None is returned).
        """
        entry = self.entries[i]
        if not self.range_readable or self.compressed[i] or entry.dim is None:
            return None
        start = 4 * (int(entry.chunk_size) + 2)
        if start + int(entry.dim) * itemsize != int(entry.chunk_bytes):
            return None
        return start, block_size * itemsize

    async def fetch_blocks(
        self, i: int, blocks: npt.NDArray[np.int64], itemsize: int, block_size: int
    ) -> OpenChunk:
        """A sparse copy of token chunk ``i`` holding only ``blocks`` (concurrent range GETs).

        The rest of the buffer is zeros, so the result (``covers=len(blocks)``) may only be read
        at those blocks. Needs :meth:`block_ranges` to be known.
        """
        layout = self.block_ranges(i, itemsize, block_size)
        assert layout is not None
        start, step = layout
        entry = self.entries[i]
        ranges = sorted({(start + int(b) * step, start + (int(b) + 1) * step) for b in blocks})
        parts = await self.store().get_ranges(entry.filename, ranges)
        data = bytearray(int(entry.chunk_bytes))  # calloc'd: untouched pages cost nothing
        data[0:4] = struct.pack("<I", int(entry.chunk_size))
        for (a, b), part in zip(ranges, parts, strict=True):
            if len(part) != b - a:
                raise CorruptChunkError(
                    f"{self.url}/{entry.filename}: {len(part)} bytes for range {a}..{b}; "
                    "the chunk is smaller than the index says"
                )
            data[a:b] = part
        return OpenChunk(data, entry, self.index.config, self.encryption, covers=len(blocks))

    async def fetch_item(self, i: int, k: int) -> bytes:
        """Read item ``k`` of (uncompressed, unencrypted) chunk ``i`` by byte range.

        One range GET once the chunk's offset table is known (:class:`OffsetTables`); the first
        read of a chunk also GETs its header (one request, shared by concurrent readers).
        """
        entry = self.entries[i]
        store = self.store()  # first: it also resets per-process state after a fork
        offsets = self.offset_tables.get(i)
        if offsets is None:
            offsets = await self._offsets(i)
        if offsets is None:  # a header too large to keep: read this item's two offsets
            pair = await store.get_range(entry.filename, 4 * (1 + k), 4 * (1 + k) + 8)
            if len(pair) != 8:
                raise CorruptChunkError(f"{self.url}/{entry.filename}: truncated header at item {k}")
            start, end = struct.unpack("<II", pair)
        else:
            start, end = int(offsets[k]), int(offsets[k + 1])
        limit = int(entry.chunk_bytes) or end  # chunk_bytes 0: unknown
        if not 0 < start <= end <= limit:
            raise CorruptChunkError(f"{self.url}/{entry.filename}: bad offsets {start}..{end} for item {k}")
        return await store.get_range(entry.filename, start, end)

    async def _offsets(self, i: int) -> npt.NDArray[np.uint32] | None:
        """Chunk ``i``'s offset table (GET of its header, one in flight per chunk and loop)."""
        entry = self.entries[i]
        n = int(entry.chunk_size)
        size = 4 * (n + 2)
        if size > _MAX_TABLE_BYTES:
            return None
        if entry.chunk_bytes and size > int(entry.chunk_bytes):
            raise CorruptChunkError(
                f"{self.url}/{entry.filename}: the index lists {n} items, more than "
                f"{entry.chunk_bytes} bytes can hold"
            )
        key = (id(asyncio.get_running_loop()), i)
        pending = self._table_reads.get(key)
        if pending is None:
            pending = self._table_reads[key] = asyncio.ensure_future(self._read_table(i, size))
            pending.add_done_callback(lambda _: self._table_reads.pop(key, None))
        return await asyncio.shield(pending)

    async def _read_table(self, i: int, size: int) -> npt.NDArray[np.uint32]:
        from aiolit._fast import parse_offsets

        entry = self.entries[i]
        n = int(entry.chunk_size)
        header = await self.store().get_range(entry.filename, 0, size)
        where = f"{self.url}/{entry.filename}"
        if len(header) != size or struct.unpack_from("<I", header)[0] != n:
            raise CorruptChunkError(f"{where}: header does not hold the {n} items the index lists")
        limit = int(entry.chunk_bytes) or -1
        try:
            table = np.array(parse_offsets(header, 4, n, size, limit))
        except ValueError as exc:
            raise CorruptChunkError(f"{where}: {exc}") from None
        self.offset_tables.put(i, table)
        return table

    @property
    def range_readable(self) -> bool:
        """Whether single items can be read by byte range (remote, uncompressed, unencrypted)."""
        config = self.index.config
        return not self.in_place and not config.get("compression") and not config.get("encryption")


_CLOSING: set[asyncio.Future[None]] = set()  # closes scheduled on a loop from its own thread


def _close_stores(stores: dict[int, tuple[asyncio.AbstractEventLoop, Store]], pid: int) -> None:
    """Close the stores one DataSource opened, each on its own loop (when that loop still runs).

    Runs when the DataSource is collected or at interpreter exit. Stores inherited across fork
    are never closed by the child: their connections belong to the parent.
    """
    from aiolit.stores._util import _FORK_ORPHANS

    entries = list(stores.values())
    stores.clear()
    if os.getpid() != pid:
        _FORK_ORPHANS.extend(store for _, store in entries)
        return
    for loop, store in entries:
        if loop.is_closed() or not loop.is_running():
            continue  # an ended asyncio.run loop; its async consumer closed the store
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # collected on the loop's own thread: cannot block here
            task = loop.create_task(store.aclose())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
            continue
        future = asyncio.run_coroutine_threadsafe(store.aclose(), loop)
        try:
            future.result(timeout=5)
        except Exception:  # best effort: a store that fails to close must not break teardown
            future.cancel()


async def _close_through_cancel(store: Store) -> None:
    await finish_through_cancel(asyncio.ensure_future(store.aclose()))


async def finish_through_cancel(closing: asyncio.Future[None]) -> None:
    """Wait for ``closing`` to the end even when the waiting task is cancelled meanwhile (as
    ``asyncio.run`` cancels every task left when the main coroutine returns); then re-raise."""
    cancelled = False
    while not closing.done():
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            if closing.cancelled():
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _decompress_to(src: Path, dst: Path, filename: str, chunk_bytes: int) -> None:
    from aiolit.format import decompress_file

    # chunk_bytes caps the output: a bomb fails in the frame header or at the cap, once.
    data = decompress_file(src.read_bytes(), filename, expected_size=int(chunk_bytes) or None)
    dst.write_bytes(data)
