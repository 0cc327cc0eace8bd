"""Issue 8 item 14: a sync iterator collected on aiolit's loop thread closes without LoopError and
leaves no prefetcher task behind (closing works from any thread)."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path
from typing import Any

import pytest

from aiolit import _loop
from aiolit.streaming import StreamingDataset
from tests.streaming._data import write_dataset


def prefetcher_tasks() -> list[str]:
    async def live() -> list[str]:
        return [repr(t) for t in asyncio.all_tasks() if "Prefetcher" in repr(t)]

    return _loop.run(live())


def test_sync_iterator_collected_on_the_loop_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = write_dataset(tmp_path / "src", 40, chunk_size=4)
    # local: copies chunks into the cache through the prefetcher (as a remote dataset would).
    ds = StreamingDataset(f"local:{tmp_path / 'src'}", cache_dir=str(tmp_path / "cache"))
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    holder = [iter(ds)]
    assert [next(holder[0]) for _ in range(6)] == items[:6]
    assert prefetcher_tasks()  # its scheduler runs on the loop thread

    async def drop_there() -> None:
        holder.clear()  # the generator is collected here, on aiolit's loop thread
        gc.collect()
        for _ in range(100):  # the close it scheduled on this loop finishes
            if not [t for t in asyncio.all_tasks() if "Prefetcher" in repr(t)]:
                break
            await asyncio.sleep(0.01)

    _loop.run(drop_there())
    assert not unraisable, [str(u.exc_value) for u in unraisable]
    assert prefetcher_tasks() == []
    # The dataset still iterates normally afterwards, from this thread.
    assert list(ds) == items
    assert prefetcher_tasks() == []
