"""`aiolit demo` (the README's first command) runs end to end and checks every sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiolit.demo import NUM_SAMPLES, make_sample, run_demo


def test_demo_writes_streams_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"wrote {NUM_SAMPLES} samples" in out
    index = json.loads((tmp_path / "dataset" / "index.json").read_text())
    assert sum(c["chunk_size"] for c in index["chunks"]) == NUM_SAMPLES
    assert index["config"]["data_format"] == ["int", "numpy", "int"]
    # running it again overwrites the same folder instead of failing on a non-empty output
    assert run_demo(str(tmp_path)) == 0


def test_demo_samples_are_deterministic() -> None:
    a, b = make_sample(5), make_sample(5)
    assert (a["image"] == b["image"]).all() and a["label"] == 5
