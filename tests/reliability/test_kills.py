"""Issue 8.1 and 8.16: killed optimize processes (real processes, real SIGKILLs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aiolit import optimize
from tests.reliability._helpers import (
    check_dataset,
    chunk_files,
    descendants,
    env,
    start_coordinator,
    survivors,
    wait_for,
    write_script,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _identity_i(i: int) -> dict[str, int]:
    return {"i": i}


@pytest.mark.parametrize(
    ("ordered", "start_method"),
    [(True, "spawn"), (False, "fork")],
    ids=["ordered-spawn", "shared_queue-fork"],
)
def test_coordinator_sigkill_kills_workers(tmp_path: Path, ordered: bool, start_method: str) -> None:
    out = str(tmp_path / "out")
    proc = start_coordinator(
        tmp_path,
        out,
        200_000,
        chunk_size=20,
        num_workers=2,
        keep_data_ordered=ordered,
        start_method=start_method,
    )
    try:
        wait_for(lambda: len(chunk_files(out)) >= 4, what="the first chunks")
        workers = descendants(proc.pid)
        assert workers, "the coordinator has no worker processes"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert survivors(workers) == [], "pool workers outlived their SIGKILLed coordinator"
        # Nobody writes any more and the killed run does not look complete.
        assert not os.path.exists(os.path.join(out, "index.json"))
    finally:
        proc.kill()
        proc.wait()
        survivors(descendants(proc.pid), timeout=0)


def test_overwrite_after_killed_run_holds_only_its_samples(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    proc = start_coordinator(tmp_path, out, 200_000, chunk_size=20, num_workers=2, start_method="fork")
    try:
        wait_for(lambda: len(chunk_files(out)) >= 4, what="the first chunks")
        workers = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert survivors(workers) == []
    finally:
        proc.kill()
        proc.wait()
    # A temp file as a worker killed mid-write leaves it (named like the writer's temps).
    Path(out, ".chunk-0-99.bin.deadbeef.abc123.tmp").write_bytes(b"half a chunk")
    optimize(_identity_i, list(range(50)), out, chunk_size=7, num_workers=2, mode="overwrite", start_method="fork",
             verbose=False)  # fmt: skip
    check_dataset(out, list(range(50)))
    leftovers = sorted(name for name in os.listdir(out) if name.endswith(".tmp"))
    assert leftovers == []
    indexed = {entry for entry in os.listdir(out) if entry.endswith(".bin")}
    assert len(indexed) == 8  # only this run's chunks: ceil(25 / 7) per worker


def test_run_never_adopts_foreign_chunk_bytes(tmp_path: Path) -> None:
    # A chunk under the name this run would use next, as a killed (or concurrent) run leaves it.
    out = tmp_path / "out"
    out.mkdir()
    (out / "chunk-0-0.bin").write_bytes(b"bytes this run did not write")
    optimize(_identity_i, list(range(30)), str(out), chunk_size=10, num_workers=1, verbose=False)
    check_dataset(str(out), list(range(30)))
    assert (out / "chunk-0-0.bin").read_bytes() == b"bytes this run did not write"  # never clobbered


def test_killed_worker_stderr_has_no_unretrieved_future(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        """
import os, signal
from aiolit import optimize
from aiolit.errors import OptimizeError

def die_on_3(i):
    if i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return i

if __name__ == "__main__":
    try:
        optimize(die_on_3, list(range(40)), "out", chunk_size=2, num_workers=3, start_method="fork", verbose=False)
    except OptimizeError as exc:
        print("OptimizeError:", exc)
""",
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script)], cwd=tmp_path, env=env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OptimizeError: A worker process died unexpectedly" in done.stdout
    assert "Future exception was never retrieved" not in done.stderr
    assert "BrokenProcessPool" not in done.stderr, done.stderr
