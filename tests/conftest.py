"""Shared pytest fixtures: real storage servers on 127.0.0.1.

Session-scoped fixtures, each yielding a :class:`tests.servers.ObjectServer`:

* ``s3_server``      moto (S3 correctness: ranges, pagination, multipart; slow, ~170 req/s)
* ``seaweed_server`` SeaweedFS ``weed mini`` (S3 with SigV4 checks, fast)
* ``gcs_server``     fake-gcs-server (GCS JSON API)
* ``azure_server``   Azurite blob (Azure Blob)

An ``ObjectServer`` has ``endpoint``, ``storage_options`` (pass to ``open_store`` or
``StreamingDataset``), ``env`` (credentials / emulator host for subprocesses), ``scheme``,
``new_bucket()`` (creates a uniquely named bucket/container, returns its name), ``url(bucket,
path)`` and ``new_url(path)`` (a path in a fresh bucket). Example::

    async def test_read(s3_server):
        store = open_store(s3_server.new_url("ds"), s3_server.storage_options)

Servers start on free ports (never a busy one) when first requested and are stopped by PID at
the end of the session. A fixture skips only when the server is not installed (CI installs them:
``scripts/install_servers.sh``). To reuse servers started outside pytest, set
``AIOLIT_TEST_<NAME>_ENDPOINT`` (NAME = MOTO, SEAWEEDFS, GCS, AZURITE); SeaweedFS then also reads
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # make `tests.servers` importable

from tests import servers


def _external(name: str, kind: str) -> servers.ObjectServer | None:
    endpoint = os.environ.get(f"AIOLIT_TEST_{name}_ENDPOINT")
    if not endpoint:
        return None
    if kind == "s3":
        key = os.environ.get("AWS_ACCESS_KEY_ID", "testing-key")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "testing-secret")
        return servers.ObjectServer(
            "s3",
            name.lower(),
            endpoint,
            servers._s3_options(endpoint, key, secret),
            servers._s3_env(endpoint, key, secret),
        )
    if kind == "gcs":
        return servers.ObjectServer(
            "gcs", "fake-gcs-server", endpoint, {"endpoint_url": endpoint, "project": "test"},
            {"STORAGE_EMULATOR_HOST": endpoint},
        )  # fmt: skip
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={servers.AZURITE_ACCOUNT};"
        f"AccountKey={servers.AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    return servers.ObjectServer(
        "azure", "azurite", endpoint, {"connection_string": conn}, {"AZURE_STORAGE_CONNECTION_STRING": conn}
    )


def _serve(name: str, kind: str, start: Callable[[], servers.ObjectServer]) -> Iterator[servers.ObjectServer]:
    external = _external(name, kind)
    if external is not None:
        yield external
        return
    try:
        server = start()
    except servers.ServerNotInstalled as exc:
        pytest.skip(f"{name.lower()} not installed: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[servers.ObjectServer]:
    """moto's S3 server."""
    yield from _serve("MOTO", "s3", servers.start_moto)


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[servers.ObjectServer]:
    """SeaweedFS ``weed mini`` S3 gateway (checks SigV4 signatures)."""
    yield from _serve("SEAWEEDFS", "s3", servers.start_seaweedfs)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[servers.ObjectServer]:
    """fake-gcs-server."""
    yield from _serve("GCS", "gcs", servers.start_fake_gcs)


@pytest.fixture(scope="session")
def azure_server() -> Iterator[servers.ObjectServer]:
    """Azurite (blob service)."""
    yield from _serve("AZURITE", "azure", servers.start_azurite)
