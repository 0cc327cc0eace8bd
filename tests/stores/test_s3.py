"""S3Store against moto (correctness) and SeaweedFS (SigV4 checks)."""

from __future__ import annotations

import logging
import pickle
import uuid
from collections.abc import AsyncIterator

import pytest

from aiolit.errors import ObjectNotFoundError, StorePermissionError
from aiolit.stores import RetryPolicy, RetryStore, Store, open_store
from aiolit.stores._s3 import S3Store
from aiolit.testing.store_suite import StoreSuite
from tests.servers import ObjectServer

pytestmark = pytest.mark.s3

# S3 multipart parts must be >= 5 MiB except the last; 12 MB -> 3 parts.
SMALL_PARTS = {"part_size": 5 << 20, "multipart_threshold": 5 << 20, "max_concurrency": 4}


@pytest.fixture(scope="module")
def moto_bucket(s3_server: ObjectServer) -> str:
    return s3_server.new_bucket()


@pytest.fixture(scope="module")
def seaweed_bucket(seaweed_server: ObjectServer) -> str:
    return seaweed_server.new_bucket()


class TestS3StoreMoto(StoreSuite):
    many_keys = 1001  # moto serves ~170 requests/s: just over one page

    @pytest.fixture
    async def store(self, s3_server: ObjectServer, moto_bucket: str) -> AsyncIterator[Store]:
        url = s3_server.url(moto_bucket, f"t-{uuid.uuid4().hex[:8]}/data")
        store = open_store(url, {**s3_server.storage_options, **SMALL_PARTS})
        yield store
        await store.aclose()


class TestS3StoreSeaweedFS(StoreSuite):
    @pytest.fixture
    async def store(self, seaweed_server: ObjectServer, seaweed_bucket: str) -> AsyncIterator[Store]:
        url = seaweed_server.url(seaweed_bucket, f"t-{uuid.uuid4().hex[:8]}")
        store = open_store(url, {**seaweed_server.storage_options, **SMALL_PARTS})
        yield store
        await store.aclose()


async def test_litdata_uppercase_options_and_bucket_root(seaweed_server: ObjectServer) -> None:
    bucket = seaweed_server.new_bucket()
    store = open_store(
        f"s3://{bucket}",
        {
            "AWS_ACCESS_KEY_ID": seaweed_server.env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": seaweed_server.env["AWS_SECRET_ACCESS_KEY"],
            "S3_ENDPOINT_URL": seaweed_server.endpoint,
        },
        {"region_name": "us-east-1"},
    )
    await store.put("index.json", b"{}")
    assert [m.key async for m in store.list()] == ["index.json"]
    await store.aclose()


async def test_session_options_from_botocore_config(s3_server: ObjectServer, moto_bucket: str) -> None:
    from botocore.config import Config

    options = {**s3_server.storage_options, "config": Config(connect_timeout=5, read_timeout=30)}
    store = open_store(s3_server.url(moto_bucket, "cfg"), options)
    await store.put("a", b"1")
    assert await store.get("a") == b"1"
    clone = pickle.loads(pickle.dumps(store))
    assert await clone.get("a") == b"1"
    await store.aclose()
    await clone.aclose()


@pytest.mark.parametrize("style", ["unsigned", "AWS_NO_SIGN_REQUEST", "config"])
async def test_unsigned_requests(s3_server: ObjectServer, moto_bucket: str, style: str) -> None:
    import botocore
    from botocore.config import Config

    policy = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", '
        f'"Action": "s3:GetObject", "Resource": "arn:aws:s3:::{moto_bucket}/public/*"}}]}}'
    )
    s3_server._boto3().put_bucket_policy(Bucket=moto_bucket, Policy=policy)
    writer = open_store(s3_server.url(moto_bucket, "public"), s3_server.storage_options)
    await writer.put("x.bin", b"public bytes")
    option: dict[str, object] = {
        "unsigned": {"unsigned": True},
        "AWS_NO_SIGN_REQUEST": {"AWS_NO_SIGN_REQUEST": "yes"},
        "config": {"config": Config(signature_version=botocore.UNSIGNED)},
    }[style]
    reader = open_store(s3_server.url(moto_bucket, "public"), {"endpoint_url": s3_server.endpoint, **option})
    assert await reader.get_range("x.bin", 0, 6) == b"public"
    # botocore.UNSIGNED does not pickle by itself; the store keeps a marker instead.
    clone = pickle.loads(pickle.dumps(reader))
    assert await clone.get("x.bin") == b"public bytes"
    for s in (writer, reader, clone):
        await s.aclose()


