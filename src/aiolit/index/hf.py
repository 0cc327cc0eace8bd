"""``index_hf_dataset``: LitData's parquet index for the parquet files of a Hugging Face dataset.

The files under an ``hf://datasets/owner/name[@revision]/path`` URL are listed recursively with the
Hub's tree API and only their footers are read (range GETs, see
:mod:`aiolit.index.parquet`). The index is kept at ``{root}/hf-index/<md5>/index.json``
(LitData's layout) and reused by later calls; ``StreamingDataset(hf_url,
item_loader=ParquetLoader(), index_path=index_hf_dataset(hf_url))`` then streams the rows.

Differences from LitData (0.2.76):

- ``root`` is ``cache_dir``, else ``$AIOLIT_HF_CACHE_DIR``, else the parent of the chunk cache
  root (``~/.cache/aiolit``), so the index survives a cleared chunk cache as in LitData.
- ``<md5>`` hashes the URL without a trailing ``/``, plus the endpoint when it is not
  ``https://huggingface.co`` (a mirror's index is not mistaken for the Hub's).
- Chunks are in natural order of their path relative to the URL, so the index is the same on
  every run; nested files keep their relative path (``train/0000.parquet``), as LitData does.
- No ``huggingface_hub``/``polars`` dependency; nothing is printed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from aiolit import _loop
from aiolit._loop import ensure_no_running_loop
from aiolit.errors import ObjectNotFoundError
from aiolit.format import Index, write_index_atomic
from aiolit.index.parquet import build_parquet_index
from aiolit.stores import open_store

__all__ = ["hf_index_dir", "index_hf_dataset", "index_hf_dataset_async"]

_INDEX = "index.json"
_CONCURRENCY = 16  # footers fetched at once (two small range GETs each)


def _check_url(dataset_url: str) -> str:
    if not isinstance(dataset_url, str) or not dataset_url.startswith("hf://"):
        raise ValueError(
            f"Invalid Hugging Face dataset URL: {dataset_url!r}. URLs must start with 'hf://', "
            "e.g. hf://datasets/owner/name/data"
        )
    return dataset_url


def _hf_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(os.path.expanduser(os.fspath(cache_dir))).absolute()
    env = os.environ.get("AIOLIT_HF_CACHE_DIR")
    if env:
        return Path(os.path.expanduser(env)).absolute()
    from aiolit._paths import cache_root

    return cache_root(None).parent


def hf_index_dir(
    dataset_url: str,
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """The directory where :func:`index_hf_dataset` keeps the index of ``dataset_url`` (not created).

    Parameters
    ----------
    dataset_url : str
        ``hf://datasets/owner/name[@revision]/path``.
    cache_dir : str or os.PathLike, optional
        The root (see the module notes for the default).
    storage_options : dict, optional
        Only ``endpoint`` matters (the ``HF_ENDPOINT`` variable too).

    Returns
    -------
    Path
        ``{root}/hf-index/{md5}``.
    """
    from aiolit.stores._hf import DEFAULT_ENDPOINT

    key = _check_url(dataset_url).rstrip("/")
    endpoint = (storage_options or {}).get("endpoint") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    endpoint = str(endpoint).rstrip("/")
    if endpoint != DEFAULT_ENDPOINT:
        key = f"{endpoint} {key}"
    return _hf_root(cache_dir) / "hf-index" / hashlib.md5(key.encode()).hexdigest()


async def build_hf_index(
    dataset_url: str, storage_options: dict[str, Any] | None = None, num_workers: int = _CONCURRENCY
) -> Index:
    """Build (do not write) the parquet index of the ``*.parquet`` files under ``dataset_url``.

    Parameters
    ----------
    dataset_url : str
        ``hf://datasets/owner/name[@revision]/path``; files in subfolders are included.
    storage_options : dict, optional
        :class:`~aiolit.stores._hf.HFStore` options (``endpoint``, ``token``, ``timeout``).
    num_workers : int, default 16
        Footers fetched concurrently.

    Returns
    -------
    Index
        One chunk per file, ``item_loader: "ParquetLoader"``.

    Raises
    ------
    ObjectNotFoundError
        No parquet file under the URL.
    FormatError
        A file is not parquet, or the files' schemas differ.
    """
    url = _check_url(dataset_url)
    store = open_store(url, storage_options)
    try:
        listing = [m async for m in store.list() if m.key.endswith(".parquet")]
        if not listing:
            raise ObjectNotFoundError(
                f"no .parquet files under {url}; indexing and streaming hf:// datasets needs Parquet files "
                "(try the dataset's refs/convert/parquet revision: hf://datasets/owner/name@refs/convert/parquet)"
            )
        return await build_parquet_index(store, url, listing, num_workers)
    finally:
        await store.aclose()


async def index_hf_dataset_async(
    dataset_url: str,
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Index the parquet files of a Hugging Face dataset and return the directory of ``index.json``.

    An index already there is reused (delete the directory to re-index after the dataset
    changed). As in LitData, ``{cache_dir}/index.json`` (what ``index_parquet_dataset(url,
    cache_dir)`` writes) is reused too.

    Parameters
    ----------
    dataset_url : str
        ``hf://datasets/owner/name[@revision]/path``.
    cache_dir : str or os.PathLike, optional
        Root of the index cache; the index goes to ``{cache_dir}/hf-index/<md5>/index.json``.
    storage_options : dict, optional
        ``endpoint`` (default ``$HF_ENDPOINT`` or https://huggingface.co), ``token`` (default
        ``$HF_TOKEN``; needed for gated and private datasets), ``timeout``.

    Returns
    -------
    str
        The directory holding ``index.json``: pass it as ``StreamingDataset(index_path=...)``.

    Raises
    ------
    ValueError
        ``dataset_url`` is not an ``hf://`` URL.
    ObjectNotFoundError
        No parquet file under the URL.
    StorePermissionError
        A private or gated dataset without a (valid) token.
    """
    _check_url(dataset_url)
    if cache_dir is not None:
        given = Path(os.path.expanduser(os.fspath(cache_dir))).absolute()
        if (given / _INDEX).is_file():
            return str(given)
    dest = hf_index_dir(dataset_url, cache_dir, storage_options)
    if (dest / _INDEX).is_file():
        return str(dest)
    index = await build_hf_index(dataset_url, storage_options)
    dest.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(write_index_atomic, index, str(dest / _INDEX))
    return str(dest)


def index_hf_dataset(
    dataset_url: str,
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Blocking :func:`index_hf_dataset_async` (same arguments).

    Raises
    ------
    LoopError
        Called from inside a running event loop.
    """
    ensure_no_running_loop("index_hf_dataset")
    return _loop.run(index_hf_dataset_async(dataset_url, cache_dir, storage_options))
