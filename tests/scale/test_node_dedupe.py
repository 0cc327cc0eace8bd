"""Workers of one node that share a chunk download it once (the cache directory's lease)."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import pytest

from tests.processing.readback import read_aiolit
from tests.request_log import ProxyGroup

pytestmark = pytest.mark.s3


def _dataset(tmp_path: Path, server: Any) -> tuple[str, list[Any]]:
    import aiolit

    local = str(tmp_path / "src")
    # 3 chunks of 10 samples; 2 workers take 15 samples each, so both need the middle chunk first thing.
    aiolit.optimize(fn=_sample, inputs=list(range(30)), output_dir=local, chunk_size=10, num_workers=1,
                    verbose=False)  # fmt: skip
    url = f"s3://{server.new_bucket('dedupe')}/ds"
    import asyncio

    from aiolit.stores import open_store

    async def upload() -> None:
        store = open_store(url, server.storage_options)
        try:
            for path in Path(local).iterdir():
                await store.put(path.name, path.read_bytes())
        finally:
            await store.aclose()

    asyncio.run(upload())
    return url, read_aiolit(local)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def _sample(i: int) -> dict[str, Any]:
    return {"i": i, "pad": bytes(20_000)}


def test_workers_of_a_node_fetch_a_shared_chunk_once(seaweed_server: Any, tmp_path: Path) -> None:
    from aiolit import StreamingDataLoader, StreamingDataset

    url, expected = _dataset(tmp_path, seaweed_server)
    port = int(seaweed_server.endpoint.rsplit(":", 1)[1])
    with ProxyGroup(("127.0.0.1", port), rtt=0.05) as group:
        proxy = group.add("node")
        options = {**seaweed_server.storage_options, "endpoint_url": proxy.endpoint}
        ds = StreamingDataset(url, storage_options=options, cache_dir=str(tmp_path / "a"))
        loader = StreamingDataLoader(ds, batch_size=5, num_workers=2, collate_fn=_as_list)
        got = sorted(s["i"] for batch in loader for s in batch)
        assert got == [s["i"] for s in expected]
        gets = collections.Counter(r.path.rsplit("/", 1)[1] for r in group.log() if r.method == "GET")
    chunk_gets = {k: v for k, v in gets.items() if k.endswith(".bin")}
    assert len(chunk_gets) == 3
    assert set(chunk_gets.values()) == {1}, chunk_gets  # the shared middle chunk too
    assert not list((tmp_path / "a").rglob("*.tmp.*"))  # no lease or temp file left behind


def test_lease_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    import subprocess
    import sys

    from aiolit.streaming import _peer

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / f"chunk-0-0.bin{_peer.LEASE_SUFFIX}").write_text(dead.stdout.strip())
    lease = _peer.acquire(tmp_path, "chunk-0-0.bin")
    assert lease is not None and lease.read_text() == str(os.getpid())
    assert _peer.acquire(tmp_path, "chunk-0-0.bin") is None  # held by a live process (us)
    _peer.release(lease)
    assert not lease.exists()


async def test_waiter_adopts_what_the_lease_holder_publishes(tmp_path: Path) -> None:
    import asyncio

    from aiolit.streaming import _peer

    lease = _peer.acquire(tmp_path, "c.bin")
    assert lease is not None

    async def publish() -> None:
        await asyncio.sleep(0.05)
        (tmp_path / "c.bin").write_bytes(b"x")
        _peer.release(lease)

    task = asyncio.ensure_future(publish())
    assert await _peer.wait_for_peer(tmp_path, "c.bin") is True
    await task
    # A holder that gives up without publishing: the waiter is told to download itself.
    lease = _peer.acquire(tmp_path, "d.bin")
    asyncio.get_running_loop().call_later(0.05, _peer.release, lease)
    assert await _peer.wait_for_peer(tmp_path, "d.bin") is False


def test_lease_of_a_nested_chunk_name(tmp_path: Path) -> None:
    """Raw and Hub datasets name chunks with folders; the lease must work there too (it once spun)."""
    from aiolit.streaming import _peer

    lease = _peer.acquire(tmp_path, "train/part-0.parquet")
    assert lease is not None and lease.parent == tmp_path / "train"
    assert _peer.acquire(tmp_path, "train/part-0.parquet") is None
    _peer.release(lease)
    assert _peer.acquire(tmp_path / "missing-file", "x.bin") is not None  # parent made as needed