async def test_bad_credentials_are_not_retried_and_never_echoed(
    seaweed_server: ObjectServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "SUPER-SECRET-" + uuid.uuid4().hex
    bucket = seaweed_server.new_bucket()
    options = {
        "endpoint_url": seaweed_server.endpoint,
        "aws_access_key_id": "nobody",
        "aws_secret_access_key": secret,
    }
    store = open_store(f"s3://{bucket}/p", options, retry=RetryPolicy(max_attempts=5, initial_backoff=0.001))
    with pytest.raises(StorePermissionError) as info:
        await store.get("k")
    message = str(info.value)
    assert "access denied" in message and f"s3://{bucket}/p/k" in message and "credentials" in message
    assert secret not in message and secret not in repr(info.value.__cause__)
    assert secret not in repr(store) and secret not in repr(store.inner)  # type: ignore[attr-defined]
    assert caplog.text and secret not in caplog.text  # botocore logs requests at DEBUG
    await store.aclose()


async def test_missing_bucket(s3_server: ObjectServer) -> None:
    store = open_store("s3://no-such-bucket-aiolit/x", s3_server.storage_options)
    with pytest.raises(ObjectNotFoundError, match="bucket not found"):
        await store.get("k")
    await store.aclose()


def test_unknown_option_is_rejected_without_echoing_values() -> None:
    with pytest.raises(ValueError, match="unknown S3 option 'aws_secret'") as info:
        S3Store("s3://b", {"aws_secret": "hunter2"})
    assert "hunter2" not in str(info.value)
    assert isinstance(open_store("s3://b"), RetryStore)


async def test_service_model_is_parsed_into_untracked_plain_dicts(
    s3_server: ObjectServer, moto_bucket: str
) -> None:
    """botocore's OrderedDicts are all tracked by the GC; the same data as plain dicts mostly is not.

    Each full collection of a service's process walks every tracked object, so this is ~10k fewer
    objects per collection (docs/async.md, "Full garbage collections").
    """
    import gc
    import importlib
    import json
    from collections import OrderedDict
    from typing import Any

    import botocore.loaders

    _s3 = importlib.import_module("aiolit.stores._s3")  # the package has a function of that name
    store = open_store(s3_server.url(moto_bucket, "plain-model"), s3_server.storage_options)
    await store.put("k", b"value")
    assert await store.get("k") == b"value"  # the client built on the shared loader works
    await store.aclose()

    assert type(_s3._LOADER.file_loader) is _s3._plain_json_loader_class()  # clients share it
    fresh = botocore.loaders.Loader()
    fresh.file_loader = _s3._plain_json_loader_class()()
    ours = fresh.load_service_model("s3", "service-2")
    theirs = botocore.loaders.Loader().load_service_model("s3", "service-2")
    same = json.dumps(ours) == json.dumps(theirs)  # same data, same key order
    assert same

    def walk(node: Any) -> list[Any]:
        out, todo = [], [node]
        while todo:
            n = todo.pop()
            if isinstance(n, dict):
                out.append(n)
                todo.extend(n.values())
            elif isinstance(n, list):
                todo.extend(n)
        return out

    ours_dicts, their_dicts = walk(ours), walk(theirs)
    assert len(ours_dicts) == len(their_dicts) > 1000
    assert not any(isinstance(d, OrderedDict) for d in ours_dicts)
    assert all(gc.is_tracked(d) for d in their_dicts)
    untracked = sum(not gc.is_tracked(d) for d in ours_dicts)
    assert untracked > len(ours_dicts) // 3
