"""A wrapper store that retries transient failures under a bounded :class:`RetryPolicy`."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiolit.errors import RetriesExhaustedError, StoreError, TransientStoreError
from aiolit.stores._base import Buffer, ObjectMeta, Store
from aiolit.stores._util import range_text, store_error

__all__ = ["RetryPolicy", "RetryStore"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry a failed request.

    Only :class:`~aiolit.errors.TransientStoreError` is retried (5xx, throttling, timeouts,
    connection resets, short reads). Not-found and permission errors fail at once.

    Attributes
    ----------
    max_attempts : int
        Attempts per request, the first included.
    initial_backoff : float
        Upper bound in seconds of the first wait; it doubles per attempt.
    max_backoff : float
        Cap in seconds of the wait between two attempts.
    deadline : float
        Seconds after the first attempt past which no new attempt starts.
    jitter : bool
        Full jitter: wait a uniform random time in ``[0, bound]`` (spreads out retry storms).
    connect_attempts : int
        Attempts of a request that cannot connect at all (connection refused, unknown host) while
        the store has not reached its server yet: a wrong or down endpoint fails in about a second
        instead of spending ``max_attempts``. Once one request got an answer, connection failures
        are retried like any transient error.

    Set it per call with ``open_store(..., retry=RetryPolicy(...))``, or through
    ``storage_options``: ``{"retry": RetryPolicy(...)}`` (``False`` for no retries), or any field
    prefixed with ``retry_`` (``{"retry_max_attempts": 3, "retry_connect_attempts": 10}``).
    """

    max_attempts: int = 10
    initial_backoff: float = 0.1
    max_backoff: float = 15.0
    deadline: float = 300.0
    jitter: bool = True
    connect_attempts: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.connect_attempts < 1:
            raise ValueError(f"RetryPolicy.connect_attempts must be >= 1, got {self.connect_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.deadline <= 0:
            raise ValueError("RetryPolicy backoffs must be >= 0 and the deadline > 0")

    @classmethod
    def pop_from(cls, options: dict[str, Any]) -> RetryPolicy | bool | None:
        """Remove the retry settings from ``storage_options``; None when there are none.

        Raises
        ------
        ValueError
            A ``retry`` value that is not a RetryPolicy, a bool or a dict of its fields, or an
            unknown ``retry_*`` name.
        """
        value = options.pop("retry", None)
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        prefixed = {k[len("retry_") :]: options.pop(k) for k in list(options) if k.startswith("retry_")}
        unknown = sorted(set(prefixed) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown retry option(s) {['retry_' + u for u in unknown]}; accepted: "
                f"{['retry_' + f for f in fields]}"
            )
        if isinstance(value, dict):
            prefixed = {**value, **prefixed}
            value = None
        if value is not None and not isinstance(value, RetryPolicy | bool):
            raise ValueError(f"storage option 'retry' must be a RetryPolicy, a bool or a dict, got {value!r}")
        if not prefixed:
            return value
        if value is False:
            raise ValueError("storage option retry=False cannot be combined with retry_* settings")
        base = value if isinstance(value, RetryPolicy) else cls()
        return dataclasses.replace(base, **prefixed)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        bound = min(self.max_backoff, self.initial_backoff * (2.0 ** (attempt - 1)))
        return random.uniform(0.0, bound) if self.jitter else bound


_CONNECT_ERRORS = (
    "EndpointConnectionError",  # botocore
    "ClientConnectorError",  # aiohttp (gcloud-aio, azure's aiohttp transport)
    "ClientConnectorDNSError",
    "ServiceRequestError",  # azure-core: the request never reached the service
    "ConnectError",  # httpx
)


def _cannot_connect(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says no connection could be made at all."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (
            isinstance(current, ConnectionRefusedError | socket.gaierror)
            or type(current).__name__ in _CONNECT_ERRORS
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


class RetryStore(Store):
    """Wrap ``inner`` so that each request is retried under ``policy``.

    The generic helpers (``get_ranges``, ``get_to_file``, ``exists``, ``list``) run on top of the
    retried primitives, so every range piece and listing page is retried on its own. A range read
    that returns fewer bytes than asked, while the object is longer, is a short read and retried.
    """

    def __init__(self, inner: Store, policy: RetryPolicy | None = None) -> None:
        super().__init__(inner.url, inner.transfer)
        self._inner = inner
        self._policy = policy or RetryPolicy()
        self._reached = False  # some request got an answer from the server

    @property
    def inner(self) -> Store:
        """The wrapped store."""
        return self._inner

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @property
    def is_local(self) -> bool:
        return self._inner.is_local

    def __repr__(self) -> str:
        return f"RetryStore({self._inner!r})"

    async def _retry(
        self,
        op: str,
        key: str,
        call: Callable[[], Awaitable[T]],
        byte_range: tuple[int, int] | None = None,
    ) -> T:
        policy = self._policy
        began = time.monotonic()
        attempt = 0
        unreachable = False
        while True:
            attempt += 1
            try:
                result = await call()
                self._reached = True
                return result
            except TransientStoreError as exc:
                last = exc
                unreachable = not self._reached and _cannot_connect(exc)
                if not unreachable:
                    self._reached = True
            except StoreError:
                self._reached = True
                raise
            wait = policy.backoff(attempt)
            elapsed = time.monotonic() - began
            limit = policy.connect_attempts if unreachable else policy.max_attempts
            if attempt >= limit or elapsed + wait > policy.deadline:
                break
            await asyncio.sleep(wait)
        url = self.url_for(key)
        status = getattr(last, "status", None)
        if unreachable:
            raise store_error(
                RetriesExhaustedError,
                f"{op} {url}{range_text(byte_range)} failed after {attempt} attempts in {elapsed:.1f}s: cannot "
                f"connect to the storage endpoint ({last}). Is the server up, and are the endpoint and "
                "URL right? (A first "
                "connection is tried RetryPolicy.connect_attempts times; raise it with "
                "storage_options={'retry_connect_attempts': N} for a server that is still starting.)",
                url=url,
                byte_range=byte_range,
            ) from last
        raise store_error(
            RetriesExhaustedError,
            f"{op} {url}{range_text(byte_range)} failed after {attempt} attempts in {elapsed:.1f}s "
            f"(last status: {status if status is not None else 'none'}); last error: {last}",
            url=url,
            status=status,
            byte_range=byte_range,
        ) from last

    async def _get(self, key: str) -> bytes:
        return await self._retry("GET", key, lambda: self._inner.get(key))

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        async def attempt() -> bytes:
            data = await self._inner.get_range(key, start, end)
            if len(data) < end - start:
                await self._check_short_read(key, start, end, len(data))
            elif len(data) > end - start:
                raise store_error(
                    StoreError,
                    f"{self.url_for(key)}{range_text((start, end))}: got {len(data)} bytes, more than asked",
                    url=self.url_for(key),
                    byte_range=(start, end),
                )
            return data

        return await self._retry("GET", key, attempt, (start, end))

    async def _download_stream(self, key: str, tmp: str, algo: str | None) -> tuple[int, str | None]:
        # A streamed GET that fails midway (or ends short) starts over: each attempt rewrites
        # the temp file and the digest from the first byte.
        return await self._retry("GET", key, lambda: self._inner._download_stream(key, tmp, algo))

    async def _check_short_read(self, key: str, start: int, end: int, got: int) -> None:
        # Fewer bytes than asked is fine only when the object ends inside the range.
        size = (await self._inner.head(key)).size
        expected = max(0, min(end, size) - start)
        if got != expected:
            raise store_error(
                TransientStoreError,
                f"{self.url_for(key)}{range_text((start, end))}: short read, got {got} of {expected} bytes",
                url=self.url_for(key),
                byte_range=(start, end),
            )

    async def _put_single(self, key: str, data: Buffer) -> None:
        await self._retry("PUT", key, lambda: self._inner.put(key, data))

    async def _put(self, key: str, data: Buffer) -> None:
        await self._retry("PUT", key, lambda: self._inner.put(key, data))

    async def _put_file(self, key: str, path: str, size: int) -> None:
        await self._retry("PUT", key, lambda: self._inner.put_file(key, path))

    async def _head(self, key: str) -> ObjectMeta:
        return await self._retry("HEAD", key, lambda: self._inner.head(key))

    async def _get_versioned(self, key: str) -> tuple[bytes, str]:
        return await self._retry("GET", key, lambda: self._inner.get_versioned(key))

    async def _put_if_version(self, key: str, data: Buffer, version: str | None) -> None:
        # A retried attempt whose first try landed answers "precondition failed": callers that
        # care (optimize's index write) re-read the object to tell the two apart.
        await self._retry("PUT", key, lambda: self._inner.put_if_version(key, data, version))

    async def _delete(self, key: str) -> None:
        await self._retry("DELETE", key, lambda: self._inner.delete(key))

    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        return await self._retry("LIST", prefix, lambda: self._inner._list_page(prefix, cursor))

    async def _aclose(self) -> None:
        await self._inner.aclose()
