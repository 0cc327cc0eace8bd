"""Cold-epoch streaming from S3 over HTTPS behind a 20 ms RTT: aiolit vs LitData, side by side.

Run: ``PYTHONPATH=src:. python benchmarks/bench_remote.py [--repeat 3] [--workers 0,2]
[--datasets tokens,small] [--rtt-ms 20] [--mbps 1000]``

What it does (everything on 127.0.0.1, every server stopped by PID at the end):

1. starts SeaweedFS ``weed mini`` (S3 with SigV4) and ``benchmarks/latency_proxy.py`` in its own
   process in front of it. The proxy terminates HTTPS (a self-signed certificate; clients trust a
   bundle of certifi's roots plus it, so they load a real-size CA bundle as against real S3), adds
   the RTT (each chunk delayed RTT/2 per direction, a new connection one RTT more), caps each
   connection at ``--mbps`` and counts the GET requests and bytes it forwards;
2. writes two LitData-format datasets locally and uploads them once, straight to SeaweedFS:
   ``tokens`` (uint16 tokens, 268M by default in 33.6 MB chunks, read with
   ``TokensLoader(block_size=2049)``, batch 8) and ``small`` (200k dicts of a 32x32x3 uint8 array
   and a label, 64 MB chunks, batch 256);
3. measures the ceiling: every token chunk fetched as 8 MiB range GETs, 16 in flight, through the
   proxy with aiolit's S3 store (into memory); then what a loader's download adds: every chunk
   into a file with ``get_to_file`` verified against its sha256, 3 in flight, one GET each (its
   rate and CPU per MB);
4. for each dataset x ``num_workers``, ``--repeat`` rounds that alternate the libraries, each run
   in a fresh child process with a fresh cache directory: builds ``StreamingDataset(shuffle=True,
   drop_last=True)`` (pointed at the proxy) and ``StreamingDataLoader``, and times the first batch
   (the clock starts after the imports, ``torch`` and the S3 clients, so the index GET, the client
   builds and the worker start count) and the full epoch. The proxy's counters before and after
   give the GET requests and bytes of the run (index and epoch), and the CPU seconds spent by
   the run's process tree (imports included), the proxy and the storage server. Medians are
   printed. ``--libs aiolit,aiolit@DIR`` compares aiolit with another source tree of it (``DIR``
   holds its ``aiolit`` package: a ``git worktree`` of the commit before a change, its ``src``).

LitData 0.2.76 reads chunks through obstore (an ``S3Store`` built from its boto3 client's endpoint
and credentials) and ``index.json`` through boto3. Its obstore client options are fixed; the
child adds ``allow_invalid_certificates`` (obstore cannot be given a CA bundle through LitData)
and boto3 gets the CA bundle through ``AWS_CA_BUNDLE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
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


def write_small(path: str, samples: int, chunk_bytes: int) -> None:
    import numpy as np

    from aiolit.format import ChunkWriter, merge_shards

    writer = ChunkWriter(path, chunk_bytes=chunk_bytes)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    for i in range(samples):
        writer.add({"image": base[i % 64], "label": i % 10})
    writer.done()
    merge_shards(path)


def write_tokens(path: str, chunks: int, chunk_tokens: int) -> None:
    import numpy as np

    from aiolit.format import ChunkWriter, merge_shards
    from aiolit.streaming import TokensLoader

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 50_000, size=1 << 22, dtype=np.uint16)
    writer = ChunkWriter(path, chunk_size=chunk_tokens, item_loader=TokensLoader())
    done, total = 0, chunks * chunk_tokens
    while done < total:
        n = min(total - done, 1 << 20)
        at = int(rng.integers(0, len(pool) - n))
        writer.add(pool[at : at + n])
        done += n
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


def make_cert(root: str) -> tuple[str, str, str]:
    """A self-signed certificate for 127.0.0.1, its key, and certifi's bundle plus it."""
    import certifi

    cert, key, bundle = (os.path.join(root, n) for n in ("cert.pem", "key.pem", "bundle.pem"))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", key,
         "-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    Path(bundle).write_bytes(Path(certifi.where()).read_bytes() + b"\n" + Path(cert).read_bytes())
    return cert, key, bundle


# -- ceiling -----------------------------------------------------------------------------------------


