"""StreamingRawDataset: a map-style dataset over raw files in a local directory or bucket prefix."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import operator
import os
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from aiolit import _loop
from aiolit.errors import FormatError, ObjectNotFoundError
from aiolit.index.raw import (
    INDEX_FILENAME,
    BaseIndexer,
    FileIndexer,
    FileMetadata,
    _read,
    _write_atomic,
    is_remote,
)
from aiolit.stores import LocalStore, Store, open_store

__all__ = ["StreamingRawDataset", "default_cache_root"]

ItemType = Literal["bytes", "path"]
_D = TypeVar("_D", bound="StreamingRawDataset")


def default_cache_root() -> str:
    """``$AIOLIT_CACHE_DIR`` if set, else ``~/.cache/aiolit/chunks`` (the streaming cache root)."""
    env = os.environ.get("AIOLIT_CACHE_DIR")
    return os.path.abspath(os.path.expanduser(env or os.path.join("~", ".cache", "aiolit", "chunks")))


class StreamingRawDataset:
    """Raw files (images, text, audio ...) as a map-style dataset, without converting them.

    Item ``i`` is the bytes of one file, or, when :meth:`setup` groups files, a list of bytes
    (one per file of the group). Works with ``torch.utils.data.DataLoader`` as is: the loader
    calls :meth:`__getitems__` with a whole batch of indices, and the batch's files are fetched
    concurrently on aiolit's event loop thread. Async code uses :meth:`aget`/:meth:`aget_many`.

    Parameters
    ----------
    input_dir : str or os.PathLike
        A local directory, or ``s3://``, ``gs://``, ``azure://``/``az://`` prefix, or ``local:/dir``.
    cache_dir : str, optional
        Root of the cache (default ``$AIOLIT_CACHE_DIR`` or ``~/.cache/aiolit/chunks``). The
        dataset uses ``{cache_dir}/{md5(input_dir)}/`` for its file index and cached files.
    indexer : BaseIndexer, optional
        How files are discovered; default ``FileIndexer(max_depth=5, extensions=None)``.
    storage_options : dict, optional
        Options of the remote store (``endpoint_url``, credentials ...), as for LitData.
    cache_files : bool, default False
        Keep downloaded remote files under the cache dir and read them from there next time.
    recompute_index : bool, default False
        List the files again instead of loading the cached index (when the files changed).
    transform : callable, optional
        Applied to each item (``bytes``/``str`` or a list of them for grouped items). Sync
        callers run it in their own thread; :meth:`aget_many` runs it in a worker thread.
    item_type : {"bytes", "path"}, default "bytes"
        ``"path"`` returns a local file path instead of the bytes: remote files are downloaded
        into the cache (LitData requires ``cache_files=True`` for this; here it implies it) and
        files of a plain local directory are returned in place.
    max_concurrency : int, default 64
        Requests in flight per process and event loop.
    max_prefetch : int, default 16
        After a batch of consecutive indices, fetch the items that come next for this loader
        worker (from ``indices[0] + num_workers * len(indices)``) in the background, as
        LitData: at most ``max_prefetch`` of them, and ``64 // num_workers`` when a
        DataLoader has more workers. ``0`` turns it off.
    prefetch_cache_size : int, optional
        Prefetched items kept (least recently used dropped first); default
        ``2 * max_prefetch``. ``0`` turns prefetching off.

    Notes
    -----
    ``__init__`` lists the files (or loads the cached index), blocking on aiolit's loop thread.
    From a coroutine use ``await StreamingRawDataset.acreate(...)`` instead.
    """

    def __init__(
        self,
        input_dir: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        indexer: BaseIndexer | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_files: bool = False,
        recompute_index: bool = False,
        transform: Callable[[Any], Any] | None = None,
        item_type: ItemType = "bytes",
        max_concurrency: int = 64,
        max_prefetch: int = 16,
        prefetch_cache_size: int | None = None,
    ) -> None:
        self._configure(
            input_dir, cache_dir, indexer, storage_options, cache_files, transform, item_type, max_concurrency
        )
        self._configure_prefetch(max_prefetch, prefetch_cache_size)
        _loop.run(self._aload(recompute_index))

    @classmethod
    async def acreate(
        cls: type[_D],
        input_dir: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        indexer: BaseIndexer | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_files: bool = False,
        recompute_index: bool = False,
        transform: Callable[[Any], Any] | None = None,
        item_type: ItemType = "bytes",
        max_concurrency: int = 64,
        max_prefetch: int = 16,
        prefetch_cache_size: int | None = None,
    ) -> _D:
        """Build the dataset without blocking the running event loop (same arguments as the class)."""
        self = cls.__new__(cls)
        self._configure(
            input_dir, cache_dir, indexer, storage_options, cache_files, transform, item_type, max_concurrency
        )
        self._configure_prefetch(max_prefetch, prefetch_cache_size)
        await self._aload(recompute_index)
        return self

    def _configure(
        self,
        input_dir: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None,
        indexer: BaseIndexer | None,
        storage_options: dict[str, Any] | None,
        cache_files: bool,
        transform: Callable[[Any], Any] | None,
        item_type: ItemType,
        max_concurrency: int,
    ) -> None:
        if item_type not in ("bytes", "path"):
            raise ValueError(f"item_type must be 'bytes' or 'path', got {item_type!r}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        url = os.fspath(input_dir)
        url = url[len("file://") :] if url.startswith("file://") else url
        if not url:
            raise ValueError("input_dir is empty")
        # LitData hashes the absolute local path or the URL as given; so do we (same cache dirs).
        self.input_dir = url if is_remote(url) else os.path.abspath(os.path.expanduser(url))
        root = (
            os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else default_cache_root()
        )
        self.cache_dir = os.path.join(root, hashlib.md5(self.input_dir.encode()).hexdigest())
        self.indexer = indexer or FileIndexer()
        self.storage_options = dict(storage_options or {})
        self.cache_files = cache_files
        self.transform = transform
        self.item_type: ItemType = item_type
        self.max_concurrency = max_concurrency
        self._store: Store = open_store(self.input_dir, self.storage_options)
        self._in_place = isinstance(self._store, LocalStore) and self._store.is_local
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _configure_prefetch(self, max_prefetch: int, prefetch_cache_size: int | None) -> None:
        for name, value in (("max_prefetch", max_prefetch), ("prefetch_cache_size", prefetch_cache_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an int, got {value!r}")
        # LitData clamps negative values to 0 (off) rather than refusing them.
        self.max_prefetch = max(0, max_prefetch)
        if prefetch_cache_size is None:
            prefetch_cache_size = 2 * self.max_prefetch
        self.prefetch_cache_size = max(0, prefetch_cache_size)
        self._prefetched: OrderedDict[int, Any] = OrderedDict()  # position -> fetched item (LRU)
        self._inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Task[Any]]] = (
            weakref.WeakKeyDictionary()
        )

    async def _aload(self, recompute_index: bool) -> None:
        self.files: list[FileMetadata] = await self.indexer.abuild_or_load_index(
            self.input_dir, self.cache_dir, self.storage_options, recompute_index
        )
        items = self.setup(self.files)
        if not isinstance(items, list):
            raise TypeError(f"{type(self).__name__}.setup must return a list, got {type(items).__name__}")
        self.items: list[FileMetadata] | list[list[FileMetadata]] = items
        # Resolve every item's store keys once: bad paths fail here, not mid-epoch.
        self._keys: list[list[tuple[str, int]]] = []
        self._grouped: list[bool] = []
        for position, item in enumerate(items):
            group: list[Any] = item if isinstance(item, list) else [item]
            keys: list[tuple[str, int]] = []
            for meta in group:
                if not isinstance(meta, FileMetadata):
                    raise TypeError(
                        f"{type(self).__name__}.setup: item #{position} must be a FileMetadata or a list of "
                        f"them, got {type(meta).__name__}"
                    )
                keys.append((self._key_of(meta.path), meta.size))
            self._keys.append(keys)
            self._grouped.append(isinstance(item, list))

    def setup(self, files: list[FileMetadata]) -> list[FileMetadata] | list[list[FileMetadata]]:
        """Turn the discovered files into items; override to group or filter them.

        Parameters
        ----------
        files : list of FileMetadata
            Every discovered file, sorted by path.

        Returns
        -------
        list of FileMetadata, or list of list of FileMetadata
            One entry per item: a file, or a group of files fetched together.
        """
        return files

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        """Item ``index``: bytes (or a local path), a list of them for a group, transformed."""
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """A batch of items; all their files are fetched concurrently. Used by torch's DataLoader."""
        raw = _loop.run(self._fetch_items(indices))
        if self.transform is None:
            return raw
        return [self.transform(item) for item in raw]

    async def aget(self, index: int) -> Any:
        """Async :meth:`__getitem__`."""
        return (await self.aget_many([index]))[0]

    async def aget_many(self, indices: Sequence[int]) -> list[Any]:
        """Async :meth:`__getitems__`; the transform runs in a worker thread."""
        raw = await self._fetch_items(indices)
        transform = self.transform
        if transform is None:
            return raw
        return await asyncio.to_thread(lambda: [transform(item) for item in raw])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.input_dir!r}, items={len(self)}, item_type={self.item_type!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_limits"] = None  # semaphores and tasks belong to one process's loop
        state["_inflight"] = None
        state["_prefetched"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._limits = weakref.WeakKeyDictionary()
        self._inflight = weakref.WeakKeyDictionary()
        self._prefetched = OrderedDict()

    # -- fetching ----------------------------------------------------------------------------
    def _position(self, index: int) -> int:
        n = len(self._keys)
        position = index + n if index < 0 else index
        if not 0 <= position < n:
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of {n} items")
        return position

    async def _fetch_items(self, indices: Sequence[int]) -> list[Any]:
        positions = [self._position(operator.index(i)) for i in indices]
        if not self.max_prefetch or not self.prefetch_cache_size:
            return await self._fetch_positions(positions)
        loop = asyncio.get_running_loop()
        inflight = self._inflight.setdefault(loop, {})
        found: dict[int, Any] = {}
        waiting: dict[int, asyncio.Task[Any]] = {}
        missing: list[int] = []
        for p in dict.fromkeys(positions):
            if p in self._prefetched:
                self._prefetched.move_to_end(p)
                found[p] = self._prefetched[p]
            elif p in inflight:
                waiting[p] = inflight[p]
            else:
                missing.append(p)
        for p, value in zip(missing, await self._fetch_positions(missing), strict=True):
            found[p] = value
        for p, task in waiting.items():
            try:
                found[p] = await asyncio.shield(task)
            except Exception:  # a failed prefetch: fetch it again, and report that error
                found[p] = (await self._fetch_positions([p]))[0]
        self._schedule_prefetch(positions, inflight)
        return [found[p] for p in positions]

    def _schedule_prefetch(self, positions: list[int], inflight: dict[int, asyncio.Task[Any]]) -> None:
        """Start fetching the items this worker's next batch will ask for (LitData's look-ahead)."""
        if not positions or any(b != a + 1 for a, b in itertools.pairwise(positions)):
            return  # only sequential batches predict the next one
        # Without torch imported there is no DataLoader worker (and no need to import it).
        torch_data = sys.modules.get("torch.utils.data")
        info = torch_data.get_worker_info() if torch_data is not None else None
        workers = info.num_workers if info is not None else 1
        ahead = self.max_prefetch if workers <= 1 else min(self.max_prefetch, 64 // workers)
        start = positions[0] + workers * len(positions)
        for p in range(start, min(start + ahead, len(self._keys))):
            if p not in self._prefetched and p not in inflight:
                task = asyncio.ensure_future(self._prefetch(p, inflight))
                task.add_done_callback(_ignore_failure)
                inflight[p] = task

    async def _prefetch(self, position: int, inflight: dict[int, asyncio.Task[Any]]) -> Any:
        try:
            value = (await self._fetch_positions([position]))[0]
            self._prefetched[position] = value
            while len(self._prefetched) > self.prefetch_cache_size:
                self._prefetched.popitem(last=False)
            return value
        finally:
            inflight.pop(position, None)

    async def _prefetch_done(self) -> None:
        """Wait until this loop's prefetches have finished (tests, orderly shutdown)."""
        tasks = list(self._inflight.get(asyncio.get_running_loop(), {}).values())
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch_positions(self, positions: Sequence[int]) -> list[Any]:
        wanted = {key: size for p in positions for key, size in self._keys[p]}
        loop = asyncio.get_running_loop()
        limit = self._limits.get(loop)
        if limit is None:
            limit = self._limits[loop] = asyncio.Semaphore(self.max_concurrency)
        keys = list(wanted)
        tasks = [asyncio.ensure_future(self._fetch_file(key, wanted[key], limit)) for key in keys]
        try:
            results = dict(zip(keys, await asyncio.gather(*tasks), strict=True))
        except BaseException:
            # The first failure (or a cancellation) stops the rest: no request outlives the call.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        out: list[Any] = []
        for p in positions:
            values = [results[key] for key, _ in self._keys[p]]
            out.append(values if self._grouped[p] else values[0])
        return out

    async def _fetch_file(self, key: str, size: int, limit: asyncio.Semaphore) -> bytes | str:
        try:
            if self._in_place:
                if self.item_type == "path":
                    assert isinstance(self._store, LocalStore)
                    return self._store.path_for(key)
                async with limit:
                    return await self._store.get(key)
            dest = self._cache_path(key)
            if self.item_type == "path":
                if not await asyncio.to_thread(_has_size, dest, size):
                    async with limit:
                        await self._store.get_to_file(key, dest, size=size)
                return dest
            if self.cache_files and await asyncio.to_thread(_has_size, dest, size):
                return await asyncio.to_thread(_read, dest)
            async with limit:
                data = await self._store.get(key)
            if self.cache_files:
                await asyncio.to_thread(_write_atomic, dest, data)
            return data
        except ObjectNotFoundError as exc:
            raise ObjectNotFoundError(
                f"{exc}; the file was listed in the index of {self.input_dir} but is gone: "
                "pass recompute_index=True if the files changed"
            ) from exc

    def _key_of(self, path: str) -> str:
        """The store key of an indexed file path/URL (must lie under ``input_dir``)."""
        if is_remote(self.input_dir):
            base = self.input_dir.rstrip("/") + "/"
            if not path.startswith(base) or len(path) == len(base):
                raise FormatError(f"indexed file {path!r} is not under input_dir {self.input_dir!r}")
            return path[len(base) :]
        rel = os.path.relpath(os.path.abspath(path), self.input_dir)
        if rel == os.curdir or rel.split(os.sep, 1)[0] == os.pardir:
            raise FormatError(f"indexed file {path!r} is not under input_dir {self.input_dir!r}")
        return rel.replace(os.sep, "/")

    def _cache_path(self, key: str) -> str:
        # LitData's layout: the file's relative path under the dataset's cache dir.
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts) or key == INDEX_FILENAME:
            raise FormatError(f"cannot cache {key!r} from {self.input_dir}: unsafe name for the cache dir")
        return os.path.join(self.cache_dir, *parts)


def _ignore_failure(task: asyncio.Task[Any]) -> None:
    # Prefetching is best effort: a failure shows when the item itself is asked for.
    if not task.cancelled():
        task.exception()


def _has_size(path: str, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False
