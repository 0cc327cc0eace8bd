"""The local chunk cache of one dataset version: atomic publishes, byte accounting, eviction.

One :class:`ChunkCache` lives in each reading process (one per DataLoader worker). It accounts
for the chunk files it published or adopted, and before a download makes room by evicting the
file whose next use is furthest in the future (the plan knows the future exactly). There are no
lock or refcount files: a file is published with ``os.replace`` and evicted with ``os.unlink``;
a reader that already memory-mapped it keeps reading (POSIX), and a reader that finds it gone
asks for it again.

Byte accounting is per process and conservative: a file used by two workers is counted by both.
``peak_bytes`` records the highest accounted total, which the tests check against the budget.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

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
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._files: dict[str, int] = {}  # published or adopted: name -> bytes
        self._reserved: dict[str, int] = {}  # downloads in flight: name -> bytes
        self.peak_bytes = 0
        self.evictions = 0

    # -- accounting ---------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes of the files this cache owns plus the downloads it has reserved room for."""
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
        """Account for ``name`` if a complete copy is already on disk (an earlier run or worker).

        Returns True when the file is there with exactly ``size`` bytes. The caller then makes
        room (the file already occupies the disk, so adoption never waits).
        """
        if name in self._files:
            return self.has(name)
        try:
            on_disk = self.path(name).stat().st_size
        except FileNotFoundError:
            return False
        if on_disk != size:
            return False
        self._files[name] = size
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

        Only files that are not ``pinned`` and whose next use comes after the new chunk's are
        evicted. Returns False (and evicts nothing) when that is not enough room, unless
        ``force``: the chunk the consumer is waiting for is fetched even over budget, which keeps
        the overshoot to the chunks in use.
        """
        if name in self._reserved:
            return True
        needed = self.used_bytes + size - self.max_bytes
        if needed > 0:
            own_next = next_use(name)
            victims = sorted(
                (n for n in self._files if n not in pinned and next_use(n) > own_next),
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
        self._note_peak()
        return True

    def evict_until(
        self, max_bytes: int, *, next_use: Callable[[str], float], pinned: Collection[str]
    ) -> None:
        """Evict unpinned files, furthest next use first, until at most ``max_bytes`` are used."""
        for victim in sorted((n for n in self._files if n not in pinned), key=next_use, reverse=True):
            if self.used_bytes <= max_bytes:
                return
            self.evict(victim)

    def cancel(self, name: str) -> None:
        """Give back the room reserved for a download that failed or was cancelled."""
        self._reserved.pop(name, None)

    def commit(self, name: str, tmp: Path) -> Path:
        """Publish a finished download atomically and move its reservation to the owned files."""
        final = self.path(name)
        os.replace(tmp, final)
        size = self._reserved.pop(name, None)
        self._files[name] = final.stat().st_size if size is None else size
        self._note_peak()
        return final

    def evict(self, name: str) -> None:
        """Delete ``name`` from disk and from the accounting (a live mmap of it stays valid)."""
        self._files.pop(name, None)
        self.evictions += 1
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def forget(self, names: Iterable[str]) -> None:
        """Stop accounting for ``names`` without deleting them (they belong to someone else now)."""
        for name in names:
            self._files.pop(name, None)
