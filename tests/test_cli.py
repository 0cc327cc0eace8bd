"""The `aiolit` command line: inspect a dataset, and errors that name the problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aiolit.cli import main

GOLDEN = Path(__file__).parent / "data" / "golden"


def test_inspect_prints_the_index_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(GOLDEN / "0.2.76" / "fernet_chunk")]) == 0
    out = capsys.readouterr().out
    assert "chunks       3" in out
    assert "samples      40" in out
    assert "encryption   fernet / chunk" in out
    assert "data_format  ['int', 'float', 'str', 'bytes', 'bool']" in out


def test_inspect_json_counts_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(GOLDEN / "0.2.45" / "tokens_numpy")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["chunks"] == 11
    assert summary["samples"] == 40
    assert summary["tokens"] == 2780
    assert summary["item_loader"] == "TokensLoader"
    assert summary["compression"] is None


def test_inspect_compression(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(GOLDEN / "0.2.45" / "zstd")]) == 0
    assert "compression  zstd" in capsys.readouterr().out


def test_inspect_missing_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aiolit inspect: error:")
    assert "index.json" in err


def test_inspect_rejects_an_index_escaping_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = GOLDEN / "0.2.76" / "ints"
    shutil.copytree(src, tmp_path / "ds")
    index = json.loads((tmp_path / "ds" / "index.json").read_text())
    index["chunks"][0]["filename"] = "../../etc/passwd"
    (tmp_path / "ds" / "index.json").write_text(json.dumps(index))
    assert main(["inspect", str(tmp_path / "ds")]) == 2
    assert "../../etc/passwd" in capsys.readouterr().err


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aiolit", "inspect", str(GOLDEN / "0.2.76" / "ints")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "samples      40" in proc.stdout
