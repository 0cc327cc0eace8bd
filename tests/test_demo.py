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


def test_demo_runs_as_the_readme_runs_it(tmp_path: Path) -> None:
    """`python -m aiolit demo`, as scripts/setup.sh runs it: the package's __main__ calls optimize
    at its top level, which spawn never re-imports, so the __main__-guard check must let it pass."""
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, "-m", "aiolit", "demo", "--dir", str(tmp_path)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "every sample checked" in proc.stdout
