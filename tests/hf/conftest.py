"""Fixtures of the hf:// tests: a local Hub look-alike and clean HF environment variables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hf.hub_server import HubServer


@pytest.fixture(scope="session")
def hub() -> Iterator[HubServer]:
    with HubServer(page_size=3) as server:
        yield server


@pytest.fixture(autouse=True)
def _hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AIOLIT_HF_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIOLIT_CACHE_DIR", str(tmp_path / "cache" / "chunks"))


@pytest.fixture
def repo_id() -> str:
    """A fresh repository name (the session's server is shared)."""
    return f"tester/ds-{uuid.uuid4().hex[:10]}"
