"""Local directories: plain paths (read in place) and ``local:`` URLs (cached like remote data)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Sequence

from aiolit.errors import ObjectNotFoundError, StoreError, StorePermissionError
from aiolit.stores._base import (
    Buffer,
    ObjectMeta,
    Store,
    TransferOptions,
    _parse_checksum,
    _pread_file,
    _read_file,
)
from aiolit.stores._util import check_key, check_range, hash_file, store_error

__all__ = ["LocalStore"]

_TMP_MARK = ".aiolit-tmp-"


class LocalStore(Store):
    """A directory on the local file system.

    Reads run ``os.pread`` in the default thread pool (one thread hop per read; measured faster
    than ``aiofiles``, which hops once per open/seek/read/close). Writes go to a temp name in the
    same directory and are renamed into place, so readers never see partial files.

    Parameters
    ----------
    url : str
        A path, ``file://`` or ``local:`` URL. ``local:`` marks data that should be cached like
        remote data (LitData's ``local:`` prefix); :attr:`is_local` is False for it.
    transfer : TransferOptions, optional
        Part size and concurrency of the generic range helpers.
    """

    def __init__(self, url: str, transfer: TransferOptions | None = None) -> None:
        super().__init__(url, transfer)
        path = url
        self._cached = False
        if path.startswith("local:"):
            path, self._cached = path[len("local:") :], True
        elif path.startswith("file://"):
            path = path[len("file://") :]
        self._root = os.path.abspath(os.path.expanduser(path or "."))

    @property
    def is_local(self) -> bool:
        return not self._cached

    @property
    def root(self) -> str:
        """The absolute directory path."""
        return self._root

    def path_for(self, key: str) -> str:
        """The local path of ``key``."""
        return os.path.join(self._root, *key.split("/"))

    def _error(self, exc: OSError, key: str, byte_range: tuple[int, int] | None = None) -> StoreError:
        url = self.url_for(key)
        if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
            path = self.path_for(key)
            where = url if url == path else f"{url} ({path})"  # name a plain path once
            return store_error(ObjectNotFoundError, f"{where}: no such file", url=url, status=404)
        if isinstance(exc, PermissionError):
            return store_error(
                StorePermissionError,
                f"{url}: permission denied; check the file mode of {self.path_for(key)}",
                url=url,
                status=403,
            )
        return store_error(StoreError, f"{url}: {exc.strerror or exc}", url=url, byte_range=byte_range)

    async def _get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(_read_file, self.path_for(key))
        except OSError as exc:
            raise self._error(exc, key) from exc

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            return await asyncio.to_thread(_pread_file, self.path_for(key), start, end - start)
        except OSError as exc:
            raise self._error(exc, key, (start, end)) from exc

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        # One open and one thread hop for all ranges: local reads need no coalescing.
        check_key(key)
        for start, end in ranges:
            check_range(start, end)
        try:
            return await asyncio.to_thread(_pread_many, self.path_for(key), list(ranges))
        except OSError as exc:
            raise self._error(exc, key) from exc

    async def get_to_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        size: int | None = None,
        parts: int | None = None,
        checksum: str | None = None,
    ) -> int:
        check_key(key)  # a local copy is one read however large: `parts` does not apply
        dest = os.fspath(path)
        algo, expected = _parse_checksum(checksum)
        try:
            if algo is not None:
                digest = await asyncio.to_thread(hash_file, self.path_for(key), algo)
                self._check_digest(key, algo, digest, expected)
            return await asyncio.to_thread(_copy_atomic, self.path_for(key), dest)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.exists(self.path_for(key)):
                raise self._error(exc, key) from exc
            raise

    async def _put_single(self, key: str, data: Buffer) -> None:
        await asyncio.to_thread(_write_atomic, self.path_for(key), data)

    async def _put(self, key: str, data: Buffer) -> None:
        await self._put_single(key, data)

    async def _put_file(self, key: str, path: str, size: int) -> None:
        await asyncio.to_thread(_copy_atomic, path, self.path_for(key))

    async def _head(self, key: str) -> ObjectMeta:
        try:
            st = await asyncio.to_thread(os.stat, self.path_for(key))
        except OSError as exc:
            raise self._error(exc, key) from exc
        if not stat.S_ISREG(st.st_mode):  # no second, blocking stat on the loop thread
            raise store_error(
                ObjectNotFoundError, f"{self.url_for(key)} is a directory", url=self.url_for(key)
            )
        return ObjectMeta(key, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}", st.st_mtime)

    async def _delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(os.unlink, self.path_for(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(exc, key) from exc

    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        # A directory walk has no natural pages: return everything at once.
        return await asyncio.to_thread(_walk, self._root, prefix), None


def _pread_many(path: str, ranges: builtins.list[tuple[int, int]]) -> builtins.list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, end - start, start) if end > start else b"" for start, end in ranges]
    finally:
        os.close(fd)


def _tmp_name(dest: str) -> str:
    head, tail = os.path.split(dest)
    return os.path.join(head, f".{tail}{_TMP_MARK}{uuid.uuid4().hex[:12]}")


def _write_atomic(dest: str, data: Buffer) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = _tmp_name(dest)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _copy_atomic(src: str, dest: str) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = _tmp_name(os.path.abspath(dest))
    try:
        shutil.copyfile(src, tmp)
        size = os.stat(tmp).st_size
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return size


def _walk(root: str, prefix: str) -> builtins.list[ObjectMeta]:
    # Start at the deepest directory the prefix names, then filter by string prefix.
    base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
    start = os.path.join(root, *base.split("/")) if base else root
    out: builtins.list[ObjectMeta] = []
    for dirpath, _dirs, files in os.walk(start):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in files:
            if _TMP_MARK in name:
                continue
            key = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not key.startswith(prefix):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(os.path.join(dirpath, name))
                out.append(ObjectMeta(key, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}", st.st_mtime))
    out.sort(key=lambda m: m.key)
    return out
