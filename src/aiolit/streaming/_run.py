"""One worker's pass over one epoch: the read loop written once, driven sync or async.

:meth:`Run.walk` is a plain generator that yields samples. When it needs a chunk that is not
open yet it yields a :class:`Need` request instead and expects the opened chunk to be sent back.
The sync driver (``StreamingDataset.__iter__``) answers a request by opening an in-place file
directly, or by waiting once on aiolit's loop thread for the prefetcher; the async driver
(``__aiter__``) awaits the prefetcher on the caller's loop. Samples whose chunk is open are
decoded in the consumer's thread with no loop hop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiolit import _trace
from aiolit.streaming import _peer
from aiolit.streaming._prefetch import Prefetcher
from aiolit.streaming._source import DataSource, OpenChunk, finish_through_cancel

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from aiolit.streaming._plan import WorkerPlan

__all__ = ["Need", "Run"]

# Extra GETs the split first chunk may cost, as a fraction of the chunks a pass downloads (the
# issue's bound on requests per epoch is 1.25x LitData's one GET per chunk).
_SPLIT_BUDGET = 0.2

# Samples decoded per ``produce_many`` call: enough to amortize the per-call cost (~4 Python calls
# and a buffer export per sample otherwise), small enough that little is decoded ahead of use.
_BATCH = 32


_CLOSING: set[asyncio.Task[None]] = set()  # prefetcher closes scheduled from the loop thread


class Need:
    """A request from :meth:`Run.walk`: open the chunk of plan step ``step``.

    ``items``, when given, are the chunk's items the walk reads next (in order): a driver may
    answer with an early, partial chunk (``OpenChunk.covers``) holding only a prefix of them, and
    the walk asks again for the rest.

    ``step == -1`` is no request but a pause point after ``count`` samples (``walk(pause=True)``).
    """

    __slots__ = ("count", "items", "step")

    def __init__(self, step: int, items: npt.NDArray[np.int64] | None = None) -> None:
        self.step = step
        self.items = items
        self.count = 0


class Run:
    """The state of one worker's epoch: plan, resume position, prefetcher.

    Parameters
    ----------
    plan
        This worker's plan.
    start
        ``(step, offset)`` to start from (``(0, 0)`` for a fresh epoch).
    source
        The dataset's chunks.
    loader
        Decodes samples.
    produce
        ``produce(chunk, chunk_id, k)`` -> sample (decode + transform, or a subclass'
        ``__getitem__``).
    max_cache_bytes, depth
        This process's cache budget and look-ahead in steps.
    produce_many
        Optional ``produce_many(chunk, chunk_id, ks)`` -> the samples of ``ks`` before ``finish``
        (``finish(produce_many(...)[j])`` equals ``produce(chunk, chunk_id, ks[j])``), or None to
        produce this batch one by one. The walk then decodes up to ``_BATCH`` items per call.
    finish
        Applied to each sample of ``produce_many`` as it is yielded (the transforms): they run
        once per sample, interleaved with the consumer exactly as without batching, and never
        twice when a batch falls back to ``produce``.
    """

    def __init__(
        self,
        plan: WorkerPlan,
        start: tuple[int, int],
        source: DataSource,
        produce: Callable[[OpenChunk, int, int], Any],
        *,
        max_cache_bytes: int,
        depth: int,
        produce_many: Callable[[OpenChunk, int, list[int]], list[Any] | None] | None = None,
        finish: Callable[[Any], Any] | None = None,
    ) -> None:
        self.plan = plan
        self.start = start
        self.source = source
        self.produce = produce
        self.produce_many = produce_many
        self.finish = finish
        self.max_cache_bytes = max_cache_bytes
        self.depth = depth
        self.prefetcher: Prefetcher | None = None
        self.yielded = 0
        self.batch = _BATCH  # samples per decode batch (and between pause points) in walk()
        self.loop: asyncio.AbstractEventLoop | None = None  # set while holding that loop's store
        self._closing: asyncio.Future[None] | None = None
        self.early_left = 0  # see read_early
        # (chunks of the first batches of the workers before this one, of all other workers):
        # see yield_first.
        self._first_of_peers: tuple[list[int], list[int]] = ([], [])
        self._peers_in = False  # the look-ahead no longer waits for co-workers' first chunks
        self.served_early = False
        self._block = (0, 0)

    def read_early(self, items: int, itemsize: int, block_size: int) -> None:
        """Let :meth:`open_sync` serve up to ``items`` token blocks by byte range (cold start).

        For :meth:`walk_batches` over plain token chunks of ``itemsize``-byte tokens: while the
        chunk of the first batch is still downloading, its blocks are read by range instead.
        """
        self.early_left, self._block = items, (itemsize, block_size)

    def yield_first(self, before: list[int], after: list[int]) -> None:
        """Let co-workers' first chunks have the link first (a cold start of whole chunks).

        A DataLoader takes batch 0 from worker 0, batch 1 from worker 1, ...: when every worker
        fetches its first chunk at once, the first batch waits for all of them. With this, the
        first chunk of this worker downloads once the first chunks of the workers ``before`` it
        are in the cache, and its look-ahead once those of the workers ``after`` it are (they
        cannot be evicted meanwhile: their batches are due before this worker's next chunk is).
        Not when early range reads fed the first batch (token datasets).
        """
        self._first_of_peers = (before, after)

    async def _gate(self, first: str | None, name: str) -> None:
        prefetcher = self.prefetcher
        if self.served_early or self._peers_in or prefetcher is None:
            return
        before, after = self._first_of_peers
        names = self.source.names
        wanted = [names[c] for c in (before if name == first else after) if names[c] not in (name, first)]
        if name == first:
            if wanted:
                await _peer.wait_published(prefetcher._cache.directory, wanted)
            return

        def needed() -> bool:  # the reader waits for this chunk now: the look-ahead is over
            return prefetcher.next_use(name) <= prefetcher._pos

        if wanted and not needed():
            await _peer.wait_published(prefetcher._cache.directory, wanted, stop=needed)
        self._peers_in = True

    def walk(self, *, pause: bool = False) -> Generator[Any, OpenChunk | None, None]:
        """Yield this worker's samples from ``start`` on; yields :class:`Need` for unopened chunks.

        ``pause``: also yield a :class:`Need` with ``step == -1`` after every batch of samples
        (``count`` says how many): the async driver's chance to hand its loop back. Batches hold
        ``self.batch`` samples (read at each batch), which that driver lowers for slow samples.
        """
        plan, produce, many, finish = self.plan, self.produce, self.produce_many, self.finish
        marker = Need(-1) if pause else None
        first, offset = self.start
        for k in range(first, len(plan.steps)):
            chunk_id = plan.steps[k].chunk
            chunk = yield Need(k)
            assert chunk is not None
            order = plan.order(k)
            if offset:
                order, offset = order[offset:], 0
            ids = order.tolist()
            b, n = 0, len(ids)
            while b < n:
                batch = ids[b : b + self.batch]
                b += len(batch)
                samples = None
                started = None
                if many is not None:
                    started = _trace.now() if _trace.on else None
                    try:
                        samples = many(chunk, chunk_id, batch)
                    except Exception:
                        # One by one, so the samples before a bad one are still yielded and the
                        # error surfaces at the sample that caused it (as without batching).
                        samples = None
                if samples is None:
                    if _trace.on:
                        for i in batch:
                            yield _decode_one(produce, chunk, chunk_id, i)
                    else:
                        for i in batch:
                            yield produce(chunk, chunk_id, i)
                else:
                    if started is not None:
                        _trace.complete(
                            "decode", "read", started, _trace.now(), {"chunk": chunk_id, "items": len(batch)}
                        )
                    if finish is None:
                        yield from samples
                    else:
                        for sample in samples:
                            yield finish(sample)
                if marker is not None:
                    marker.count = len(batch)
                    yield marker

    def walk_batches(
        self,
        size: int,
        new: Callable[[int], tuple[Any, Any]],
        fill: Callable[[OpenChunk, npt.NDArray[np.int64], int, int, Any, int], None],
    ) -> Generator[Any, OpenChunk | None, None]:
        """:meth:`walk` in batches of ``size`` samples: what a DataLoader would collate.

        The batches are those of the samples :meth:`walk` yields from ``start``, cut every
        ``size`` samples, the last one short. ``new(rows)`` -> ``(batch, buffer)`` allocates a
        batch of ``rows`` samples; ``fill(chunk, order, pos, take, buffer, row)`` writes items
        ``order[pos : pos + take]`` of ``chunk`` into rows ``row : row + take``. A batch may span
        chunks: each chunk's rows are copied while it is open, so no chunk is held past its step.
        """
        plan = self.plan
        first, offset = self.start
        left = sum(plan.steps[k].size for k in range(first, len(plan.steps))) - offset
        batch: Any = None
        buffer: Any = None
        rows = filled = 0
        for k in range(first, len(plan.steps)):
            order = plan.order(k)
            if offset:
                order, offset = order[offset:], 0
            pos, n = 0, len(order)
            chunk: OpenChunk | None = None
            limit = 0  # items of `order` the open chunk holds (all, unless it is an early copy)
            while pos < n:
                if batch is None:
                    rows, filled = min(size, left), 0
                    batch, buffer = new(rows)
                if pos >= limit:
                    chunk = yield Need(k, order[pos : pos + rows - filled])
                    assert chunk is not None
                    limit = n if chunk.covers is None else pos + chunk.covers
                assert chunk is not None
                take = min(rows - filled, limit - pos)
                if _trace.on:
                    started = _trace.now()
                    fill(chunk, order, pos, take, buffer, filled)
                    args = {"chunk": plan.steps[k].chunk, "items": take}
                    _trace.complete("decode", "read", started, _trace.now(), args)
                else:
                    fill(chunk, order, pos, take, buffer, filled)
                pos += take
                filled += take
                if filled == rows:
                    left -= rows
                    out, batch, buffer = batch, None, None
                    yield out
        assert batch is None, "the plan's steps hold fewer samples than their sizes"

    # -- opening chunks -------------------------------------------------------------------------

    def _prefetcher(self) -> Prefetcher:
        if self.prefetcher is None:
            source = self.source
            steps = self.plan.steps
            index_of = {name: i for i, name in enumerate(source.names)}
            cache = source.cache(self.max_cache_bytes)

            uses = [source.names[s.chunk] for s in steps]
            first = uses[self.start[0]] if self.start[0] < len(uses) else None

            # Object stores bill per request: look-ahead chunks come with one GET each (as
            # LitData's). The first chunk, which the reader waits for, comes as parallel range
            # GETs unless early range reads already fed the reader; the extra GETs stay within
            # _SPLIT_BUDGET of the chunk GETs of this pass.
            extra = int(_SPLIT_BUDGET * len(set(uses[self.start[0] :])))

            async def fetch(name: str, tmp: Path) -> None:
                split = name == first and not self.served_early
                await source.fetch(index_of[name], tmp, parts=1 + extra if split else 1)

            mine = set(uses)
            cache.adopt_existing(source.sizes(), mine.__contains__)
            self.prefetcher = Prefetcher(
                cache, uses, source.sizes(), fetch, depth=self.depth, start=self.start[0]
            )
            self.prefetcher.alone = first  # see open_sync: not when early reads feed the reader
            if any(self._first_of_peers):
                self.prefetcher.gate = functools.partial(self._gate, first)
        return self.prefetcher

    def open_sync(self, step: int, items: npt.NDArray[np.int64] | None = None) -> OpenChunk:
        """Open step ``step``'s chunk for a sync consumer (one loop hop only when not local).

        With ``items`` (the blocks the walk reads next) and an early budget left, a chunk that is
        not local yet is answered by an early copy of those blocks read by byte range, while the
        whole chunk downloads behind it (first bytes first: a cold start's first batch needs a
        few kB, not a whole chunk).
        """
        from aiolit import _loop

        chunk_id = self.plan.steps[step].chunk
        if self.source.in_place:
            return self._open(chunk_id, None)
        prefetcher = self._prefetcher()
        if items is not None and self.early_left > 0 and len(items):
            layout = self.source.block_ranges(chunk_id, *self._block)
            if layout is not None and not prefetcher.local(step):
                take = items[: self.early_left]
                self.early_left -= len(take)
                self.served_early = True
                prefetcher.alone = None  # its chunks may stream together behind the ranges
                return _loop.run(self._early(prefetcher, step, chunk_id, take))
            self.early_left = 0  # chunks are arriving: no more early reads
        started = _trace.now() if _trace.on else None
        path = _loop.run(prefetcher.get(step))
        if started is not None:
            self._trace_wait(step, started)
        try:
            return self._open(chunk_id, path)
        except FileNotFoundError:
            # Evicted by a co-worker between download and open: fetch it again.
            if _trace.on:
                _trace.instant("chunk gone, fetching again", "read", chunk=self.source.names[chunk_id])
            _loop.run(_refetch(prefetcher, self.source.names[chunk_id]))
            return self._open(chunk_id, _loop.run(prefetcher.get(step)))

    async def _early(
        self, prefetcher: Prefetcher, step: int, chunk_id: int, items: npt.NDArray[np.int64]
    ) -> OpenChunk:
        started = _trace.now() if _trace.on else None
        try:
            chunk = await self.source.fetch_blocks(chunk_id, items, *self._block)
        finally:
            # The whole chunks start downloading once the ranges are in (or failed): started
            # together, their bulk bytes would queue ahead of the few kB the batch needs.
            prefetcher.advance(step)
        if started is not None:
            args = {"chunk": self.source.names[chunk_id], "step": step, "blocks": len(items)}
            _trace.complete("early ranges", "read", started, _trace.now(), args)
        return chunk

    async def open_async(self, step: int) -> OpenChunk:
        """Open step ``step``'s chunk from a coroutine on the caller's loop."""
        chunk_id = self.plan.steps[step].chunk
        if self.source.in_place:
            return self._open(chunk_id, None)
        if self.loop is None:
            # Hold this loop's store until aclose(): a co-consumer finishing first must not close it.
            self.source.retain_store()
            self.loop = asyncio.get_running_loop()
            self.source.async_runs.add(self)
        prefetcher = self._prefetcher()
        started = _trace.now() if _trace.on else None
        path = await prefetcher.get(step)
        if started is not None:
            self._trace_wait(step, started)
        try:
            return self._open(chunk_id, path)
        except FileNotFoundError:
            if _trace.on:
                _trace.instant("chunk gone, fetching again", "read", chunk=self.source.names[chunk_id])
            prefetcher.refetch(self.source.names[chunk_id])
            return self._open(chunk_id, await prefetcher.get(step))

    def _open(self, chunk_id: int, path: Path | None) -> OpenChunk:
        if not _trace.on:
            return self.source.open_local(chunk_id, path)
        started = _trace.now()
        chunk = self.source.open_local(chunk_id, path)
        args = {"chunk": self.source.names[chunk_id], "bytes": len(chunk.data)}
        _trace.complete("open chunk", "read", started, _trace.now(), args)
        return chunk

    def _trace_wait(self, step: int, started: float) -> None:
        # The consumer blocked on the prefetcher for this step's chunk (~0 when it was ready).
        args = {"chunk": self.source.names[self.plan.steps[step].chunk], "step": step}
        _trace.complete("wait for chunk", "read", started, _trace.now(), args)

    def close_sync(self) -> None:
        """Stop the prefetcher (sync consumers), from any thread.

        On aiolit's loop thread itself (a sync iterator collected there) blocking would
        deadlock: the prefetcher is then closed by a task on that loop.
        """
        from aiolit import _loop

        if self.prefetcher is not None:
            prefetcher, self.prefetcher = self.prefetcher, None
            if _loop.in_loop_thread():
                task = _loop.get_loop().create_task(prefetcher.aclose())
                _CLOSING.add(task)
                task.add_done_callback(_CLOSING.discard)
            else:
                _loop.run(prefetcher.aclose())
        if _trace.on:
            _trace.flush()  # a DataLoader worker's file is complete at the end of each pass

    async def aclose(self) -> None:
        """Stop the prefetcher and release this loop's store (async consumers).

        Idempotent: every caller (the iterator's ``finally``, ``ds.aclose()``) waits for the same
        close, which finishes even if a caller is cancelled meanwhile.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await finish_through_cancel(self._closing)

    async def _close(self) -> None:
        cancelled = False
        if self.prefetcher is not None:
            prefetcher, self.prefetcher = self.prefetcher, None
            try:
                await prefetcher.aclose()
            except asyncio.CancelledError:
                cancelled = True
        if self.loop is not None:
            self.loop = None
            self.source.async_runs.discard(self)
            try:
                await self.source.release_store()
            except asyncio.CancelledError:
                cancelled = True
        if _trace.on:
            _trace.flush()
        if cancelled:
            raise asyncio.CancelledError


def _decode_one(
    produce: Callable[[OpenChunk, int, int], Any], chunk: OpenChunk, chunk_id: int, k: int
) -> Any:
    """``produce(chunk, chunk_id, k)`` in a ``decode`` span (tracing on, one sample at a time)."""
    started = _trace.now()
    sample = produce(chunk, chunk_id, k)
    _trace.complete("decode", "read", started, _trace.now(), {"chunk": chunk_id, "items": 1})
    return sample


async def _refetch(prefetcher: Prefetcher, name: str) -> None:
    prefetcher.refetch(name)
    await asyncio.sleep(0)
