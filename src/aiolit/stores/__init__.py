"""Async object stores: one :class:`Store` interface over local disk, S3, GCS and Azure Blob.

>>> store = open_store("s3://bucket/dataset", storage_options={"endpoint_url": "http://127.0.0.1:9000"})
>>> data = await store.get_range("chunk-0-0.bin", 0, 1024)   # doctest: +SKIP

Keys are relative to the URL's prefix. Remote stores come wrapped in :class:`RetryStore`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiolit.stores._base import ObjectMeta, Store, TransferOptions
from aiolit.stores._local import LocalStore
from aiolit.stores._retry import RetryPolicy, RetryStore

__all__ = [
    "LocalStore",
    "ObjectMeta",
    "RetryPolicy",
    "RetryStore",
    "Store",
    "TransferOptions",
    "open_store",
    "register_store",
]

StoreFactory = Callable[[str, dict[str, Any], dict[str, Any], TransferOptions], Store]


def _s3(url: str, storage: dict[str, Any], session: dict[str, Any], transfer: TransferOptions) -> Store:
    from aiolit.stores._s3 import S3Store

    return S3Store(url, storage, session, transfer)


def _gcs(url: str, storage: dict[str, Any], session: dict[str, Any], transfer: TransferOptions) -> Store:
    from aiolit.stores._gcs import GCSStore

    return GCSStore(url, {**session, **storage}, transfer)


def _azure(url: str, storage: dict[str, Any], session: dict[str, Any], transfer: TransferOptions) -> Store:
    from aiolit.stores._azure import AzureStore

    return AzureStore(url, {**session, **storage}, transfer)


def _hf(url: str, storage: dict[str, Any], session: dict[str, Any], transfer: TransferOptions) -> Store:
    from aiolit.stores._hf import HFStore

    return HFStore(url, {**session, **storage}, transfer)


_SCHEMES: dict[str, StoreFactory] = {
    "s3": _s3,
    "gs": _gcs,
    "gcs": _gcs,
    "azure": _azure,
    "az": _azure,
    "hf": _hf,
}


def register_store(scheme: str, factory: StoreFactory, *, overwrite: bool = False) -> None:
    """Make ``open_store`` build ``factory(url, storage_options, session_options, transfer)`` for ``scheme://``."""
    if scheme in _SCHEMES and not overwrite:
        raise ValueError(f"a store is already registered for {scheme}://; pass overwrite=True")
    _SCHEMES[scheme] = factory


def open_store(
    url: str,
    storage_options: dict[str, Any] | None = None,
    session_options: dict[str, Any] | None = None,
    *,
    retry: RetryPolicy | bool = True,
) -> Store:
    """Open the store for ``url``; cheap (no I/O, clients are built on first use).

    Parameters
    ----------
    url : str
        A local path, ``file://`` or ``local:`` path, ``s3://bucket/prefix``, ``gs://bucket/prefix``,
        ``azure://container/prefix``, ``az://container/prefix`` or
        ``hf://datasets/owner/name[@revision]/path`` (read-only).
    storage_options : dict, optional
        Backend options as LitData accepts them (see each backend), plus the
        :class:`TransferOptions` fields (``part_size``, ``max_concurrency``, ...).
    session_options : dict, optional
        S3 session options (``profile_name``, ``region_name``); merged into the options elsewhere.
    retry : RetryPolicy or bool, default True
        The retry policy of remote stores (True: the default policy, or the one ``storage_options``
        sets with ``retry``/``retry_*`` keys, see :class:`RetryPolicy`; False: no retries).

    Returns
    -------
    Store
    """
    storage = dict(storage_options or {})
    session = dict(session_options or {})
    transfer = TransferOptions.pop_from(storage)
    from_options = RetryPolicy.pop_from(storage)
    if retry is True and from_options is not None:
        retry = from_options
    scheme, sep, _ = url.partition("://")
    if not sep or scheme == "file" or len(scheme) == 1:  # a plain path (or a Windows drive)
        if storage or session:
            raise ValueError(f"local path {url!r} takes no storage_options, got {sorted(storage)}")
        return LocalStore(url, transfer)
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme}:// in {url!r}; supported: {sorted(_SCHEMES)}")
    store = _SCHEMES[scheme](url, storage, session, transfer)
    if retry is False:
        return store
    return RetryStore(store, retry if isinstance(retry, RetryPolicy) else None)
