"""One download per chunk per node: the processes sharing a cache directory take turns.

The DataLoader workers of a node (and the ranks of a node, with ``LOCAL_WORLD_SIZE``) share one
cache directory. Two of them need the same chunk when a chunk is split between them (the plan
gives each worker a contiguous run of the shuffled chunk list, so neighbours share the chunk at
their boundary) or when they start on it at the same time. Without coordination both download it:
measured with ``benchmarks/bench_scale.py``, 64 nodes x 8 workers fetched 0.4 % of the dataset
twice inside a node, a whole extra chunk per boundary.

Before downloading, a process takes the chunk's lease: a file ``{name}.tmp.lease`` created with
``O_EXCL`` and holding its PID. A process that finds the lease taken waits until the chunk is
published (then adopts it) or the lease is gone (then it takes the lease and downloads). A lease
whose holder died (the PID no longer exists) is removed by the first process that notices. A
holder that is alive but silent past ``timeout`` is not waited on any longer: the waiter
downloads too (never a hang, at worst the old duplicate).

There is no portable file-change notification in the standard library, so waiting is a poll with
backoff (5 ms doubling to 100 ms). It happens only for a shared chunk while a peer downloads it.
The lease name carries the cache's temp marker, so it is never counted or adopted as a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from aiolit._proc import pid_alive

__all__ = ["LEASE_SUFFIX", "acquire", "release", "wait_for_peer", "wait_published"]

LEASE_SUFFIX = ".tmp.lease"


def _lease(directory: Path, name: str) -> Path:
    return directory / f"{name}{LEASE_SUFFIX}"


def acquire(directory: Path, name: str) -> Path | None:
    """Take the lease of chunk ``name``; None when another live process holds it."""
    lease = _lease(directory, name)
    try:
        lease.parent.mkdir(parents=True, exist_ok=True)  # chunk names may hold folders (raw, hf)
    except OSError:
        return None
    for _ in range(2):
        try:
            fd = os.open(lease, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _holder_alive(lease):
                return None
            with contextlib.suppress(FileNotFoundError):
                lease.unlink()  # its holder died: take over
            continue
        except OSError:
            return None  # a read-only or odd cache directory: no coordination, download as before
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
        return lease
    return None


def release(lease: Path | None) -> None:
    """Give the lease back (after the chunk was published, or the download failed)."""
    if lease is not None:
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()


def _holder_alive(lease: Path) -> bool:
    try:
        pid = int(lease.read_text() or "0")
    except FileNotFoundError:
        return False
    except ValueError:
        return True  # being written right now
    if pid <= 0:
        return True
    return pid_alive(pid)


async def wait_for_peer(directory: Path, name: str, *, timeout: float = 120.0) -> bool:
    """Wait while another process downloads ``name``; True once the chunk is published.

    False means: the lease is free now (the peer failed or died) or the wait timed out; the
    caller downloads the chunk itself.
    """
    final = directory / name
    lease = _lease(directory, name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while True:
        if final.exists():
            return True
        if not lease.exists() or not _holder_alive(lease):
            return final.exists()
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def wait_published(
    directory: Path,
    names: list[str],
    *,
    grace: float = 2.0,
    timeout: float = 30.0,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Wait until the chunks ``names`` are in ``directory`` (co-workers are downloading them).

    Used to let the chunks whose batches are due first have the link (see ``Run``). Gives up on
    a chunk whose download has not begun after ``grace`` seconds (no lease: its worker is not
    fetching it, or it was published and evicted since) and on all of them after ``timeout``:
    a wait that only orders downloads never turns into a hang. ``stop()`` true ends it too.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    delay = 0.005
    left = list(names)
    while left:
        elapsed = loop.time() - start
        left = [
            n
            for n in left
            if not (directory / n).exists() and (elapsed < grace or _lease(directory, n).exists())
        ]
        if not left or elapsed >= timeout or (stop is not None and stop()):
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
