"""512 readers of one bucket: aiolit's request pattern at scale, measured, next to LitData's plan.

Run: ``PYTHONPATH=src:. python benchmarks/bench_scale.py [--nodes 64] [--workers 8] [--procs 4]``

What it does (everything on 127.0.0.1; servers stopped at the end):

1. starts SeaweedFS, writes one dataset of small dict samples (``--chunks`` chunks of
   ``--chunk-kb`` kB; each sample carries its global ``index``) and uploads it;
2. starts one logging proxy per simulated node (``tests/request_log.py``, ``--rtt-ms`` added per
   round trip), so every HTTP request is attributed to the node that sent it;
3. starts ``--procs`` real reader processes. Each one drives ``nodes / procs`` simulated nodes,
   each node with ``--workers`` simulated DataLoader workers of rank = node (world size =
   ``--nodes``): every simulated worker is its own ``StreamingDataset`` (its own prefetcher and
   cache accounting, as in a separate worker process) over the node's shared cache directory,
   iterated with ``async for`` through the real engine at the topology it would have on that node.
   All readers start together (a barrier), as a job's ranks do;
4. reports, from the proxies: GET requests and bytes per node and in total, GETs/s and MB/s at the
   server (mean and peak 1 s window), duplicate downloads within a node (bytes of a chunk a node
   fetched more than once), time to first sample across all readers, and checks that the union of
   all ranks' samples is exactly one epoch (no duplicates; only ``drop_last`` leftovers missing);
5. LitData's request pattern for the same topology is computed with LitData's own chunk assignment
   (``litdata.utilities.shuffle._associate_chunks_and_intervals_to_workers``): one whole-chunk GET
   per chunk a node's workers are assigned (its workers share a node cache with file locks, so a
   chunk is fetched once per node), plus ``index.json``. Running 512 LitData reader processes
   here is not possible; this is its plan, not a measurement.

The model to 1,000 nodes built on these numbers is in ``docs/scale.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

MB = 1e6


def write_small(path: str, chunks: int, chunk_bytes: int) -> None:
    """About ``chunks`` chunks of ~650-byte dict samples, each carrying its global ``index``."""
    import numpy as np

    from aiolit.format import ChunkWriter, merge_shards

    writer = ChunkWriter(path, chunk_bytes=chunk_bytes)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    for i in range(chunks * chunk_bytes // 650):
        writer.add(
            {"index": i, "label": i % 10, "text": " ".join(words[j] for j in rng.integers(0, 500, size=120))}
        )
    writer.done()
    merge_shards(path)


# -- the reader processes -----------------------------------------------------------------------


def _node_dataset(spec: dict[str, Any], node: int, endpoint: str) -> Any:
    """The dataset a node's rank builds once (one ``index.json`` GET) and hands to its workers."""
    from aiolit import StreamingDataset

    options = {**spec["creds"], "endpoint_url": endpoint}
    ds = StreamingDataset(
        spec["url"], storage_options=options, cache_dir=os.path.join(spec["cache"], f"node-{node}"),
        shuffle=True, seed=spec["seed"], drop_last=True, max_cache_size=spec["max_cache"],
    )  # fmt: skip
    ds.set_batch_size(spec["batch"])
    return ds


async def _simulated_worker(spec: dict[str, Any], node_ds: Any, node: int, worker: int) -> dict[str, Any]:
    from aiolit.streaming._plan import Topology

    # A DataLoader worker gets the rank's dataset pickled (index included), as a spawned worker does.
    ds = pickle.loads(pickle.dumps(node_ds))
    topology = Topology(spec["world"], node, spec["workers"])
    # The topology this worker has on its node (what torch's worker info + the process group give).
    ds._topology = lambda iterating=False: (topology, worker)
    t0 = time.monotonic()
    first = None
    seen: list[int] = []
    async for sample in ds:
        if first is None:
            first = time.monotonic() - t0
        seen.append(int(sample["index"]))
    return {"node": node, "worker": worker, "first": first, "elapsed": time.monotonic() - t0, "indices": seen}


def child(spec: dict[str, Any]) -> None:
    import aiobotocore.session  # noqa: F401  (imports before the barrier, as in a started worker)

    import aiolit.streaming.dataset  # noqa: F401  (torch comes with it; a worker has it imported)

    print("ready", flush=True)
    sys.stdin.readline()  # the barrier: every reader starts together

    async def run() -> list[dict[str, Any]]:
        t0 = time.monotonic()

        async def node_run(node: int, endpoint: str) -> list[dict[str, Any]]:
            node_ds = await asyncio.to_thread(_node_dataset, spec, node, endpoint)  # ranks open at once
            opened = time.monotonic() - t0
            results = await asyncio.gather(
                *(_simulated_worker(spec, node_ds, node, w) for w in range(spec["workers"]))
            )
            for r in results:
                r["first"] = None if r["first"] is None else r["first"] + opened
            return list(results)

        per_node = await asyncio.gather(*(node_run(node, endpoint) for node, endpoint in spec["nodes"]))
        return [r for results in per_node for r in results]

    results = asyncio.run(run())
    with open(spec["out"], "w") as f:
        json.dump(results, f)


