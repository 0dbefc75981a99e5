"""Backends, snapshots and clients for the data plane's socket tests (127.0.0.0/8 only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import uvloop
from aiohttp import web

from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpKeepalive,
    TcpRoute,
    WeightedCluster,
    WeightedPick,
)

ORIGIN = RouteOrigin("VirtualService", "default", "tcp-echo", 0)

T = TypeVar("T")
SERVICE = "tcp-echo.default.svc.cluster.local"
PROXY_HOST = "127.0.0.1"
V1_HOST = "127.0.2.1"
V2_HOST = "127.0.2.2"


def cluster_name(subset: str) -> str:
    name = f"outbound|9000|{subset}|{SERVICE}"
    _SUBSETS[name] = subset
    return name


# Cluster name -> subset, for the names cluster_name() made: route() gives its shares the
# service, subset and port the control plane would (never by taking a name apart).
_SUBSETS: dict[str, str] = {}


def weighted(name: str, weight: int) -> WeightedCluster:
    subset = _SUBSETS.get(name)
    if subset is None:
        return WeightedCluster(name, weight)
    return WeightedCluster(name, weight, SERVICE, subset, 9000)


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 60.0, loop: str = "asyncio") -> T:
    """Run a test coroutine on a fresh loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    if loop == "uvloop":
        return uvloop.run(bounded())
    return asyncio.run(bounded())


def pipes_open(pid: int) -> int:
    """How many pipes process ``pid`` holds (the splicing relay borrows them while a sink lags)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("pipe:")
    return count


def free_port(host: str = PROXY_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class LineEcho(asyncio.Protocol):
    """The tcp-echo sample: ``<prefix> <line>`` for each line; closes after the client's FIN."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.transport.write(self.prefix + b" " + line + b"\n")

    def eof_received(self) -> bool:
        return False


class ByteEcho(asyncio.Protocol):
    """Echoes raw bytes, flow-controlled; half-closes back after the client's FIN."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=1 << 20)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False


class CountThenReply(asyncio.Protocol):
    """Says nothing until the client's FIN, then how many bytes it got, then closes."""

    def __init__(self) -> None:
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.count += len(data)

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.write(b"%d\n" % self.count)
        self.transport.close()
        return True


async def start_backend(
    host: str, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.get_running_loop().create_server(factory, host, 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


def route(
    *dests: tuple[str, int],
    origin: RouteOrigin = ORIGIN,
    idle_timeout: float | None = 3600.0,
    max_connection_duration: float | None = None,
    weighted_pick: WeightedPick = WeightedPick.SMOOTH,
) -> TcpRoute:
    return TcpRoute(
        destinations=tuple(weighted(n, w) for n, w in dests),
        origin=origin,
        stat_prefix=str(origin),
        idle_timeout=idle_timeout,
        max_connection_duration=max_connection_duration,
        weighted_pick=weighted_pick,
    )


def listener(port: int, *routes: TcpRoute, host: str = PROXY_HOST) -> Listener:
    return Listener(f"{host}_{port}", host, port, routes)


def cluster(
    subset: str,
    *endpoints: tuple[str, int],
    connect_timeout: float = 10.0,
    keepalive: TcpKeepalive | None = None,
) -> Cluster:
    return Cluster(
        name=cluster_name(subset),
        service=SERVICE,
        port=9000,
        subset=subset,
        connect_timeout=connect_timeout,
        tcp_keepalive=keepalive,
        # Labelled like the seed's pods: Istio's destination_version is the pod's label.
        endpoints=tuple(
            Endpoint(h, p, labels=(("app", "tcp-echo"), ("version", subset))) for h, p in endpoints
        ),
    )


def snapshot(listeners: list[Listener], clusters: list[Cluster]) -> Snapshot:
    return Snapshot.build(tuple(listeners), tuple(clusters))


async def send_line(
    port: int, line: bytes, *, host: str = PROXY_HOST, timeout: float = 5.0
) -> bytes:
    """One connection, one line, the reply line, then close."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(line + b"\n")
        return await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()


async def read_until_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the peer closes. A reset counts as a close: a proxy closing a
    socket with unread client bytes in it makes the kernel send RST, as Envoy's does."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def gather_limited(n: int, concurrency: int, job: Callable[[int], Awaitable[T]]) -> list[T]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> T:
        async with sem:
            return await job(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


class BackendThread:
    """Backends on their own event loop in a thread, for tests that drive processes."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._thread.start()

    def start(self, host: str, factory: Callable[[], asyncio.Protocol]) -> int:
        fut = asyncio.run_coroutine_threadsafe(start_backend(host, factory), self.loop)
        server, port = fut.result(10)
        self._servers.append(server)
        return port

    def stop(self) -> None:
        async def close_all() -> None:
            for s in self._servers:
                s.close()

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class SnapshotSource:
    """A tiny stand-in for the API server's snapshot watch endpoint (one loop only)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.current: str | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._watchers: list[asyncio.Queue[str]] = []

    async def push(self, text: str) -> None:
        """Send a line to every open watch (and to later ones as the current snapshot)."""
        self.current = text
        for queue in self._watchers:
            queue.put_nowait(text)

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        assert request.query.get("watch") == "true"
        assert request.match_info["ns"] == "istio-system"
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            if self.current is not None:
                await resp.write(self.current.encode() + b"\n")
            while True:
                data = (await queue.get()).encode() + b"\n"
                # Split a line over two writes: the feed must reassemble it.
                await resp.write(data[:10])
                await resp.write(data[10:])
        finally:
            self._watchers.remove(queue)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/tcpmesh/v1/snapshots/{ns}/{pod}", self.handler)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, PROXY_HOST, 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"http://{PROXY_HOST}:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


def write_credentials(state_dir: Path, url: str, token: str) -> None:
    path = state_dir / "apiserver.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "token": token, "pid": os.getpid()}))
    tmp.replace(path)


def spliced(relay_path: str) -> bool:
    """Whether connections on ``relay_path`` (conftest.relay_path) move bytes by splice(2)."""
    return relay_path.endswith("splice")
