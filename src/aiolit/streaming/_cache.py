"""The local chunk cache of one dataset version: atomic publishes, byte accounting, eviction.

One :class:`ChunkCache` lives in each reading process (one per DataLoader worker). It accounts
for the chunk files it published or adopted, and before a download makes room by evicting the
file whose next use is furthest in the future (the plan knows the future exactly). There are no
lock or refcount files: a file is published with ``os.replace`` and evicted with ``os.unlink``;
a reader that already memory-mapped it keeps reading (POSIX), and a reader that finds it gone
asks for it again.

Byte accounting is per process and conservative: a file used by two workers is counted by both.
``peak_bytes`` records the highest accounted total, which the tests check against the budget.

One process may drive several readers of the same dataset at once (sync iteration on aiolit's
loop thread, ``async for`` on another thread's loop, ``ds[i]``): every method takes the cache's
lock, reservations are counted per reader, and a file inside any live reader's window is never
chosen for eviction. Files found on disk are adopted only when they match their index entry
(size, and sha256 when the index carries one).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from aiolit._units import parse_size as _parse_size

__all__ = ["ChunkCache", "parse_size"]

# Suffix of in-flight downloads; never counted, removed by whoever started them.
TMP_MARKER = ".tmp."


def parse_size(value: int | float | str, *, name: str = "max_cache_size") -> int:
    """Convert ``100GB``/``"512MiB"``/``10**9`` to bytes (decimal units, as LitData)."""
    return _parse_size(value, name=name)


class ChunkCache:
    """Chunk files in ``directory``, kept under ``max_bytes`` by evicting by next use.

    Parameters
    ----------
    directory
        Where chunk files are published (created if missing).
    max_bytes
        The byte budget of this process's share of the cache.
    verify
        ``verify(name, path)`` -> None when the file at ``path`` is chunk ``name`` as indexed,
        else what is wrong with it; asked before a file found on disk is adopted.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        *,
        verify: Callable[[str, Path], str | None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._verify = verify
        self._lock = threading.RLock()
        self._files: dict[str, int] = {}  # published or adopted: name -> bytes
        self._reserved: dict[str, int] = {}  # downloads in flight: name -> bytes
        self._reservers: dict[str, int] = {}  # downloads in flight: name -> how many readers
        self._used: dict[str, int] = {}  # name -> tick of its last use (random access evicts LRU)
        self._ticks = itertools.count(1)
        # Each reader's current window (keyed by the reader, dropped with it): never evicted.
        self._pins: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()
        self.peak_bytes = 0
        self.evictions = 0
        self.rejected = 0  # files found on disk that did not match their index entry

    # -- accounting ---------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes of the files this cache owns plus the downloads it has reserved room for."""
        with self._lock:
            return sum(self._files.values()) + sum(self._reserved.values())

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def path(self, name: str) -> Path:
        """Where chunk ``name`` lives (or will live) in the cache."""
        return self.directory / name

    def temp_path(self, name: str) -> Path:
        """A fresh temporary name next to ``name``, unique per process and call."""
        return self.directory / f"{name}{TMP_MARKER}{os.getpid()}.{secrets.token_hex(4)}"

    def has(self, name: str) -> bool:
        """True when ``name`` is accounted for and still on disk."""
        with self._lock:
            if name not in self._files:
                return False
            if self.path(name).exists():
                return True
            # Evicted by another process that also used it: forget it so it is fetched again.
            del self._files[name]
            return False

    def owns(self, name: str) -> bool:
        """True when ``name`` is accounted for (without touching the disk)."""
        return name in self._files

    def adopt(self, name: str, size: int) -> bool:
        """Account for ``name`` if a complete, matching copy is already on disk.

        Returns True when the file is there with exactly ``size`` bytes (any size when ``size``
        is 0, unknown) and ``verify`` accepts it; a file that does not match is deleted (it is a
        stale or damaged copy) and False is returned, so it is fetched again. The caller then
        makes room (the file already occupies the disk, so adoption never waits).
        """
        with self._lock:
            if name in self._files:
                return self.has(name)
        path = self.path(name)
        try:
            on_disk = path.stat().st_size
        except FileNotFoundError:
            return False
        problem = f"{on_disk} bytes instead of {size}" if size and on_disk != size else None
        if problem is None and self._verify is not None:
            try:
                problem = self._verify(name, path)  # hashing runs outside the lock
            except FileNotFoundError:
                return False
        if problem is not None:
            with self._lock:
                self.rejected += 1
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return False
        with self._lock:
            self._files[name] = on_disk
            self._note_peak()
        return True

    def adopt_published(self, name: str, size: int) -> bool:
        """Adopt ``name`` in place of the download reserved for it, if a peer published it."""
        self._reserved.pop(name, None)
        if self.adopt(name, size):
            return True
        self._reserved[name] = size
        return False

    def adopt_existing(self, sizes: dict[str, int], keep: Callable[[str], bool]) -> None:
        """Adopt every complete file of ``sizes`` for which ``keep(name)`` is true."""
        for name, size in sizes.items():
            if keep(name):
                self.adopt(name, size)

    def touch(self, name: str) -> None:
        """Record a use of ``name`` (random access evicts the least recently used first)."""
        with self._lock:
            self._used[name] = next(self._ticks)

    def recency_order(self, name: str) -> Callable[[str], float]:
        """A ``next_use`` for :meth:`reserve` that evicts least recently used files first."""

        def next_use(other: str) -> float:
            if other == name:
                return -float("inf")
            return -float(self._used.get(other, 0))

        return next_use

    # -- making room --------------------------------------------------------------------------

    def reserve(
        self,
        name: str,
        size: int,
        *,
        next_use: Callable[[str], float],
        pinned: Collection[str] = (),
        force: bool = False,
    ) -> bool:
        """Reserve ``size`` bytes for a download of ``name``, evicting what is needed furthest away.

        Only files that are not ``pinned`` (nor in another reader's window) and whose next use
        comes after the new chunk's are evicted. Returns False (and evicts nothing) when that is
        not enough room, unless ``force``: the chunk the consumer is waiting for is fetched even
        over budget, which keeps the overshoot to the chunks in use.
        """
        with self._lock:
            reader = getattr(next_use, "__self__", None)
            if reader is not None:
                with contextlib.suppress(TypeError):  # a reader that cannot be weakly referenced
                    self._pins[reader] = frozenset(pinned)
            if name in self._reserved:
                self._reservers[name] += 1
                return True
            needed = self.used_bytes + size - self.max_bytes
            if needed > 0:
                protected = set(pinned).union(*self._pins.values())
                own_next = next_use(name)
                victims = sorted(
                    (n for n in self._files if n not in protected and next_use(n) > own_next),
                    key=next_use,
                    reverse=True,
                )
                chosen: list[str] = []
                freed = 0
                for victim in victims:
                    if freed >= needed:
                        break
                    chosen.append(victim)
                    freed += self._files[victim]
                if freed < needed and not force:
                    return False
                for victim in chosen:
                    self.evict(victim)
            self._reserved[name] = size
            self._reservers[name] = 1
            self._note_peak()
            return True

    def evict_until(
        self, max_bytes: int, *, next_use: Callable[[str], float], pinned: Collection[str]
    ) -> None:
        """Evict unpinned files, furthest next use first, until at most ``max_bytes`` are used."""
        with self._lock:
            protected = set(pinned).union(*self._pins.values())
            for victim in sorted((n for n in self._files if n not in protected), key=next_use, reverse=True):
                if self.used_bytes <= max_bytes:
                    return
                self.evict(victim)

    def _release(self, name: str) -> int | None:
        # One reader is done with its reservation of ``name``; the room goes back with the last.
        count = self._reservers.get(name, 0) - 1
        if count > 0:
            self._reservers[name] = count
            return self._reserved.get(name)
        self._reservers.pop(name, None)
        return self._reserved.pop(name, None)

    def cancel(self, name: str) -> None:
        """Give back the room reserved for a download that failed or was cancelled."""
        with self._lock:
            self._release(name)

    def commit(self, name: str, tmp: Path) -> Path:
        """Publish a finished download atomically and move its reservation to the owned files."""
        final = self.path(name)
        with self._lock:
            os.replace(tmp, final)
            size = self._release(name)
            self._files[name] = size or final.stat().st_size
            self._note_peak()
        return final

    def evict(self, name: str) -> None:
        """Delete ``name`` from disk and from the accounting (a live mmap of it stays valid)."""
        with self._lock:
            self._files.pop(name, None)
            self._used.pop(name, None)
            self.evictions += 1
            try:
                self.path(name).unlink()
            except FileNotFoundError:
                pass

    def forget(self, names: Iterable[str]) -> None:
        """Stop accounting for ``names`` without deleting them (they belong to someone else now)."""
        with self._lock:
            for name in names:
                self._files.pop(name, None)
