"""Amazon S3 and S3-compatible servers, on aiobotocore."""

from __future__ import annotations

import asyncio
import builtins
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
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

__all__ = ["S3Store"]

# storage_options / session_options spellings (LitData passes them to boto3) -> our field names.
_ALIASES = {
    "endpoint_url": "endpoint_url",
    "S3_ENDPOINT_URL": "endpoint_url",
    "AWS_ENDPOINT_URL": "endpoint_url",
    "AWS_ENDPOINT_URL_S3": "endpoint_url",
    "aws_access_key_id": "aws_access_key_id",
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "aws_secret_access_key": "aws_secret_access_key",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "aws_session_token": "aws_session_token",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "region_name": "region_name",
    "AWS_REGION": "region_name",
    "AWS_DEFAULT_REGION": "region_name",
    "profile_name": "profile_name",
    "AWS_PROFILE": "profile_name",
    "unsigned": "unsigned",
    "AWS_NO_SIGN_REQUEST": "unsigned",
    "addressing_style": "addressing_style",
    "verify": "verify",
    "config": "config",
}
# Most bytes one read of a streamed body returns (it returns what is buffered, up to this).
_PIECE = 4 * 2**20
_LOADER: Any = None  # botocore's data loader, shared by every client of this process
_UNSIGNED = "__botocore.UNSIGNED__"  # botocore.UNSIGNED does not survive pickling; store a marker

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchUpload"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "401",
    "403",
}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "TooManyRequests",
    "503",
    "500",
    "502",
    "504",
    "429",
}


def _lazy_http_sessions() -> bool:
    """Whether aiobotocore's HTTP session opens its aiohttp sessions at the first request (3.x)."""
    from aiobotocore.httpsession import AIOHTTPSession

    return hasattr(AIOHTTPSession, "_get_session")


