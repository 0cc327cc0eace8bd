"""Every benchmark, side by side with LitData: one JSON in benchmarks/results/ and docs/img/speed.png.

    PYTHONPATH=src python benchmarks/run_all.py                 # full run (~15-30 min on 2 cores)
    PYTHONPATH=src python benchmarks/run_all.py --quick         # small sizes, one run each: a smoke test
    PYTHONPATH=src python benchmarks/run_all.py --render FILE   # redraw the plot from a saved JSON

Each cell (a workload in a scenario) is measured ``--runs`` times per library, aiolit and LitData
alternating (a, l, a, l, ...) so that a noisy neighbour hurts both alike; the cell reports the
medians and their ratio aiolit / LitData (higher is faster). Where a hardware ceiling exists it is
measured in the same unit and drawn on the plot as a marker: the page-cache read rate for local
token blocks, 16 concurrent GETs of every chunk for the remote epoch (small samples are bound by
per-sample decoding, not by bytes: no ceiling is drawn for them). The workloads reuse the helpers
of the single benchmarks:

* ``local``    bench_streaming.py: small samples and token blocks from local disk (iteration in one
               process, and a ``StreamingDataLoader`` with 2 workers);
* ``optimize`` bench_optimize.py: ``optimize`` of small samples and of JPEG images, 2 workers;
* ``remote``   bench_remote.py: a cold epoch from S3 (SeaweedFS) behind a latency proxy;
* ``fast`` / ``stores``: bench_fast.py (Cython vs numpy) and bench_stores.py (store throughput)
               compare aiolit with itself, not with LitData: their output is kept in the JSON as text.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
sys.path[:0] = [str(REPO / "src"), str(REPO), str(BENCH)]

RESULTS = BENCH / "results"
PNG = REPO / "docs" / "img" / "speed.png"
GROUPS = ("local", "optimize", "remote", "fast", "stores")


# -- the machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    versions = {}
    for name in ("aiolit", "litdata", "torch", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # a missing library just goes unreported
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


# -- measuring -----------------------------------------------------------------------------------


def rate_of(make: Callable[[], Iterable[Any]], count: Callable[[Any], int] = lambda _: 1) -> float:
    """Items per second of one full pass over ``make()``."""
    start = time.perf_counter()
    n = sum(count(x) for x in make())
    return n / (time.perf_counter() - start)


class Runner:
    """Collects cells; drives the tqdm bar (one tick per measured run)."""

    def __init__(self, runs: int, total: int) -> None:
        from tqdm import tqdm

        self.runs = runs
        self.cells: list[dict[str, Any]] = []
        self.bar = tqdm(total=total, unit="run", desc="benchmarks", file=sys.stderr)

    def alternate(
        self,
        workload: str,
        scenario: str,
        unit: str,
        aiolit: Callable[[], float],
        litdata: Callable[[], float],
        ceiling: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Measure ``runs`` times per library, alternating; ``aiolit``/``litdata`` return a rate."""
        self.bar.set_postfix_str(f"{workload}: {scenario}")
        a_runs: list[float] = []
        l_runs: list[float] = []
        for _ in range(self.runs):
            a_runs.append(aiolit())
            self.bar.update()
            l_runs.append(litdata())
            self.bar.update()
        a, b = statistics.median(a_runs), statistics.median(l_runs)
        cell = {
            "workload": workload,
            "scenario": scenario,
            "unit": unit,
            "aiolit": a_runs,
            "litdata": l_runs,
            "aiolit_median": a,
            "litdata_median": b,
            "ratio": a / b,
            "ceiling": ceiling,
            "ceiling_ratio": None if ceiling is None else ceiling / b,
            **(extra or {}),
        }
        self.cells.append(cell)
        return cell


# -- workloads -------------------------------------------------------------------------------------