# -- LitData's plan for the same topology ------------------------------------------------------------


def litdata_plan(index: dict[str, Any], nodes: int, workers: int, batch: int, seed: int) -> dict[str, Any]:
    """Whole-chunk GETs per node under LitData 0.2.76's assignment (epoch 1, shuffled, drop_last)."""
    import numpy as np
    from litdata.utilities.env import _DistributedEnv
    from litdata.utilities.shuffle import _associate_chunks_and_intervals_to_workers

    sizes = [int(c["chunk_size"]) for c in index["chunks"]]
    nbytes = [int(c["chunk_bytes"]) for c in index["chunks"]]
    intervals, start = [], 0
    for n in sizes:
        intervals.append([start, start, start + n, start + n])
        start += n
    order = np.random.RandomState([seed, 1]).permutation(len(sizes))
    env = _DistributedEnv(nodes, 0, nodes)
    chunks_per_worker, _ = _associate_chunks_and_intervals_to_workers(
        env, order, [intervals[i] for i in order], True, workers, batch
    )
    per_node = [
        sorted({int(c) for w in range(workers) for c in chunks_per_worker[n * workers + w]})
        for n in range(nodes)
    ]
    gets = [len(chunks) for chunks in per_node]
    got = [sum(nbytes[c] for c in chunks) for chunks in per_node]
    index_gets = nodes * (workers + 1)  # each worker process and the main process read index.json
    return {"gets": sum(gets) + index_gets, "bytes": sum(got), "gets_per_node": gets, "bytes_per_node": got}


# -- orchestration -------------------------------------------------------------------------------------


def _union(ranges: list[tuple[int, int]]) -> int:
    total, end = 0, -1
    for a, b in sorted(ranges):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def analyse(log: list[Any], sizes: dict[str, int], nodes: int) -> dict[str, Any]:
    gets = [r for r in log if r.method == "GET" and not r.query.startswith("list")]
    per_node_gets: dict[int, int] = defaultdict(int)
    per_node_bytes: dict[int, int] = defaultdict(int)
    fetched: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    for r in gets:
        node = int(r.proxy.split("-")[1])
        key = r.path.rsplit("/", 1)[1]
        size = sizes.get(key, 0)
        a, b = r.byte_range if r.byte_range else (0, size)
        b = size if b == -1 or b > size else b
        per_node_gets[node] += 1
        per_node_bytes[node] += max(0, b - a)
        if key in sizes:
            fetched[(node, key)].append((a, b))
    dup = sum(sum(b - a for a, b in rs) - _union(rs) for rs in fetched.values())
    times = sorted(r.at for r in gets)
    span = (times[-1] - times[0]) if len(times) > 1 else 1.0
    peak = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        peak = max(peak, i - j + 1)
    return {
        "gets": len(gets),
        "bytes": sum(per_node_bytes.values()),
        "gets_per_node": [per_node_gets[n] for n in range(nodes)],
        "bytes_per_node": [per_node_bytes[n] for n in range(nodes)],
        "duplicate_bytes_within_nodes": dup,
        "gets_per_s_mean": len(gets) / span,
        "gets_per_s_peak_1s": peak,
        "span_s": span,
    }


