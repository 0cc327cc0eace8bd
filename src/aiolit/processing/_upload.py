"""Concurrent uploads from synchronous worker code, on the process's aiolit loop thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any

__all__ = ["Uploader"]


class Uploader:
    """Upload files of ``local_dir`` to ``url`` (same relative keys) while the caller keeps working.

    Each file is deleted locally once uploaded. At most ``max_in_flight`` uploads run at once;
    ``submit`` blocks beyond that, which bounds the local disk a fast producer can fill.

    Parameters
    ----------
    url
        The remote output root (``s3://bucket/prefix`` ...).
    storage_options
        Passed to :func:`aiolit.stores.open_store`.
    local_dir
        The directory the relative keys are taken from.
    max_in_flight
        Concurrent uploads.
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None, local_dir: str, max_in_flight: int = 4
    ) -> None:
        from aiolit._loop import get_loop
        from aiolit.stores import open_store

        self._store = open_store(url, storage_options)
        self._loop = get_loop()
        self._local_dir = local_dir
        self._slots = threading.Semaphore(max_in_flight)
        self._futures: list[concurrent.futures.Future[None]] = []
        self._submitted: set[str] = set()

    def has(self, key: str) -> bool:
        """Whether ``key`` was already submitted."""
        return key in self._submitted

    async def _upload(self, key: str) -> None:
        path = os.path.join(self._local_dir, key)
        try:
            await self._store.put_file(key, path)
            os.remove(path)
        finally:
            self._slots.release()

    def submit(self, key: str) -> None:
        """Start uploading ``local_dir/key`` to ``key``; raises an earlier upload's error, if any."""
        for future in self._futures:
            if future.done() and future.exception() is not None:
                future.result()
        self._slots.acquire()
        self._submitted.add(key)
        self._futures.append(asyncio.run_coroutine_threadsafe(self._upload(key), self._loop))

    def put_after_uploads(self, key: str, data: bytes) -> None:
        """Wait for every submitted upload, then write ``data`` to ``key`` (a small marker/checkpoint)."""
        self.wait()
        asyncio.run_coroutine_threadsafe(self._store.put(key, data), self._loop).result()

    def wait(self) -> None:
        """Wait for every upload; re-raise the first failure."""
        for future in self._futures:
            future.result()

    def close(self) -> None:
        """Cancel what is still running and release the store's clients."""
        for future in self._futures:
            future.cancel()
        try:
            asyncio.run_coroutine_threadsafe(self._store.aclose(), self._loop).result(timeout=30)
        except Exception:
            pass  # closing is best effort; the upload errors were already raised by wait()