async def ceiling(url: str, opts: dict[str, Any], names: list[str], size: int) -> dict[str, float]:
    from aiolit.stores import open_store

    store = open_store(url, storage_options=opts)
    try:
        await store.get("index.json")  # warm a connection
        t = time.perf_counter()
        for _ in range(5):
            await store.get_range(names[0], 0, 1024)
        small_ms = (time.perf_counter() - t) / 5 * 1000
        t = time.perf_counter()
        one = len(await store.get(names[0]))
        single = one / (time.perf_counter() - t)
        part = 8 * 2**20
        ranges = [(n, a, min(a + part, size)) for n in names for a in range(0, size, part)]
        sem = asyncio.Semaphore(16)

        async def get(key: str, a: int, b: int) -> int:
            async with sem:
                return len(await store.get_range(key, a, b))

        t = time.perf_counter()
        total = sum(await asyncio.gather(*(get(*r) for r in ranges)))
        parallel = total / (time.perf_counter() - t)
        # What the loader's downloads add to the bytes: every chunk into a file, verified against
        # its sha256, 3 in flight (max_pre_download + 1), one GET each; rate and this process's CPU.
        index = json.loads(await store.get("index.json"))
        entries = {c["filename"]: c for c in index["chunks"]}
        sem = asyncio.Semaphore(3)
        folder = tempfile.mkdtemp(prefix="aiolit-bench-files-")

        async def to_file(key: str) -> int:
            async with sem:
                dest = os.path.join(folder, key)
                entry = entries[key]
                return await store.get_to_file(
                    key, dest, size=int(entry["chunk_bytes"]), parts=1, checksum=entry.get("checksum")
                )

        try:
            cpu, t = time.process_time(), time.perf_counter()
            total = sum(await asyncio.gather(*(to_file(n) for n in names)))
            files, files_cpu = total / (time.perf_counter() - t), time.process_time() - cpu
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {
            "small_get_ms": small_ms,
            "single_MBps": single / MB,
            "parallel16_MBps": parallel / MB,
            "files_MBps": files / MB,
            "files_cpu_ms_per_MB": files_cpu * 1000 / (total / MB),
        }
    finally:
        await store.aclose()


# -- one measured run (child process) ------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    lib, kind, workers = spec["lib"], spec["kind"], spec["workers"]
    # Imports (torch, the S3 clients) happen before the clock starts, for both libraries.
    import torch  # noqa: F401

    if lib.startswith("aiolit"):
        import aiobotocore.session  # noqa: F401

        import aiolit.streaming as mod
    else:
        import boto3  # type: ignore[import-untyped]  # noqa: F401
        import litdata as mod  # type: ignore[no-redef]
        import litdata.streaming.downloader as dl
        import obstore  # noqa: F401

        # obstore cannot be handed a CA bundle through LitData: accept the test certificate
        # (and plain http, with --http: LitData's fixed options lack allow_http).
        dl._OBSTORE_CLIENT_OPTIONS["allow_invalid_certificates"] = "true"
        dl._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
    dataset_cls, loader_cls, tokens_cls = mod.StreamingDataset, mod.StreamingDataLoader, mod.TokensLoader
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {
        "cache_dir": spec["cache"],
        "storage_options": spec["opts"],
        "shuffle": True,
        "drop_last": True,
    }
    if kind == "tokens":
        kwargs["item_loader"] = tokens_cls(block_size=spec["block"])
    ds = dataset_cls(spec["url"], **kwargs)
    loader = loader_cls(ds, batch_size=spec["batch"], num_workers=workers)
    samples = 0
    first = None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t0
        samples += len(batch["label"]) if isinstance(batch, dict) else int(batch.shape[0])
    total = time.perf_counter() - t0
    return {"first": first, "total": total, "samples": samples}


# -- orchestration -----------------------------------------------------------------------------------


def start_proxy(upstream_port: int, args: argparse.Namespace, stats: str, tls: tuple[str, str] | None
                ) -> tuple[subprocess.Popen[bytes], int]:  # fmt: skip
    from tests.servers import pick_port

    port = pick_port(low=30000, high=39000)
    cmd = [sys.executable, str(REPO / "benchmarks" / "latency_proxy.py"), "--upstream",
           f"127.0.0.1:{upstream_port}", "--rtt-ms", str(args.rtt_ms), "--port", str(port),
           "--mbps", str(args.mbps), "--stats-file", stats]  # fmt: skip
    if tls is not None:
        cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
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


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of the live process ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_stats(path: str) -> dict[str, int]:
    time.sleep(0.3)  # the proxy rewrites the file every 50 ms
    try:
        data: dict[str, int] = json.loads(Path(path).read_text())
        return data
    except (OSError, ValueError):
        return {"gets": 0, "bytes_down": 0, "connections": 0}