def plot(result: dict[str, Any], firsts: list[float], path: str) -> None:
    """Two panels: GET requests per node (aiolit measured, LitData's plan) and time to first sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    nodes = range(cfg["nodes"])
    left.bar(nodes, result["aiolit"]["gets_per_node"], color="#1f77b4", label="aiolit (measured)")
    left.plot(nodes, result["litdata_plan"]["gets_per_node"], "o", color="#ff7f0e", ms=3,
              label="LitData 0.2.76 (its chunk plan, chunk GETs)")  # fmt: skip
    left.set_xlabel("node")
    left.set_ylabel("GET requests in the epoch")
    left.set_title("Requests per node")
    left.legend(loc="lower right", fontsize=8)
    right.plot(sorted(firsts), [(i + 1) / len(firsts) for i in range(len(firsts))], color="#1f77b4")
    right.set_xlabel("seconds from start")
    right.set_ylabel("fraction of readers")
    right.set_title(f"Time to first sample, {len(firsts)} readers")
    fig.suptitle(
        f"{cfg['nodes']} nodes x {cfg['workers']} workers reading {cfg['chunks_written']} chunks from one bucket "
        f"(SeaweedFS, {cfg['rtt_ms']:g} ms RTT, {cfg['cpus']} CPUs)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers per node")
    parser.add_argument("--procs", type=int, default=4, help="real reader processes")
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--chunk-kb", type=float, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--max-cache", default="100GB")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--plot", help="also render the results as a PNG here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    from bench_remote import dataset_bytes, upload  # type: ignore[import-not-found]

    from tests.request_log import ProxyGroup
    from tests.servers import start_seaweedfs

    root = tempfile.mkdtemp(prefix="aiolit-bench-scale-")
    server = start_seaweedfs()
    procs: list[subprocess.Popen[str]] = []
    try:
        local = os.path.join(root, "small")
        write_small(local, args.chunks, int(args.chunk_kb * 1000))
        total_bytes, n_chunks = dataset_bytes(local)
        index = json.loads(Path(local, "index.json").read_text())
        n_samples = sum(int(c["chunk_size"]) for c in index["chunks"])
        sizes = {c["filename"]: int(c["chunk_bytes"]) for c in index["chunks"]}
        bucket = server.new_bucket("scale")
        url = f"s3://{bucket}/small"
        asyncio.run(upload(local, url, dict(server.storage_options)))
        creds = {k: v for k, v in server.storage_options.items() if k != "endpoint_url"}
        port = int(server.endpoint.rsplit(":", 1)[1])
        print(f"dataset: {n_chunks} chunks, {total_bytes / MB:.0f} MB, {n_samples:,} samples; "
              f"{args.nodes} nodes x {args.workers} workers = {args.nodes * args.workers} readers "
              f"in {args.procs} processes; RTT {args.rtt_ms:g} ms; {os.cpu_count()} CPUs", flush=True)  # fmt: skip

        with ProxyGroup(("127.0.0.1", port), rtt=args.rtt_ms / 1000) as group:
            endpoints = [group.add(f"node-{n}").endpoint for n in range(args.nodes)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
            outs = []
            for p in range(args.procs):
                nodes = [(n, endpoints[n]) for n in range(p, args.nodes, args.procs)]
                out = os.path.join(root, f"reader-{p}.json")
                outs.append(out)
                spec = {"url": url, "creds": creds, "cache": os.path.join(root, "cache"), "seed": args.seed,
                        "batch": args.batch, "world": args.nodes, "workers": args.workers, "nodes": nodes,
                        "max_cache": args.max_cache, "out": out}  # fmt: skip
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--child", json.dumps(spec)],
                        env=env,
                        text=True,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                )
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            t0 = time.monotonic()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for proc in procs:
                if proc.wait(1800) != 0:
                    raise RuntimeError(f"reader process failed with rc {proc.returncode}")
            wall = time.monotonic() - t0
            log = group.log()

        readers: list[dict[str, Any]] = []
        for out in outs:
            readers.extend(json.loads(Path(out).read_text()))
        indices = [i for r in readers for i in r["indices"]]
        firsts = sorted(r["first"] for r in readers if r["first"] is not None)
        stats = analyse(log, sizes, args.nodes)
        ld = litdata_plan(index, args.nodes, args.workers, args.batch, args.seed)
        unique = len(set(indices))

        def pct(values: list[float], q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))]

        result = {
            "config": vars(args)
            | {
                "cpus": os.cpu_count(),
                "dataset_bytes": total_bytes,
                "chunks_written": n_chunks,
                "chunks": n_chunks,
                "samples": n_samples,
            },
            "wall_s": wall,
            "samples_yielded": len(indices),
            "samples_unique": unique,
            "samples_missing": n_samples - unique,
            "first_sample_s": {"p50": pct(firsts, 0.5), "p99": pct(firsts, 0.99), "max": firsts[-1]},
            "aiolit": stats,
            "litdata_plan": ld,
        }
        print(f"epoch wall {wall:.1f} s; samples yielded {len(indices):,}, unique {unique:,} "
              f"(duplicates {len(indices) - unique}), missing {n_samples - unique} (drop_last)")  # fmt: skip
        print(f"time to first sample over {len(firsts)} readers: p50 {pct(firsts, 0.5):.2f} s, "
              f"p99 {pct(firsts, 0.99):.2f} s, max {firsts[-1]:.2f} s")  # fmt: skip
        print(f"aiolit: {stats['gets']:,} GETs ({stats['gets'] / n_chunks:.2f} per chunk), "
              f"{stats['bytes'] / MB:.0f} MB ({stats['bytes'] / total_bytes:.2f}x the dataset); "
              f"{stats['gets_per_s_mean']:.0f} GET/s mean, {stats['gets_per_s_peak_1s']} peak (1 s); "
              f"per node: {sum(stats['gets_per_node']) / args.nodes:.1f} GETs, "
              f"{sum(stats['bytes_per_node']) / args.nodes / MB:.2f} MB; "
              f"duplicate bytes within nodes: {stats['duplicate_bytes_within_nodes']:,}")  # fmt: skip
        print(f"LitData plan: {ld['gets']:,} GETs ({ld['gets'] / n_chunks:.2f} per chunk), "
              f"{ld['bytes'] / MB:.0f} MB ({ld['bytes'] / total_bytes:.2f}x); "
              f"per node: {sum(ld['gets_per_node']) / args.nodes:.1f} chunk GETs")  # fmt: skip
        print(f"GET ratio aiolit / LitData plan: {stats['gets'] / ld['gets']:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        if args.plot:
            plot(result, firsts, args.plot)
        if unique != len(indices):
            raise SystemExit("FAIL: a sample was yielded twice")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
