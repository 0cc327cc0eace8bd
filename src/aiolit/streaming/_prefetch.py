"""The per-worker download engine: keeps the next chunks of the read order in the cache.

A :class:`Prefetcher` knows the exact sequence of chunks one worker will read (one name per plan
step). The consumer calls :meth:`Prefetcher.get` with the step it is about to read; that both
says "everything before this step is done" and waits for the step's chunk. A scheduler task keeps
the chunks of the next ``depth`` steps downloading, bounded by ``max_inflight_bytes`` and by the
cache budget (eviction by furthest next use happens here, never in the consumer). Nothing polls:
the scheduler sleeps on an :class:`asyncio.Event`, the consumer on a future per chunk.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from aiolit import _trace
from aiolit.streaming import _peer
from aiolit.streaming._cache import ChunkCache

__all__ = ["Fetch", "Prefetcher"]

# fetch(name, tmp_path): download chunk ``name`` completely into ``tmp_path`` (and verify it).
Fetch = Callable[[str, Path], Awaitable[None]]


class Prefetcher:
    """Download the chunks of ``uses`` ahead of the consumer, into ``cache``.

    Parameters
    ----------
    cache
        Where chunks land; it is also asked to make room before every download.
    uses
        Chunk name of every step of this worker's plan, in read order (names may repeat).
    sizes
        Bytes of every chunk once in the cache.
    fetch
        Coroutine function downloading one chunk into a temporary path.
    depth
        How many steps beyond the current one are kept downloaded (``max_pre_download``).
    max_inflight_bytes
        Bytes of concurrent downloads, beyond the first one, that may be in flight.
    start
        The first step the consumer will ask for (non-zero when resuming).
    """

    def __init__(
        self,
        cache: ChunkCache,
        uses: Sequence[str],
        sizes: Mapping[str, int],
        fetch: Fetch,
        *,
        depth: int = 2,
        max_inflight_bytes: int = 512 * 2**20,
        start: int = 0,
    ) -> None:
        self._cache = cache
        self._uses = list(uses)
        self._sizes = sizes
        self._fetch = fetch
        self._depth = max(0, depth)
        self._max_inflight = max_inflight_bytes
        self._pos = start
        self._steps_of: dict[str, list[int]] = {}
        for step, name in enumerate(self._uses):
            self._steps_of.setdefault(name, []).append(step)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, asyncio.Future[Path]] = {}
        self._failed: dict[str, BaseException] = {}  # look-ahead failures, raised when the chunk is needed
        self._wakeup: asyncio.Event | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._closed = False
        # A chunk that downloads alone: look-ahead starts once it is in (a cold start's first
        # chunk, split into parallel range GETs, gets the whole link before the reader's next).
        self.alone: str | None = None
        # Awaited by every download before it starts (Run: let co-workers' first chunks go first).
        self.gate: Callable[[str], Awaitable[None]] | None = None
        self.downloads = 0  # chunks fetched, for tests and profiling
        self._attempts: dict[str, int] = {}  # downloads started per chunk (kept while tracing)

    # -- the future ---------------------------------------------------------------------------

    def next_use(self, name: str) -> float:
        """Step of the next read of ``name`` at or after the consumer's position (inf: never)."""
        steps = self._steps_of.get(name)
        if not steps:
            return math.inf
        i = bisect.bisect_left(steps, self._pos)
        return float(steps[i]) if i < len(steps) else math.inf

    def _window(self) -> list[str]:
        # Distinct chunks of the current step and the next `depth` steps, soonest first.
        names: list[str] = []
        for step in range(self._pos, min(len(self._uses), self._pos + self._depth + 1)):
            name = self._uses[step]
            if name not in names:
                names.append(name)
        return names

    # -- consumer side ------------------------------------------------------------------------

    async def get(self, step: int) -> Path:
        """Mark steps before ``step`` done and return the path of ``step``'s chunk once it is local."""
        if self._closed:
            raise RuntimeError("aiolit: the prefetcher was closed")
        self._pos = step
        name = self._uses[step]
        self._ensure_started()
        failed = self._failed.get(name)  # kept: look-ahead must not fetch it again either
        if failed is not None:
            raise failed
        if self._cache.has(name) or self._cache.adopt(name, self._sizes[name]):
            self._kick()
            return self._cache.path(name)
        waiter = self._waiters.get(name)
        if waiter is None or waiter.done():
            waiter = self._waiters[name] = asyncio.get_running_loop().create_future()
        self._kick()
        return await asyncio.shield(waiter)

    def local(self, step: int) -> bool:
        """Whether ``step``'s chunk is complete in the cache now (a :meth:`get` would not wait)."""
        name = self._uses[step]
        return name not in self._failed and (
            self._cache.has(name) or self._cache.adopt(name, self._sizes[name])
        )

    def advance(self, step: int) -> None:
        """Like :meth:`get` without waiting: the consumer is at ``step``, start its downloads."""
        if self._closed:
            raise RuntimeError("aiolit: the prefetcher was closed")
        self._pos = step
        self._ensure_started()
        self._kick()

    def refetch(self, name: str) -> None:
        """The consumer found ``name`` gone from disk: forget it so the next get downloads it."""
        self._cache.forget([name])

    # -- scheduler ----------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._scheduler is None:
            self._wakeup = asyncio.Event()
            self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    def _kick(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _schedule(self) -> None:
        assert self._wakeup is not None
        while not self._closed:
            self._wakeup.clear()
            try:
                self._start_downloads()
            except BaseException as exc:  # surface scheduling bugs to whoever waits
                for waiter in self._waiters.values():
                    if not waiter.done():
                        waiter.set_exception(exc)
                raise
            await self._wakeup.wait()

    def _start_downloads(self) -> None:
        window = self._window()
        inflight = sum(self._sizes[n] for n in self._tasks)
        for i, name in enumerate(window):
            if self.alone is not None and self.alone in self._tasks:
                break
            if name in self._tasks or name in self._failed:
                continue
            if self._cache.has(name) or self._cache.adopt(name, self._sizes[name]):
                if name == self.alone:
                    self.alone = None
                self._resolve(name, None)
                continue
            size = self._sizes[name]
            if self._tasks and inflight + size > self._max_inflight:
                break
            pinned = set(window[: i + 1]) | set(self._tasks)
            before = (self._cache.evictions, self._cache.used_bytes) if _trace.on else None
            # The current chunk is fetched even over budget; look-ahead waits for room.
            if not self._cache.reserve(name, size, next_use=self.next_use, pinned=pinned, force=i == 0):
                break
            if before is not None and self._cache.evictions != before[0]:
                _trace.instant(
                    "evict",
                    "cache",
                    chunks=self._cache.evictions - before[0],
                    bytes_freed=before[1] + size - self._cache.used_bytes,
                    room_for=name,
                )
            inflight += size
            self._tasks[name] = asyncio.get_running_loop().create_task(self._download(name))
        if _trace.on:
            _trace.counter(
                "prefetch queue",
                "prefetch",
                downloading=len(self._tasks),
                inflight_mb=inflight / 1e6,
                waiting_consumers=sum(not w.done() for w in self._waiters.values()),
            )
            _trace.counter("cache", "cache", used_mb=self._cache.used_bytes / 1e6)

    async def _download(self, name: str) -> None:
        tmp = self._cache.temp_path(name)
        error: BaseException | None = None
        started = (_trace.now(), self.next_use(name) - self._pos) if _trace.on else None
        lease = None
        try:
            if self.gate is not None:
                await self.gate(name)
            lease = await self._lease(name)
            if lease is not None or not self._cache.adopt_published(name, self._sizes[name]):
                await self._fetch(name, tmp)
                self._cache.commit(name, tmp)
                self.downloads += 1
        except BaseException as exc:
            error = exc
            self._cache.cancel(name)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            _peer.release(lease)
            if started is not None:
                self._trace_download(name, started, error)
            self._tasks.pop(name, None)
            if name == self.alone:
                self.alone = None
            if not self._closed:
                self._resolve(name, error)
                self._kick()

    async def _lease(self, name: str) -> Path | None:
        """Take the node-wide lease of ``name``, waiting while a peer process downloads it.

        Returns the lease (this process downloads), or None when a peer published the chunk
        meanwhile, when no lease can be had here, or when a live peer stays silent too long:
        the caller then adopts the published file or downloads without the lease.
        """
        directory = self._cache.directory
        held = directory / f"{name}{_peer.LEASE_SUFFIX}"
        for _ in range(3):  # bounded: a lease that keeps changing hands is not worth more waits
            lease = _peer.acquire(directory, name)
            if lease is not None:
                if self._cache.path(name).exists():  # published between our checks: no download
                    _peer.release(lease)
                    return None
                return lease
            if not held.exists():
                return None  # no lease can be taken in this directory: download without one
            if await _peer.wait_for_peer(directory, name):
                return None
            if held.exists():
                return None  # a live peer is too slow: download without the lease
        return None

    def _trace_download(self, name: str, started: tuple[float, float], error: BaseException | None) -> None:
        attempt = self._attempts[name] = self._attempts.get(name, 0) + 1
        args: dict[str, object] = {
            "chunk": name,
            "bytes": self._sizes[name],
            "attempt": attempt,  # > 1: fetched again (evicted by a co-worker, or after a failure)
            "steps_ahead": int(started[1]) if started[1] != math.inf else None,  # 0: awaited now
        }
        if error is not None:
            args["error"] = type(error).__name__
        _trace.complete("download", "prefetch", started[0], _trace.now(), args)

    def _resolve(self, name: str, error: BaseException | None) -> None:
        waiter = self._waiters.pop(name, None)
        if waiter is None or waiter.done():
            if error is not None:
                self._failed[name] = error
            return
        if error is None:
            waiter.set_result(self._cache.path(name))
        else:
            waiter.set_exception(error)
            self._failed[name] = error  # the consumer fails on it: look-ahead must not fetch it again

    async def aclose(self) -> None:
        """Cancel the scheduler and every download in flight (their temp files are removed)."""
        self._closed = True
        tasks = list(self._tasks.values())
        if self._scheduler is not None:
            tasks.append(self._scheduler)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for name in list(self._tasks):  # cancelled before they ran: give their reserved room back
            self._cache.cancel(name)
        self._tasks.clear()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()
