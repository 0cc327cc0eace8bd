"""Kill matrix for ``optimize``: SIGKILL a pool worker or the coordinator at a random time.

Run: ``PYTHONPATH=src python benchmarks/kill_matrix.py [--runs 10] [--seed 0]``

Each run starts a real coordinator process (``optimize`` of N inputs, 2 workers, alternating the
ordered and the shared-queue mode) and, after a random delay, SIGKILLs either one of its pool
workers or the coordinator itself. Then it checks that:

* the run either completed with exactly its inputs (in order) or left no complete-looking index
  (no ``index.json``, no ``*index.json`` shard);
* no process of the run survives (every descendant seen while it ran has exited within 10 s); the
  table reports the slowest time from the coordinator's kill to the last descendant's exit
  (exited = gone or a zombie left for init to reap);
* a following ``optimize(..., mode="overwrite")`` into the same folder holds exactly its own
  inputs (nothing adopted from the killed run) and leaves no temp files.

It prints a Markdown table (the one in docs/reliability.md). Not a speed benchmark: the delays are
random, so the outcome counts vary slightly from run to run; every row must show 0 bad indexes,
0 orphans and 0 bad overwrites.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# KILL_MATRIX_SRC: run the coordinators from another source tree (e.g. an older commit, for a before/after).
SRC = os.environ.get("KILL_MATRIX_SRC") or str(Path(__file__).resolve().parents[1] / "src")

COORDINATOR = """
import sys, time
from aiolit import optimize

def slow(i):
    time.sleep(0.002)
    return {"i": i, "pad": b"x" * 200}

if __name__ == "__main__":
    out, n, ordered = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    optimize(slow, list(range(n)), out, chunk_size=25, num_workers=2, keep_data_ordered=ordered,
             verbose=False, mode="overwrite")
"""


def _identity_i(i: int) -> dict[str, int]:
    return {"i": i}


@dataclass
class Row:
    scenario: str
    runs: int = 0
    completed_exact: int = 0
    no_index: int = 0
    bad_index: int = 0
    orphans: int = 0
    overwrite_ok: int = 0
    slowest_exit: float = 0.0
    exits: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_ids(out: str) -> list[int]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.processing.readback import read_aiolit

    return [sample["i"] for sample in read_aiolit(out)]


def _env() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = SRC + os.pathsep + environment.get("PYTHONPATH", "")
    return environment


def one_run(row: Row, target: str, n: int, delay: float, ordered: bool, work: Path) -> None:
    from aiolit import optimize

    out = str(work / "out")
    script = work / "coordinator.py"
    script.write_text(COORDINATOR)
    proc = subprocess.Popen(
        [sys.executable, str(script), out, str(n), "1" if ordered else "0"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen: dict[int, psutil.Process] = {}
    started = time.monotonic()
    killed_at = None
    while proc.poll() is None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        if killed_at is None and time.monotonic() - started >= delay:
            victims = [p for p in seen.values() if "resource_tracker" not in " ".join(_cmdline(p))]
            if target == "coordinator":
                proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
            elif victims:
                victim = random.choice(victims)
                try:
                    victim.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                except psutil.NoSuchProcess:
                    pass
        time.sleep(0.02)
    proc.wait()
    # Dead = exited (a zombie waiting for init to reap it counts: it runs no code any more).
    pending = list(seen.values())
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if _running(p)]
        time.sleep(0.005)
    end = time.monotonic()
    row.runs += 1
    if pending:
        row.orphans += 1
        for process in pending:
            process.kill()
    elif killed_at is not None and target == "coordinator":
        row.slowest_exit = max(row.slowest_exit, end - killed_at)
        row.exits.append(round(end - killed_at, 3))
    index = os.path.join(out, "index.json")
    if os.path.exists(index):
        ids = _read_ids(out)
        if ids == list(range(n)):
            row.completed_exact += 1
        else:
            row.bad_index += 1
            row.notes.append(f"index with {len(ids)} samples")
    elif os.path.isdir(out) and any(name.endswith("index.json") for name in os.listdir(out)):
        row.bad_index += 1
        row.notes.append("a shard index was left")
    else:
        row.no_index += 1
    # The next run into the same folder must hold exactly its own samples, and no temp files.
    optimize(_identity_i, list(range(37)), out, chunk_size=5, num_workers=2, mode="overwrite", verbose=False)
    temps = [name for name in os.listdir(out) if name.endswith(".tmp")]
    if _read_ids(out) == list(range(37)) and not temps:
        row.overwrite_ok += 1
    else:
        row.notes.append(f"overwrite after the kill: temps={temps}")


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--max-delay", type=float, default=6.0, help="kill within [0.3, this] seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    rows = []
    for target in ("worker", "coordinator"):
        row = Row(f"SIGKILL {target}")
        for run in range(args.runs):
            delay = random.uniform(0.3, args.max_delay)
            with tempfile.TemporaryDirectory(prefix="aiolit-kill-") as work:
                one_run(row, target, args.inputs, delay, ordered=run % 2 == 0, work=Path(work))
            print(f"{row.scenario} run {run + 1}/{args.runs} (kill at {delay:.1f}s) done", file=sys.stderr)
        rows.append(row)
    print("| scenario | runs | completed with exactly the inputs | killed, no index | bad index "
          "| orphan processes | overwrite afterwards exact | kill → all processes exited (median / max) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row.exits:
            slowest = f"{statistics.median(row.exits):.2f} s / {row.slowest_exit:.2f} s"
        elif row.orphans:
            slowest = "processes still alive 10 s after the kill"
        else:
            slowest = "n/a (the coordinator reaps its pool)"
        print(f"| {row.scenario} | {row.runs} | {row.completed_exact} | {row.no_index} | {row.bad_index} "
              f"| {row.orphans} | {row.overwrite_ok}/{row.runs} | {slowest} |")  # fmt: skip
        for note in row.notes:
            print(f"  - {row.scenario}: {note}")
    print(json.dumps({r.scenario: r.__dict__ for r in rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
