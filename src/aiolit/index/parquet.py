"""``index_parquet_dataset``: make a directory of parquet files readable as a LitData dataset.

Each ``*.parquet`` file directly in the directory becomes one chunk of a LitData ``index.json``
(``{filename, chunk_size: num_rows, chunk_bytes: file_size, dim: null}``) with the config
``item_loader: "ParquetLoader"``, ``data_format`` = the Arrow type strings of the columns and
every other field null. ``StreamingDataset(dir, item_loader=ParquetLoader())`` then reads it.

Only the footers are read: one range GET of the last 64 KiB per file (a second one when the
footer is larger), ``num_workers`` files at a time on the event loop; pyarrow parses the footer
in a worker thread.

Differences from LitData (0.2.76):

- Chunks are in natural name order (``part-2`` before ``part-10``), so the index is the same on
  every run. LitData keeps ``os.listdir``/bucket listing order, which is arbitrary locally.
- Every store aiolit supports works (``s3://``, ``gs://``, ``azure://``, ``local:``), not only
  local paths, ``s3://`` and ``gs://``; polars is not needed.
- A remote index is uploaded to ``{url}/index.json`` as LitData does; with ``cache_dir`` a copy
  is also written to ``{cache_dir}/index.json``, and a failed upload (read-only credentials)
  then only logs a warning instead of failing.
- The index is returned, not just written.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from typing import Any

from aiolit import _loop
from aiolit._loop import ensure_no_running_loop
from aiolit.errors import FormatError, ObjectNotFoundError, StoreError
from aiolit.format import ChunkEntry, Index, natural_sort_key, write_index_atomic
from aiolit.stores import ObjectMeta, Store, open_store

__all__ = ["index_parquet_dataset", "index_parquet_dataset_async"]

logger = logging.getLogger(__name__)

_MAGIC = b"PAR1"
_ENCRYPTED_MAGIC = b"PARE"
_TAIL = 64 * 1024  # one GET covers the footer of almost every file


class _TailFile(io.RawIOBase):
    """A read-only, seekable view of a file of ``size`` bytes of which only the tail is held.

    pyarrow sees the real offsets and size; a read before the tail (never needed to parse the
    footer) raises instead of returning wrong bytes.
    """

    def __init__(self, size: int, tail: bytes, where: str) -> None:
        super().__init__()
        self._size, self._tail, self._start, self._pos, self._where = size, tail, size - len(tail), 0, where

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._size, self._pos + view.nbytes)
        if end <= self._pos:
            return 0
        if self._pos < self._start:
            raise FormatError(
                f"{self._where}: reading the parquet footer needed bytes before the fetched tail"
            )
        data = self._tail[self._pos - self._start : end - self._start]
        view[: len(data)] = data
        self._pos = end
        return len(data)


async def _read_footer(store: Store, name: str, size: int) -> tuple[int, list[str]]:
    """(num_rows, Arrow type strings) of one parquet file, from its footer only."""
    where = store.url_for(name)
    if size < 12:  # header magic + footer length + footer magic
        raise FormatError(f"{where} is not a parquet file: {size} bytes")
    tail = await store.get_range(name, max(0, size - _TAIL), size)
    if tail[-4:] == _ENCRYPTED_MAGIC:
        raise FormatError(f"{where} has an encrypted parquet footer, which cannot be indexed")
    if tail[-4:] != _MAGIC:
        raise FormatError(f"{where} is not a parquet file: it does not end with {_MAGIC!r}")
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > size - 4:
        raise FormatError(f"{where}: parquet footer length {need - 8} exceeds the file size {size}")
    if need > len(tail):
        tail = await store.get_range(name, size - need, size - len(tail)) + tail

    def parse() -> tuple[int, list[str]]:
        import pyarrow
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(_TailFile(size, tail, where))
        except (pyarrow.ArrowException, OSError) as exc:
            raise FormatError(f"{where}: unreadable parquet footer: {exc}") from None
        return meta.metadata.num_rows, [str(field.type) for field in meta.schema_arrow]

    return await asyncio.to_thread(parse)


async def build_parquet_index(store: Store, url: str, listing: list[ObjectMeta], num_workers: int) -> Index:
    """The parquet index of the files ``listing`` of ``store`` (one chunk per file, natural order).

    Reads the footers, ``num_workers`` at a time; ``url`` names the directory in errors.

    Raises
    ------
    FormatError
        A file is not parquet, or the files' schemas differ.
    """
    listing = sorted(listing, key=lambda m: natural_sort_key(m.key))
    slots = asyncio.Semaphore(max(1, num_workers))

    async def one(name: str, size: int) -> tuple[int, list[str]]:
        async with slots:
            return await _read_footer(store, name, size)

    footers = await asyncio.gather(*(one(m.key, m.size) for m in listing))
    data_format = footers[0][1]
    for meta, (_, types) in zip(listing, footers, strict=True):
        if types != data_format:
            raise FormatError(
                f"parquet schemas differ in {url}: {listing[0].key} has {data_format}, {meta.key} has {types}"
            )
    config: dict[str, Any] = {
        "chunk_bytes": None,
        "chunk_size": None,
        "compression": None,
        "data_format": data_format,
        "data_spec": None,
        "encryption": None,
        "item_loader": "ParquetLoader",
        "types": None,
    }
    chunks = [ChunkEntry(m.key, rows, m.size, None) for m, (rows, _) in zip(listing, footers, strict=True)]
    return Index(chunks, config, updated_at=str(time.time()))


async def index_parquet_dataset_async(
    pq_dir_url: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    num_workers: int = 4,
) -> Index:
    """Write LitData's ``index.json`` for the parquet files of a directory or bucket prefix.

    Parameters
    ----------
    pq_dir_url : str or os.PathLike
        A local directory or ``s3://``/``gs://``/``azure://`` prefix holding ``*.parquet`` files
        (subdirectories are not indexed).
    cache_dir : str or os.PathLike, optional
        Local: write ``index.json`` here instead of next to the files. Remote: also keep a local
        copy here.
    storage_options : dict, optional
        Options of the remote store.
    num_workers : int, default 4
        Footers fetched concurrently.

    Returns
    -------
    Index
        The index written.

    Raises
    ------
    ObjectNotFoundError
        No ``.parquet`` file in the directory (or it does not exist).
    FormatError
        A file is not parquet, or the files' schemas differ.
    """
    url = os.fspath(pq_dir_url)
    store = open_store(url, storage_options)
    if store.is_local and not os.path.isdir(url):
        raise ObjectNotFoundError(f"{url} does not exist or is not a directory")
    listing = [m async for m in store.list() if "/" not in m.key and m.key.endswith(".parquet")]
    if not listing:
        raise ObjectNotFoundError(
            f"no .parquet files found directly in {url}; if they are in a subdirectory, pass that path"
        )
    index = await build_parquet_index(store, url, listing, num_workers)
    await _write(store, url, index, cache_dir)
    return index


async def _write(store: Store, url: str, index: Index, cache_dir: str | os.PathLike[str] | None) -> None:
    local_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else None
    if store.is_local:
        target = local_dir or os.path.abspath(url)
        os.makedirs(target, exist_ok=True)
        await asyncio.to_thread(write_index_atomic, index, os.path.join(target, "index.json"))
        return
    if local_dir is not None:
        os.makedirs(local_dir, exist_ok=True)
        await asyncio.to_thread(write_index_atomic, index, os.path.join(local_dir, "index.json"))
    try:
        await store.put("index.json", index.to_json())
    except StoreError as exc:
        if local_dir is None:
            raise
        logger.warning("could not upload index.json to %s (kept %s/index.json): %s", url, local_dir, exc)


def index_parquet_dataset(
    pq_dir_url: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    num_workers: int = 4,
) -> Index:
    """Blocking :func:`index_parquet_dataset_async` (same arguments).

    Raises
    ------
    LoopError
        Called from inside a running event loop.
    """
    ensure_no_running_loop("index_parquet_dataset")
    return _loop.run(index_parquet_dataset_async(pq_dir_url, cache_dir, storage_options, num_workers))
