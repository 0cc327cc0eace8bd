"""Tracing: aiolit._trace, StreamingDataLoader(profile_batches=...), aiolit.debugger.enable_tracer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiolit import _trace, debugger
from aiolit.streaming import StreamingDataLoader, StreamingDataset
from tests.streaming._data import write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tracing_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv(_trace.ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    _trace.disable()
    _trace.clear()
    yield
    debugger.disable_tracer()
    _trace.disable(unexport=True)
    _trace.clear()


def remote_dataset(tmp_path: Path, n: int = 120) -> StreamingDataset:
    # ``local:`` goes through the prefetcher and the cache, like a bucket: downloads are traced.
    write_dataset(tmp_path / "data", n, chunk_size=10)
    return StreamingDataset(f"local:{tmp_path / 'data'}", cache_dir=str(tmp_path / "cache"))


def check_chrome_events(events: list[dict[str, Any]]) -> None:
    for e in events:
        assert {"name", "ph", "ts", "pid", "tid"} <= set(e), e
        assert isinstance(e["ts"], int | float) and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "X":
            assert e["dur"] >= 0
        assert e["ph"] in {"X", "B", "E", "i", "C", "M"}


def load_trace(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())  # strict JSON (no NaN/Infinity)
    assert set(data) == {"traceEvents", "displayTimeUnit"}
    events: list[dict[str, Any]] = data["traceEvents"]
    check_chrome_events(events)
    return events


def names_by_pid(events: list[dict[str, Any]]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for e in events:
        if e["ph"] != "M":
            out.setdefault(e["pid"], set()).add(e["name"])
    return out


# -- the recorder -------------------------------------------------------------------------------------


def test_off_by_default_records_nothing() -> None:
    assert not _trace.enabled()
    with _trace.span("x", "test"):
        pass
    assert _trace.mark() == 0
    assert _trace.flush() is None


def test_events_have_chrome_fields_and_one_row_per_thread(tmp_path: Path) -> None:
    _trace.enable(tmp_path / "t")
    with _trace.span("outer", "test", n=1):
        _trace.instant("point", "test", k="v")
    _trace.begin("b", "test")
    _trace.end("b", "test")
    _trace.counter("depth", "test", queued=3)
    _trace.complete("done", "test", 1.0, 1.5, {"bytes": 10})
    worker = threading.Thread(target=lambda: _trace.instant("other", "test"), name="aiolit-loop")
    worker.start()
    worker.join()
    path = _trace.flush()
    assert path == str(tmp_path / "t" / f"trace-{os.getpid()}.json")
    events = load_trace(Path(path))
    by_name = {e["name"]: e for e in events if e["ph"] != "M"}
    assert by_name["done"]["dur"] == pytest.approx(0.5e6) and by_name["done"]["args"] == {"bytes": 10}
    assert by_name["outer"]["args"] == {"n": 1} and by_name["point"]["s"] == "t"
    assert by_name["depth"]["args"] == {"queued": 3}
    assert by_name["other"]["tid"] != by_name["outer"]["tid"]
    threads = {e["args"]["name"]: e["tid"] for e in events if e["name"] == "thread_name"}
    assert (
        threads["aiolit-loop"] == by_name["other"]["tid"] and threads["MainThread"] == by_name["outer"]["tid"]
    )


def test_merge_keeps_a_time_window(tmp_path: Path) -> None:
    _trace.enable(tmp_path / "t")
    _trace.complete("early", "test", 1.0, 2.0)
    _trace.complete("late", "test", 10.0, 11.0)
    _trace.flush()
    out = tmp_path / "merged.json"
    _trace.merge(tmp_path / "t", out, since=5.0, until=20.0)
    assert [e["name"] for e in load_trace(out) if e["ph"] != "M"] == ["late"]


# -- StreamingDataLoader(profile_batches=N) --------------------------------------------------------


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_profiled_epoch_merges_the_workers_traces(tmp_path: Path, context: str) -> None:
    loader = StreamingDataLoader(
        remote_dataset(tmp_path),
        batch_size=4,
        num_workers=2,
        profile_batches=6,
        profile_dir=str(tmp_path / "prof"),
        multiprocessing_context=context,
    )
    assert sum(len(b["i"]) for b in loader) == 120
    events = load_trace(tmp_path / "prof" / "result.json")
    names = names_by_pid(events)
    assert len(names) >= 3  # the main process and both workers
    main = os.getpid()
    assert "batch wait" in names[main]
    assert sum(e["name"] == "batch wait" for e in events) == 6
    workers = [pid for pid in names if pid != main]
    assert len(workers) == 2
    for pid in workers:
        assert {"download", "decode", "wait for chunk", "open chunk", "collate"} <= names[pid], names[pid]
    download = next(e for e in events if e["name"] == "download")
    assert {"chunk", "bytes", "attempt"} <= set(download["args"]) and download["args"]["attempt"] == 1
    # Worker rows are labelled; the scratch directory is gone; the main process stopped tracing.
    labels = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert any(label.startswith("DataLoader worker 0") for label in labels)
    assert not list((tmp_path / "tmp").glob("aiolit-profile-*"))
    assert not _trace.enabled() and _trace.mark() == 0
    # Epoch 2 is not profiled and changes nothing.
    before = (tmp_path / "prof" / "result.json").stat().st_mtime_ns
    assert sum(len(b["i"]) for b in loader) == 120
    assert (tmp_path / "prof" / "result.json").stat().st_mtime_ns == before


def test_profile_longer_than_the_epoch_is_written_at_its_end(tmp_path: Path) -> None:
    loader = StreamingDataLoader(
        remote_dataset(tmp_path, 40),
        batch_size=4,
        num_workers=2,
        profile_batches=50,
        profile_dir=str(tmp_path),
    )
    assert len(list(loader)) == 10
    events = load_trace(tmp_path / "result.json")
    assert sum(e["name"] == "batch wait" for e in events) == 10
    assert len(names_by_pid(events)) == 3


def test_tracing_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loader = StreamingDataLoader(remote_dataset(tmp_path), batch_size=4, num_workers=2)
    assert sum(len(b["i"]) for b in loader) == 120
    assert {p.name for p in tmp_path.rglob("*.json*")} == {"index.json"}
    assert not list((tmp_path / "tmp").iterdir())
    assert not _trace.enabled() and _trace.mark() == 0 and _trace.ENV not in os.environ


# -- aiolit.debugger ----------------------------------------------------------------------------------


def test_enable_tracer_writes_the_merged_trace_on_flush(tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    assert debugger.enable_tracer(out) == str(out)
    assert _trace.enabled() and os.environ[_trace.ENV]
    loader = StreamingDataLoader(remote_dataset(tmp_path), batch_size=4, num_workers=2)
    assert sum(len(b["i"]) for b in loader) == 120
    assert debugger.flush_tracer() == str(out)
    events = load_trace(out)
    names = names_by_pid(events)
    assert len(names) == 3
    assert "batch wait" in names[os.getpid()]
    assert all({"download", "decode"} <= n for pid, n in names.items() if pid != os.getpid())
    scratch = _trace.directory()
    assert debugger.disable_tracer() == str(out)
    assert not _trace.enabled() and _trace.ENV not in os.environ
    assert scratch is not None and not os.path.exists(scratch)


def test_enable_tracer_at_exit_with_spawned_workers(tmp_path: Path) -> None:
    # LitData's README pattern: enable_tracer() at the top of the script, spawn workers re-run it.
    write_dataset(tmp_path / "data", 60, chunk_size=10)
    script = tmp_path / "main.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from aiolit.debugger import enable_tracer
            enable_tracer({str(tmp_path / "out.json")!r})
            from aiolit.streaming import StreamingDataLoader, StreamingDataset

            if __name__ == "__main__":
                ds = StreamingDataset("local:{tmp_path / "data"}", cache_dir={str(tmp_path / "cache")!r})
                loader = StreamingDataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="spawn")
                assert sum(len(b["i"]) for b in loader) == 60
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    env.pop(_trace.ENV, None)
    env["TMPDIR"] = str(tmp_path / "tmp")
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path, env=env, timeout=120)
    events = load_trace(tmp_path / "out.json")
    names = names_by_pid(events)
    assert len(names) == 3
    assert sum("download" in n for n in names.values()) == 2
    assert not list((tmp_path / "tmp").iterdir())  # scratch directories removed


def test_env_var_traces_spawned_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_trace.ENV, str(tmp_path / "traces"))
    (tmp_path / "traces").mkdir()
    loader = StreamingDataLoader(
        remote_dataset(tmp_path, 40), batch_size=4, num_workers=2, multiprocessing_context="spawn"
    )
    assert len(list(loader)) == 10
    files = sorted((tmp_path / "traces").glob("trace-*.json"))
    assert len(files) == 2
    for f in files:
        assert {"download", "decode", "wait for chunk"} <= {e["name"] for e in load_trace(f)}
