"""The output location of optimize/map/merge: a local directory or an object-store prefix.

Local directories are used directly (chunks are written in place, index.json is replaced
atomically); remote outputs go through :func:`aiolit.stores.open_store`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Output", "chunk_rank_and_counter"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK_NAME = re.compile(r"^chunk-(\d+)-(\d+)(?:\.[^/]*)?\.bin$")


def chunk_rank_and_counter(filename: str) -> tuple[int, int] | None:
    """``"chunk-3-7.zstd.bin"`` → ``(3, 7)``; ``None`` for names that do not follow the pattern."""
    match = _CHUNK_NAME.match(os.path.basename(filename))
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def _local_version(st: os.stat_result) -> str:
    # os.replace gives every written index a new inode, so this changes on every write.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


@contextlib.contextmanager
def _locked_dir(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the directory ``path`` (no-op where flock is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without flock (some network mounts): proceed unlocked
        yield
    finally:
        os.close(fd)  # releases the lock


class Output:
    """Where results go.

    Parameters
    ----------
    output_dir
        A local path (``str``/``Path``, optionally ``local:``/``file://``) or a URL (``s3://...``).
    storage_options
        Passed to :func:`aiolit.stores.open_store` for remote outputs.
    """

    def __init__(self, output_dir: str | os.PathLike[str], storage_options: dict[str, Any] | None) -> None:
        if isinstance(output_dir, os.PathLike):
            output_dir = os.fspath(output_dir)
        if not isinstance(output_dir, str) or not output_dir:
            raise ValueError(f"output_dir must be a non-empty path or URL, got {output_dir!r}")
        self.storage_options = storage_options
        path: str | None = None
        if output_dir.startswith("local:"):
            path = output_dir[len("local:") :]
        elif output_dir.startswith("file://"):
            path = output_dir[len("file://") :]
        elif not _SCHEME.match(output_dir):
            path = output_dir
        self.local_path = None if path is None else os.path.abspath(os.path.expanduser(path))
        self.url = self.local_path if self.local_path is not None else output_dir.rstrip("/")
        self._store: Any = None
        # What the final index.json write expects to find (set by prepare_output): "new" (no index:
        # a new dataset), "version" (append: the index read at the start, index_version; None for
        # none), or "any" (overwrite).
        self.index_condition = "any"
        self.index_version: str | None = None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    def _remote(self) -> Any:
        if self._store is None:
            from aiolit.stores import open_store

            self._store = open_store(self.url, self.storage_options)
        return self._store

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None

    def make_local_dir(self) -> None:
        if self.local_path is not None:
            Path(self.local_path).mkdir(parents=True, exist_ok=True)

    async def names(self) -> list[str]:
        """Relative names of every file under the output (recursive)."""
        if self.local_path is not None:
            if not os.path.isdir(self.local_path):
                return []
            found = []
            for root, _, files in os.walk(self.local_path):
                for name in files:
                    found.append(os.path.relpath(os.path.join(root, name), self.local_path))
            return found
        return [meta.key async for meta in self._remote().list()]

    async def exists(self, name: str) -> bool:
        if self.local_path is not None:
            return os.path.exists(os.path.join(self.local_path, name))
        return bool(await self._remote().exists(name))

    async def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        if self.local_path is not None:
            try:
                return Path(self.local_path, name).read_bytes()
            except FileNotFoundError:
                return None
        from aiolit.errors import ObjectNotFoundError

        try:
            return bytes(await self._remote().get(name))
        except (ObjectNotFoundError, FileNotFoundError):
            return None

    async def write(self, name: str, data: bytes) -> None:
        """Write a small file; locally via a temp file and ``os.replace``, so readers never see half of it."""
        if self.local_path is not None:
            target = os.path.join(self.local_path, name)
            directory = os.path.dirname(target)  # names may hold folders ("keys/shard-00000.parquet")
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(name)}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            return
        await self._remote().put(name, data)

    async def read_versioned(self, name: str) -> tuple[bytes | None, str | None]:
        """The file's bytes and a version token for :meth:`write_if_version`; ``(None, None)`` if absent."""
        if self.local_path is not None:
            with _locked_dir(self.local_path):
                try:
                    with open(os.path.join(self.local_path, name), "rb") as f:
                        return f.read(), _local_version(os.fstat(f.fileno()))
                except FileNotFoundError:
                    return None, None
        from aiolit.errors import ObjectNotFoundError

        try:
            data, version = await self._remote().get_versioned(name)
        except (ObjectNotFoundError, FileNotFoundError):
            return None, None
        except NotImplementedError:
            return await self.read(name), None
        return bytes(data), version

    async def write_if_version(self, name: str, data: bytes, version: str | None) -> None:
        """Write ``name`` only if it is still at ``version`` (``None``: only if it does not exist).

        Locally a lock on the directory (``flock``) makes check-and-replace atomic between
        writers on this machine; remote stores use their conditional requests.

        Raises
        ------
        PreconditionFailedError
            Another writer changed (or created) the file since ``version`` was read.
        """
        from aiolit.errors import PreconditionFailedError

        if self.local_path is None:
            try:
                await self._remote().put_if_version(name, data, version)
            except NotImplementedError:
                await self.write(name, data)  # a store without conditional writes: last writer wins
            return
        self.make_local_dir()
        with _locked_dir(self.local_path):
            try:
                current: str | None = _local_version(os.stat(os.path.join(self.local_path, name)))
            except FileNotFoundError:
                current = None
            if current != version:
                raise PreconditionFailedError(
                    f"{os.path.join(self.local_path, name)}: changed by another writer since it was read"
                )
            await self.write(name, data)

    async def put_file(self, name: str, path: str) -> None:
        """Copy a local file to ``name`` (upload when remote)."""
        if self.local_path is not None:
            import shutil

            target = os.path.join(self.local_path, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
            return
        await self._remote().put_file(name, path)

    async def delete(self, name: str) -> None:
        if self.local_path is not None:
            try:
                os.remove(os.path.join(self.local_path, name))
            except FileNotFoundError:
                pass
            return
        await self._remote().delete(name)