@functools.cache
def _plain_json_loader_class() -> type:
    """botocore's file loader, parsing its model files into plain dicts instead of OrderedDicts.

    The garbage collector tracks every OrderedDict, while a dict holding only strings and numbers
    is untracked. The S3 model and endpoint files parse into ~23,500 OrderedDicts, ~10,500 of
    them such leaves, so every full collection of the process walks ~10,500 fewer objects (a full
    collection here costs 0.5-1 us per tracked object: ~13 ms less for each one, see
    docs/async.md). Dicts keep insertion order, which is all botocore relies on.
    """
    import gzip
    import json
    import os

    import botocore.loaders

    openers: dict[str, Callable[..., Any]] = dict(
        getattr(botocore.loaders, "_JSON_OPEN_METHODS", None) or {".json": open, ".json.gz": gzip.open}
    )

    class PlainJSONFileLoader(botocore.loaders.JSONFileLoader):  # type: ignore[misc]
        def load_file(self, file_path: str) -> Any:
            for ext, opener in openers.items():
                path = file_path + ext
                if os.path.isfile(path):
                    with opener(path, "rb") as fp:
                        return json.loads(fp.read().decode("utf-8"))
            return None

    return PlainJSONFileLoader


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class S3Store(ClientStore):
    """An S3 bucket prefix: ``s3://bucket/prefix``.

    Parameters
    ----------
    url : str
        ``s3://bucket`` or ``s3://bucket/prefix``.
    storage_options : dict, optional
        Accepts LitData's keys: ``endpoint_url`` (or ``S3_ENDPOINT_URL``/``AWS_ENDPOINT_URL``),
        ``aws_access_key_id``/``AWS_ACCESS_KEY_ID``, ``aws_secret_access_key``/``AWS_SECRET_ACCESS_KEY``,
        ``aws_session_token``, ``region_name``, ``config`` (a ``botocore.config.Config``, e.g. with
        ``signature_version=botocore.UNSIGNED``), plus ``unsigned``/``AWS_NO_SIGN_REQUEST`` (anonymous
        requests), ``addressing_style`` (``"path"`` by default when ``endpoint_url`` is set, for
        S3-compatible servers) and ``verify``. Missing credentials come from the usual AWS chain.
    session_options : dict, optional
        ``profile_name``, ``region_name`` and credentials, as for ``boto3.Session``.
    transfer : TransferOptions, optional
        Part size (at least 5 MiB for S3 multipart) and concurrency.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        session_options: dict[str, Any] | None = None,
        transfer: TransferOptions | None = None,
    ) -> None:
        super().__init__(url, transfer)
        rest = url[len("s3://") :] if url.startswith("s3://") else url
        self._bucket, _, prefix = rest.partition("/")
        if not self._bucket:
            raise ValueError(f"S3 URL {url!r} has no bucket; expected s3://bucket/prefix")
        self._prefix = prefix.strip("/")
        opts: dict[str, Any] = {}
        for source in (session_options or {}, storage_options or {}):
            for name, value in source.items():
                if name not in _ALIASES:
                    raise ValueError(
                        f"unknown S3 option {name!r} for {url}; accepted: {sorted(set(_ALIASES))}"
                    )
                opts[_ALIASES[name]] = value
        config = opts.pop("config", None)
        self._config: dict[str, Any] = {}
        if config is not None:
            import botocore

            provided = dict(getattr(config, "_user_provided_options", config))
            if provided.get("signature_version") is botocore.UNSIGNED:
                provided["signature_version"] = _UNSIGNED
            self._config = provided
        if _truthy(opts.pop("unsigned", False)):
            self._config["signature_version"] = _UNSIGNED
        self._opts = opts

    def __repr__(self) -> str:
        endpoint = self._opts.get("endpoint_url")
        return f"S3Store({self._url!r}" + (f", endpoint_url={endpoint!r})" if endpoint else ")")

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    async def _new_client(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
        from aiolit import _loop

        if _lazy_http_sessions() and "http_session_cls" not in self._config:
            # Building a client is ~15 ms of CPU (session, handlers, client class, endpoint
            # rules): done on aiolit's loop thread, where the GIL's switch interval bounds what
            # it costs the caller's loop. Safe because this aiobotocore opens its aiohttp
            # session lazily, in the loop of the first request: the built client holds nothing
            # bound to the loop that built it (its asyncio locks bind on first contention).
            context, client = await _loop.hop(self._build_client())
        else:
            context, client = await self._build_client()

        async def close() -> None:
            await context.__aexit__(None, None, None)

        return client, close

    async def _build_client(self) -> tuple[Any, Any]:
        import botocore
        from aiobotocore.config import AioConfig
        from aiobotocore.session import AioSession

        global _LOADER
        opts = dict(self._opts)
        session = AioSession(profile=opts.pop("profile_name", None))
        # Parsing the S3 service model takes ~0.2 s; the loader is plain data, so share it.
        if _LOADER is None:
            _LOADER = session.get_component("data_loader")
            _LOADER.file_loader = _plain_json_loader_class()()
        else:
            session.register_component("data_loader", _LOADER)
        cfg: dict[str, Any] = {
            # Our retry wrapper owns retries; botocore's would multiply the attempts.
            "retries": {"mode": "standard", "total_max_attempts": 1},
            "max_pool_connections": max(self._transfer.max_connections, self._transfer.max_concurrency),
            # CRC checksums of every body cost CPU and some S3-compatible servers reject them.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
        if opts.get("endpoint_url") and not opts.get("addressing_style"):
            cfg["s3"] = {"addressing_style": "path"}
        if opts.get("addressing_style"):
            cfg["s3"] = {"addressing_style": opts.pop("addressing_style")}
        cfg.update(self._config)
        if cfg.get("signature_version") == _UNSIGNED:
            cfg["signature_version"] = botocore.UNSIGNED
        kwargs = {k: v for k, v in opts.items() if v is not None and k != "addressing_style"}
        if str(kwargs.get("endpoint_url", "")).startswith("http://") and "verify" not in kwargs:
            # Plain HTTP has no certificates to check; skipping verification saves loading the
            # CA bundle (~0.3 s of CPU) every time a process builds its client.
            kwargs["verify"] = False
        context = session.create_client("s3", config=AioConfig(**cfg), **kwargs)
        client = await context.__aenter__()
        return context, client

    def _translate(self, exc: Exception, url: str, byte_range: tuple[int, int] | None) -> StoreError:
        return _translate(exc, url, byte_range)

    async def _get(self, key: str) -> bytes:
        with self._errors(key):
            client = await self._c()
            resp = await client.get_object(Bucket=self._bucket, Key=self._key(key))
            async with resp["Body"] as body:
                data: bytes = await body.read()
            return data

    async def _iter_get(self, key: str) -> AsyncGenerator[bytes, None]:
        # The body as aiohttp hands it over (one piece per socket read, up to a few hundred kB),
        # not joined into one object-sized bytes: get_to_file hashes and writes it in blocks.
        # botocore checks the length against Content-Length at the end (a cut body raises).
        with self._errors(key):
            client = await self._c()
            resp = await client.get_object(Bucket=self._bucket, Key=self._key(key))
            async with resp["Body"] as body:
                while True:
                    piece: bytes = await body.read(_PIECE)
                    if not piece:
                        break
                    yield piece

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        with self._errors(key, (start, end)):
            client = await self._c()
            try:
                resp = await client.get_object(
                    Bucket=self._bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}"
                )
            except Exception as exc:
                if _code(exc) in ("InvalidRange", "416"):
                    return b""  # start at or past the end: clamp like a slice
                raise
            async with resp["Body"] as body:
                data: bytes = await body.read()
            if not resp.get("ContentRange"):
                data = data[start:end]  # a server that ignored Range sent the whole object
            return data

    async def _head(self, key: str) -> ObjectMeta:
        try:
            with self._errors(key):
                client = await self._c()
                resp = await client.head_object(Bucket=self._bucket, Key=self._key(key))
        except StorePermissionError:
            # A HEAD response has no body, so a 403 says only "Forbidden". A one-byte GET makes the
            # server explain (SignatureDoesNotMatch, InvalidAccessKeyId, ...), as on the read path.
            with self._errors(key):
                client = await self._c()
                resp = await client.get_object(Bucket=self._bucket, Key=self._key(key), Range="bytes=0-0")
                async with resp["Body"] as body:
                    await body.read()
            raise
        modified = resp.get("LastModified")
        return ObjectMeta(
            key, int(resp["ContentLength"]), resp.get("ETag"), modified.timestamp() if modified else None
        )

    async def _get_versioned(self, key: str) -> tuple[bytes, str]:
        with self._errors(key):
            client = await self._c()
            resp = await client.get_object(Bucket=self._bucket, Key=self._key(key))
            async with resp["Body"] as body:
                data: bytes = await body.read()
            return data, str(resp["ETag"])

    async def _put_if_version(self, key: str, data: Buffer, version: str | None) -> None:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        with self._errors(key):
            client = await self._c()
            await client.put_object(Bucket=self._bucket, Key=self._key(key), Body=bytes(data), **condition)

    async def _delete(self, key: str) -> None:
        with self._errors(key):
            client = await self._c()
            await client.delete_object(Bucket=self._bucket, Key=self._key(key))

    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        root = f"{self._prefix}/" if self._prefix else ""
        kwargs: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": root + prefix,
            "MaxKeys": self._transfer.list_page_size,
        }
        if cursor:
            kwargs["ContinuationToken"] = cursor
        with self._errors(prefix):
            client = await self._c()
            resp = await client.list_objects_v2(**kwargs)
        page = [
            ObjectMeta(
                item["Key"][len(root) :],
                int(item["Size"]),
                item.get("ETag"),
                item["LastModified"].timestamp() if item.get("LastModified") else None,
            )
            for item in resp.get("Contents", ())
        ]
        token = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
        return page, token

    async def _put_single(self, key: str, data: Buffer) -> None:
        with self._errors(key):
            client = await self._c()
            await client.put_object(Bucket=self._bucket, Key=self._key(key), Body=bytes(data))

    async def _mp_begin(self, key: str) -> Any:
        with self._errors(key):
            client = await self._c()
            resp = await client.create_multipart_upload(Bucket=self._bucket, Key=self._key(key))
            return resp["UploadId"]

    async def _mp_part(self, key: str, upload: Any, number: int, data: bytes) -> Any:
        with self._errors(key):
            client = await self._c()
            resp = await client.upload_part(
                Bucket=self._bucket, Key=self._key(key), UploadId=upload, PartNumber=number, Body=data
            )
            return {"ETag": resp["ETag"], "PartNumber": number}

    async def _mp_complete(self, key: str, upload: Any, parts: builtins.list[Any]) -> None:
        with self._errors(key):
            client = await self._c()
            await client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key(key), UploadId=upload, MultipartUpload={"Parts": parts}
            )

    async def _mp_abort(self, key: str, upload: Any) -> None:
        client = await self._c()
        await client.abort_multipart_upload(Bucket=self._bucket, Key=self._key(key), UploadId=upload)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _translate(exc: Exception, url: str, byte_range: tuple[int, int] | None) -> StoreError:
    """Map a botocore/aiohttp failure to the aiolit error tree, without echoing credentials."""
    import aiohttp
    import botocore.exceptions as bex

    where = f"{url}{range_text(byte_range)}"
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        code = _code(exc)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = response.get("Error", {}).get("Message") or ""
        detail = f"status {status} {code}" + (f": {message}" if message else "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
            return store_error(
                PreconditionFailedError,
                f"{where}: changed by another writer ({detail})",
                url=url,
                status=status,
            )
        if code in _NOT_FOUND or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return store_error(
                ObjectNotFoundError, f"{where}: {what} not found ({detail})", url=url, status=404
            )
        if code in _DENIED or status in (401, 403):
            return store_error(
                StorePermissionError,
                f"{where}: access denied ({detail}); check the credentials, endpoint_url, region "
                "and the bucket policy (or pass unsigned=True for a public bucket)",
                url=url,
                status=status,
            )
        if code in _TRANSIENT or (isinstance(status, int) and status >= 500):
            return store_error(
                TransientStoreError, f"{where}: {detail}", url=url, status=status, byte_range=byte_range
            )
        return store_error(StoreError, f"{where}: {detail}", url=url, status=status, byte_range=byte_range)
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return store_error(
            StorePermissionError,
            f"{where}: no AWS credentials found; pass aws_access_key_id/aws_secret_access_key in "
            "storage_options, set AWS_* variables or a profile, or use unsigned=True",
            url=url,
        )
    transient = (
        bex.ConnectionError,
        bex.HTTPClientError,
        bex.IncompleteReadError,
        bex.ResponseStreamingError,
        aiohttp.ClientError,
        asyncio.TimeoutError,
        ConnectionError,
    )
    if isinstance(exc, transient):
        return store_error(
            TransientStoreError,
            f"{where}: {type(exc).__name__}: {exc}",
            url=url,
            byte_range=byte_range,
        )
    return store_error(StoreError, f"{where}: {type(exc).__name__}: {exc}", url=url, byte_range=byte_range)
