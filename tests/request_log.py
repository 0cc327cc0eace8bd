"""A TCP proxy on 127.0.0.1 that logs every HTTP request passing through it (tests, benchmarks).

Point a client at ``http://127.0.0.1:{proxy.port}`` instead of the server and read
``proxy.requests``: one :class:`Request` per HTTP/1.1 request line the client sent (method, path,
the ``Range`` header's byte range when there is one), numbered by one counter shared by every
proxy of a :class:`ProxyGroup`, so requests seen by different proxies can be put in order.
``proxy.bytes_down`` counts the bytes the server sent back. Several proxies in one group stand for
several machines: give each process its own proxy (e.g. through ``AWS_ENDPOINT_URL``) and the log
tells which process sent which request.

Optional ``rtt`` delays every read by ``rtt / 2`` in each direction (a simple latency model; see
``benchmarks/latency_proxy.py`` for the ordered, handshake-aware one).

The request parser scans the client's bytes for ``METHOD /path HTTP/1.1`` lines and their header
block. A request body that happened to contain such a line would be miscounted; the object bodies
in the tests and benchmarks are never uploaded through a logged read path, and chunk bytes do not
contain HTTP request lines.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["ProxyGroup", "Request", "RequestLogProxy"]

_REQUEST = re.compile(rb"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.1\r\n")
_RANGE = re.compile(rb"\r\nrange: *bytes=(\d+)-(\d*)", re.IGNORECASE)
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class Request:
    """One HTTP request seen by a proxy."""

    seq: int  # order over every proxy of the group
    proxy: str  # the proxy's name
    method: str
    path: str  # without the query string
    query: str
    byte_range: tuple[int, int] | None  # [start, end) from the Range header, if any
    at: float = 0.0  # time.monotonic() when the request line was seen


@dataclass
class RequestLogProxy:
    """Forward ``127.0.0.1:port`` to ``upstream`` and log the HTTP requests (see module doc)."""

    name: str
    upstream: tuple[str, int]
    group: ProxyGroup
    rtt: float = 0.0
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    bytes_down: int = 0
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _record(self, method: bytes, target: bytes, headers: bytes) -> None:
        path, _, query = target.decode("latin-1").partition("?")
        byte_range = None
        m = _RANGE.search(headers)
        if m:
            start = int(m.group(1))
            byte_range = (start, int(m.group(2)) + 1 if m.group(2) else -1)
        self.requests.append(
            Request(
                next(self.group.counter),
                self.name,
                method.decode(),
                path,
                query,
                byte_range,
                time.monotonic(),
            )
        )

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return

        async def upstream_pipe() -> None:
            pending = b""
            while data := await client_reader.read(256 * 1024):
                if self.rtt:
                    await asyncio.sleep(self.rtt / 2)
                pending += data
                while True:
                    m = _REQUEST.search(pending)
                    if m is None:
                        pending = pending[-_MAX_HEADER:] if len(pending) > _MAX_HEADER else pending
                        break
                    end = pending.find(b"\r\n\r\n", m.end() - 2)
                    if end < 0:
                        pending = pending[m.start() :]
                        break
                    self._record(m.group(1), m.group(2), pending[m.end() - 2 : end + 2])
                    pending = pending[end + 4 :]
                up_writer.write(data)
                await up_writer.drain()
            if up_writer.can_write_eof():
                up_writer.write_eof()

        async def downstream_pipe() -> None:
            while data := await up_reader.read(256 * 1024):
                if self.rtt:
                    await asyncio.sleep(self.rtt / 2)
                self.bytes_down += len(data)
                client_writer.write(data)
                await client_writer.drain()
            if client_writer.can_write_eof():
                client_writer.write_eof()

        try:
            await asyncio.gather(upstream_pipe(), downstream_pipe())
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            client_writer.close()
            up_writer.close()
            self._tasks.discard(task)


class ProxyGroup:
    """Proxies sharing one request counter, served by one event loop on a background thread.

    Usage::

        with ProxyGroup(("127.0.0.1", s3_port)) as group:
            a = group.add("coordinator")
            ... point a process at a.endpoint ...
            group.log()          # every request of every proxy, in order
    """

    def __init__(self, upstream: tuple[str, int], rtt: float = 0.0) -> None:
        self.upstream = upstream
        self.rtt = rtt
        self.counter: Iterator[int] = itertools.count()
        self.proxies: dict[str, RequestLogProxy] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="request-log-proxy", daemon=True)

    def __enter__(self) -> ProxyGroup:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            for proxy in self.proxies.values():
                await proxy.aclose()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def add(self, name: str) -> RequestLogProxy:
        """Start a proxy named ``name`` (its port is free and set on return)."""
        proxy = RequestLogProxy(name, self.upstream, self, self.rtt)
        asyncio.run_coroutine_threadsafe(proxy.start(), self._loop).result(10)
        self.proxies[name] = proxy
        return proxy

    def log(self) -> list[Request]:
        """Every request seen so far by every proxy, in the order they were seen."""
        return sorted((r for p in self.proxies.values() for r in list(p.requests)), key=lambda r: r.seq)
