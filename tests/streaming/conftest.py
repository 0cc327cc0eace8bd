"""Fixtures of the streaming tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiolit.stores import _SCHEMES as STORE_SCHEMES
from aiolit.stores import register_store
from aiolit.stores._s3 import S3Store
from aiolit.testing import FaultyStore
from tests.streaming._data import write_dataset


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., tuple[str, list[dict[str, Any]]]]:
    """``make_dataset(n, chunk_size=7, **writer_kwargs) -> (dir, samples)``."""
    counter = iter(range(1000))

    def make(n: int, **kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
        path = tmp_path / f"data{next(counter)}"
        return str(path), write_dataset(path, n, **kwargs)

    return make


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test gets its own cache root and a single-process world unless it sets one.
    monkeypatch.setenv("AIOLIT_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("WORLD_SIZE", "RANK", "GLOBAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    os.environ.pop("MASTER_ADDR", None)


@pytest.fixture
def counting_s3() -> Iterator[list[FaultyStore]]:
    """Every s3:// store is the real S3 store inside a FaultyStore (no faults) that counts requests
    (sum them with ``tests.streaming._data.requests``)."""
    made: list[FaultyStore] = []
    saved = STORE_SCHEMES["s3"]

    def factory(url: str, storage: dict[str, Any], session: dict[str, Any], transfer: Any) -> FaultyStore:
        store = FaultyStore(S3Store(url, storage, session, transfer))
        made.append(store)
        return store

    register_store("s3", factory, overwrite=True)
    try:
        yield made
    finally:
        STORE_SCHEMES["s3"] = saved
