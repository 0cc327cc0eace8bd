"""Azure Blob Storage, on azure-storage-blob's asyncio client."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiolit.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StorePermissionError,
    TransientStoreError,
)
from aiolit.stores._base import Buffer, ClientStore, ObjectMeta, TransferOptions
from aiolit.stores._util import range_text, store_error

__all__ = ["AzureStore"]

_OPTIONS = {"connection_string", "account_url", "credential", "account_name", "account_key"}


class AzureStore(ClientStore):
    """An Azure Blob container prefix: ``azure://container/prefix`` (or ``az://``).

    Parameters
    ----------
    url : str
        ``azure://container`` or ``azure://container/prefix``.
    storage_options : dict, optional
        ``connection_string``, or ``account_url`` with ``credential`` (an account key, a SAS
        token, ``{"account_name", "account_key"}`` or an ``azure.identity`` credential; LitData's
        form), or ``account_name`` + ``account_key``. Defaults to ``AZURE_STORAGE_CONNECTION_STRING``.
    transfer : TransferOptions, optional
        Block size for staged uploads and concurrency.
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, transfer: TransferOptions | None = None
    ) -> None:
        super().__init__(url, transfer)
        rest = url.split("://", 1)[1] if "://" in url else url
        self._container, _, prefix = rest.partition("/")
        if not self._container:
            raise ValueError(f"Azure URL {url!r} has no container; expected azure://container/prefix")
        self._prefix = prefix.strip("/")
        opts = dict(storage_options or {})
        unknown = sorted(set(opts) - _OPTIONS)
        if unknown:
            raise ValueError(f"unknown Azure option(s) {unknown} for {url}; accepted: {sorted(_OPTIONS)}")
        if "account_name" in opts and "account_url" not in opts:
            opts["account_url"] = f"https://{opts['account_name']}.blob.core.windows.net"
        if "account_key" in opts and "credential" not in opts:
            opts["credential"] = {
                "account_name": opts.get("account_name"),
                "account_key": opts["account_key"],
            }
        opts.pop("account_name", None)
        opts.pop("account_key", None)
        self._opts = opts

    def __repr__(self) -> str:
        return f"AzureStore({self._url!r})"

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    async def _new_client(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
        from azure.storage.blob.aio import BlobServiceClient

        transfer = self._transfer
        kwargs: dict[str, Any] = {
            "retry_total": 0,  # our retry wrapper owns retries
            "max_single_put_size": transfer.multipart_threshold,
            "max_block_size": transfer.part_size,
            "max_single_get_size": transfer.multipart_threshold,
            "max_chunk_get_size": transfer.part_size,
        }
        conn = self._opts.get("connection_string")
        if not conn and "account_url" not in self._opts:
            conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if conn:
            service = BlobServiceClient.from_connection_string(conn, **kwargs)
        elif "account_url" in self._opts:
            service = BlobServiceClient(
                self._opts["account_url"], credential=self._opts.get("credential"), **kwargs
            )
        else:
            raise store_error(
                StorePermissionError,
                f"{self._url}: no Azure credentials; pass connection_string or account_url + credential "
                "in storage_options, or set AZURE_STORAGE_CONNECTION_STRING",
                url=self._url,
            )
        container = service.get_container_client(self._container)

        async def close() -> None:
            await service.close()

        return container, close

    def _translate(self, exc: Exception, url: str, byte_range: tuple[int, int] | None) -> StoreError:
        return _translate(exc, url, byte_range)

    async def _get(self, key: str) -> bytes:
        with self._errors(key):
            container = await self._c()
            stream = await container.download_blob(self._key(key), max_concurrency=1)
            data: bytes = await stream.readall()
            return data

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        with self._errors(key, (start, end)):
            container = await self._c()
            try:
                stream = await container.download_blob(
                    self._key(key), offset=start, length=end - start, max_concurrency=1
                )
            except Exception as exc:
                if getattr(exc, "status_code", None) == 416:
                    return b""  # start at or past the end: clamp like a slice
                raise
            data: bytes = await stream.readall()
            return data

    async def _head(self, key: str) -> ObjectMeta:
        with self._errors(key):
            container = await self._c()
            props = await container.get_blob_client(self._key(key)).get_blob_properties()
        return _meta(key, props)

    async def _get_versioned(self, key: str) -> tuple[bytes, str]:
        with self._errors(key):
            container = await self._c()
            stream = await container.download_blob(self._key(key), max_concurrency=1)
            data: bytes = await stream.readall()
            return data, str(stream.properties.etag)

    async def _put_if_version(self, key: str, data: Buffer, version: str | None) -> None:
        from azure.core import MatchConditions

        condition: dict[str, Any] = (
            {"overwrite": False}
            if version is None
            else {"overwrite": True, "etag": version, "match_condition": MatchConditions.IfNotModified}
        )
        with self._errors(key):
            container = await self._c()
            await container.upload_blob(self._key(key), bytes(data), max_concurrency=1, **condition)

    async def _delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with self._errors(key):
            container = await self._c()
            with contextlib.suppress(ResourceNotFoundError):
                await container.delete_blob(self._key(key))

    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        root = f"{self._prefix}/" if self._prefix else ""
        with self._errors(prefix):
            container = await self._c()
            pages = container.list_blobs(
                name_starts_with=root + prefix, results_per_page=self._transfer.list_page_size
            ).by_page(continuation_token=cursor)
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                return [], None
            items = [_meta(blob.name[len(root) :], blob) async for blob in page]
            return items, pages.continuation_token or None

    async def _put_single(self, key: str, data: Buffer) -> None:
        with self._errors(key):
            container = await self._c()
            await container.upload_blob(self._key(key), bytes(data), overwrite=True, max_concurrency=1)

    # Multipart = staged blocks + a committed block list. Uncommitted blocks expire by themselves.
    async def _mp_begin(self, key: str) -> Any:
        return None

    async def _mp_part(self, key: str, upload: Any, number: int, data: bytes) -> Any:
        block_id = f"{number:08d}"  # every id of one blob must have the same length
        with self._errors(key):
            container = await self._c()
            await container.get_blob_client(self._key(key)).stage_block(block_id, data, length=len(data))
        return block_id

    async def _mp_complete(self, key: str, upload: Any, parts: builtins.list[Any]) -> None:
        from azure.storage.blob import BlobBlock

        with self._errors(key):
            container = await self._c()
            await container.get_blob_client(self._key(key)).commit_block_list(
                [BlobBlock(block_id=p) for p in parts]
            )

    async def _mp_abort(self, key: str, upload: Any) -> None:
        return None


def _meta(key: str, props: Any) -> ObjectMeta:
    modified = getattr(props, "last_modified", None)
    return ObjectMeta(key, int(props.size), props.etag, modified.timestamp() if modified else None)


def _translate(exc: Exception, url: str, byte_range: tuple[int, int] | None) -> StoreError:
    """Map an azure-core failure to the aiolit error tree (code and reason only: no URLs/SAS)."""
    import aiohttp
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    where = f"{url}{range_text(byte_range)}"
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    detail = (
        f"status {status} {code or ''}".rstrip() + f": {getattr(exc, 'reason', None) or type(exc).__name__}"
    )
    if status == 412 or (status == 409 and code == "BlobAlreadyExists"):
        return store_error(
            PreconditionFailedError, f"{where}: changed by another writer ({detail})", url=url, status=status
        )
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        what = "container" if code == "ContainerNotFound" else "blob"
        return store_error(ObjectNotFoundError, f"{where}: {what} not found ({detail})", url=url, status=404)
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return store_error(
            StorePermissionError,
            f"{where}: access denied ({detail}); check the connection string / account key / SAS token "
            "and the container's permissions",
            url=url,
            status=status,
        )
    if isinstance(exc, HttpResponseError) and status is not None:
        cls = TransientStoreError if status in (408, 429) or status >= 500 else StoreError
        return store_error(cls, f"{where}: {detail}", url=url, status=status, byte_range=byte_range)
    if isinstance(
        exc,
        ServiceRequestError
        | ServiceResponseError
        | aiohttp.ClientError
        | asyncio.TimeoutError
        | ConnectionError,
    ):
        return store_error(
            TransientStoreError, f"{where}: {type(exc).__name__}", url=url, byte_range=byte_range
        )
    return store_error(StoreError, f"{where}: {type(exc).__name__}", url=url, byte_range=byte_range)
