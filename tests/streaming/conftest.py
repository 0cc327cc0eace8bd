"""Fixtures of the streaming tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
