"""get_to_file's single GET streams into the file and hashes the bytes as they arrive.

Real S3 servers (moto, SeaweedFS): the body arrives in several pieces, the file is byte-exact,
a checksum mismatch leaves no file, and a stream that fails midway restarts from the first byte
(file and digest) under the retry policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from aiolit.errors import CorruptChunkError, RetriesExhaustedError, TransientStoreError
from aiolit.stores import RetryPolicy, RetryStore, Store, open_store
from aiolit.stores._util import store_error
from aiolit.testing import FaultPlan, FaultyStore
from tests.servers import ObjectServer

pytestmark = pytest.mark.s3

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.002)
SIZE = 6 * 2**20 + 12_345  # more than one 4 MiB write block, not a multiple of anything
DATA = os.urandom(SIZE)
GOOD = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture(params=["moto", "seaweedfs"])
async def raw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    server: ObjectServer = request.getfixturevalue(
        "s3_server" if request.param == "moto" else "seaweed_server"
    )
    # A threshold above the object: get_to_file takes the single-GET, streamed path.
    options = {**server.storage_options, "multipart_threshold": 64 * 2**20}
    store = open_store(server.url(server.new_bucket(), f"d-{uuid.uuid4().hex[:8]}"), options, retry=False)
    await store.put("big.bin", DATA)
    await store.put("empty.bin", b"")
    yield store
    await store.aclose()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_the_body_streams_in_pieces_and_lands_byte_exact(raw: Store, tmp_path: Path) -> None:
    pieces = [len(p) async for p in raw._iter_get("big.bin")]
    assert sum(pieces) == SIZE and len(pieces) > 1  # not one object-sized bytes
    dest = tmp_path / "out" / "big.bin"
    assert await raw.get_to_file("big.bin", dest, size=SIZE, checksum=GOOD) == SIZE
    assert dest.read_bytes() == DATA
    assert _leftovers(dest.parent) == ["big.bin"]  # the temp file was renamed, nothing else
    # without a checksum, and with the size unknown (a HEAD)
    assert await raw.get_to_file("big.bin", tmp_path / "plain.bin") == SIZE
    assert (tmp_path / "plain.bin").read_bytes() == DATA
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    assert await raw.get_to_file("empty.bin", tmp_path / "e.bin", size=0, checksum=empty) == 0
    assert (tmp_path / "e.bin").read_bytes() == b""


@pytest.mark.parametrize("parts", [1, 3])
async def test_a_checksum_mismatch_leaves_no_file(raw: Store, tmp_path: Path, parts: int) -> None:
    # parts=1: hashed as it streams; parts=3: three range GETs, hashed from the file once in.
    folder = tmp_path / "out"
    dest = folder / "big.bin"
    wrong = "sha256:" + hashlib.sha256(DATA[:-1] + b"?").hexdigest()
    with pytest.raises(CorruptChunkError, match=r"big\.bin: sha256 checksum [0-9a-f]{64} != [0-9a-f]{64}"):
        await raw.get_to_file("big.bin", dest, size=SIZE, parts=parts, checksum=wrong)
    assert _leftovers(folder) == []
    upper = "sha256:" + GOOD[7:].upper()  # hex digits in either case
    assert await raw.get_to_file("big.bin", dest, size=SIZE, parts=parts, checksum=upper) == SIZE
    assert dest.read_bytes() == DATA


async def test_a_malformed_checksum_is_a_clear_error(raw: Store, tmp_path: Path) -> None:
    for bad in ("sha256", "nosuchhash:abcd", "sha256:"):
        with pytest.raises(ValueError, match="checksum must be '<algorithm>:<hex digest>'"):
            await raw.get_to_file("big.bin", tmp_path / "x.bin", checksum=bad)
    assert not (tmp_path / "x.bin").exists()


class _CutStream(FaultyStore):
    """The first ``cuts`` streamed GETs deliver 5 MiB (a hashed and written block, and some), then
    fail like a reset connection."""

    def __init__(self, inner: Store, cuts: int) -> None:
        super().__init__(inner, FaultPlan())
        self.cuts = cuts

    async def _iter_get(self, key: str) -> AsyncGenerator[bytes, None]:
        cut = self.cuts > 0
        self.cuts -= cut
        sent = 0
        async for piece in super()._iter_get(key):
            yield piece
            sent += len(piece)
            if cut and sent >= 5 * 2**20:
                raise store_error(TransientStoreError, "connection reset mid-body", url=self.url_for(key))


async def test_a_stream_cut_midway_restarts_file_and_digest(raw: Store, tmp_path: Path) -> None:
    cutting = _CutStream(raw, cuts=2)
    store = RetryStore(cutting, FAST)
    dest = tmp_path / "big.bin"
    # a digest carried over from a cut attempt would not match: the retry starts from byte 0
    assert await store.get_to_file("big.bin", dest, size=SIZE, checksum=GOOD) == SIZE
    assert dest.read_bytes() == DATA
    assert cutting.calls["get"] == 3
    assert _leftovers(tmp_path) == ["big.bin"]
    # cut every time: the policy gives up, and no file or temp file is left
    store = RetryStore(_CutStream(raw, cuts=100), FAST)
    with pytest.raises(RetriesExhaustedError, match="4 attempts"):
        await store.get_to_file("big.bin", tmp_path / "never.bin", size=SIZE, checksum=GOOD)
    assert _leftovers(tmp_path) == ["big.bin"]


async def test_failed_requests_of_a_streamed_get_are_retried(raw: Store, tmp_path: Path) -> None:
    faulty = FaultyStore(raw, FaultPlan(failures=2, ops=frozenset({"get"})))
    dest = tmp_path / "big.bin"
    assert await RetryStore(faulty, FAST).get_to_file("big.bin", dest, size=SIZE, checksum=GOOD) == SIZE
    assert dest.read_bytes() == DATA and faulty.calls["get"] == 3


async def test_local_store_checks_the_checksum_too(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"abc")
    store = open_store(str(tmp_path / "src"))
    good = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert await store.get_to_file("a.bin", tmp_path / "a.bin", checksum=good) == 3
    with pytest.raises(CorruptChunkError, match="sha256 checksum"):
        await store.get_to_file("a.bin", tmp_path / "b.bin", checksum="sha256:" + "0" * 64)
    assert not (tmp_path / "b.bin").exists()


class _Stall(FaultyStore):
    """A streamed GET that delivers 5 MiB (a block is being written) and then waits forever."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, FaultPlan())
        self.stalled = asyncio.Event()

    async def _iter_get(self, key: str) -> AsyncGenerator[bytes, None]:
        sent = 0
        async for piece in super()._iter_get(key):
            yield piece
            sent += len(piece)
            if sent >= 5 * 2**20:
                self.stalled.set()
                await asyncio.Event().wait()


async def test_a_cancelled_download_leaves_nothing(raw: Store, tmp_path: Path) -> None:
    stalling = _Stall(raw)
    task = asyncio.ensure_future(
        stalling.get_to_file("big.bin", tmp_path / "big.bin", size=SIZE, checksum=GOOD)
    )
    await asyncio.wait_for(stalling.stalled.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)  # a block write still running in its thread finds its file gone
    assert _leftovers(tmp_path) == []
    # the store is still usable
    assert await raw.get_to_file("big.bin", tmp_path / "big.bin", size=SIZE, checksum=GOOD) == SIZE
    assert (tmp_path / "big.bin").read_bytes() == DATA
