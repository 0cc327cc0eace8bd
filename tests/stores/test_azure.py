"""AzureStore against Azurite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from aiolit.errors import ObjectNotFoundError, StorePermissionError
from aiolit.stores import RetryPolicy, Store, open_store
from aiolit.stores._azure import AzureStore
from aiolit.testing.store_suite import StoreSuite
from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY, ObjectServer

pytestmark = pytest.mark.azure

SMALL_PARTS = {"part_size": 1 << 20, "multipart_threshold": 2 << 20, "max_concurrency": 4}


@pytest.fixture(scope="module")
def container(azure_server: ObjectServer) -> str:
    return azure_server.new_bucket()


class TestAzureStore(StoreSuite):
    @pytest.fixture
    async def store(self, azure_server: ObjectServer, container: str) -> AsyncIterator[Store]:
        url = azure_server.url(container, f"t-{uuid.uuid4().hex[:8]}/data")
        store = open_store(url, {**azure_server.storage_options, **SMALL_PARTS})
        yield store
        await store.aclose()


async def test_account_url_and_credential_az_scheme(azure_server: ObjectServer, container: str) -> None:
    options = {
        "account_url": azure_server.endpoint,
        "credential": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
    }
    store = open_store(f"az://{container}/litdata-form", options)
    await store.put("index.json", b"{}")
    assert await store.get("index.json") == b"{}"
    assert [m.key async for m in store.list()] == ["index.json"]
    await store.aclose()


async def test_wrong_key_is_a_permission_error_without_the_key(
    azure_server: ObjectServer, container: str
) -> None:
    wrong = "V3JvbmdLZXk" + uuid.uuid4().hex + "=="
    options = {
        "account_url": azure_server.endpoint,
        "credential": {"account_name": AZURITE_ACCOUNT, "account_key": wrong},
    }
    store = open_store(
        f"azure://{container}/x", options, retry=RetryPolicy(max_attempts=3, initial_backoff=0.001)
    )
    with pytest.raises(StorePermissionError) as info:
        await store.get("k")
    assert wrong not in str(info.value) and wrong not in repr(store)
    await store.aclose()


async def test_missing_container(azure_server: ObjectServer) -> None:
    store = open_store("azure://no-such-container-aiolit/x", azure_server.storage_options)
    with pytest.raises(ObjectNotFoundError, match="container not found"):
        await store.get("k")
    await store.aclose()


def test_unknown_option() -> None:
    with pytest.raises(ValueError, match="unknown Azure option"):
        AzureStore("azure://c", {"sas": "x"})
