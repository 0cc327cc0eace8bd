"""Google Cloud Storage, on gcloud-aio-storage (JSON API)."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast
from urllib.parse import quote

from aiolit.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StorePermissionError,
    TransientStoreError,
)
from aiolit.stores._base import Buffer, ClientStore, ObjectMeta, ReadPart, TransferOptions
from aiolit.stores._util import range_text, store_error

__all__ = ["GCSStore"]

_OPTIONS = {"project", "service_file", "endpoint_url", "api_root", "timeout"}
_GRANULE = 256 * 1024  # resumable upload chunks must be multiples of 256 KiB


class GCSStore(ClientStore):
    """A GCS bucket prefix: ``gs://bucket/prefix``.

    Parameters
    ----------
    url : str
        ``gs://bucket`` or ``gs://bucket/prefix``.
    storage_options : dict, optional
        ``project`` (accepted for LitData compatibility; objects need no project),
        ``service_file`` (service-account JSON path; default: the usual Google credential chain),
        ``endpoint_url``/``api_root`` (an emulator or proxy; also read from ``STORAGE_EMULATOR_HOST``,
        in which case requests are not authenticated) and ``timeout`` (seconds per request, 300).
    transfer : TransferOptions, optional
        Part size (rounded down to 256 KiB for resumable uploads) and concurrency.
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, transfer: TransferOptions | None = None
    ) -> None:
        super().__init__(url, transfer)
        rest = url.split("://", 1)[1] if "://" in url else url
        self._bucket, _, prefix = rest.partition("/")
        if not self._bucket:
            raise ValueError(f"GCS URL {url!r} has no bucket; expected gs://bucket/prefix")
        self._prefix = prefix.strip("/")
        opts = dict(storage_options or {})
        unknown = sorted(set(opts) - _OPTIONS)
        if unknown:
            raise ValueError(f"unknown GCS option(s) {unknown} for {url}; accepted: {sorted(_OPTIONS)}")
        self._opts = opts
        self._timeout = int(opts.get("timeout", 300))

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _api(self) -> tuple[str, bool]:
        """(API root, whether it is an emulator that takes no credentials)."""
        root = self._opts.get("endpoint_url") or self._opts.get("api_root")
        if root:
            return str(root).rstrip("/"), True
        host = os.environ.get("STORAGE_EMULATOR_HOST")
        if host:
            return (host if host.startswith("http") else f"http://{host}").rstrip("/"), True
        return "https://www.googleapis.com", False

    async def _new_client(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
        import aiohttp
        from gcloud.aio.storage import Storage

        root, dev = self._api()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(64, self._transfer.max_concurrency * 4)),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self._timeout),
        )
        storage = Storage(
            service_file=self._opts.get("service_file"),
            session=cast(Any, session),  # its stub names the rest-build Session type
            api_root=root,
            api_is_dev=dev,
        )

        async def close() -> None:
            await session.close()

        return storage, close

    def _translate(self, exc: Exception, url: str, byte_range: tuple[int, int] | None) -> StoreError:
        return _translate(exc, url, byte_range)

    async def _get(self, key: str) -> bytes:
        with self._errors(key):
            storage = await self._c()
            data: bytes = await storage.download(self._bucket, self._key(key), timeout=self._timeout)
            return data

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        with self._errors(key, (start, end)):
            storage = await self._c()
            try:
                data: bytes = await storage.download(
                    self._bucket,
                    self._key(key),
                    headers={"Range": f"bytes={start}-{end - 1}"},
                    timeout=self._timeout,
                )
            except Exception as exc:
                if getattr(exc, "status", None) == 416:
                    return b""  # start at or past the end: clamp like a slice
                raise
            if len(data) > end - start:
                data = data[start:end]  # a server that ignored Range sent the whole object
            return data

    async def _head(self, key: str) -> ObjectMeta:
        with self._errors(key):
            storage = await self._c()
            meta = await storage.download_metadata(self._bucket, self._key(key), timeout=self._timeout)
        return _meta(key, meta)

    async def _get_versioned(self, key: str) -> tuple[bytes, str]:
        with self._errors(key):
            storage = await self._c()
            meta = await storage.download_metadata(self._bucket, self._key(key), timeout=self._timeout)
            generation = str(meta["generation"])
            # Read that very generation: the bytes and the token must match.
            data: bytes = await storage._download(
                self._bucket,
                self._key(key),
                params={"alt": "media", "generation": generation},
                timeout=self._timeout,
            )
        return data, generation

    async def _put_if_version(self, key: str, data: Buffer, version: str | None) -> None:
        with self._errors(key):
            storage = await self._c()
            await storage.upload(
                self._bucket,
                self._key(key),
                bytes(data),
                content_type="application/octet-stream",
                parameters={"ifGenerationMatch": "0" if version is None else version},
                force_resumable_upload=False,
                timeout=self._timeout,
            )

    async def _delete(self, key: str) -> None:
        with self._errors(key):
            storage = await self._c()
            try:
                await storage.delete(self._bucket, self._key(key), timeout=self._timeout)
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise

    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        root = f"{self._prefix}/" if self._prefix else ""
        params = {"prefix": root + prefix, "maxResults": str(self._transfer.list_page_size)}
        if cursor:
            params["pageToken"] = cursor
        with self._errors(prefix):
            storage = await self._c()
            resp = await storage.list_objects(self._bucket, params=params, timeout=self._timeout)
        page = [_meta(item["name"][len(root) :], item) for item in resp.get("items", ())]
        return page, resp.get("nextPageToken") or None

    async def _put_single(self, key: str, data: Buffer) -> None:
        with self._errors(key):
            storage = await self._c()
            await storage.upload(
                self._bucket,
                self._key(key),
                bytes(data),
                content_type="application/octet-stream",
                force_resumable_upload=False,
                timeout=self._timeout,
            )

    async def _auth(self, storage: Any) -> dict[str, str]:
        if self._api()[1]:
            return {}
        return {"Authorization": f"Bearer {await storage.token.get()}"}

    async def _put_multipart(self, key: str, size: int, read: ReadPart) -> None:
        # A resumable upload sent in chunks, one at a time (GCS requires them in order).
        chunk = max(_GRANULE, self._transfer.part_size // _GRANULE * _GRANULE)
        root, _ = self._api()
        with self._errors(key):
            storage = await self._c()
            session = storage.session.session
            url = f"{root}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o"
            headers = {
                **await self._auth(storage),
                "Content-Type": "application/json; charset=UTF-8",
                "X-Upload-Content-Type": "application/octet-stream",
                "X-Upload-Content-Length": str(size),
            }
            params = {"uploadType": "resumable", "name": self._key(key)}
            async with session.post(
                url, params=params, headers=headers, data=b'{"contentType": "application/octet-stream"}'
            ) as resp:
                resp.raise_for_status()
                session_uri = resp.headers["Location"]
            next_read: asyncio.Task[bytes] | None = asyncio.ensure_future(read(0, min(chunk, size)))
            try:
                for start in range(0, size, chunk):
                    end = min(start + chunk, size)
                    assert next_read is not None
                    data = await next_read
                    # Read the next chunk from disk while this one is on the wire.
                    next_read = (
                        asyncio.ensure_future(read(end, min(end + chunk, size))) if end < size else None
                    )
                    await self._put_chunk(session, session_uri, storage, key, data, start, size)
            finally:
                if next_read is not None:
                    next_read.cancel()

    async def _put_chunk(
        self, session: Any, session_uri: str, storage: Any, key: str, data: bytes, start: int, size: int
    ) -> None:
        end = start + len(data)
        headers = {**await self._auth(storage), "Content-Range": f"bytes {start}-{end - 1}/{size}"}
        async with session.put(session_uri, data=data, headers=headers, allow_redirects=False) as resp:
            if resp.status in (200, 201) or (resp.status == 308 and end < size):
                return
            resp.raise_for_status()
            raise store_error(
                StoreError,
                f"{self.url_for(key)}: resumable upload answered {resp.status} at byte {end} of {size}",
                url=self.url_for(key),
                status=resp.status,
            )


def _meta(key: str, item: dict[str, Any]) -> ObjectMeta:
    updated = item.get("updated")
    mtime = datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp() if updated else None
    return ObjectMeta(key, int(item.get("size", 0)), item.get("etag") or item.get("md5Hash"), mtime)


def _translate(exc: Exception, url: str, byte_range: tuple[int, int] | None) -> StoreError:
    import aiohttp

    where = f"{url}{range_text(byte_range)}"
    status = getattr(exc, "status", None)
    if isinstance(exc, aiohttp.ClientResponseError) or isinstance(status, int):
        detail = f"status {status}: {getattr(exc, 'message', '') or type(exc).__name__}"
        if status == 412:
            return store_error(
                PreconditionFailedError, f"{where}: changed by another writer ({detail})", url=url, status=412
            )
        if status == 404:
            return store_error(ObjectNotFoundError, f"{where}: not found ({detail})", url=url, status=404)
        if status in (401, 403):
            return store_error(
                StorePermissionError,
                f"{where}: access denied ({detail}); check service_file / GOOGLE_APPLICATION_CREDENTIALS "
                "and the bucket's IAM permissions",
                url=url,
                status=status,
            )
        if status in (408, 429) or (isinstance(status, int) and status >= 500):
            return store_error(
                TransientStoreError, f"{where}: {detail}", url=url, status=status, byte_range=byte_range
            )
        return store_error(StoreError, f"{where}: {detail}", url=url, status=status, byte_range=byte_range)
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError):
        return store_error(
            TransientStoreError, f"{where}: {type(exc).__name__}: {exc}", url=url, byte_range=byte_range
        )
    return store_error(StoreError, f"{where}: {type(exc).__name__}: {exc}", url=url, byte_range=byte_range)
