"""A wrapper store that retries transient failures under a bounded :class:`RetryPolicy`."""

from __future__ import annotations

import asyncio
import builtins
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

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
    """

    max_attempts: int = 10
    initial_backoff: float = 0.1
    max_backoff: float = 15.0
    deadline: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.deadline <= 0:
            raise ValueError("RetryPolicy backoffs must be >= 0 and the deadline > 0")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        bound = min(self.max_backoff, self.initial_backoff * (2.0 ** (attempt - 1)))
        return random.uniform(0.0, bound) if self.jitter else bound


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
        while True:
            attempt += 1
            try:
                return await call()
            except TransientStoreError as exc:
                last = exc
            wait = policy.backoff(attempt)
            elapsed = time.monotonic() - began
            if attempt >= policy.max_attempts or elapsed + wait > policy.deadline:
                break
            await asyncio.sleep(wait)
        url = self.url_for(key)
        status = getattr(last, "status", None)
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

    async def _delete(self, key: str) -> None:
        await self._retry("DELETE", key, lambda: self._inner.delete(key))

    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        return await self._retry("LIST", prefix, lambda: self._inner._list_page(prefix, cursor))

    async def _aclose(self) -> None:
        await self._inner.aclose()
