"""benchmarks/run_all.py: the renderer draws docs/img/speed.png from a results JSON (no benchmark runs)."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("matplotlib")


def _run_all() -> Any:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(
    workload: str, scenario: str, a: list[float], b: list[float], ceiling: float | None
) -> dict[str, Any]:
    am, bm = sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]
    return {
        "workload": workload, "scenario": scenario, "unit": "items/s", "aiolit": a, "litdata": b,
        "aiolit_median": am, "litdata_median": bm, "ratio": am / bm, "ceiling": ceiling,
        "ceiling_ratio": None if ceiling is None else ceiling / bm,
    }  # fmt: skip


RESULTS = {
    "date": "2026-01-01 00:00 UTC",
    "machine": {
        "cpu": "Test CPU 9000",
        "cores": 2,
        "memory_gb": 8.0,
        "os": "Linux",
        "python": "3.11.7",
        "versions": {"aiolit": "0.1.0", "litdata": "0.2.76", "torch": "2.13.0", "numpy": "2.0"},
    },
    "quick": False,
    "runs": 3,
    "note": "fixed test data",
    "cells": [
        _cell("local", "iterate", [10.0, 12.0, 11.0], [2.0, 2.5, 2.2], 100.0),
        _cell("optimize", "small, 2 workers", [30.0, 31.0, 29.0], [2.0, 2.0, 2.1], None),
        _cell("remote", "tokens, 2 workers", [5.0, 5.5, 6.0], [4.0, 4.0, 4.4], 20.0),
    ],
    "text": {},
}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_render_from_json(tmp_path: Path) -> None:
    run_all = _run_all()
    source = tmp_path / "results.json"
    source.write_text(json.dumps(RESULTS))
    png = tmp_path / "speed.png"
    assert run_all.main(["--render", str(source), "--png", str(png)]) == 0
    width, height = _png_size(png)
    assert width > 600 and height > 200
    # The medians of alternating runs, not the best run: 11/2.2 = 5x.
    assert RESULTS["cells"][0]["ratio"] == pytest.approx(11.0 / 2.2)


def test_unknown_group_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    run_all = _run_all()
    with pytest.raises(SystemExit):
        run_all.main(["--only", "local,nope"])
    assert "unknown group(s) ['nope']" in capsys.readouterr().err


def test_committed_plot_matches_a_committed_result() -> None:
    results = sorted((ROOT / "benchmarks" / "results").glob("run_all-*.json"))
    assert results, "benchmarks/results/ holds the run the README plot was drawn from"
    latest = json.loads(results[-1].read_text())
    assert {"machine", "cells", "date", "runs"} <= set(latest)
    assert all(c["ratio"] == pytest.approx(c["aiolit_median"] / c["litdata_median"]) for c in latest["cells"])
    assert _png_size(ROOT / "docs" / "img" / "speed.png")[0] > 600
