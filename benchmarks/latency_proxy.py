"""An asyncio TCP proxy that adds network latency on loopback (this kernel has no netem).

Every chunk is delivered RTT/2 after it arrived, in each direction, in order; a new connection's
first bytes wait one extra RTT, like a TCP handshake. So with ``--rtt-ms 20`` a small GET on a
kept-alive connection takes ~20 ms more and a GET on a new connection ~40 ms more.

Library use::

    async with LatencyProxy("127.0.0.1", server_port, rtt=0.020) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"     # point the client here

Command line::

    python benchmarks/latency_proxy.py --upstream 127.0.0.1:9000 --rtt-ms 20 --port 19000 \
        [--mbps 1000] [--tls-cert cert.pem --tls-key key.pem] [--stats-file stats.json]

``--mbps`` caps each connection's server-to-client rate (megabits/s); ``--tls-cert``/``--tls-key``
make the proxy terminate HTTPS (the upstream stays plain HTTP), so clients pay for TLS as against
real S3; ``--stats-file`` is rewritten with the request and byte counters (``gets``: HTTP ``GET``
requests seen, ``bytes_down``: bytes sent to clients, ``connections``) whenever they change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import Callable
from types import TracebackType

__all__ = ["LatencyProxy"]

_CHUNK = 256 * 1024
_QUEUE_CHUNKS = 256  # bounds memory per direction (~64 MiB) when one side is slower


class LatencyProxy:
    """Forward ``127.0.0.1:port`` to ``upstream_host:upstream_port`` with ``rtt`` seconds of round trip.

    Parameters
    ----------
    upstream_host, upstream_port : str, int
        The real server.
    rtt : float
        Round-trip time to add, in seconds (each direction gets ``rtt / 2``).
    port : int
        Port to listen on; 0 picks a free one (see :attr:`port` after :meth:`start`).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        rtt: float,
        port: int = 0,
        *,
        bytes_per_s: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rtt = rtt
        self.port = port
        self.bytes_per_s = bytes_per_s
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.gets = 0  # HTTP GET requests forwarded (counted in the request stream)
        self.bytes_down = 0  # bytes delivered to clients

    async def start(self) -> int:
        """Start listening; returns the port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def aclose(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> LatencyProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        loop = asyncio.get_running_loop()
        # The handshake: nothing flows until one RTT after the connection was accepted.
        opened_at = loop.time() + self.rtt
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                _pipe(client_reader, up_writer, self.rtt / 2, opened_at, on_data=self._count_up),
                _pipe(
                    up_reader,
                    client_writer,
                    self.rtt / 2,
                    opened_at,
                    rate=self.bytes_per_s,
                    on_data=self._count_down,
                ),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, up_writer):
                writer.close()
            self._tasks.discard(task)

    def _count_up(self, data: bytes) -> None:
        # Requests carry no body here (GET/HEAD), so every request head starts with its verb.
        self.gets += data.count(b"GET /")

    def _count_down(self, data: bytes) -> None:
        self.bytes_down += len(data)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    not_before: float,
    *,
    rate: float | None = None,
    on_data: Callable[[bytes], None] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
    free_at = 0.0  # with a rate cap: when the link has sent everything queued so far

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(_CHUNK)
            if on_data is not None:
                on_data(data)
            due = max(loop.time() + delay, not_before)
            if rate and data:
                free_at = max(free_at, loop.time()) + len(data) / rate
                due = max(due, free_at + delay)
            await queue.put((due, data))
            if not data:
                break
        await sender
    finally:
        sender.cancel()


async def _main(args: argparse.Namespace) -> None:
    host, _, upstream_port = args.upstream.rpartition(":")
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    rate = args.mbps * 1e6 / 8 if args.mbps else None
    proxy = LatencyProxy(
        host or "127.0.0.1",
        int(upstream_port),
        args.rtt_ms / 1000,
        args.port,
        bytes_per_s=rate,
        ssl_context=context,
    )
    async with proxy:
        print(f"proxy 127.0.0.1:{proxy.port} -> {args.upstream} with RTT {args.rtt_ms} ms", flush=True)
        last = None
        while True:
            await asyncio.sleep(0.05)
            now = (proxy.gets, proxy.bytes_down, proxy.connections)
            if args.stats_file and now != last:
                last = now
                tmp = args.stats_file + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"gets": now[0], "bytes_down": now[1], "connections": now[2]}, f)
                os.replace(tmp, args.stats_file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="host:port of the real server")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mbps", type=float, default=0, help="per-connection cap, megabits/s (0: none)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--stats-file", help="keep request/byte counters in this JSON file")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))
