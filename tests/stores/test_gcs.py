"""GCSStore against fake-gcs-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from aiolit.errors import ObjectNotFoundError
from aiolit.stores import Store, open_store
from aiolit.stores._gcs import GCSStore
from aiolit.testing.store_suite import StoreSuite
from tests.servers import ObjectServer

pytestmark = pytest.mark.gcs

SMALL_PARTS = {"part_size": 1 << 20, "multipart_threshold": 2 << 20, "max_concurrency": 4}


@pytest.fixture(scope="module")
def gcs_bucket(gcs_server: ObjectServer) -> str:
    return gcs_server.new_bucket()


class TestGCSStore(StoreSuite):
    @pytest.fixture
    async def store(self, gcs_server: ObjectServer, gcs_bucket: str) -> AsyncIterator[Store]:
        url = gcs_server.url(gcs_bucket, f"t-{uuid.uuid4().hex[:8]}/data")
        store = open_store(url, {**gcs_server.storage_options, **SMALL_PARTS})
        yield store
        await store.aclose()


async def test_emulator_host_from_environment(
    gcs_server: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint.removeprefix("http://"))
    bucket = gcs_server.new_bucket()
    store = open_store(f"gs://{bucket}", {"project": "my-project"})
    await store.put("k", b"v")
    assert [m.key async for m in store.list()] == ["k"]
    assert await store.get_range("k", 0, 1) == b"v"
    await store.aclose()


async def test_missing_bucket(gcs_server: ObjectServer) -> None:
    store = open_store("gs://no-such-bucket-aiolit/x", gcs_server.storage_options)
    with pytest.raises(ObjectNotFoundError):
        await store.get("k")
    await store.aclose()


def test_unknown_option() -> None:
    with pytest.raises(ValueError, match="unknown GCS option"):
        GCSStore("gs://b", {"credentialz": "x"})
