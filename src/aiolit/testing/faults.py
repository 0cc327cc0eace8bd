"""A store wrapper that injects latency, transient failures and short reads (for retry tests)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from aiolit.errors import TransientStoreError
from aiolit.stores import ObjectMeta, Store
from aiolit.stores._base import Buffer
from aiolit.stores._util import store_error

__all__ = ["FaultPlan", "FaultyStore"]


@dataclass
class FaultPlan:
    """What to inject; the counters go down as faults are injected.

    Attributes
    ----------
    failures : int
        The next ``failures`` requests (of the operations in ``ops``) raise a
        :class:`~aiolit.errors.TransientStoreError` with ``status`` before reaching the store.
    short_reads : int
        The next ``short_reads`` range reads, or streamed whole-object reads (a single-GET
        ``get_to_file``), return only the first half of the bytes.
    latency : float
        Seconds added before every request.
    status : int
        HTTP status carried by the injected failures.
    ops : frozenset of str
        Operations subject to ``failures``: ``get``, ``get_range``, ``put``, ``head``, ``delete``, ``list``.
    """

    failures: int = 0
    short_reads: int = 0
    latency: float = 0.0
    status: int = 503
    ops: frozenset[str] = field(
        default_factory=lambda: frozenset({"get", "get_range", "put", "head", "delete", "list"})
    )


class FaultyStore(Store):
    """Wrap ``inner`` and inject the faults of ``plan``; :attr:`calls` counts requests per operation."""

    def __init__(self, inner: Store, plan: FaultPlan | None = None) -> None:
        super().__init__(inner.url, inner.transfer)
        self.inner = inner
        self.plan = plan or FaultPlan()
        self.calls: dict[str, int] = {}

    async def _enter(self, op: str, key: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.plan.latency:
            await asyncio.sleep(self.plan.latency)
        if op in self.plan.ops and self.plan.failures > 0:
            self.plan.failures -= 1
            raise store_error(
                TransientStoreError,
                f"{self.url_for(key)}: injected failure (status {self.plan.status})",
                url=self.url_for(key),
                status=self.plan.status,
            )

    async def _get(self, key: str) -> bytes:
        await self._enter("get", key)
        return await self.inner.get(key)

    async def _iter_get(self, key: str) -> AsyncGenerator[bytes, None]:
        # The inner store's own streaming (a real S3 body arrives in pieces); a short read ends
        # the stream after the first half of the object.
        await self._enter("get", key)
        if self.plan.short_reads > 0:
            self.plan.short_reads -= 1
            data = await self.inner.get(key)
            yield data[: len(data) // 2]
            return
        async with contextlib.aclosing(self.inner._iter_get(key)) as stream:
            async for piece in stream:
                yield piece

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        await self._enter("get_range", key)
        data = await self.inner.get_range(key, start, end)
        if self.plan.short_reads > 0 and len(data) > 1:
            self.plan.short_reads -= 1
            return data[: len(data) // 2]
        return data

    async def _put_single(self, key: str, data: Buffer) -> None:
        await self._enter("put", key)
        await self.inner.put(key, data)

    async def _put(self, key: str, data: Buffer) -> None:
        await self._put_single(key, data)

    async def _put_file(self, key: str, path: str, size: int) -> None:
        await self._enter("put", key)
        await self.inner.put_file(key, path)

    async def _head(self, key: str) -> ObjectMeta:
        await self._enter("head", key)
        return await self.inner.head(key)

    async def _delete(self, key: str) -> None:
        await self._enter("delete", key)
        await self.inner.delete(key)

    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        await self._enter("list", prefix)
        return await self.inner._list_page(prefix, cursor)

    async def _aclose(self) -> None:
        await self.inner.aclose()
