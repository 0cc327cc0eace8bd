"""How politely aiolit shares the caller's event loop: lag, loop-thread CPU, requests per ``aget``.

Run: ``PYTHONPATH=src:. python benchmarks/bench_async.py [--samples 50000] [--rtt-ms 20]``
(point ``PYTHONPATH`` at another tree's ``src`` to measure that tree with the same script).

A heartbeat task on the caller's loop asks to wake every 5 ms and records how late it wakes (the
loop lag a co-hosted service would see); ``time.thread_time()`` of the loop thread gives the CPU
the loop itself spent. Cases, each in a fresh child process (everything on 127.0.0.1):

1. ``async for`` over a local dataset of ``--samples`` small dict samples (in 1 MB chunks, and in
   chunks of 10 samples: many chunks) and over token blocks (``TokensLoader``), read in place,
   ``--epochs`` passes: throughput, lag max/p99/p50, heartbeat ticks;
2. the same datasets on S3 (SeaweedFS behind ``latency_proxy.py``, ``--rtt-ms`` of round trip);
3. a burst of 200 concurrent ``await ds.aget(i)`` on the S3 dataset, twice (cold: chunk offsets
   unknown; warm: same chunks, other items): calls/s, HTTP requests per call (counted by a
   :class:`aiolit.testing.FaultyStore` around the real S3 store), loop CPU per call, lag, and
   the full garbage collections that ran during the burst (in any thread: a pause of the whole
   process; ``--gc-freeze`` calls ``gc.freeze()`` after start-up, as a service may);
4. ``optimize_async`` with an ``async def fn`` that awaits 20 ms per input: the concurrency it
   reached against ``max_concurrency``, and the lag.

LitData has no async API, so there is no LitData column here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PERIOD = 0.005


class Heartbeat:
    """A task on the running loop that wants to run every 5 ms and records its lateness."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.cpu_gaps: list[float] = []  # loop-thread CPU between two heartbeats
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + PERIOD
        cpu = time.thread_time()
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            self.lags.append(max(0.0, now - due))
            cpu, before = time.thread_time(), cpu
            self.cpu_gaps.append(cpu - before)
            due = now + PERIOD

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)
        self.cpu0 = time.thread_time()
        self.t0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cpu = time.thread_time() - self.cpu0
        self.wall = time.perf_counter() - self.t0
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def report(self) -> dict[str, float]:
        lags = sorted(self.lags) or [self.wall]
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
        # The loop thread's CPU between heartbeats: what a quiet machine's lag is made of (on a
        # busy host, wall-clock lag also counts the time the OS did not run this process).
        gaps = sorted(self.cpu_gaps) or [self.cpu]
        return {
            "ticks": len(self.lags),
            "lag_max_ms": max(lags) * 1e3,
            "lag_p99_ms": p99 * 1e3,
            "lag_p50_ms": lags[len(lags) // 2] * 1e3,
            "cpu_gap_max_ms": max(gaps) * 1e3,
            "cpu_gap_p99_ms": gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))] * 1e3,
            "loop_cpu_s": self.cpu,
            "wall_s": self.wall,
        }


# -- datasets --------------------------------------------------------------------------------------


def write_small(path: str, n: int, chunk_size: int | None = None) -> None:
    from aiolit.format import ChunkWriter, merge_shards

    if chunk_size is None:
        writer = ChunkWriter(path, chunk_bytes=1 << 20)
    else:
        writer = ChunkWriter(path, chunk_size=chunk_size)
    for i in range(n):
        writer.add({"index": i, "label": i % 10, "text": f"sample {i} " * 8})
    writer.done()
    merge_shards(path)


