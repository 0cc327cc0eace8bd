"""The :class:`Store` ABC: async verbs over one bucket/container prefix or local directory."""

from __future__ import annotations

import abc
import asyncio
import bisect
import builtins
import contextlib
import dataclasses
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiolit.errors import CorruptChunkError, ObjectNotFoundError, StoreError, TransientStoreError
from aiolit.stores._util import (
    LoopLocal,
    MiB,
    check_key,
    check_range,
    checksum_mismatch,
    gather_bounded,
    hash_file,
    parse_checksum,
    plan_spans,
    split_span,
    store_error,
)

__all__ = ["ClientStore", "ObjectMeta", "Store", "TransferOptions"]

Buffer = bytes | bytearray | memoryview
ReadPart = Callable[[int, int], Awaitable[bytes]]


@dataclass(frozen=True)
class ObjectMeta:
    """What :meth:`Store.head` and :meth:`Store.list` report about one object.

    Attributes
    ----------
    key : str
        The key, relative to the store's root URL.
    size : int
        Size in bytes.
    etag : str or None
        An opaque version tag (S3/GCS/Azure ETag; ``"{mtime_ns:x}-{size:x}"`` for local files).
    mtime : float or None
        Last modification time as a POSIX timestamp.
    """

    key: str
    size: int
    etag: str | None = None
    mtime: float | None = None


@dataclass(frozen=True)
class TransferOptions:
    """How a store splits large transfers. Set through ``storage_options`` with the same names.

    Attributes
    ----------
    part_size : int
        Bytes per range GET in :meth:`Store.get_to_file`/:meth:`Store.get_ranges` and per part of a
        multipart upload (S3 needs at least 5 MiB).
    max_concurrency : int
        Requests in flight for one call (parts of one download/upload, pieces of ``get_ranges``).
    multipart_threshold : int
        Objects larger than this are uploaded in parts and downloaded as concurrent ranges.
    coalesce : int
        ``get_ranges`` merges requested ranges whose gap is at most this many bytes into one GET.
    list_page_size : int
        Keys requested per listing page.
    max_connections : int
        HTTP requests one store keeps in flight at once, across all calls (the connection pool of
        S3 and GCS clients; at least ``max_concurrency``). Requests beyond it wait for a free
        connection. Raise it for bursts of many concurrent ``aget`` calls.
    """

    part_size: int = 8 * MiB
    max_concurrency: int = 8
    multipart_threshold: int = 16 * MiB
    coalesce: int = 1 * MiB
    list_page_size: int = 1000
    max_connections: int = 64

    @classmethod
    def pop_from(cls, options: dict[str, Any]) -> TransferOptions:
        """Remove this class's fields from ``options`` and build the options from them."""
        values = {f.name: int(options.pop(f.name)) for f in dataclasses.fields(cls) if f.name in options}
        for name, value in values.items():
            if value <= 0 and name != "coalesce":
                raise ValueError(f"storage option {name!r} must be positive, got {value}")
        return cls(**values)


