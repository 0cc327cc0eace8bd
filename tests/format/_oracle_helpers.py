"""Shared bits of the LitData oracle tests (litdata 0.2.76 reads what aiolit writes and vice versa)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def import_litdata() -> Any:
    return pytest.importorskip("litdata", reason="litdata (test extra, 0.2.76) is not importable")


def isolate_litdata(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Keep LitData's optimize/cache folders inside the test's tmp dir."""
    for var in ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER", "LITDATA_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "litdata-cache" / var.lower()))


def torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def normalize(value: Any) -> Any:
    """LitData's return values as plain Python/numpy (tensors, images, memoryviews)."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(normalize(v) for v in value)
    if isinstance(value, memoryview):
        return bytes(value)
    module = type(value).__module__
    if module == "torch":
        return value.numpy()
    if module.startswith("PIL."):
        return np.asarray(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def assert_equal(actual: Any, expected: Any, path: str = "sample") -> None:
    """Deep equality with exact container/scalar types; arrays by dtype and values."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{path}: {type(actual).__name__} is not an array"
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, (
            f"{path}: {actual!r} != {expected!r}"
        )
        np.testing.assert_array_equal(actual, expected, err_msg=path)
        return
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys differ"
        for k in expected:
            assert_equal(actual[k], expected[k], f"{path}[{k!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), f"{path}: length differs"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_equal(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
