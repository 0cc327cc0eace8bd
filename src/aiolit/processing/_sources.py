"""Input sources for ``optimize``/``map``: sequences, iterables, async iterables and queues.

Every source becomes either a *static* list (its length is known, so it can be split into contiguous
per-worker ranges) or a *stream* (an async iterator of ``(position, item)`` pairs consumed while the
workers run). Queues are always streams: they end with the :data:`ALL_DONE` sentinel.
"""

from __future__ import annotations

import asyncio
import queue as queue_module
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALL_DONE",
    "Source",
    "batched",
    "open_source",
    "ranges_stream",
    "sequential_split",
]

#: The sentinel ending a queue input (the same string LitData uses). One is enough, whatever the
#: number of workers.
ALL_DONE = "ALL_DONE"


def sequential_split(num_items: int, num_parts: int) -> list[range]:
    """Split ``range(num_items)`` into contiguous parts as LitData does.

    Each part gets ``num_items // num_parts`` items and the remainder goes one each to the *last*
    parts (20 items over 3 parts gives 6, 7, 7).
    """
    if num_parts <= 0:
        raise ValueError(f"num_parts must be positive, got {num_parts}")
    base, extra = divmod(num_items, num_parts)
    sizes = [base + (1 if part >= num_parts - extra else 0) for part in range(num_parts)]
    parts: list[range] = []
    start = 0
    for size in sizes:
        parts.append(range(start, start + size))
        start += size
    return parts


def batched(items: Sequence[Any], batch_size: int) -> list[list[Any]]:
    """Group items into lists of ``batch_size`` (the last one may be shorter)."""
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


async def ranges_stream(
    items: Sequence[Any], ranges: Iterable[Sequence[int]]
) -> AsyncIterator[tuple[int, Any]]:
    """Stream ``(position, item)`` for the positions of ``ranges``, in order."""
    for part in ranges:
        for i in part:
            yield i, items[i]


def _is_mp_queue(obj: Any) -> bool:
    # multiprocessing.Queue is a factory; its instances come from multiprocessing.queues.
    import multiprocessing.queues

    return isinstance(obj, multiprocessing.queues.Queue | multiprocessing.queues.SimpleQueue)


def _is_end(item: Any) -> bool:
    return isinstance(item, str) and item == ALL_DONE


@dataclass
class Source:
    """A normalized input source.

    Attributes
    ----------
    items
        The inputs when they are known up front (a static source), else ``None``.
    stream
        An async iterator of ``(position, item)`` for streaming sources, else ``None``.
    is_queue
        True for queue inputs (always streamed, order not defined).
    """

    items: list[Any] | None = None
    stream: AsyncIterator[tuple[int, Any]] | None = None
    is_queue: bool = False

    async def materialize(self) -> list[Any]:
        """Read a streaming source to the end and return its items (in arrival order)."""
        if self.items is not None:
            return self.items
        assert self.stream is not None
        self.items = [item async for _, item in self.stream]
        self.stream = None
        return self.items


async def _iterate_sync(iterable: Iterable[Any]) -> AsyncIterator[tuple[int, Any]]:
    # A user iterable may block (it may read files or sockets); pull it in a thread, in runs.
    iterator = iter(iterable)
    position = 0

    def next_run() -> list[Any]:
        run: list[Any] = []
        for item in iterator:
            run.append(item)
            if len(run) >= 64:
                break
        return run

    while run := await asyncio.to_thread(next_run):
        for item in run:
            yield position, item
            position += 1


async def _iterate_async(iterable: AsyncIterable[Any]) -> AsyncIterator[tuple[int, Any]]:
    position = 0
    async for item in iterable:
        yield position, item
        position += 1


async def _iterate_asyncio_queue(q: asyncio.Queue[Any]) -> AsyncIterator[tuple[int, Any]]:
    position = 0
    while True:
        item = await q.get()
        if _is_end(item):
            return
        yield position, item
        position += 1


async def _iterate_mp_queue(q: Any) -> AsyncIterator[tuple[int, Any]]:
    # A thread blocks on the queue so the loop never does; it polls a stop flag so that a cancelled
    # run does not leave it stuck in get() forever.
    stop = threading.Event()

    def get_one() -> Any:
        while not stop.is_set():
            try:
                return q.get(timeout=0.2)
            except queue_module.Empty:
                continue
        raise asyncio.CancelledError

    position = 0
    try:
        while True:
            item = await asyncio.to_thread(get_one)
            if _is_end(item):
                return
            yield position, item
            position += 1
    finally:
        stop.set()


def open_source(inputs: Any, queue: Any) -> Source:
    """Normalize ``inputs`` or ``queue`` into a :class:`Source`.

    Raises
    ------
    ValueError
        If both or neither of ``inputs`` and ``queue`` are given, or ``inputs`` is not iterable.
    """
    if (inputs is None) == (queue is None):
        raise ValueError("Exactly one of `inputs` or `queue` must be provided (got both or neither).")
    if queue is not None:
        if isinstance(queue, asyncio.Queue):
            return Source(stream=_iterate_asyncio_queue(queue), is_queue=True)
        if _is_mp_queue(queue) or hasattr(queue, "get"):
            return Source(stream=_iterate_mp_queue(queue), is_queue=True)
        raise ValueError(
            f"`queue` must be a multiprocessing.Queue or an asyncio.Queue, got {type(queue).__name__}"
        )
    if isinstance(inputs, asyncio.Queue):
        return Source(stream=_iterate_asyncio_queue(inputs), is_queue=True)
    if _is_mp_queue(inputs):
        return Source(stream=_iterate_mp_queue(inputs), is_queue=True)
    if isinstance(inputs, str | bytes):
        raise ValueError("`inputs` must be a sequence or an iterable of inputs, not a single str/bytes")
    if isinstance(inputs, Sequence) or (hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__")):
        # Sequences and sequence-likes (numpy arrays, datasets) have a length: split them statically.
        return Source(items=list(inputs))
    if isinstance(inputs, AsyncIterable):
        return Source(stream=_iterate_async(inputs))
    if isinstance(inputs, Iterable):
        return Source(stream=_iterate_sync(inputs))
    raise ValueError(
        f"`inputs` must be a sequence, an iterable, an async iterable or a queue, got {type(inputs).__name__}"
    )