class Store(abc.ABC):
    """An async object store rooted at one URL; keys are relative to it.

    Subclasses implement the ``_``-prefixed primitives; the public verbs validate their arguments
    and build range coalescing, concurrent downloads and multipart uploads on top of them.

    Byte ranges are ``[start, end)``. A range reaching past the object's end is clamped like
    ``get(key)[start:end]`` (S3 behaviour for the end, Python slicing for a start past the end).
    Deleting a missing key is not an error. Listing is recursive, by string prefix, sorted by key.

    Stores pickle as configuration only: clients are built lazily in the process and event loop
    that use them.
    """

    def __init__(self, url: str, transfer: TransferOptions | None = None) -> None:
        self._url = url
        self._transfer = transfer or TransferOptions()

    @property
    def url(self) -> str:
        """The root URL the store was opened with."""
        return self._url

    @property
    def is_local(self) -> bool:
        """True for a plain local directory (read in place, never cached)."""
        return False

    @property
    def transfer(self) -> TransferOptions:
        """Part sizes and concurrency for large transfers."""
        return self._transfer

    def url_for(self, key: str) -> str:
        """The full URL of ``key`` (for messages)."""
        return f"{self._url.rstrip('/')}/{key}" if key else self._url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url!r})"

    # -- primitives each backend implements --------------------------------------------------
    @abc.abstractmethod
    async def _get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` with ``start < end``, clamped at the object's end."""

    @abc.abstractmethod
    async def _put_single(self, key: str, data: Buffer) -> None: ...

    @abc.abstractmethod
    async def _head(self, key: str) -> ObjectMeta: ...

    @abc.abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        """One page of keys starting with ``prefix`` and the cursor of the next page (or None)."""

    async def _aclose(self) -> None:
        return None

    # Multipart hooks; a backend without them overrides `_put_multipart` (or never goes there).
    async def _mp_begin(self, key: str) -> Any:
        raise NotImplementedError

    async def _mp_part(self, key: str, upload: Any, number: int, data: bytes) -> Any:
        raise NotImplementedError

    async def _mp_complete(self, key: str, upload: Any, parts: builtins.list[Any]) -> None:
        raise NotImplementedError

    async def _mp_abort(self, key: str, upload: Any) -> None:
        raise NotImplementedError

    async def _put_multipart(self, key: str, size: int, read: ReadPart) -> None:
        """Upload ``size`` bytes in parts of ``transfer.part_size``, ``max_concurrency`` at a time."""
        upload = await self._mp_begin(key)
        pieces = split_span(0, size, self._transfer.part_size)

        def part(number: int, start: int, end: int) -> Callable[[], Awaitable[Any]]:
            async def run() -> Any:
                return await self._mp_part(key, upload, number, await read(start, end))

            return run

        try:
            tags = await gather_bounded(
                [part(i + 1, s, e) for i, (s, e) in enumerate(pieces)], self._transfer.max_concurrency
            )
            await self._mp_complete(key, upload, tags)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._mp_abort(key, upload)
            raise

    async def _put(self, key: str, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        if view.nbytes <= self._transfer.multipart_threshold:
            await self._put_single(key, data)
            return

        async def read(start: int, end: int) -> bytes:
            return bytes(view[start:end])

        await self._put_multipart(key, view.nbytes, read)

    async def _put_file(self, key: str, path: str, size: int) -> None:
        if size <= self._transfer.multipart_threshold:
            await self._put_single(key, await asyncio.to_thread(_read_file, path))
            return

        async def read(start: int, end: int) -> bytes:
            return await asyncio.to_thread(_pread_file, path, start, end - start)

        await self._put_multipart(key, size, read)

    # -- public verbs ------------------------------------------------------------------------
    async def get(self, key: str) -> bytes:
        """Return the whole object ``key``.

        Raises
        ------
        ObjectNotFoundError
            If ``key`` does not exist.
        """
        return await self._get(check_key(key))

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Return bytes ``[start, end)`` of ``key``, clamped at the object's end.

        A zero-length range returns ``b""`` without a request.
        """
        check_key(key)
        check_range(start, end)
        if start == end:
            return b""
        return await self._get_range(key, start, end)

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        """Return the bytes of each ``(start, end)`` in ``ranges``, in the order given.

        Ranges closer than ``transfer.coalesce`` are merged into one request, merged spans larger
        than ``transfer.part_size`` are fetched as concurrent pieces (``max_concurrency`` at a time).
        """
        check_key(key)
        for start, end in ranges:
            check_range(start, end)
        spans = plan_spans(ranges, self._transfer.coalesce)
        pieces = [p for s, e in spans for p in split_span(s, e, self._transfer.part_size)]

        def fetch(start: int, end: int) -> Callable[[], Awaitable[bytes]]:
            return lambda: self.get_range(key, start, end)

        fetched = iter(await gather_bounded([fetch(s, e) for s, e in pieces], self._transfer.max_concurrency))
        span_data: builtins.list[bytes] = []
        for s, e in spans:
            parts = [next(fetched) for _ in split_span(s, e, self._transfer.part_size)]
            span_data.append(parts[0] if len(parts) == 1 else b"".join(parts))
        starts = [s for s, _ in spans]
        out: builtins.list[bytes] = []
        for start, end in ranges:
            if start == end:
                out.append(b"")
                continue
            i = bisect.bisect_right(starts, start) - 1
            base, data = spans[i][0], span_data[i]
            whole = start == base and end == spans[i][1]
            out.append(data if whole else data[start - base : end - base])
        return out

    async def get_to_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        size: int | None = None,
        parts: int | None = None,
        checksum: str | None = None,
    ) -> int:
        """Download ``key`` to ``path`` atomically (temp name, then ``os.replace``).

        Objects above ``transfer.multipart_threshold`` are fetched as concurrent range GETs
        written in place, one per ``transfer.part_size``; ``parts`` caps how many (1: one GET
        however large; object stores bill per request). A single GET streams into the file in
        blocks of a few MiB (no whole-object copy in memory). ``size``, when known (e.g. from an
        index), saves a HEAD request; it must be the object's exact size.

        ``checksum``: ``"<hashlib algorithm>:<hex digest>"`` (the form of a chunk entry's
        ``checksum`` in ``index.json``). The bytes are hashed as they arrive (a split download
        is hashed from the file once its parts are in) and a mismatch raises
        :class:`~aiolit.errors.CorruptChunkError` without creating ``path``.

        Returns
        -------
        int
            Bytes written.
        """
        check_key(key)
        dest = os.fspath(path)
        algo, expected = _parse_checksum(checksum)
        if size is None:
            size = (await self.head(key)).size
        parent = os.path.dirname(os.path.abspath(dest))
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(dest)}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            if size <= self._transfer.multipart_threshold or parts == 1:
                written, digest = await self._download_stream(key, tmp, algo)
            else:
                written = await self._download_parts(key, tmp, size, parts)
                digest = None if algo is None else await asyncio.to_thread(hash_file, tmp, algo)
            self._check_digest(key, algo, digest, expected)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return written

    def _check_digest(self, key: str, algo: str | None, digest: str | None, expected: str | None) -> None:
        """Raise :class:`~aiolit.errors.CorruptChunkError` when ``digest`` is not ``expected``."""
        if algo is not None and digest is not None and digest != expected:
            raise CorruptChunkError(f"{self.url_for(key)}: {checksum_mismatch(algo, digest, expected or '')}")

    async def _iter_get(self, key: str) -> AsyncGenerator[bytes, None]:
        """The bytes of the whole object ``key``, in pieces as they arrive (one piece by default).

        Backends whose client streams a body override this; :meth:`get_to_file` writes the
        pieces out in blocks of :data:`_WRITE_BLOCK` bytes.
        """
        yield await self.get(key)

    async def _download_stream(self, key: str, tmp: str, algo: str | None) -> tuple[int, str | None]:
        """One GET of ``key`` streamed into the new file ``tmp``; bytes written and their digest.

        One attempt: a retrying store calls it again (it rewrites ``tmp`` from the start). A
        body cut short is the client's to detect (S3's checks its Content-Length); a body of
        another size than the caller expected is the caller's (a chunk's size is in the index).
        The pieces are gathered into blocks of a few MiB; each block is hashed (the GIL is
        released while hashing large buffers) and written with one ``pwritev`` in a worker
        thread while the next block streams in, so the loop thread neither joins nor writes the
        body. Each write opens the file by name: a thread left running by a cancelled download
        never writes through a descriptor number that was closed and reused meanwhile.
        """
        digest = None if algo is None else hashlib.new(algo)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        pending: asyncio.Future[None] | None = None
        written = 0
        pieces: builtins.list[bytes] = []
        block = 0
        try:
            async with contextlib.aclosing(self._iter_get(key)) as stream:
                async for piece in stream:
                    pieces.append(piece)
                    block += len(piece)
                    if block >= _WRITE_BLOCK or len(pieces) >= _WRITE_PIECES:
                        if pending is not None:
                            await pending
                        pending = asyncio.ensure_future(
                            asyncio.to_thread(_write_block, tmp, pieces, written, digest)
                        )
                        written += block
                        pieces, block = [], 0
            if pending is not None:
                await pending
            pending = None
            if block:
                await asyncio.to_thread(_write_block, tmp, pieces, written, digest)
                written += block
        finally:
            if pending is not None and not pending.done():
                await asyncio.gather(pending, return_exceptions=True)
        return written, None if digest is None else digest.hexdigest()

    async def _download_parts(self, key: str, tmp: str, size: int, parts: int | None = None) -> int:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

        def part(start: int, end: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                data = await self.get_range(key, start, end)
                if len(data) != end - start:
                    raise store_error(
                        TransientStoreError,
                        f"{self.url_for(key)} returned {len(data)} bytes for a range of "
                        f"{end - start}: the object is smaller than the size given or changed",
                        url=self.url_for(key),
                        byte_range=(start, end),
                    )
                # By name, not through a shared descriptor: see _download_stream.
                await asyncio.to_thread(_write_block, tmp, [data], start, None)

            return run

        step = self._transfer.part_size if parts is None else max(self._transfer.part_size, -(-size // parts))
        pieces = split_span(0, size, step)
        await gather_bounded([part(s, e) for s, e in pieces], self._transfer.max_concurrency)
        return size

    async def put(self, key: str, data: Buffer) -> None:
        """Store ``data`` under ``key`` (in parts above ``transfer.multipart_threshold``)."""
        await self._put(check_key(key), data)

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Upload the local file ``path`` to ``key`` (multipart when large)."""
        check_key(key)
        path = os.fspath(path)
        await self._put_file(key, path, os.stat(path).st_size)

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Return the object ``key`` and an opaque version token for :meth:`put_if_version`.

        Raises
        ------
        ObjectNotFoundError
            If ``key`` does not exist.
        NotImplementedError
            The backend has no conditional writes.
        """
        return await self._get_versioned(check_key(key))

    async def put_if_version(self, key: str, data: Buffer, version: str | None) -> None:
        """Store ``data`` (one request, small objects) only if ``key`` is still at ``version``.

        ``version=None`` writes only if ``key`` does not exist. This is a compare-and-swap
        (S3/GCS ``If-Match``/``If-None-Match`` or generation match, Azure ``if_match``).

        Raises
        ------
        PreconditionFailedError
            ``key`` changed since ``version`` was read (or exists, for ``None``).
        NotImplementedError
            The backend has no conditional writes.
        """
        await self._put_if_version(check_key(key), data, version)

    async def _get_versioned(self, key: str) -> tuple[bytes, str]:
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    async def _put_if_version(self, key: str, data: Buffer, version: str | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    async def head(self, key: str) -> ObjectMeta:
        """Return the size, etag and mtime of ``key``; ``ObjectNotFoundError`` if missing."""
        return await self._head(check_key(key))

    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            await self.head(key)
        except ObjectNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        await self._delete(check_key(key))

    async def aclose(self) -> None:
        """Close the client of the running loop (the store stays usable; a new one is built)."""
        await self._aclose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        """Yield every object whose key starts with ``prefix``, sorted by key, page by page."""
        cursor: str | None = None
        while True:
            page, cursor = await self._list_page(prefix, cursor)
            for meta in page:
                yield meta
            if cursor is None:
                return


class ClientStore(Store):
    """A store on an SDK client: one client per (process, event loop), SDK errors translated.

    Subclasses implement :meth:`_new_client` and :meth:`_translate`, fetch the client with
    ``await self._c()`` and wrap each call in ``with self._errors(key, byte_range):``.
    """

    def __init__(self, url: str, transfer: TransferOptions | None = None) -> None:
        super().__init__(url, transfer)
        self._client: LoopLocal[Any] = LoopLocal()

    @abc.abstractmethod
    async def _new_client(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
        """Build a client for the running loop, and the coroutine function that closes it."""

    @abc.abstractmethod
    def _translate(self, exc: Exception, url: str, byte_range: tuple[int, int] | None) -> StoreError:
        """Map an SDK failure to the aiolit error tree (without echoing credentials)."""

    async def _c(self) -> Any:
        return await self._client.get(self._new_client)

    async def _aclose(self) -> None:
        await self._client.aclose()

    @contextlib.contextmanager
    def _errors(self, key: str, byte_range: tuple[int, int] | None = None) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(exc, self.url_for(key), byte_range) from exc


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _pread_file(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


# Bytes gathered from a streamed body before one thread hop hashes and writes them; pieces per
# hop are capped below IOV_MAX (1024) for pwritev.
_WRITE_BLOCK = 4 * MiB
_WRITE_PIECES = 512


def _write_block(path: str, pieces: builtins.list[bytes], offset: int, digest: Any) -> None:
    """Hash ``pieces`` in order into ``digest`` (if any) and write them at ``offset`` of ``path``."""
    if digest is not None:
        for piece in pieces:
            digest.update(piece)
    views: builtins.list[Buffer] = [p for p in pieces if p]
    fd = os.open(path, os.O_WRONLY)
    try:
        while views:
            n = os.pwritev(fd, views, offset)
            offset += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if views and n:
                views[0] = memoryview(views[0])[n:]
    finally:
        os.close(fd)


def _parse_checksum(checksum: str | None) -> tuple[str | None, str | None]:
    """``"sha256:<hex>"`` -> ``("sha256", "<hex>")``; None -> (None, None)."""
    if checksum is None:
        return None, None
    parsed = parse_checksum(checksum)
    if parsed is None or not parsed[1]:
        raise ValueError(
            f"checksum must be '<algorithm>:<hex digest>' with an algorithm of hashlib, got {checksum!r}"
        )
    return parsed
