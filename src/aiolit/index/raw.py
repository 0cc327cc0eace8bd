"""File discovery for :class:`~aiolit.raw.StreamingRawDataset` and its cached index.

The index is LitData's ``index.json.zstd``: one zstd frame of
``{"source": input_dir, "files": [{"path": ..., "size": ...}, ...], "created_at": <float>}``.
``path`` is the full URL (``s3://bucket/dir/a.jpg``) of a remote file and the absolute path of a
local one, as LitData writes it, so either library reads the other's index.

Where it lives: ``{cache_dir}/index.json.zstd`` (``cache_dir`` is the dataset's own cache
directory, ``{root}/{md5(input_dir)}``), and a copy at ``{input_dir}/index.json.zstd`` for remote
input dirs (uploaded best-effort; read-only credentials only log a warning). Unlike LitData we do
not write into a *local* source directory: listing a local tree is cheap and the data stays
untouched. Loading tries the local copy, then the one in ``input_dir``, then lists the files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiolit import _loop
from aiolit.errors import FormatError, NoFilesFoundError, ObjectNotFoundError, StoreError
from aiolit.stores import Store, open_store

__all__ = ["INDEX_FILENAME", "BaseIndexer", "FileIndexer", "FileMetadata", "dump_index", "load_index_file"]

logger = logging.getLogger(__name__)

INDEX_FILENAME = "index.json.zstd"


@dataclass
class FileMetadata:
    """One discovered file.

    Attributes
    ----------
    path : str
        Full URL (remote) or absolute path (local) of the file.
    size : int
        Size in bytes at indexing time.
    """

    path: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this file in the index."""
        return {"path": self.path, "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileMetadata:
        """Build from an index entry; a malformed entry raises :class:`FormatError`."""
        try:
            return cls(path=str(data["path"]), size=int(data["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{INDEX_FILENAME}: bad file entry {data!r} ({exc})") from None


def is_remote(input_dir: str) -> bool:
    """True for a URL (``s3://``, ``gs://``, ``azure://``, ``az://``, ``local:``), False for a path."""
    scheme, sep, _ = input_dir.partition("://")
    return input_dir.startswith("local:") or (bool(sep) and len(scheme) > 1 and scheme != "file")


def file_url(input_dir: str, key: str) -> str:
    """The path/URL LitData records in the index for ``key`` under ``input_dir``."""
    if is_remote(input_dir):
        return f"{input_dir.rstrip('/')}/{key}"
    return os.path.join(input_dir, *key.split("/"))


def dump_index(files: list[FileMetadata], source: str) -> bytes:
    """Encode ``files`` as LitData's ``index.json.zstd`` bytes."""
    from aiolit.format._codec import zstd_compress

    payload = {"source": source, "files": [f.to_dict() for f in files], "created_at": time.time()}
    return zstd_compress(json.dumps(payload).encode("utf-8"), 3)


def load_index_file(data: bytes, *, where: str) -> list[FileMetadata]:
    """Decode ``index.json.zstd`` bytes; corruption raises :class:`FormatError` naming ``where``."""
    from aiolit.format._codec import zstd_decompress

    try:
        raw = json.loads(zstd_decompress(data, what=where))
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where} is not UTF-8 JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("files"), list):
        raise FormatError(f"{where}: expected an object with a 'files' list")
    return [FileMetadata.from_dict(entry) for entry in raw["files"]]


class BaseIndexer:
    """How a raw dataset finds its files; subclass it to discover files another way.

    Override :meth:`adiscover_files` (async) or LitData's sync :meth:`discover_files`.
    """

    def discover_files(self, input_dir: str, storage_options: dict[str, Any] | None) -> list[FileMetadata]:
        """List the dataset's files (sync facade over :meth:`adiscover_files`)."""
        return _loop.run(self.adiscover_files(input_dir, storage_options))

    async def adiscover_files(
        self, input_dir: str, storage_options: dict[str, Any] | None
    ) -> list[FileMetadata]:
        """List the dataset's files. The default runs a sync :meth:`discover_files` override in a thread."""
        if type(self).discover_files is BaseIndexer.discover_files:
            raise NotImplementedError(
                f"{type(self).__name__} must override adiscover_files or discover_files"
            )
        return await asyncio.to_thread(self.discover_files, input_dir, storage_options)

    def build_or_load_index(
        self,
        input_dir: str,
        cache_dir: str,
        storage_options: dict[str, Any] | None,
        recompute_index: bool = False,
    ) -> list[FileMetadata]:
        """Sync facade over :meth:`abuild_or_load_index`."""
        return _loop.run(self.abuild_or_load_index(input_dir, cache_dir, storage_options, recompute_index))

    async def abuild_or_load_index(
        self,
        input_dir: str,
        cache_dir: str,
        storage_options: dict[str, Any] | None,
        recompute_index: bool = False,
    ) -> list[FileMetadata]:
        """Load the cached index of ``input_dir`` or list the files and cache the result.

        Parameters
        ----------
        input_dir : str
            The dataset root: absolute local path or URL.
        cache_dir : str
            This dataset's cache directory (the index is ``{cache_dir}/index.json.zstd``).
        storage_options : dict, optional
            Options of the remote store.
        recompute_index : bool, default False
            Ignore any cached index and list the files again.

        Raises
        ------
        ObjectNotFoundError
            When ``input_dir`` does not exist; :class:`~aiolit.errors.NoFilesFoundError` (also a
            ``ValueError``, as LitData's) when it holds no (matching) files.
        """
        store = open_store(input_dir, storage_options)
        local_path = os.path.join(cache_dir, INDEX_FILENAME)
        if not recompute_index:
            files = await _load_cached(store, local_path)
            if files:
                return files
        files = await self.adiscover_files(input_dir, storage_options)
        if not files:
            raise NoFilesFoundError(
                f"no files found in {input_dir}: check the path/URL, the credentials, and the indexer's "
                "extensions and max_depth"
            )
        data = dump_index(files, input_dir)
        await asyncio.to_thread(_write_atomic, local_path, data)
        if not store.is_local:
            try:
                await store.put(INDEX_FILENAME, data)
            except StoreError as exc:  # read-only credentials are common for source buckets
                logger.warning(
                    "could not upload %s to %s (using the local copy): %s", INDEX_FILENAME, input_dir, exc
                )
        return files


class FileIndexer(BaseIndexer):
    """Every file under ``input_dir`` (recursively, up to ``max_depth`` levels), sorted by key.

    Parameters
    ----------
    max_depth : int, default 5
        A file at ``input_dir/a/b.txt`` has depth 2. LitData applies this to remote listings only;
        we apply it to local trees too.
    extensions : list of str, optional
        Keep only these suffixes (case-insensitive, ``".jpg"`` or ``"jpg"``).
    """

    def __init__(self, max_depth: int = 5, extensions: list[str] | None = None) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        self.max_depth = max_depth
        self.extensions = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions or []]

    def _keep(self, key: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        if name == INDEX_FILENAME or key.count("/") >= self.max_depth:
            return False
        return not self.extensions or os.path.splitext(name)[1].lower() in self.extensions

    async def adiscover_files(
        self, input_dir: str, storage_options: dict[str, Any] | None
    ) -> list[FileMetadata]:
        """List the files of ``input_dir`` through its store.

        Raises
        ------
        ObjectNotFoundError
            When a local ``input_dir`` is not a directory.
        """
        store = open_store(input_dir, storage_options)
        if store.is_local and not os.path.isdir(input_dir):
            raise ObjectNotFoundError(f"input_dir {input_dir} does not exist or is not a directory")
        return [
            FileMetadata(file_url(input_dir, m.key), m.size) async for m in store.list() if self._keep(m.key)
        ]


async def _load_cached(store: Store, local_path: str) -> list[FileMetadata] | None:
    # The local copy first, then the one next to the data (written by us or by LitData).
    if os.path.exists(local_path):
        try:
            data = await asyncio.to_thread(_read, local_path)
            return load_index_file(data, where=local_path)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring the unreadable cached index %s: %s", local_path, exc)
    try:
        data = await store.get(INDEX_FILENAME)
    except ObjectNotFoundError:
        return None
    except StoreError as exc:
        logger.warning("could not read %s: %s", store.url_for(INDEX_FILENAME), exc)
        return None
    try:
        files = load_index_file(data, where=store.url_for(INDEX_FILENAME))
    except ValueError as exc:
        logger.warning("ignoring the unreadable index %s: %s", store.url_for(INDEX_FILENAME), exc)
        return None
    await asyncio.to_thread(_write_atomic, local_path, data)
    return files


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
