"""The L4 proxy of one worker: listeners from the Snapshot, one relay per connection.

``Proxy.apply`` swaps a single reference. A connection reads that reference once, when
it is accepted, and decides route, cluster and endpoint then; it never looks again, so
a new snapshot cannot move or close it. Listening sockets are keyed by address and
port: a snapshot that changes a listener's routes leaves its socket alone.

Per-worker state: load-balancer counts, outlier ejections and the ``max_connections``
circuit breaker are kept per worker process, so with N workers a cluster may hold up
to N x ``max_connections`` connections (Envoy shares its breakers across its threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from tcpmesh.control.snapshot import Cluster, Endpoint, Listener, Snapshot, TcpKeepalive
from tcpmesh.dataplane.accesslog import AccessLogRecord, AccessLogSink, StreamAccessLog
from tcpmesh.dataplane.balancer import LoadBalancer
from tcpmesh.dataplane.pump import DEFAULT_HIGH_WATER, DOWNSTREAM, UPSTREAM, Relay, RelayProtocol
from tcpmesh.dataplane.routing import (
    DURATION_TIMEOUT,
    UPSTREAM_CONNECT_FAILURE,
    Decision,
    decide,
)
from tcpmesh.dataplane.stats import ProxyStats, destination_of

log = logging.getLogger("tcpmesh.dataplane")

ListenerKey = tuple[str, int]
BACKLOG = 4096
# Istio reports TCP byte counters periodically while connections are open.
STATS_REPORT_INTERVAL = 5.0


@dataclass(frozen=True)
class _State:
    snapshot: Snapshot
    listeners: dict[ListenerKey, Listener] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: Snapshot) -> _State:
        by_key: dict[ListenerKey, Listener] = {}
        for lst in snapshot.listeners:
            by_key.setdefault((lst.address, lst.port), lst)
        return cls(snapshot, by_key)


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Several worker processes bind the same port; the kernel spreads connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _ListenSocket:
    """One bound address:port; a bind failure is retried with back-off until closed."""

    def __init__(self, proxy: Proxy, key: ListenerKey) -> None:
        self._proxy = proxy
        self.key = key
        self.server: asyncio.AbstractServer | None = None
        self.sockname: tuple[str, int] | None = None
        self.first_attempt = asyncio.Event()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay, max_delay = self._proxy.bind_retry
        address, port = self.key
        loop = asyncio.get_running_loop()
        last_error = ""
        while not self._closed:
            try:
                sock = _bind(address, port)
            except OSError as exc:
                # Warn once per distinct error; the retries go on quietly.
                level = logging.DEBUG if str(exc) == last_error else logging.WARNING
                last_error = str(exc)
                log.log(level, "cannot listen on %s:%d: %s; retrying", address, port, exc)
                self.first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            self.sockname = sock.getsockname()[:2]
            try:
                server = await loop.create_server(
                    lambda: _Connection(self._proxy, self.key),
                    sock=sock,
                    backlog=BACKLOG,
                    start_serving=False,
                )
            except BaseException:
                sock.close()
                self.first_attempt.set()
                raise
            self.server = server
            if self._closed:
                server.close()
                return
            await server.start_serving()
            log.info("listening on %s:%d", address, self.sockname[1])
            self.first_attempt.set()
            return

    def close(self) -> None:
        self._closed = True
        self._task.cancel()
        self.first_attempt.set()
        if self.server is not None:
            self.server.close()


class Proxy:
    """Serves the listeners of the last applied Snapshot. Use from one event loop."""

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        access_log: AccessLogSink | None = None,
        stats: ProxyStats | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        clock: Callable[[], float] = time.monotonic,
        bind_retry: tuple[float, float] = (0.5, 5.0),
    ) -> None:
        self.rng = rng if rng is not None else random.Random()
        self.balancer = LoadBalancer(self.rng, clock)
        self.access_log: AccessLogSink = access_log if access_log is not None else StreamAccessLog()
        self.stats = stats if stats is not None else ProxyStats()
        self.high_water = high_water
        self.bind_retry = bind_retry
        self._state = _State.of(Snapshot(version=""))
        self._listeners: dict[ListenerKey, _ListenSocket] = {}
        self._connections: set[_Connection] = set()
        self._stats_task: asyncio.Task[None] | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self._state.snapshot

    def apply(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the one new connections use; open connections are untouched."""
        state = _State.of(snapshot)
        self._state = state
        for key in [k for k in self._listeners if k not in state.listeners]:
            self._listeners.pop(key).close()
            log.info("closed listener %s:%d", *key)
        for key in state.listeners:
            if key not in self._listeners:
                self._listeners[key] = _ListenSocket(self, key)
        if self._stats_task is None:
            self._stats_task = asyncio.get_running_loop().create_task(self._report_stats())

    async def settled(self) -> None:
        """Wait until every current listener was bound once or failed its first bind."""
        for lst in list(self._listeners.values()):
            await lst.first_attempt.wait()

    def bound_address(self, address: str, port: int) -> tuple[str, int] | None:
        lst = self._listeners.get((address, port))
        return lst.sockname if lst is not None and lst.server is not None else None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def buffered_bytes(self) -> int:
        return sum(c.buffered() for c in self._connections)

    def connections(self) -> list[_Connection]:
        return list(self._connections)

    async def close(self, *, grace: float = 0.0) -> None:
        """Stop listening, then end open connections after ``grace`` seconds."""
        for lst in self._listeners.values():
            lst.close()
        self._listeners.clear()
        if grace > 0 and self._connections:
            deadline = time.monotonic() + grace
            while self._connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for conn in list(self._connections):
            conn.abort()
        for _ in range(40):
            if not self._connections:
                break
            await asyncio.sleep(0.025)
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        self.flush()

    def flush(self) -> None:
        for conn in self._connections:
            conn.report_bytes()
        flush = getattr(self.access_log, "flush", None)
        if callable(flush):
            flush()

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_REPORT_INTERVAL)
            for conn in list(self._connections):
                conn.report_bytes()

    def _opened(self, conn: _Connection) -> None:
        self._connections.add(conn)

    def _closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)