def run_child(
    spec: dict[str, Any], env: dict[str, str], timeout: float, stats: str, servers: tuple[int, int]
) -> dict[str, Any]:
    before = read_stats(stats)
    cpu = children_cpu(), proc_cpu(servers[0]), proc_cpu(servers[1])
    lib = spec["lib"]
    if lib.startswith("aiolit@"):  # another aiolit source tree (e.g. the commit before a change)
        src = lib.split("@", 1)[1]
        env = {**env, "PYTHONPATH": os.pathsep.join([src, str(REPO), env.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env, capture_output=True, timeout=timeout, text=True,
    )  # fmt: skip
    after = read_stats(stats)
    spent = children_cpu() - cpu[0], proc_cpu(servers[0]) - cpu[1], proc_cpu(servers[1]) - cpu[2]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["gets"] = after["gets"] - before["gets"]
    result["bytes"] = after["bytes_down"] - before["bytes_down"]
    # CPU seconds of the run's process tree (the child and its loader workers, imports included),
    # of the latency proxy (TLS for every connection) and of the storage server.
    result["cpu"], result["proxy_cpu"], result["server_cpu"] = spent
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--mbps", type=float, default=1000.0, help="per-connection cap (0: none)")
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument(
        "--libs",
        default="aiolit,litdata",
        help="libraries to alternate; aiolit@DIR is aiolit from another source tree (DIR holds the "
        "aiolit package), e.g. a git worktree of the commit before a change",
    )
    parser.add_argument("--datasets", default="tokens,small")
    parser.add_argument("--small-samples", type=int, default=200_000)
    parser.add_argument("--small-chunk-mb", type=float, default=64)
    parser.add_argument("--token-chunks", type=int, default=16)
    parser.add_argument("--chunk-tokens", type=int, default=16_800_000)
    parser.add_argument("--block", type=int, default=2049)
    parser.add_argument("--token-batch", type=int, default=8)
    parser.add_argument("--small-batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per cell (medians are reported)")
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
    stats = os.path.join(root, "proxy-stats.json")
    try:
        tls = None if args.http else make_cert(root)
        s3_port = int(server.endpoint.rsplit(":", 1)[1])
        proxy, proxy_port = start_proxy(s3_port, args, stats, None if tls is None else tls[:2])
        server_pid = server.process.pid if server.process is not None else 0
        endpoint = f"{'http' if tls is None else 'https'}://127.0.0.1:{proxy_port}"
        direct = dict(server.storage_options)
        opts: dict[str, Any] = {**direct, "endpoint_url": endpoint}
        env = {**os.environ, **server.env, "AWS_ENDPOINT_URL": endpoint}
        if tls is not None:
            opts["verify"] = tls[2]
            env["AWS_CA_BUNDLE"] = tls[2]
        else:
            env["AWS_ALLOW_HTTP"] = "true"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
        bucket = server.new_bucket("bench")
        kinds = args.datasets.split(",")
        info: dict[str, tuple[int, int]] = {}
        for kind in kinds:
            local = os.path.join(root, kind)
            if kind == "small":
                write_small(local, args.small_samples, int(args.small_chunk_mb * MB))
            else:
                write_tokens(local, args.token_chunks, args.chunk_tokens)
            info[kind] = dataset_bytes(local)
            asyncio.run(upload(local, f"s3://{bucket}/{kind}", direct))
        ceil: dict[str, float] | None = None
        if "tokens" in kinds:
            names = sorted(p.name for p in Path(root, "tokens").iterdir() if p.name.startswith("chunk-"))
            size = os.path.getsize(os.path.join(root, "tokens", names[0]))
            ceil = asyncio.run(ceiling(f"s3://{bucket}/tokens", opts, names, size))
        for kind in kinds:
            shutil.rmtree(os.path.join(root, kind), ignore_errors=True)
        print(f"{'HTTPS' if tls else 'HTTP'} via latency proxy (RTT {args.rtt_ms:g} ms, "
              f"{args.mbps:g} Mbit/s per connection) -> SeaweedFS; {os.cpu_count()} CPUs")  # fmt: skip
        if ceil is not None:
            print(f"ceiling (token chunks, aiolit S3Store): small GET {ceil['small_get_ms']:.1f} ms, "
                  f"one stream {ceil['single_MBps']:.0f} MB/s, 16 parallel 8 MiB ranges "
                  f"{ceil['parallel16_MBps']:.0f} MB/s; into verified files, 3 in flight: "
                  f"{ceil['files_MBps']:.0f} MB/s at {ceil['files_cpu_ms_per_MB']:.1f} ms of CPU per MB")  # fmt: skip
        for kind in kinds:
            size, n = info[kind]
            print(f"dataset {kind}: {n} chunks, {size / MB:.0f} MB")

        libs = args.libs.split(",")
        rows: list[tuple[str, int, dict[str, list[dict[str, Any]]]]] = []
        for kind in kinds:
            for workers in (int(w) for w in args.workers.split(",")):
                cell: dict[str, list[dict[str, Any]]] = {lib: [] for lib in libs}
                for r in range(args.repeat):
                    for lib in libs if r % 2 == 0 else libs[::-1]:  # alternate who goes first
                        cache = os.path.join(root, f"cache-{libs.index(lib)}-{kind}-{workers}-{r}")
                        spec = {
                            "lib": lib, "kind": kind, "workers": workers, "cache": cache, "opts": opts,
                            "url": f"s3://{bucket}/{kind}", "block": args.block,
                            "batch": args.small_batch if kind == "small" else args.token_batch,
                        }  # fmt: skip
                        res = run_child(spec, env, args.timeout, stats, (proxy.pid, server_pid))
                        shutil.rmtree(cache, ignore_errors=True)
                        cell[lib].append(res)
                        show = res.get("error") or (
                            f"first {res['first']:.2f}s epoch {res['total']:.2f}s "
                            f"GETs {res['gets']} {res['bytes'] / MB:.0f} MB; CPU s: client "
                            f"{res['cpu']:.2f} proxy {res['proxy_cpu']:.2f} server {res['server_cpu']:.2f}"
                        )
                        print(f"  {kind:6s} workers={workers} {lib:8s} run {r + 1}: {show}", flush=True)
                rows.append((kind, workers, cell))

        def med(runs: list[dict[str, Any]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        base, others = libs[0], libs[1:]
        print()
        print(f"medians of {args.repeat}; tokens rate in M tok/s, small in samples/s")
        print(f"{'dataset':7s} {'wk':>2s} {'library':8s} {'first s':>7s} {'epoch s':>7s} {'rate':>9s} "
              f"{'ceil':>5s} {'GETs':>5s} {'MB':>6s} {'cpu s':>5s}  " + "  ".join(f"vs {o}: rate x / first ÷ / GETs x" for o in others))  # fmt: skip
        for kind, workers, cell in rows:
            good = {lib: [r for r in runs if "error" not in r] for lib, runs in cell.items()}
            for lib in libs:
                runs = good[lib]
                if not runs:
                    print(f"{kind:7s} {workers:2d} {lib:8s} ERROR {cell[lib][0].get('error')}")
                    continue
                total, first = med(runs, "total"), med(runs, "first")
                samples = med(runs, "samples")
                if kind == "tokens":
                    rate = samples * args.block / total / 1e6
                    frac = (
                        f"{samples * args.block * 2 / total / MB / ceil['parallel16_MBps']:5.0%}"
                        if ceil
                        else ""
                    )
                    rate_s = f"{rate:9.1f}"
                else:
                    rate_s, frac = f"{samples / total:9,.0f}", ""
                line = (f"{kind:7s} {workers:2d} {lib:8s} {first:7.2f} {total:7.2f} {rate_s} {frac:>5s} "
                        f"{med(runs, 'gets'):5.0f} {med(runs, 'bytes') / MB:6.0f} {med(runs, 'cpu'):5.1f}")  # fmt: skip
                if lib == base:
                    for o in others:
                        if good[o]:
                            line += (f"  {med(good[o], 'total') / total:6.2f}x / "
                                     f"{first / med(good[o], 'first'):4.2f} / "
                                     f"{med(runs, 'gets') / max(1, med(good[o], 'gets')):4.2f}x")  # fmt: skip
                print(line)
        print(f"rate x = {base} epoch throughput / the other's (target >= 3); first ÷ = {base} time to "
              f"first batch / the other's (target <= 0.33); GETs x = request ratio (target <= 1.25); "
              f"ceil = epoch rate / the 16-parallel-range ceiling; "
              f"cpu s = CPU seconds of the run's process tree (imports included)")  # fmt: skip
    finally:
        if proxy is not None:
            stop(proxy)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
