"""Helpers shared by the store backends: key checks, range planning, loop-bound clients, errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from aiolit.errors import StoreError

C = TypeVar("C")
E = TypeVar("E", bound=StoreError)

MiB = 1 << 20

# Clients inherited through fork. They are kept referenced and never touched: closing or
# collecting them in the child would tear down connections the parent is still using.
_FORK_ORPHANS: list[object] = []


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid relative object key, else raise ``ValueError``."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"object key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\x00" in key or "\\" in key:
        raise ValueError(f"object key {key!r} must be relative, with '/' separators and no NUL")
    if any(part in ("", ".", "..") for part in key.split("/")[:-1]) or key.split("/")[-1] in (".", ".."):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' path segment")
    return key


def check_range(start: int, end: int) -> None:
    """Validate a ``[start, end)`` byte range (``end`` past the object's end is allowed)."""
    if start < 0 or end < start:
        raise ValueError(f"invalid byte range [{start}, {end}): need 0 <= start <= end")


def store_error(
    cls: type[E],
    message: str,
    *,
    url: str,
    status: int | None = None,
    byte_range: tuple[int, int] | None = None,
) -> E:
    """Build a store error carrying ``url``, ``status`` and ``byte_range`` attributes."""
    err = cls(message)
    err.url = url  # type: ignore[attr-defined]
    err.status = status  # type: ignore[attr-defined]
    err.byte_range = byte_range  # type: ignore[attr-defined]
    return err


def range_text(byte_range: tuple[int, int] | None) -> str:
    return "" if byte_range is None else f" bytes [{byte_range[0]}, {byte_range[1]})"


def parse_checksum(spec: object) -> tuple[str, str] | None:
    """A chunk checksum ``"<hashlib algorithm>:<hex digest>"`` -> ``(algorithm, lowercase hex)``.

    None when ``spec`` is not of that form or names an algorithm this Python's hashlib lacks.
    """
    if not isinstance(spec, str):
        return None
    algo, sep, expected = spec.partition(":")
    if not sep or algo not in hashlib.algorithms_available:
        return None
    return algo, expected.lower()


def hash_file(path: str | os.PathLike[str], algo: str) -> str:
    """The hex digest of the file at ``path`` with hashlib's ``algo``, read 1 MiB at a time."""
    digest = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_mismatch(algo: str, digest: str, expected: str) -> str:
    """The one wording of a failed checksum, for errors and traces."""
    return f"{algo} checksum {digest} != {expected}"


def plan_spans(ranges: Sequence[tuple[int, int]], coalesce: int) -> list[tuple[int, int]]:
    """Merge the non-empty ``ranges`` whose gaps are at most ``coalesce`` bytes, sorted by start."""
    spans: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if spans and start <= spans[-1][1] + coalesce:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def split_span(start: int, end: int, part_size: int) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` into consecutive pieces of at most ``part_size`` bytes."""
    return [(s, min(s + part_size, end)) for s in range(start, end, part_size)] or [(start, end)]


async def gather_bounded(factories: Sequence[Callable[[], Awaitable[C]]], limit: int) -> list[C]:
    """Run the coroutine ``factories`` with at most ``limit`` in flight; results in order.

    The first failure cancels the rest, so no request outlives the call.
    """
    if len(factories) == 1:
        return [await factories[0]()]
    results: list[C | None] = [None] * len(factories)
    queue = iter(enumerate(factories))

    async def worker() -> None:
        for i, factory in queue:
            results[i] = await factory()

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(factories)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results  # type: ignore[return-value]


class _LoopExit:
    """Closers to run when a caller's event loop shuts down (``asyncio.run`` returning).

    An ``async for`` left by ``break`` is closed by a task the loop creates when the iterator is
    collected, and ``asyncio.run`` cancels every task still pending when the main coroutine
    returns: a close in flight then, or not yet started, would leave its HTTP session open. The
    loop's last step before it closes is ``shutdown_asyncgens()``, which finishes every async
    generator still alive on it; one kept alive here runs the closers left at that point.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.closers: dict[int, Callable[[], Awaitable[None]]] = {}
        self.keeper = self._keep()
        _step(self.keeper)  # first iteration on this loop: the loop now tracks the generator

    async def _keep(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            for closer in list(self.closers.values()):
                with contextlib.suppress(Exception):
                    await closer()
            self.closers.clear()
            _EXITS.pop(id(self.loop), None)


def _step(agen: AsyncGenerator[None, None]) -> None:
    # Advance an async generator whose step does not await (to its yield, or to its end).
    with contextlib.suppress(StopIteration, StopAsyncIteration):
        agen.asend(None).send(None)


_EXITS: dict[int, _LoopExit] = {}


def close_at_loop_exit(loop: asyncio.AbstractEventLoop, closer: Callable[[], Awaitable[None]]) -> None:
    """Run ``closer`` when ``loop`` shuts down, unless :func:`forget_at_loop_exit` comes first."""
    from aiolit import _loop

    if _loop.in_loop_thread() or sys.get_asyncgen_hooks().finalizer is None:
        return  # aiolit's own loop closes its clients itself; a loop without hooks cannot tell us
    hook = _EXITS.get(id(loop))
    if hook is None or hook.loop is not loop:
        hook = _EXITS[id(loop)] = _LoopExit(loop)
    hook.closers[id(closer)] = closer


def forget_at_loop_exit(
    loop: asyncio.AbstractEventLoop | None, closer: Callable[[], Awaitable[None]]
) -> None:
    """``closer`` has run: drop it (and the loop's keeper once it holds nothing)."""
    hook = _EXITS.get(id(loop))
    if hook is None or hook.loop is not loop:
        return
    hook.closers.pop(id(closer), None)
    if not hook.closers:
        del _EXITS[id(loop)]
        _step(hook.keeper)  # ends it here and now: nothing is left for the loop to finalize


class LoopLocal(Generic[C]):
    """One lazily built client per (process, event loop).

    A client made in another loop or before a ``fork`` is dropped, never reused: aiohttp sessions
    are bound to their loop and sockets must not be shared between processes. Pickles as empty.
    """

    def __init__(self) -> None:
        self._client: C | None = None
        self._closer: Callable[[], Awaitable[None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._lock: asyncio.Lock | None = None
        self._lock_owner: tuple[int, asyncio.AbstractEventLoop | None] = (0, None)

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]

    def _current(self, loop: asyncio.AbstractEventLoop) -> C | None:
        if self._client is not None and self._pid == os.getpid() and self._loop is loop:
            return self._client
        return None

    async def get(self, create: Callable[[], Awaitable[tuple[C, Callable[[], Awaitable[None]]]]]) -> C:
        """Return this loop's client, building it with ``create`` (once) if needed."""
        loop = asyncio.get_running_loop()
        client = self._current(loop)
        if client is not None:
            return client
        owner = (os.getpid(), loop)
        if self._lock is None or self._lock_owner[0] != owner[0] or self._lock_owner[1] is not loop:
            self._lock, self._lock_owner = asyncio.Lock(), owner
        async with self._lock:
            client = self._current(loop)
            if client is not None:
                return client
            self._discard()
            client, closer = await create()
            self._client, self._closer, self._loop, self._pid = client, closer, loop, os.getpid()
            close_at_loop_exit(loop, closer)
            return client

    def _discard(self) -> None:
        """Forget a client that belongs to another loop; close it there if that loop still runs."""
        old_client, old_loop, closer, pid = self._client, self._loop, self._closer, self._pid
        self._client = self._closer = self._loop = None
        if old_client is not None and pid != os.getpid():
            _FORK_ORPHANS.append(old_client)
            return
        if closer is None or old_loop is None:
            return
        if old_loop.is_running() and not old_loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(_call(closer, old_loop), old_loop)

    async def aclose(self) -> None:
        """Close the client if it belongs to the running loop; otherwise just forget it."""
        loop = asyncio.get_running_loop()
        if self._current(loop) is not None and self._closer is not None:
            closer = self._closer
            self._client = self._closer = self._loop = None
            await closer()  # cancelled midway: the loop's exit finishes it (the close is idempotent)
            forget_at_loop_exit(loop, closer)
        else:
            self._discard()


async def _call(fn: Callable[[], Awaitable[None]], loop: asyncio.AbstractEventLoop) -> None:
    await fn()
    forget_at_loop_exit(loop, fn)