def _apply_keepalive(transport: asyncio.BaseTransport, ka: TcpKeepalive) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if ka.time is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(ka.time)))
        if ka.interval is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(ka.interval)))
        if ka.probes is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, ka.probes))
    except OSError as exc:
        log.warning("cannot set TCP keepalive: %s", exc)


def _addr_text(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "-"


class _Connection(asyncio.Protocol):
    """One client connection: the open-time decision, the upstream connect, the log."""

    def __init__(self, proxy: Proxy, key: ListenerKey) -> None:
        self._proxy = proxy
        self._key = key
        self._relay: Relay | None = None
        self._decision = Decision(None)
        self._connect_task: asyncio.Task[None] | None = None
        self._connect_failed = False
        self._upstream_open = False
        self._start_wall = 0.0
        self._start_mono = 0.0
        self._local = "-"
        self._peer = "-"
        self._service = "unknown"
        self._version = "unknown"
        self._reported = [0, 0]

    # -- asyncio.Protocol, downstream side ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        proxy = self._proxy
        loop = asyncio.get_running_loop()
        self._start_wall = time.time()
        self._start_mono = loop.time()
        state = proxy._state
        local = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        self._local, self._peer = _addr_text(local), _addr_text(peer)
        local_ip = local[0] if isinstance(local, tuple) else ""
        peer_ip = peer[0] if isinstance(peer, tuple) else None
        listener = state.listeners.get(self._key)
        decision = decide(state.snapshot, listener, local_ip, peer_ip, proxy.rng, proxy.balancer)
        self._decision = decision
        self._service, self._version = destination_of(decision.cluster_name, decision.cluster)
        proxy.stats.opened(self._service, self._version, decision.flag or "-")
        if decision.flag is not None:
            if decision.flag == "NR":
                proxy.stats.event(listener.name if listener else "", "downstream_cx_no_route")
            transport.close()
            self._log(decision.flag)
            return
        route = decision.route
        assert route is not None and decision.cluster is not None and decision.endpoint is not None
        relay = Relay(
            loop,
            self,
            high_water=proxy.high_water,
            idle_timeout=route.idle_timeout,
            max_duration=route.max_connection_duration,
        )
        self._relay = relay
        relay.attach(DOWNSTREAM, transport)
        relay.start_connecting()
        proxy._opened(self)
        self._connect_task = loop.create_task(
            self._connect(relay, decision.cluster, decision.endpoint)
        )

    def data_received(self, data: bytes) -> None:
        if self._relay is not None:
            self._relay.data_received(DOWNSTREAM, data)

    def eof_received(self) -> bool:
        if self._relay is not None:
            return self._relay.eof_received(DOWNSTREAM)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._relay is not None:
            self._relay.connection_lost(DOWNSTREAM)

    def pause_writing(self) -> None:
        if self._relay is not None:
            self._relay.pause_writing(DOWNSTREAM)

    def resume_writing(self) -> None:
        if self._relay is not None:
            self._relay.resume_writing(DOWNSTREAM)

    # -- upstream ---------------------------------------------------------------------

    async def _connect(self, relay: Relay, cluster: Cluster, endpoint: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(cluster.connect_timeout):
                await loop.create_connection(
                    lambda: RelayProtocol(relay, UPSTREAM), endpoint.address, endpoint.port
                )
        except asyncio.CancelledError:
            relay.upstream_failed()
        except (OSError, TimeoutError) as exc:
            self._connect_failed = True
            timed_out = isinstance(exc, TimeoutError)
            event = "upstream_cx_connect_timeout" if timed_out else "upstream_cx_connect_fail"
            route = self._decision.route
            self._proxy.stats.event(route.stat_prefix if route else "", event)
            self._proxy.balancer.connect_failed(cluster, endpoint)
            relay.upstream_failed()

    # -- RelayOwner -------------------------------------------------------------------

    def upstream_connected(self, transport: asyncio.Transport) -> None:
        cluster, endpoint = self._decision.cluster, self._decision.endpoint
        assert cluster is not None and endpoint is not None
        self._upstream_open = True
        self._proxy.balancer.connect_succeeded(cluster, endpoint)
        if cluster.tcp_keepalive is not None:
            _apply_keepalive(transport, cluster.tcp_keepalive)

    def downstream_lost_while_connecting(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()

    def relay_done(self) -> None:
        relay = self._relay
        assert relay is not None
        balancer = self._proxy.balancer
        cluster, endpoint = self._decision.cluster, self._decision.endpoint
        assert cluster is not None and endpoint is not None
        if self._upstream_open:
            balancer.connection_closed(cluster.name, endpoint)
        balancer.connection_finished(cluster.name)
        flag = None
        if self._connect_failed:
            flag = UPSTREAM_CONNECT_FAILURE
        elif relay.termination == "max_connection_duration":
            flag = DURATION_TIMEOUT
        route = self._decision.route
        if relay.termination and route is not None:
            name = relay.termination
            if name == "max_connection_duration":
                name = "max_downstream_connection_duration"
            self._proxy.stats.event(route.stat_prefix, name)
        self.report_bytes(flag or "-")
        self._proxy._closed(self)
        self._log(flag, relay.termination)

    # -- bookkeeping ------------------------------------------------------------------

    def buffered(self) -> int:
        return self._relay.buffered() if self._relay is not None else 0

    def abort(self) -> None:
        if self._relay is not None:
            self._relay.abort()

    @property
    def upstream_host(self) -> str:
        ep = self._decision.endpoint
        return f"{ep.address}:{ep.port}" if ep is not None else "-"

    @property
    def cluster_name(self) -> str:
        return self._decision.cluster_name

    def report_bytes(self, flags: str = "-") -> None:
        if self._relay is None:
            return
        received, sent = self._relay.bytes_from
        d_rx, d_tx = received - self._reported[0], sent - self._reported[1]
        self._reported = [received, sent]
        if d_rx or d_tx:
            self._proxy.stats.add_bytes(self._service, self._version, flags, d_rx, d_tx)

    def _log(self, flag: str | None, termination: str = "") -> None:
        flags = (flag,) if flag else ()
        self._proxy.stats.closed(self._service, self._version, flag or "-")
        received, sent = self._relay.bytes_from if self._relay is not None else (0, 0)
        duration = asyncio.get_running_loop().time() - self._start_mono
        self._proxy.access_log(
            AccessLogRecord(
                start_time=self._start_wall,
                flags=flags,
                bytes_received=received,
                bytes_sent=sent,
                duration_ms=int(duration * 1000),
                upstream_host=self.upstream_host,
                upstream_cluster=self._decision.cluster_name or "-",
                local_address=self._local,
                downstream_peer=self._peer,
                termination=termination,
            )
        )
