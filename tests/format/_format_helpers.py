"""Helpers shared by the format tests: the golden corpus and a whole-dataset reader."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from aiolit.format import Encryption, Index, SampleCodec, open_chunk

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def _load_cases() -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_cases", GOLDEN / "cases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases = _load_cases()


def golden_datasets() -> list[tuple[str, str]]:
    out = []
    for writer in sorted(os.listdir(GOLDEN)):
        wdir = GOLDEN / writer
        if not wdir.is_dir():
            continue
        out += [(writer, c) for c in sorted(os.listdir(wdir)) if (wdir / c / "index.json").exists()]
    return out


def read_index(directory: Path | str) -> Index:
    path = Path(directory) / "index.json"
    return Index.from_json(path.read_bytes(), source=str(path))


def read_all(
    directory: Path | str,
    *,
    encryption: Encryption | None = None,
    serializers: dict[str, Any] | None = None,
    allow_pickle: bool = False,
) -> list[Any]:
    """Every sample of a PyTree dataset, in global order, through aiolit.format only."""
    index = read_index(directory)
    codec = SampleCodec(
        index.config["data_format"], index.config["data_spec"], serializers, allow_pickle=allow_pickle
    )
    out = []
    for entry in index.chunks:
        data = (Path(directory) / entry.filename).read_bytes()
        view = open_chunk(data, entry, index.config, encryption)
        if view.footer_only:
            out += view.footer_rows()
        else:
            out += [view.decode(k, codec) for k in range(view.num_items)]
    return out


def assert_same(
    actual: Any, expected: Any, *, path: str = "sample", jpeg_tolerance: int | None = None
) -> None:
    """Deep equality with exact types (tensors and images compared as arrays)."""
    if isinstance(expected, np.ndarray):
        arr = _as_array(actual)
        assert arr.shape == expected.shape, f"{path}: shape {arr.shape} != {expected.shape}"
        if jpeg_tolerance is not None:
            diff = np.abs(arr.astype(np.int16) - expected.astype(np.int16)).max()
            assert diff <= jpeg_tolerance, f"{path}: JPEG off by {diff}"
        else:
            assert arr.dtype == expected.dtype, f"{path}: dtype {arr.dtype} != {expected.dtype}"
            np.testing.assert_array_equal(arr, expected, err_msg=path)
        return
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for k in expected:
            assert_same(actual[k], expected[k], path=f"{path}[{k!r}]", jpeg_tolerance=jpeg_tolerance)
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, path=f"{path}[{i}]", jpeg_tolerance=jpeg_tolerance)
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__ == "torch":
        return value.numpy()
    if type(value).__module__.startswith("PIL."):
        assert value.mode == "RGB", f"image mode {value.mode}"
        return np.asarray(value)
    raise AssertionError(f"cannot compare {type(value).__name__} with an array")


def fernet_key_path(writer: str, case: str) -> Path:
    return GOLDEN / writer / f"{case}.key.json"


def manifest() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((GOLDEN / "manifest.json").read_text())
    return result
