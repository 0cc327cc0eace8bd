"""RetryStore: bounded retries of transient failures, injected by FaultyStore over a real moto server."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiolit.errors import ObjectNotFoundError, RetriesExhaustedError, TransientStoreError
from aiolit.stores import RetryPolicy, RetryStore, Store, open_store
from aiolit.testing import FaultPlan, FaultyStore
from tests.servers import ObjectServer, pick_port

FAST = RetryPolicy(max_attempts=5, initial_backoff=0.001, max_backoff=0.005)


@pytest.fixture(scope="module")
def bucket(s3_server: ObjectServer) -> str:
    return s3_server.new_bucket()


@pytest.fixture
async def raw(s3_server: ObjectServer, bucket: str) -> AsyncIterator[Store]:
    options = {**s3_server.storage_options, "part_size": 64 * 1024, "multipart_threshold": 128 * 1024}
    store = open_store(s3_server.url(bucket, f"r-{uuid.uuid4().hex[:8]}"), options, retry=False)
    await store.put("ten.bin", b"0123456789")
    yield store
    await store.aclose()


def test_policy_backoff_is_bounded_and_doubles() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=15.0, jitter=False)
    assert [policy.backoff(a) for a in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert policy.backoff(30) == 15.0
    jittered = RetryPolicy()
    assert all(0.0 <= jittered.backoff(a) <= min(15.0, 0.1 * 2 ** (a - 1)) for a in range(1, 12))
    assert RetryPolicy().max_attempts == 10
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


async def test_fails_n_times_then_succeeds(raw: Store) -> None:
    faulty = FaultyStore(raw, FaultPlan(failures=3))
    store = RetryStore(faulty, FAST)
    assert await store.get("ten.bin") == b"0123456789"
    assert faulty.calls["get"] == 4
    faulty.plan.failures = 2
    await store.put("new.bin", b"abc")
    assert faulty.calls["put"] == 3
    assert await raw.get("new.bin") == b"abc"


async def test_short_reads_are_retried_but_clamped_reads_are_not(raw: Store) -> None:
    faulty = FaultyStore(raw, FaultPlan(short_reads=2))
    store = RetryStore(faulty, FAST)
    assert await store.get_range("ten.bin", 2, 8) == b"234567"
    assert faulty.calls["get_range"] == 3
    faulty.calls.clear()
    assert await store.get_range("ten.bin", 5, 1000) == b"56789"  # the object ends inside the range
    assert faulty.calls["get_range"] == 1


async def test_exhausted_error_names_url_range_status_attempts(raw: Store) -> None:
    faulty = FaultyStore(raw, FaultPlan(failures=100, status=503))
    store = RetryStore(faulty, RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.002))
    with pytest.raises(RetriesExhaustedError) as info:
        await store.get_range("ten.bin", 0, 5)
    message = str(info.value)
    assert raw.url_for("ten.bin") in message
    assert "bytes [0, 5)" in message and "4 attempts" in message and "status: 503" in message
    assert info.value.status == 503 and info.value.byte_range == (0, 5)  # type: ignore[attr-defined]
    assert isinstance(info.value.__cause__, TransientStoreError)
    assert faulty.calls["get_range"] == 4


async def test_not_found_is_not_retried(raw: Store) -> None:
    faulty = FaultyStore(raw)
    store = RetryStore(faulty, FAST)
    with pytest.raises(ObjectNotFoundError):
        await store.get("missing.bin")
    assert faulty.calls["get"] == 1


async def test_deadline_stops_before_max_attempts(raw: Store) -> None:
    faulty = FaultyStore(raw, FaultPlan(failures=10**6))
    policy = RetryPolicy(
        max_attempts=10**6, initial_backoff=0.02, max_backoff=0.02, deadline=0.2, jitter=False
    )
    with pytest.raises(RetriesExhaustedError):
        await RetryStore(faulty, policy).head("ten.bin")
    assert 1 < faulty.calls["head"] < 10**6


async def test_parts_of_a_download_and_list_pages_retry_on_their_own(
    raw: Store, tmp_path: Path, s3_server: ObjectServer, bucket: str
) -> None:
    data = bytes(range(256)) * 2048  # 512 KiB: 8 parts of 64 KiB
    prefix = raw.url.split("/", 3)[3]
    s3_server._boto3().put_object(Bucket=bucket, Key=f"{prefix}/big.bin", Body=data)  # one part
    faulty = FaultyStore(raw, FaultPlan(failures=3, short_reads=2, ops=frozenset({"get_range", "list"})))
    store = RetryStore(faulty, FAST)
    assert await store.get_to_file("big.bin", tmp_path / "big.bin") == len(data)
    assert (tmp_path / "big.bin").read_bytes() == data
    assert faulty.calls["get_range"] >= 8 + 3
    faulty.plan.failures = 2
    assert sorted([m.key async for m in store.list()]) == ["big.bin", "ten.bin"]
    assert await store.get_ranges("big.bin", [(0, 10), (100_000, 400_000)]) == [
        data[:10],
        data[100_000:400_000],
    ]


async def test_connection_refused_is_transient_and_exhausts(tmp_path: Path) -> None:
    port = pick_port()  # nothing listens there
    store = open_store(
        "s3://bucket/prefix",
        {"endpoint_url": f"http://127.0.0.1:{port}", "aws_access_key_id": "k", "aws_secret_access_key": "s"},
        retry=RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002),
    )
    with pytest.raises(RetriesExhaustedError, match=r"GET s3://bucket/prefix/a\.bin failed after 3 attempts"):
        await store.get("a.bin")
    await store.aclose()


async def test_retry_store_pickles_with_its_policy(raw: Store) -> None:
    store = RetryStore(raw, FAST)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.policy == FAST
    assert await clone.get("ten.bin") == b"0123456789"
    await clone.aclose()
