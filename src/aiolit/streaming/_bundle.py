"""Several small batches per DataLoader message: a worker's batches travel in bundles.

A torch DataLoader worker hands its main process one message per item: the index request, the
pickled item through a pipe, the feeder and receiver threads, the reorder buffer. That costs
~0.1-0.5 ms of CPU per item on each side, more than reading a small token batch from a cached
chunk (a few µs): with 2 workers on 2 cores a token epoch at batch 8 was bound by it (measured
slower than without workers). So a worker sends its small batches in bundles of growing size
(1, 2, 4, ... up to a cap: the first batch is never held back) and a final empty bundle marking
its end; the loader's process hands them out one batch at a time in exactly the order torch's
round-robin would have (:class:`Unbundle`), so the user sees the same batches in the same order
and the loader's sample count (``state_dict``) stays per batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

__all__ = ["Bundle", "Packer", "Unbundle"]

# Most batches per bundle, and most bytes.
MAX_BATCHES = 32
MAX_BYTES = 4 * 2**20


class Bundle:
    """Consecutive batches of one worker: ``data[:rows[0]]``, the next ``rows[1]`` rows, ...

    One tensor (in shared memory when sent from a worker: one file-descriptor handshake per
    bundle, not per batch). ``last``: the worker has no more batches this pass.
    """

    __slots__ = ("data", "last", "rows")

    def __init__(self, data: Any, rows: list[int], last: bool = False) -> None:
        self.data = data
        self.rows = rows
        self.last = last

    def __reduce__(self) -> tuple[type[Bundle], tuple[Any, list[int], bool]]:
        return Bundle, (self.data, self.rows, self.last)

    def batches(self) -> list[Any]:
        out, at = [], 0
        for n in self.rows:
            out.append(self.data[at : at + n])
            at += n
        return out


class Packer:
    """Builds a worker's token batches as row ranges of bundle tensors and sends them in bundles.

    ``alloc(rows)`` -> ``(tensor, numpy view)``: a new buffer (``TokensLoader.batch_allocator()``).
    :meth:`new` is the ``new`` of :meth:`Run.walk_batches`; :meth:`bundles` turns the batches
    it yields into bundles of 1, 2, 4, ... up to ``cap`` batches, then an empty ``last`` one.
    """

    def __init__(self, alloc: Any, size: int, cap: int) -> None:
        self._alloc = alloc
        self._size = size
        self._cap = max(1, cap)
        self._target = 1
        self._buffer: Any = None
        self._view: Any = None
        self._filled = 0
        self._rows: list[int] = []

    def new(self, rows: int) -> tuple[Any, Any]:
        if self._buffer is None:
            self._buffer, self._view = self._alloc(self._target * self._size)
            self._filled = 0
        a, self._filled = self._filled, self._filled + rows
        self._rows.append(rows)
        return self._buffer[a : self._filled], self._view[a : self._filled]

    def bundles(self, batches: Iterator[Any]) -> Iterator[Bundle]:
        try:
            for _ in batches:
                if len(self._rows) == self._target:
                    yield self._take()
                    self._target = min(2 * self._target, self._cap)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        yield self._take(last=True) if self._rows else Bundle(None, [], last=True)

    def _take(self, last: bool = False) -> Bundle:
        out = Bundle(self._buffer[: self._filled], self._rows, last)
        self._buffer = self._view = None
        self._rows = []
        return out


class Unbundle:
    """The batches of a multi-worker iterator whose workers send :class:`Bundle` items.

    ``worker_of()`` tells which worker sent the item just taken from ``items`` (torch's in-order
    iterator yields them in round-robin order starting at ``first_worker``). Batches come out
    in the order torch would have yielded them unbundled: round-robin over the workers still
    active, starting at ``first_worker``, a worker dropping out after its last batch.
    """

    def __init__(self, items: Iterator[Any], worker_of: Any, num_workers: int, first_worker: int = 0) -> None:
        self._items = items
        self._worker_of = worker_of
        self._order = [(first_worker + i) % num_workers for i in range(num_workers)]
        self._pos = 0
        self._queues: list[deque[Any]] = [deque() for _ in range(num_workers)]
        self._ended = [False] * num_workers
        self._exhausted = False
        self._plain: bool | None = None  # items are not bundles: pass them through
        self.worker = -1  # the worker of the batch just returned

    def __iter__(self) -> Unbundle:
        return self

    def __next__(self) -> Any:
        if self._plain:
            item = next(self._items)
            self.worker = self._worker_of()
            return item
        while self._order:
            if self._pos >= len(self._order):
                self._pos = 0
            w = self._order[self._pos]
            queue = self._queues[w]
            if queue:
                self._pos += 1
                self.worker = w
                return queue.popleft()
            if self._ended[w] or self._exhausted:
                del self._order[self._pos]  # torch skips a worker that has stopped
                continue
            try:
                item = next(self._items)
            except StopIteration:
                self._exhausted = True
                continue
            v = self._worker_of()
            if self._plain is None:
                self._plain = type(item) is not Bundle
                if self._plain:  # workers that do not bundle (the first item says it)
                    self.worker = v
                    return item
            if type(item) is Bundle:
                self._queues[v].extend(item.batches())
                self._ended[v] = self._ended[v] or item.last
            else:
                self._queues[v].append(item)
        raise StopIteration