def bench_local(runner: Runner, root: str, quick: bool) -> None:
    import bench_streaming as bs
    import litdata

    import aiolit.streaming as al

    samples = 5_000 if quick else 200_000
    n_tokens = 1_000_000 if quick else 20_000_000
    block = 2049
    for shape in ("dict:int/str/int", "dict:f32[16]/int"):
        path = os.path.join(root, f"small-{shape.replace('/', '_').replace(':', '_')}")
        bs.write_small(path, samples, bs.SHAPES[shape])
        for _ in al.StreamingDataset(path):  # warm the page cache
            pass
        page = bs.page_cache_rate(path)
        per_sample = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / samples
        runner.alternate(
            "small samples, local",
            f"iterate {shape}",
            "samples/s",
            lambda p=path: rate_of(lambda: al.StreamingDataset(p)),  # type: ignore[misc]
            lambda p=path: rate_of(lambda: litdata.StreamingDataset(p)),  # type: ignore[misc]
            # Reading the bytes is not what bounds small samples (per-sample decode is), so the
            # page-cache rate is kept for reference but not drawn as their ceiling.
            extra={"page_cache_samples_per_s": page / per_sample},
        )
        shutil.rmtree(path, ignore_errors=True)

    tokens = os.path.join(root, "tokens")
    bs.write_tokens(tokens, n_tokens)
    for _ in al.StreamingDataset(tokens, item_loader=al.TokensLoader(block)):
        pass
    ceiling = bs.page_cache_rate(tokens) / (block * 4)
    runner.alternate(
        "token blocks, local",
        "iterate",
        "blocks/s",
        lambda: rate_of(lambda: al.StreamingDataset(tokens, item_loader=al.TokensLoader(block))),
        lambda: rate_of(lambda: litdata.StreamingDataset(tokens, item_loader=litdata.TokensLoader(block))),
        ceiling=ceiling,
    )
    loaders: dict[str, Any] = {}
    opts = {"batch_size": 32, "num_workers": 2, "persistent_workers": True}
    for name, mod in (("aiolit", al), ("litdata", litdata)):
        ds = mod.StreamingDataset(tokens, item_loader=mod.TokensLoader(block))
        loaders[name] = mod.StreamingDataLoader(ds, **opts)
        for _ in loaders[name]:  # warm-up epoch: starts the persistent workers
            pass
    runner.alternate(
        "token blocks, local",
        "DataLoader batch 32, 2 workers",
        "blocks/s",
        lambda: rate_of(lambda: loaders["aiolit"], len),
        lambda: rate_of(lambda: loaders["litdata"], len),
        ceiling=ceiling,
    )
    loaders.clear()
    shutil.rmtree(tokens, ignore_errors=True)


def bench_opt(runner: Runner, root: str, quick: bool) -> None:
    import bench_optimize as bo

    workers = 2
    jpeg_dir = os.path.join(root, "jpegs")
    os.makedirs(jpeg_dir)
    workloads = {
        "small": list(range(2_000 if quick else 20_000)),
        "jpeg": bo._make_jpegs(jpeg_dir, 200 if quick else 2_000),
    }
    for workload, inputs in workloads.items():
        inputs_file = os.path.join(root, f"{workload}.json")
        with open(inputs_file, "w") as f:
            json.dump(inputs, f)
        rss: dict[str, list[float]] = {"aiolit": [], "litdata": []}

        def one(
            lib: str, workload: str = workload, inputs_file: str = inputs_file, n: int = len(inputs)
        ) -> float:
            r = bo._measure(lib, workload, inputs_file, workers)
            rss[lib].append(r["peak_rss"])  # noqa: B023 - read in this same iteration
            return n / r["seconds"]

        runner.alternate(
            "optimize",
            f"{'small samples' if workload == 'small' else '64x64 JPEG images'}, {workers} workers",
            "samples/s",
            lambda: one("aiolit"),
            lambda: one("litdata"),
            extra={"peak_rss": rss},
        )
    shutil.rmtree(jpeg_dir, ignore_errors=True)


