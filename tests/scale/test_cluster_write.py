"""Writing one dataset into a bucket from a real Dask cluster, and from two "nodes".

The cluster is started the way it is on real machines: a ``dask scheduler`` process and two
``dask worker`` processes, each in its own working and temp directory (no shared local disk is
assumed). Every process reaches the S3 server through its own logging proxy (``AWS_ENDPOINT_URL``
per process), so the request log says which process uploaded what, and in which order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.request_log import ProxyGroup
from tests.servers import REPO, pick_port

pytestmark = [pytest.mark.s3, pytest.mark.slow]

pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed")


def _env(server: Any, endpoint: str, workdir: Path) -> dict[str, str]:
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **server.env, "AWS_ENDPOINT_URL": endpoint, "TMPDIR": str(tmp)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    for name in ("DATA_OPTIMIZER_NODE_RANK", "NODE_RANK", "DATA_OPTIMIZER_NUM_NODES"):
        env.pop(name, None)
    return env


def _options(server: Any) -> dict[str, Any]:
    """Credentials only: the endpoint comes from each process's ``AWS_ENDPOINT_URL`` (its proxy)."""
    return {
        "aws_access_key_id": server.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": server.env["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
        "addressing_style": "path",
    }


class Cluster:
    """A ``dask scheduler`` and ``dask worker`` processes, stopped (process groups) on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def start_scheduler(self, env: dict[str, str]) -> None:
        port = pick_port(low=31000, high=39000)
        self.address = f"tcp://127.0.0.1:{port}"
        self._spawn(
            "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env
        )

    def start_worker(self, name: str, env: dict[str, str]) -> None:
        workdir = self.root / name
        self._spawn(
            name,
            ["worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-nanny", "--no-dashboard",
             "--local-directory", str(workdir / "dask"), "--name", name, "--death-timeout", "60"],
            env,
            cwd=workdir,
        )  # fmt: skip

    def _spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        (cwd or self.root).mkdir(parents=True, exist_ok=True)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
            env=env, cwd=cwd or self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def wait_for_workers(self, n: int) -> None:
        from dask.distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n, timeout=60)

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():  # test processes: no graceful shutdown needed
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def cluster_env(seaweed_server: Any, tmp_path: Path) -> Iterator[tuple[Any, ProxyGroup, Cluster]]:
    port = int(seaweed_server.endpoint.rsplit(":", 1)[1])
    with ProxyGroup(("127.0.0.1", port)) as group:
        cluster = Cluster(tmp_path)
        try:
            yield seaweed_server, group, cluster
        finally:
            cluster.stop()


def _start(cluster: Cluster, group: ProxyGroup, server: Any, workers: list[str]) -> None:
    cluster.start_scheduler(_env(server, group.add("scheduler").endpoint, cluster.root / "scheduler"))
    for name in workers:
        cluster.start_worker(name, _env(server, group.add(name).endpoint, cluster.root / name))
    cluster.wait_for_workers(len(workers))


def _job(spec: dict[str, Any], env: dict[str, str], wait: bool = True) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.scale.cluster_job", json.dumps(spec)],
        env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if wait:
        proc.wait(240)
    return proc


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=240)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"the coordinator printed no result (rc {proc.returncode}): {err[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _read(url: str, server: Any) -> list[Any]:
    from aiolit import StreamingDataset

    ds = StreamingDataset(url, storage_options=server.storage_options)
    return [ds[i] for i in range(len(ds))]


def _keys(url: str, server: Any) -> list[str]:
    from aiolit.stores import open_store

    async def run() -> list[str]:
        store = open_store(url, server.storage_options)
        try:
            return sorted([meta.key async for meta in store.list()])
        finally:
            await store.aclose()

    return asyncio.run(run())


def test_dask_cluster_optimize_and_map_into_bucket(cluster_env: tuple[Any, ProxyGroup, Cluster]) -> None:
    server, group, cluster = cluster_env
    _start(cluster, group, server, ["worker-a", "worker-b"])
    bucket = server.new_bucket("cluster")
    url = f"s3://{bucket}/optimized"
    coordinator_env = _env(server, group.add("coordinator").endpoint, cluster.root / "coordinator")
    spec = {"op": "optimize", "url": url, "n": 120, "fn": "slow_square", "chunk_size": 8, "num_workers": 2,
            "scheduler": cluster.address, "options": _options(server)}  # fmt: skip
    assert _result(_job(spec, coordinator_env)) == {"ok": True}

    samples = _read(url, server)
    assert [(s["i"], s["sq"]) for s in samples] == [(i, i * i) for i in range(120)]
    # Both Dask workers did work, and fn never ran in the coordinator.
    worker_pids = {s["pid"] for s in samples}
    assert len(worker_pids) == 2

    puts = [r for r in group.log() if r.method in ("PUT", "POST")]
    chunk_puts = [r for r in puts if r.path.endswith(".bin")]
    index_puts = [r for r in puts if r.path.endswith("/index.json")]
    chunks = {p for p in _keys(url, server) if p.endswith(".bin")}
    # Every chunk was uploaded by a Dask worker (through its own proxy), never by the coordinator.
    assert {r.proxy for r in chunk_puts} == {"worker-a", "worker-b"}
    assert {r.path.rsplit("/", 1)[1] for r in chunk_puts} == chunks
    # The index: written once, by the coordinator, after the last chunk upload.
    assert [r.proxy for r in index_puts] == ["coordinator"]
    assert index_puts[0].seq > max(r.seq for r in chunk_puts)

    # map: files written by fn on the workers land under the prefix, uploaded by the workers.
    mapped = f"s3://{bucket}/mapped"
    before = group.log()[-1].seq
    spec = {"op": "map", "url": mapped, "n": 20, "fn": "slow_write", "num_workers": 2,
            "scheduler": cluster.address, "options": _options(server)}  # fmt: skip
    assert _result(_job(spec, coordinator_env)) == {"ok": True}
    assert _keys(mapped, server) == sorted(f"out-{i}.txt" for i in range(20))
    map_puts = [r for r in group.log() if r.seq > before and r.method == "PUT" and "/mapped/" in r.path]
    assert {r.proxy for r in map_puts} <= {"worker-a", "worker-b"} and len(map_puts) >= 20


def test_dask_worker_killed_mid_run(cluster_env: tuple[Any, ProxyGroup, Cluster]) -> None:
    """SIGKILL a Dask worker while it writes: an exact dataset, or a clean error and no index."""
    server, group, cluster = cluster_env
    _start(cluster, group, server, ["worker-a", "worker-b"])
    url = f"s3://{server.new_bucket('killed')}/optimized"
    coordinator_env = _env(server, group.add("coordinator").endpoint, cluster.root / "coordinator")
    spec = {"op": "optimize", "url": url, "n": 200, "fn": "slow_square", "chunk_size": 8, "num_workers": 2,
            "scheduler": cluster.address, "options": _options(server)}  # fmt: skip
    job = _job(spec, coordinator_env, wait=False)
    deadline = time.monotonic() + 120
    while not any(r.proxy == "worker-a" and r.path.endswith(".bin") for r in group.log()):
        assert time.monotonic() < deadline and job.poll() is None, "worker-a never uploaded a chunk"
        time.sleep(0.05)
    cluster.kill("worker-a")  # mid-run: it has uploaded one chunk and is writing the next
    result = _result(job)
    keys = _keys(url, server)
    print("killed-worker outcome:", result)
    if result["ok"]:
        samples = _read(url, server)
        assert [(s["i"], s["sq"]) for s in samples] == [(i, i * i) for i in range(200)]
    else:
        assert "index.json" not in keys, result
        assert result["type"] == "OptimizeError", result


def test_two_nodes_write_one_dataset(seaweed_server: Any, tmp_path: Path) -> None:
    """``num_nodes=2``: two coordinators ("nodes", rank from the environment) and the merge step."""
    server = seaweed_server
    port = int(server.endpoint.rsplit(":", 1)[1])
    url = f"s3://{server.new_bucket('nodes')}/optimized"
    with ProxyGroup(("127.0.0.1", port)) as group:
        jobs = []
        for rank in (0, 1):
            env = _env(server, group.add(f"node-{rank}").endpoint, tmp_path / f"node-{rank}")
            env["DATA_OPTIMIZER_NODE_RANK"] = str(rank)
            spec = {"op": "optimize", "url": url, "n": 90, "fn": "slow_square", "chunk_size": 7,
                    "num_workers": 2, "num_nodes": 2, "options": _options(server)}  # fmt: skip
            jobs.append(_job(spec, env, wait=False))
        results = [_result(job) for job in jobs]
        log = group.log()
    assert results == [{"ok": True}, {"ok": True}]
    samples = _read(url, server)
    assert sorted((s["i"], s["sq"]) for s in samples) == [(i, i * i) for i in range(90)]
    assert len(samples) == 90
    index_puts = [r for r in log if r.method == "PUT" and r.path.endswith("/index.json")]
    assert len(index_puts) == 1
    chunk_puts = [r for r in log if r.method == "PUT" and r.path.endswith(".bin")]
    assert {r.proxy for r in chunk_puts} == {"node-0", "node-1"}
    assert index_puts[0].seq > max(r.seq for r in chunk_puts)
