"""Cold-epoch streaming from S3 behind a 20 ms RTT: aiolit vs LitData, side by side.

Run: ``PYTHONPATH=src:. python benchmarks/bench_remote.py [--rtt-ms 20] [--workers 0,2]``

What it does (everything on 127.0.0.1, every server stopped by PID at the end):

1. starts SeaweedFS ``weed mini`` (S3 with SigV4) and ``benchmarks/latency_proxy.py`` in its own
   process in front of it (each chunk delayed RTT/2 per direction, new connections one RTT);
2. writes two LitData-format datasets locally and uploads them once, straight to SeaweedFS:
   ``small`` (dict samples of ~0.65 KB: int, int, str; cheap to collate) and ``tokens`` (int32
   token stream, read with ``TokensLoader(block_size)``);
3. measures the ceiling: GETs of every chunk of ``tokens`` through the proxy with aiolit's S3
   store, one at a time (single stream) and 16 at a time, plus a small GET's latency;
4. for each dataset x ``num_workers`` x library, in a fresh child process with a fresh cache
   directory: builds ``StreamingDataset`` (pointed at the proxy) and ``StreamingDataLoader``, and
   times the first batch (from before the dataset is constructed, so the index GET counts; imports
   are done before the clock starts) and the full epoch, then a second epoch over the warm cache
   (the consumer's own ceiling: decode, collate, worker IPC). Bytes are the dataset's chunk bytes
   (each is downloaded exactly once per epoch).

LitData 0.2.76 reads chunks through obstore (an ``S3Store`` built from its boto3 client's endpoint
and credentials) and ``index.json`` through boto3; both take ``storage_options={"endpoint_url":
..., "aws_access_key_id": ..., ...}``. Its obstore client options are fixed and lack
``allow_http``, so against an ``http://`` endpoint every chunk GET fails ("BadScheme"). The child
adds ``allow_http`` to that dict (``litdata``: the path production https endpoints take) and also
runs ``litdata-boto3`` (obstore disabled: LitData's boto3 ``download_file`` fallback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

MB = 1e6


# -- datasets --------------------------------------------------------------------------------------


def write_small(path: str, chunks: int, chunk_bytes: int) -> None:
    import numpy as np

    from aiolit.format import ChunkWriter, merge_shards

    writer = ChunkWriter(path, chunk_bytes=chunk_bytes)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    i = 0
    per_sample = 650
    for i in range(chunks * chunk_bytes // per_sample):
        text = " ".join(words[j] for j in rng.integers(0, 500, size=120))
        writer.add({"index": i, "label": i % 10, "text": text})
    writer.done()
    merge_shards(path)


def write_tokens(path: str, chunks: int, chunk_tokens: int) -> None:
    import numpy as np

    from aiolit.format import ChunkWriter, merge_shards
    from aiolit.streaming import TokensLoader

    rng = np.random.default_rng(0)
    writer = ChunkWriter(path, chunk_size=chunk_tokens, item_loader=TokensLoader())
    done, total = 0, chunks * chunk_tokens
    while done < total:
        seq = rng.integers(0, 50_000, size=min(total - done, int(rng.integers(500, 5000))), dtype=np.int32)
        writer.add(seq)
        done += len(seq)
    writer.done()
    merge_shards(path)


def dataset_bytes(path: str) -> tuple[int, int]:
    index = json.loads(Path(path, "index.json").read_text())
    return sum(int(c["chunk_bytes"]) for c in index["chunks"]), len(index["chunks"])


async def upload(local: str, url: str, opts: dict[str, Any]) -> None:
    from aiolit.stores import open_store

    store = open_store(url, storage_options=opts)
    try:
        files = [p for p in Path(local).iterdir() if p.is_file()]
        sem = asyncio.Semaphore(8)

        async def put(p: Path) -> None:
            async with sem:
                await store.put_file(p.name, str(p))

        await asyncio.gather(*(put(p) for p in files))
    finally:
        await store.aclose()


# -- ceiling -----------------------------------------------------------------------------------------


async def ceiling(url: str, opts: dict[str, Any], names: list[str]) -> dict[str, float]:
    from aiolit.stores import open_store

    store = open_store(url, storage_options=opts)
    try:
        await store.get("index.json")  # warm a connection
        t = time.perf_counter()
        for _ in range(10):
            await store.get_range(names[0], 0, 1024)
        small_ms = (time.perf_counter() - t) / 10 * 1000
        subset = names[: max(4, len(names) // 4)]
        t = time.perf_counter()
        total = 0
        for n in subset:
            total += len(await store.get(n))
        single = total / (time.perf_counter() - t)
        sem = asyncio.Semaphore(16)

        async def one(n: str) -> int:
            async with sem:
                return len(await store.get(n))

        t = time.perf_counter()
        total = sum(await asyncio.gather(*(one(n) for n in names)))
        parallel = total / (time.perf_counter() - t)
        return {"small_get_ms": small_ms, "single_MBps": single / MB, "parallel16_MBps": parallel / MB}
    finally:
        await store.aclose()


# -- one measured run (child process) ------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    lib, kind, workers = spec["lib"], spec["kind"], spec["workers"]
    # Imports (torch, the S3 clients) happen before the clock starts, for both libraries.
    if lib == "aiolit":
        import aiobotocore.session  # noqa: F401

        import aiolit.streaming as mod
    else:
        import boto3  # type: ignore[import-untyped]  # noqa: F401
        import litdata as mod  # type: ignore[no-redef]
        import litdata.streaming.downloader as dl
        import obstore  # noqa: F401

        if lib == "litdata":
            # LitData builds obstore's S3Store with fixed client options that lack allow_http, so
            # an http:// endpoint fails with "BadScheme". Allowing http is what a production
            # https endpoint gets anyway: same code path, same request pattern.
            dl._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
        else:  # "litdata-boto3": LitData's fallback transport (boto3 download_file, one stream)
            dl._OBSTORE_AVAILABLE = False
    dataset_cls, loader_cls, tokens_cls = mod.StreamingDataset, mod.StreamingDataLoader, mod.TokensLoader
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"cache_dir": spec["cache"], "storage_options": spec["opts"]}
    if kind == "tokens":
        kwargs["item_loader"] = tokens_cls(block_size=spec["block"])
    ds = dataset_cls(spec["url"], **kwargs)
    t_ds = time.perf_counter() - t0
    loader = loader_cls(ds, batch_size=spec["batch"], num_workers=workers)
    samples = 0
    first = None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t0
        samples += len(batch["index"]) if isinstance(batch, dict) else int(batch.shape[0])
    total = time.perf_counter() - t0
    # A second epoch over the now-warm cache: the consumer's own ceiling (decode, collate, IPC).
    t1 = time.perf_counter()
    for _ in loader:
        pass
    warm = time.perf_counter() - t1
    return {"first": first, "total": total, "samples": samples, "dataset_s": t_ds, "warm": warm}


# -- orchestration -----------------------------------------------------------------------------------


def start_proxy(upstream_port: int, rtt_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    from tests.servers import pick_port

    port = pick_port(low=30000, high=39000)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "latency_proxy.py"), "--upstream",
         f"127.0.0.1:{upstream_port}", "--rtt-ms", str(rtt_ms), "--port", str(port)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "proxy" not in line:
        proc.kill()
        raise RuntimeError(f"latency proxy did not start: {line!r}")
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def run_child(spec: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env, capture_output=True, timeout=timeout, text=True,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--libs", default="aiolit,litdata,litdata-boto3")
    parser.add_argument("--datasets", default="small,tokens")
    parser.add_argument("--small-chunks", type=int, default=64)
    parser.add_argument("--small-chunk-mb", type=float, default=1.5)
    parser.add_argument("--token-chunks", type=int, default=64)
    parser.add_argument("--chunk-tokens", type=int, default=2**20)
    parser.add_argument("--block", type=int, default=2049)
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the best is reported")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return

    from tests.servers import start_seaweedfs

    root = tempfile.mkdtemp(prefix="aiolit-bench-remote-")
    server = start_seaweedfs()
    proxy: subprocess.Popen[bytes] | None = None
    try:
        s3_port = int(server.endpoint.rsplit(":", 1)[1])
        proxy, proxy_port = start_proxy(s3_port, args.rtt_ms)
        endpoint = f"http://127.0.0.1:{proxy_port}"
        direct = dict(server.storage_options)
        opts = {**direct, "endpoint_url": endpoint}
        bucket = server.new_bucket("bench")
        kinds = args.datasets.split(",")
        info: dict[str, tuple[int, int]] = {}
        for kind in kinds:
            local = os.path.join(root, kind)
            if kind == "small":
                write_small(local, args.small_chunks, int(args.small_chunk_mb * MB))
            else:
                write_tokens(local, args.token_chunks, args.chunk_tokens)
            info[kind] = dataset_bytes(local)
            asyncio.run(upload(local, f"s3://{bucket}/{kind}", direct))
        names = sorted(p.name for p in Path(root, kinds[-1]).iterdir() if p.name.startswith("chunk-"))
        ceil = asyncio.run(ceiling(f"s3://{bucket}/{kinds[-1]}", opts, names))
        print(f"RTT {args.rtt_ms:g} ms via latency proxy -> SeaweedFS; {os.cpu_count()} CPUs")
        print(f"ceiling ({kinds[-1]} chunks, aiolit S3Store): small GET {ceil['small_get_ms']:.1f} ms, "
              f"single stream {ceil['single_MBps']:.0f} MB/s, 16 parallel {ceil['parallel16_MBps']:.0f} MB/s")  # fmt: skip
        for kind in kinds:
            size, n = info[kind]
            print(f"dataset {kind}: {n} chunks, {size / MB:.0f} MB")

        env = {**os.environ, **server.env, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
        rows: list[tuple[str, int, dict[str, dict[str, Any]]]] = []
        for kind in kinds:
            for workers in (int(w) for w in args.workers.split(",")):
                cell: dict[str, dict[str, Any]] = {}
                for lib in args.libs.split(","):
                    best: dict[str, Any] | None = None
                    for r in range(args.repeat):
                        cache = os.path.join(root, f"cache-{lib}-{kind}-{workers}-{r}")
                        spec = {
                            "lib": lib, "kind": kind, "workers": workers, "cache": cache, "opts": opts,
                            "url": f"s3://{bucket}/{kind}", "block": args.block,
                            "batch": 256 if kind == "small" else 64,
                        }  # fmt: skip
                        res = run_child(spec, env, args.timeout)
                        shutil.rmtree(cache, ignore_errors=True)
                        if best is None or ("error" not in res and res["total"] < best.get("total", 1e9)):
                            best = res
                    assert best is not None
                    cell[lib] = best
                    show = best.get("error") or (
                        f"first {best['first']:.2f}s total {best['total']:.2f}s "
                        f"{best['samples'] / best['total']:,.0f} samples/s {info[kind][0] / MB / best['total']:.0f} MB/s"
                    )
                    print(f"  {kind:6s} workers={workers} {lib:8s} {show}", flush=True)
                rows.append((kind, workers, cell))

        libs = args.libs.split(",")
        base, others = libs[0], libs[1:]
        print()
        print(f"{'dataset':7s} {'wk':>2s} {'library':14s} {'first s':>7s} {'epoch s':>7s} {'samples/s':>10s} "
              f"{'MB/s':>5s} {'warm s':>6s}  " + "  ".join(f"thru x / first ÷ vs {o}" for o in others))  # fmt: skip
        for kind, workers, cell in rows:
            for lib in libs:
                res = cell[lib]
                if "error" in res:
                    print(f"{kind:7s} {workers:2d} {lib:14s} ERROR {res['error']}")
                    continue
                line = (
                    f"{kind:7s} {workers:2d} {lib:14s} {res['first']:7.2f} {res['total']:7.2f} "
                    f"{res['samples'] / res['total']:10,.0f} {info[kind][0] / MB / res['total']:5.0f} "
                    f"{res['warm']:6.2f}"
                )
                if lib == base:
                    for o in others:
                        if "error" not in cell[o]:
                            line += (f"  {cell[o]['total'] / res['total']:6.2f}x / "
                                     f"{res['first'] / cell[o]['first']:4.2f}")  # fmt: skip
                print(line)
        print(f"thru x = {base} epoch throughput / the other's (target >= 3); "
              f"first ÷ = {base} time-to-first-batch / the other's (target <= 0.33)")  # fmt: skip
    finally:
        if proxy is not None:
            stop(proxy)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
