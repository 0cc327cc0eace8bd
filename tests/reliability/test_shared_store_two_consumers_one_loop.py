"""Issue 8 item 6: two consumers of one dataset on one loop; the first to finish must not close the
store the other still reads through (stores are reference counted per loop)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from pathlib import Path
from typing import Any

import pytest

from aiolit.streaming import StreamingDataset
from tests.streaming._data import write_dataset
from tests.streaming.test_remote import upload

pytestmark = pytest.mark.s3


async def two_consumers(ds: StreamingDataset) -> tuple[list[Any], list[Any], list[Any]]:
    """A short consumer that breaks after 4 samples while a full pass is downloading ahead."""
    loop_id = id(asyncio.get_running_loop())
    started = asyncio.Event()
    stores: list[Any] = []

    async def short() -> list[Any]:
        out = []
        await started.wait()  # the long consumer has downloads in flight by now
        async for sample in ds:
            out.append(sample)
            if len(out) == 4:
                break  # this consumer is done first
        return out

    async def full() -> list[Any]:
        seen = []
        async for sample in ds:
            seen.append(sample)
            stores.append(ds.source._stores[loop_id][1])
            if len(seen) == 1:
                started.set()
                await asyncio.sleep(0.05)  # let `short` finish and close first
            await asyncio.sleep(0)
        return seen

    got_short, got_full = await asyncio.gather(short(), full())
    return got_short, got_full, stores


async def test_first_consumer_to_finish_leaves_the_store_open_for_the_other(
    s3_server: Any, tmp_path: Path
) -> None:
    items = write_dataset(tmp_path / "src", 36, chunk_size=3)
    url = s3_server.new_url("ds")
    upload(s3_server, tmp_path / "src", url)
    loop_id = id(asyncio.get_running_loop())
    gc.collect()  # what earlier tests left for the collector is not this test's leak
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for trial in range(2):
            ds = StreamingDataset(
                url,
                storage_options=s3_server.storage_options,
                cache_dir=str(tmp_path / f"cache{trial}"),
                max_pre_download=4,
            )
            got_short, got_full, stores = await two_consumers(ds)
            assert got_short == items[:4]
            assert got_full == items
            # One store served the long consumer from its first sample to its last ...
            assert all(store is stores[0] for store in stores)
            # ... and the last consumer out closed it.
            assert loop_id not in ds.source._stores
            del ds
            gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, [str(w.message) for w in leaked]