def bench_rem(runner: Runner, root: str, quick: bool, rtt_ms: float) -> None:
    import bench_remote as br

    from tests.servers import start_seaweedfs

    server = start_seaweedfs()
    proxy: subprocess.Popen[bytes] | None = None
    try:
        s3_port = int(server.endpoint.rsplit(":", 1)[1])
        stats = os.path.join(root, "proxy-stats.json")
        proxy, proxy_port = br.start_proxy(s3_port, argparse.Namespace(rtt_ms=rtt_ms, mbps=0), stats, None)
        endpoint = f"http://127.0.0.1:{proxy_port}"
        direct = dict(server.storage_options)
        opts = {**direct, "endpoint_url": endpoint}
        bucket = server.new_bucket("bench")
        sizes: dict[str, int] = {}
        for kind in ("small", "tokens"):
            local = os.path.join(root, f"remote-{kind}")
            if kind == "small":
                chunks, chunk_bytes = (4, int(0.5 * br.MB)) if quick else (64, int(1.5 * br.MB))
                br.write_small(local, chunks * chunk_bytes // 3100, chunk_bytes)  # ~3.1 kB samples
            else:
                br.write_tokens(local, 4 if quick else 64, 2**18 if quick else 2**20)
            sizes[kind] = br.dataset_bytes(local)[0]
            asyncio.run(br.upload(local, f"s3://{bucket}/{kind}", direct))
        names = sorted(p.name for p in Path(root, "remote-tokens").iterdir() if p.name.startswith("chunk-"))
        size = os.path.getsize(os.path.join(root, "remote-tokens", names[0]))
        ceil = asyncio.run(br.ceiling(f"s3://{bucket}/tokens", opts, names, size))
        env = {**os.environ, **server.env, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
        for kind in ("small", "tokens"):
            for workers in (0, 2):
                firsts: dict[str, list[float]] = {"aiolit": [], "litdata": []}

                def one(lib: str, kind: str = kind, workers: int = workers) -> float:
                    cache = tempfile.mkdtemp(prefix=f"cache-{lib}-", dir=root)
                    spec = {
                        "lib": lib, "kind": kind, "workers": workers, "cache": cache, "opts": opts,
                        "url": f"s3://{bucket}/{kind}", "block": 2049, "batch": 256 if kind == "small" else 64,
                    }  # fmt: skip
                    res = br.run_child(spec, env, 900, stats)
                    shutil.rmtree(cache, ignore_errors=True)
                    if "error" in res:
                        raise RuntimeError(f"remote {kind} {lib}: {res['error']}")
                    firsts[lib].append(res["first"])  # noqa: B023 - read in this same iteration
                    return sizes[kind] / br.MB / float(res["total"])

                runner.alternate(
                    f"cold epoch from S3, {rtt_ms:g} ms RTT",
                    f"{'small samples' if kind == 'small' else 'token blocks'}, {workers} workers",
                    "MB/s",
                    lambda: one("aiolit"),
                    lambda: one("litdata"),
                    ceiling=ceil["parallel16_MBps"],
                    extra={"first_batch_s": firsts, "ceiling_detail": ceil},
                )
    finally:
        if proxy is not None:
            br.stop(proxy)
        server.stop()


def run_text(runner: Runner, argv: list[str]) -> str:
    """A benchmark that compares aiolit with itself: its printed table, kept as text."""
    runner.bar.set_postfix_str(Path(argv[0]).name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    runner.bar.update()
    return out.stdout if out.returncode == 0 else f"failed ({out.returncode}): {out.stderr[-2000:]}"


# -- the plot ----------------------------------------------------------------------------------------


def render(results: dict[str, Any], png: Path) -> None:
    """Ratio bars (aiolit / LitData) per workload and scenario, ceilings marked, machine in the footer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["cells"]
    labels = [f"{c['workload']}\n{c['scenario']}" for c in cells]
    ratios = [c["ratio"] for c in cells]
    workloads = list(dict.fromkeys(c["workload"] for c in cells))
    palette = plt.get_cmap("tab10")
    colors = [palette(workloads.index(c["workload"]) % 10) for c in cells]
    height = 1.2 + 0.55 * len(cells)
    fig, ax = plt.subplots(figsize=(10, height))
    ys = list(range(len(cells)))[::-1]
    ax.barh(ys, ratios, color=colors, height=0.6)
    for y, r in zip(ys, ratios, strict=True):
        ax.text(r * 1.04, y, f"{r:.2f}x", va="center", fontsize=9)
    marked = False
    for y, c in zip(ys, cells, strict=True):
        if c.get("ceiling_ratio"):
            ax.plot([c["ceiling_ratio"]] * 2, [y - 0.38, y + 0.38], color="black", lw=2.5,
                    label=None if marked else "hardware ceiling (same unit, / LitData)")  # fmt: skip
            marked = True
    ax.axvline(1.0, color="grey", ls="--", lw=1, label="LitData (1x)")
    ax.set_xscale("log")
    top = max([*ratios, *(c["ceiling_ratio"] or 0 for c in cells)])
    ax.set_xlim(min(0.5, min(ratios) / 1.5), top * 1.8)
    ticks = [
        t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]
    ]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("aiolit / LitData, median of alternating runs (higher is faster)")
    ax.legend(loc="lower right", fontsize=8)
    m = results["machine"]
    v = m["versions"]
    mode = "quick run (small sizes)" if results.get("quick") else f"median of {results['runs']} runs"
    title = f"aiolit {v.get('aiolit')} vs LitData {v.get('litdata')}: {mode}"
    ax.set_title(title, fontsize=11)
    footer = (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, Python {m['python']}, "
        f"torch {v.get('torch')}; {results['date']}"
    )
    if results.get("note"):
        footer += f"\n{results['note']}"
    fig.text(0.01, 0.005, footer, fontsize=7, va="bottom", ha="left", color="dimgray")
    fig.tight_layout(rect=(0, 0.05 if results.get("note") else 0.03, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run: a smoke test")
    parser.add_argument("--runs", type=int, default=3, help="runs per library per cell (alternating)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {GROUPS}")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="latency proxy RTT for the remote epoch")
    parser.add_argument("--note", default="", help="a line printed under the plot (e.g. 'shared machine')")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--png", type=Path, default=PNG, help=f"plot path (default {PNG.relative_to(REPO)})")
    parser.add_argument("--render", type=Path, help="only redraw the plot from this JSON")
    args = parser.parse_args(argv)
    if args.render:
        render(json.loads(args.render.read_text()), args.png)
        print(args.png)
        return 0

    only = [g for g in args.only.split(",") if g]
    unknown = set(only) - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown group(s) {sorted(unknown)}; choose from {GROUPS}")
    runs = 1 if args.quick else args.runs
    per_group = {
        "local": 4 * 2 * runs,
        "optimize": 2 * 2 * runs,
        "remote": 4 * 2 * runs,
        "fast": 1,
        "stores": 1,
    }
    runner = Runner(runs, sum(per_group[g] for g in only))
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": args.quick,
        "runs": runs,
        "note": args.note,
        "command": " ".join(["python benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "cells": runner.cells,
        "text": {},
    }
    root = tempfile.mkdtemp(prefix="aiolit-run-all-")
    try:
        if "local" in only:
            bench_local(runner, root, args.quick)
        if "optimize" in only:
            bench_opt(runner, root, args.quick)
        if "remote" in only:
            bench_rem(runner, root, args.quick, args.rtt_ms)
        if "fast" in only:
            budget = "0.02" if args.quick else "0.2"
            results["text"]["bench_fast"] = run_text(runner, ["benchmarks/bench_fast.py", "--budget", budget])
        if "stores" in only:
            size = ["--size-mb", "8", "--repeat", "1", "--only", "seaweedfs"] if args.quick else []
            results["text"]["bench_stores"] = run_text(runner, ["benchmarks/bench_stores.py", *size])
    finally:
        runner.bar.close()
        shutil.rmtree(root, ignore_errors=True)

    out = args.out or RESULTS / f"run_all-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    for c in runner.cells:
        ceiling = f"  ceiling {c['ceiling_ratio']:.1f}x" if c["ceiling_ratio"] else ""
        print(f"{c['workload']:34s} {c['scenario']:34s} {c['ratio']:6.2f}x{ceiling}")
    if runner.cells:
        render(results, args.png)
        print(f"wrote {out} and {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
