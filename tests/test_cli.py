"""The `aiolit` command line: inspect a dataset, and errors that name the problem."""

from __future__ import annotations

import json
import os
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
    missing = str(tmp_path / "nope")
    assert main(["inspect", missing]) == 2
    err = capsys.readouterr().err
    assert err == f"aiolit inspect: error: no such directory: {missing}\n"  # named once


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


# -- the console script, as a user runs it ---------------------------------------------------------


def aiolit_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("aiolit")
    assert exe is not None, "the aiolit console script is not installed"
    return subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_console_script_version() -> None:
    import aiolit

    proc = aiolit_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"aiolit {aiolit.__version__}"


def test_console_script_help_is_plain_text() -> None:
    top = aiolit_cli("--help")
    assert top.returncode == 0, top.stderr
    for command in ("inspect", "cache", "demo", "--version"):
        assert command in top.stdout
    cache = aiolit_cli("cache", "--help")
    assert cache.returncode == 0 and all(a in cache.stdout for a in ("path", "ls", "clear"))
    for text in (top.stdout, cache.stdout, aiolit_cli("inspect", "--help").stdout):
        assert "``" not in text and ":class:" not in text and ":func:" not in text


def test_console_script_missing_path_is_named_once(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    proc = aiolit_cli("inspect", missing)
    assert proc.returncode == 2
    assert proc.stderr.count(missing) == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_empty_folder_is_not_a_dataset(tmp_path: Path) -> None:
    proc = aiolit_cli("inspect", str(tmp_path))
    assert proc.returncode == 2
    assert f"{tmp_path} is not an optimized dataset: it has no index.json" in proc.stderr
    assert "{rank}" not in proc.stderr and "Traceback" not in proc.stderr


def test_console_script_bad_storage_options_names_the_option() -> None:
    proc = aiolit_cli("inspect", "s3://bucket/ds", "--storage-options", "{endpoint_url: x}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("aiolit inspect: error: --storage-options is not valid JSON")
    assert "{endpoint_url: x}" in proc.stderr
    proc = aiolit_cli("inspect", "s3://bucket/ds", "--storage-options", "[1]")
    assert proc.returncode == 2 and "--storage-options must be a JSON object, got list" in proc.stderr


def test_console_script_cache_path_ls_clear(tmp_path: Path) -> None:
    from aiolit import StreamingDataset
    from aiolit.format import ChunkWriter, merge_shards

    cache = tmp_path / "cache"
    env = {"AIOLIT_CACHE_DIR": str(cache)}
    urls = []
    for name in ("a", "b"):
        writer = ChunkWriter(str(tmp_path / name), chunk_size=10)
        for i in range(25):
            writer.add({"i": i, "name": name})
        writer.done()
        merge_shards(str(tmp_path / name))
        url = f"local:{tmp_path / name}"
        ds = StreamingDataset(url, cache_dir=str(cache))
        assert [s["i"] for s in ds] == list(range(25))  # reads every chunk through the cache
        urls.append(url)
    chunk_bytes = sum(p.stat().st_size for p in (tmp_path / "a").glob("chunk-*.bin"))

    path = aiolit_cli("cache", "path", env=env)
    assert path.returncode == 0 and path.stdout.strip() == str(cache)
    assert aiolit_cli("cache", "path", "--cache-dir", str(tmp_path / "x")).stdout.strip() == str(
        tmp_path / "x"
    )

    ls = aiolit_cli("cache", "ls", "--json", env=env)
    assert ls.returncode == 0, ls.stderr
    listing = json.loads(ls.stdout)
    assert listing["root"] == str(cache)
    by_url = {d["url"]: d for d in listing["datasets"]}
    assert sorted(by_url) == sorted(urls)
    a = by_url[urls[0]]
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert [v["version"] for v in a["versions"]] == [index["updated_at"]]
    # the chunks plus the cached index.json
    assert a["versions"][0]["bytes"] == chunk_bytes + (tmp_path / "a" / "index.json").stat().st_size
    text = aiolit_cli("cache", "ls", env=env).stdout
    assert urls[0] in text and urls[1] in text and "2 dataset(s)" in text

    one = aiolit_cli("cache", "clear", urls[0], env=env)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"cleared {urls[0]}:")
    left = json.loads(aiolit_cli("cache", "ls", "--json", env=env).stdout)["datasets"]
    assert [d["url"] for d in left] == [urls[1]]

    again = aiolit_cli("cache", "clear", urls[0], env=env)
    assert again.returncode == 2 and f"{urls[0]} has no cache under {cache}" in again.stderr

    everything = aiolit_cli("cache", "clear", env=env)
    assert everything.returncode == 0 and "cleared 1 dataset(s)" in everything.stdout
    assert json.loads(aiolit_cli("cache", "ls", "--json", env=env).stdout)["datasets"] == []
