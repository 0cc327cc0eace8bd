"""Real processes for the reliability tests: scripts run with subprocess, process trees, checks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

SRC = os.environ.get("OPTREL_SRC") or str(Path(__file__).resolve().parents[2] / "src")

# A coordinator script: optimize(slow, range(N), OUT, ...) with the options given as JSON in argv.
COORDINATOR = """
import json, sys, time
from aiolit import optimize

def slow(i):
    time.sleep(0.002)
    return {"i": i, "pad": b"x" * 500}

if __name__ == "__main__":
    out, n, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    optimize(slow, list(range(n)) if options.pop("as_list", True) else iter(range(n)), out,
             verbose=False, **options)
"""


def env() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = SRC + os.pathsep + environment.get("PYTHONPATH", "")
    return environment


def write_script(directory: Path, text: str, name: str = "script.py") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def start_coordinator(tmp_path: Path, out: str, n: int, **options: Any) -> subprocess.Popen[bytes]:
    script = write_script(tmp_path, COORDINATOR, "coordinator.py")
    return subprocess.Popen(
        [sys.executable, str(script), out, str(n), json.dumps(options)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def chunk_files(out: str) -> list[str]:
    return sorted(name for name in os.listdir(out) if name.endswith(".bin")) if os.path.isdir(out) else []


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def survivors(processes: list[psutil.Process], timeout: float = 30.0) -> list[psutil.Process]:
    """The processes still alive after ``timeout`` seconds (killed afterwards, so none leak)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return alive


def check_dataset(out: str, expected: list[int]) -> None:
    """``index.json`` names exactly ``expected`` (in order), every chunk matches its checksum."""
    from tests.processing.readback import read_aiolit

    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    for entry in index["chunks"]:
        algo, digest = entry["checksum"].split(":")
        with open(os.path.join(out, entry["filename"]), "rb") as f:
            assert hashlib.new(algo, f.read()).hexdigest() == digest, entry["filename"]
    assert [sample["i"] for sample in read_aiolit(out)] == expected