def write_tokens(path: str, n_blocks: int, block: int) -> None:
    import numpy as np

    from aiolit.format import ChunkWriter, merge_shards
    from aiolit.streaming import TokensLoader

    writer = ChunkWriter(path, chunk_size=block * 4096, item_loader=TokensLoader())
    rng = np.random.default_rng(0)
    for _ in range(n_blocks // 64):
        writer.add(rng.integers(0, 50_000, size=64 * block, dtype=np.int32))
    writer.done()
    merge_shards(path)


async def upload(local: str, url: str, opts: dict[str, Any]) -> None:
    from aiolit.stores import open_store

    store = open_store(url, opts)
    try:
        await asyncio.gather(*(store.put_file(p.name, str(p)) for p in Path(local).iterdir()))
    finally:
        await store.aclose()


# -- child cases -------------------------------------------------------------------------------------


def _counting_s3() -> list[Any]:
    """Route s3:// through a FaultyStore (no faults) around the real store, to count requests."""
    from aiolit.stores import register_store
    from aiolit.stores._s3 import S3Store
    from aiolit.testing import FaultyStore

    made: list[Any] = []

    def factory(url: str, storage: dict[str, Any], session: dict[str, Any], transfer: Any) -> Any:
        store = FaultyStore(S3Store(url, storage, session, transfer))
        made.append(store)
        return store

    register_store("s3", factory, overwrite=True)
    return made


def _requests(made: list[Any]) -> int:
    return sum(sum(s.calls.values()) for s in made)


async def case_iterate(spec: dict[str, Any]) -> dict[str, Any]:
    from aiolit.streaming import StreamingDataset, TokensLoader

    kwargs: dict[str, Any] = {}
    if spec.get("opts"):
        kwargs = {"storage_options": spec["opts"], "cache_dir": spec["cache"]}
    if spec["kind"] == "tokens":
        kwargs["item_loader"] = TokensLoader(block_size=spec["block"])
    ds = StreamingDataset(spec["url"], **kwargs)
    n = 0
    async with Heartbeat() as hb:
        for _ in range(spec.get("epochs", 1)):
            async for _ in ds:
                n += 1
    out = {**hb.report(), "samples": n, "samples_per_s": n / hb.wall}
    if not spec.get("opts"):
        # Throughput without the heartbeat, as CPU time of the loop thread (robust to a busy host).
        cpu0 = time.thread_time()
        for _ in range(spec.get("epochs", 1)):
            async for _ in ds:
                pass
        out["samples_per_cpu_s"] = n / (time.thread_time() - cpu0)
    return out


class GcPauses:
    """Full (generation 2) garbage collections while active, in any thread: count and longest."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._start)

    def __enter__(self) -> GcPauses:
        import gc

        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.callbacks.remove(self._callback)

    def report(self) -> dict[str, float]:
        return {"gc2": len(self.pauses), "gc2_max_ms": max(self.pauses, default=0.0) * 1e3}


def _burst_names(warm: int) -> list[str]:
    """``cold`` (offsets unknown), then ``warm`` bursts (offsets known): warm, warm2, warm3 ..."""
    return ["cold", "warm", *(f"warm{k}" for k in range(2, warm + 1))]


async def case_aget(spec: dict[str, Any]) -> dict[str, Any]:
    import gc
    import random

    from aiolit.streaming import StreamingDataset

    made = _counting_s3()
    ds = StreamingDataset(spec["url"], storage_options=spec["opts"], cache_dir=spec["cache"])
    if spec.get("gc_freeze"):
        gc.freeze()  # what a service may do after start-up: long-lived objects leave full GCs
    rng = random.Random(0)
    # Items of the first few chunks, so the second burst reads chunks whose offsets are known.
    pool = list(range(min(len(ds), spec["pool"])))
    out: dict[str, Any] = {}
    for name in _burst_names(spec.get("bursts", 1)):
        ids = rng.sample(pool, spec["calls"])
        before = _requests(made)
        with GcPauses() as gcp:
            async with Heartbeat() as hb:
                got = await asyncio.gather(*(ds.aget(i) for i in ids))
        assert [g["index"] for g in got] == ids
        r = hb.report()
        out[name] = {
            **r,
            **gcp.report(),
            "calls_per_s": len(ids) / hb.wall,
            "requests_per_call": (_requests(made) - before) / len(ids),
            "loop_cpu_ms_per_call": r["loop_cpu_s"] * 1e3 / len(ids),
        }
    closer = getattr(ds, "aclose", None)
    if closer is not None:
        await closer()
    return out


async def _fn_sleep(item: int) -> dict[str, int]:
    _LIVE[0] += 1
    _LIVE[1] = max(_LIVE[1], _LIVE[0])
    try:
        await asyncio.sleep(0.02)
    finally:
        _LIVE[0] -= 1
    return {"i": item, "twice": 2 * item}


_LIVE = [0, 0]


async def case_optimize(spec: dict[str, Any]) -> dict[str, Any]:
    from aiolit.processing import optimize_async

    out = os.path.join(spec["cache"], "out")
    async with Heartbeat() as hb:
        await optimize_async(
            _fn_sleep,
            list(range(spec["inputs"])),
            out,
            chunk_bytes="1MB",
            max_concurrency=spec["concurrency"],
            verbose=False,
        )
    return {**hb.report(), "max_concurrency": spec["concurrency"], "overlap": _LIVE[1]}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import aiobotocore.session  # noqa: F401  (imports before the clock)

    import aiolit.streaming  # noqa: F401

    case = {"iterate": case_iterate, "aget": case_aget, "optimize": case_optimize}[spec["case"]]
    result: dict[str, Any] = asyncio.run(case(spec))
    return result


# -- orchestration -----------------------------------------------------------------------------------


def run_child(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    out: dict[str, Any] = {}
    for key, value in ok[0].items():
        if isinstance(value, dict):
            out[key] = median_of([r[key] for r in ok])
        elif isinstance(value, int | float):
            vals = sorted(r[key] for r in ok)
            out[key] = vals[len(vals) // 2]
        else:
            out[key] = value
    return out


def fmt_lag(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    return (
        f"lag max {r['lag_max_ms']:7.1f} ms  p99 {r['lag_p99_ms']:6.1f} ms  p50 {r.get('lag_p50_ms', 0):5.1f} ms  "
        f"CPU between beats max {r.get('cpu_gap_max_ms', 0):6.1f} ms  p99 {r.get('cpu_gap_p99_ms', 0):5.1f} ms  "
        f"ticks {r['ticks']:5d}  "
        f"loop CPU {r['loop_cpu_s'] * 1e3:7.0f} ms  wall {r['wall_s'] * 1e3:7.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument(
        "--epochs",
        type=int,
        default=40,
        help="local passes per run: enough heartbeat ticks (several hundred) that the p99 is not the max",
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument(
        "--bursts",
        type=int,
        default=1,
        help="warm aget bursts after the cold one (full GCs: startup or steady?)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; medians are reported")
    parser.add_argument("--cases", default="local,s3,aget,optimize")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="aget: gc.freeze() after start-up, as a service may"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return

    from benchmarks.bench_remote import start_proxy, stop
    from tests.servers import start_seaweedfs

    cases = args.cases.split(",")
    root = tempfile.mkdtemp(prefix="aiolit-bench-async-")
    env = {**os.environ}
    src = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, str(REPO)])
    print(
        f"aiolit from {src}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; medians of {args.repeat}"
    )
    datasets = {"small": os.path.join(root, "small"), "tokens": os.path.join(root, "tokens")}
    write_small(datasets["small"], args.samples)
    write_tokens(datasets["tokens"], args.samples, args.block)

    def repeat(spec: dict[str, Any]) -> dict[str, Any]:
        runs = []
        for r in range(args.repeat):
            cache = os.path.join(root, f"cache-{spec['case']}-{spec.get('kind', '')}-{r}")
            runs.append(run_child({**spec, "cache": cache}, env))
            shutil.rmtree(cache, ignore_errors=True)
        return median_of(runs)

    if "local" in cases:
        # The same small samples in chunks of 10 items: a pass's per-chunk work (plan, opens).
        many = os.path.join(root, "many")
        write_small(many, args.samples, chunk_size=10)
        for kind, path in [*datasets.items(), ("many", many)]:
            epochs = args.epochs if kind != "many" else max(1, args.epochs // 4)
            r = repeat({"case": "iterate", "kind": kind, "url": path, "block": args.block, "epochs": epochs})
            rate = f"{r.get('samples_per_cpu_s', 0):9.0f} samples/CPU-s"
            label = f"{kind:6s} {args.samples} samples" + (
                f" in {args.samples // 10} chunks" if kind == "many" else ""
            )
            print(f"async for local {label}: {rate}  {fmt_lag(r)}")
    server = proxy = None
    try:
        if {"s3", "aget"} & set(cases):
            server = start_seaweedfs()
            stats = os.path.join(root, "proxy-stats.json")
            proxy_args = argparse.Namespace(rtt_ms=args.rtt_ms, mbps=0)
            proxy, port = start_proxy(int(server.endpoint.rsplit(":", 1)[1]), proxy_args, stats, None)
            env.update(server.env)
            opts = {**server.storage_options, "endpoint_url": f"http://127.0.0.1:{port}"}
            bucket = server.new_bucket("bench")
            for kind, path in datasets.items():
                asyncio.run(upload(path, f"s3://{bucket}/{kind}", server.storage_options))
            print(f"S3: SeaweedFS behind a {args.rtt_ms:g} ms RTT proxy")
        if "s3" in cases:
            for kind in datasets:
                spec = {"case": "iterate", "kind": kind, "url": f"s3://{bucket}/{kind}", "opts": opts}
                r = repeat({**spec, "block": args.block})
                rate = f"{r.get('samples_per_s', 0):9.0f} samples/s"
                print(f"async for S3    {kind:6s} {args.samples} samples: {rate}  {fmt_lag(r)}")
        if "aget" in cases:
            spec = {
                "case": "aget",
                "url": f"s3://{bucket}/small",
                "opts": opts,
                "calls": args.calls,
                "pool": 3000,
                "gc_freeze": args.gc_freeze,
                "bursts": args.bursts,
            }
            r = repeat(spec)
            for name in _burst_names(args.bursts):
                c = r.get(name, r)
                if "error" in c:
                    print(f"aget x{args.calls} {name}: ERROR {c['error']}")
                    continue
                print(
                    f"aget x{args.calls} {name}: {c['calls_per_s']:6.0f} calls/s  "
                    f"{c['requests_per_call']:.2f} requests/call  "
                    f"loop CPU {c['loop_cpu_ms_per_call']:.2f} ms/call  {fmt_lag(c)}  "
                    f"full GCs {c['gc2']:.0f} (longest {c['gc2_max_ms']:.0f} ms)"
                )
    finally:
        if proxy is not None:
            stop(proxy)
        if server is not None:
            server.stop()
    if "optimize" in cases:
        for conc in (8, 64):
            r = repeat({"case": "optimize", "inputs": 1000, "concurrency": conc})
            if "error" in r:
                print(f"optimize_async max_concurrency={conc}: ERROR {r['error']}")
                continue
            print(
                f"optimize_async 1000 inputs, fn awaits 20 ms, max_concurrency={conc:3d}: "
                f"overlap {r['overlap']:3d}  inputs/s {1000 / r['wall_s']:6.0f}  {fmt_lag(r)}"
            )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
