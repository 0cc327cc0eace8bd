"""Store throughput on loopback: one GET vs concurrent range GETs of one large object.

Starts each server itself (tests/servers.py), uploads one object, then reports the best of
``--repeat`` runs in MB/s for:

* ``get``          one GET of the whole object
* ``ranges``       ``get_ranges(key, [(0, size)])``: ``part_size`` pieces, ``max_concurrency`` in flight
* ``get_to_file``  concurrent ranges written in place into a temp file, then renamed

and, for local files, ``os.pread`` in a thread (what LocalStore does) vs ``aiofiles``.
SeaweedFS stands for S3 speed; moto is far too slow to benchmark (``--with-moto`` to see).
``--rtt-ms`` puts benchmarks/latency_proxy.py in front of each server.

    PYTHONPATH=src python benchmarks/bench_stores.py --size-mb 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO), str(REPO / "benchmarks")]

from latency_proxy import LatencyProxy  # noqa: E402

from aiolit.stores import Store, open_store  # noqa: E402
from tests import servers  # noqa: E402

MB = 1_000_000


async def best(repeat: int, size: int, fn: Callable[[], Awaitable[object]]) -> float:
    """Best throughput in MB/s over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return size / min(times) / MB


async def bench_store(store: Store, size: int, repeat: int, tmp: str) -> dict[str, float]:
    key = "bench/object.bin"
    await store.put(key, os.urandom(size))
    got = await store.get_ranges(key, [(0, size)])
    assert len(got[0]) == size
    dest = os.path.join(tmp, "download.bin")
    results = {
        "get": await best(repeat, size, lambda: store.get(key)),
        "ranges": await best(repeat, size, lambda: store.get_ranges(key, [(0, size)])),
        "get_to_file": await best(repeat, size, lambda: store.get_to_file(key, dest, size=size)),
    }
    await store.delete(key)
    await store.aclose()
    return results


async def bench_local_readers(path: str, size: int, repeat: int, block: int = 1 << 20) -> dict[str, float]:
    """Read ``path`` in ``block`` ranges, 8 at a time: LocalStore (pread) vs aiofiles."""
    import aiofiles

    store = open_store(os.path.dirname(path))
    name = os.path.basename(path)
    ranges = [(s, min(s + block, size)) for s in range(0, size, block)]
    sem = asyncio.Semaphore(8)

    async def with_store() -> None:
        async def one(s: int, e: int) -> bytes:
            async with sem:
                return await store.get_range(name, s, e)

        await asyncio.gather(*(one(s, e) for s, e in ranges))

    async def with_aiofiles() -> None:
        async def one(s: int, e: int) -> bytes:
            async with sem, aiofiles.open(path, "rb") as f:
                await f.seek(s)
                return await f.read(e - s)

        await asyncio.gather(*(one(s, e) for s, e in ranges))

    return {
        "pread_1MiB": await best(repeat, size, with_store),
        "aiofiles_1MiB": await best(repeat, size, with_aiofiles),
    }


async def run(args: argparse.Namespace) -> None:
    size = args.size_mb * MB
    transfer = {
        "part_size": args.part_mb * MB,
        "max_concurrency": args.concurrency,
        "multipart_threshold": 16 * MB,
    }
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="aiolit-bench-") as tmp:
        local = open_store(os.path.join(tmp, "local"), transfer)
        rows.append(("local", await bench_store(local, size, args.repeat, tmp)))
        probe = os.path.join(tmp, "local", "probe.bin")
        with open(probe, "wb") as f:
            f.write(os.urandom(size))
        rows.append(("local readers", await bench_local_readers(probe, size, args.repeat)))

        starters = [("seaweedfs (s3)", servers.start_seaweedfs), ("fake-gcs", servers.start_fake_gcs)]
        starters.append(("azurite", servers.start_azurite))
        if args.with_moto:
            starters.append(("moto (s3)", servers.start_moto))
        for label, start in starters:
            if args.only and not any(o in label for o in args.only):
                continue
            try:
                server = start()
            except servers.ServerNotInstalled as exc:
                print(f"skip {label}: {exc}", file=sys.stderr)
                continue
            try:
                options = dict(server.storage_options)
                proxy = None
                if args.rtt_ms:
                    host, port = server.endpoint.split("//")[1].split("/")[0].split(":")
                    proxy = LatencyProxy(host, int(port), args.rtt_ms / 1000)
                    await proxy.start()
                    options = _through_proxy(server, options, proxy.port)
                store = open_store(server.url(server.new_bucket(), "b"), {**options, **transfer})
                rows.append((label, await bench_store(store, size, args.repeat, tmp)))
                if proxy is not None:
                    await proxy.aclose()
            finally:
                server.stop()

    print(f"\nobject {args.size_mb} MB, part {args.part_mb} MB x {args.concurrency} in flight, "
          f"best of {args.repeat}, RTT {args.rtt_ms} ms, {os.cpu_count()} CPUs   (MB/s)")  # fmt: skip
    columns = ["get", "ranges", "get_to_file", "pread_1MiB", "aiofiles_1MiB"]
    print(f"{'backend':<16}" + "".join(f"{c:>15}" for c in columns))
    for label, result in rows:
        cells = "".join(f"{result[c]:>15.0f}" if c in result else f"{'':>15}" for c in columns)
        print(f"{label:<16}{cells}")


def _through_proxy(server: servers.ObjectServer, options: dict[str, object], port: int) -> dict[str, object]:
    real = server.endpoint.split("//")[1].split("/")[0]
    proxied = f"127.0.0.1:{port}"
    if server.kind == "azure":
        return {"connection_string": str(options["connection_string"]).replace(real, proxied)}
    return {**options, "endpoint_url": str(options["endpoint_url"]).replace(real, proxied)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="object store throughput on loopback")
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--part-mb", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--with-moto", action="store_true")
    parser.add_argument("--only", nargs="*", help="substrings of backend labels to run")
    asyncio.run(run(parser.parse_args()))
