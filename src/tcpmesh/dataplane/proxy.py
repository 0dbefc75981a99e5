"""The L4 proxy of one worker: listeners from the Snapshot, one relay per connection.

``Proxy.apply`` swaps a single reference. A connection reads that reference once, when
it is accepted, and decides route, cluster and endpoint then; it never looks again, so
a new snapshot cannot move or close it. Listening sockets are keyed by address and
port: a snapshot that changes a listener's routes leaves its socket alone.

Per-cluster state: load-balancer counts, outlier ejections and the ``max_connections``
circuit breaker live in the ``CounterStore`` given to the proxy; the supervisor gives
every worker the same shared table (``dataplane.counters``), so they hold for the whole
proxy as Envoy's do across its threads. The weighted pick's position is per worker.

The weighted pick is the route's (``TcpRoute.weighted_pick``, set by the control plane):
``smooth`` (nginx's smooth weighted round robin: each worker splits every
``sum(weights)`` consecutive connections exactly by weight) or ``random`` (Envoy's
draw). A route whose destinations are unchanged by a new snapshot keeps its position.
A route with ``version_affinity`` source-ip picks by the client address instead
(``dataplane.affinity``): the same client, the same version.

Idle timeouts and maximum durations are enforced by one sweep per worker rather than a
timer per connection: a connection ends at most one sweep interval (a quarter of the
shortest timeout, between 50 ms and 1 s) after its limit, never before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from tcpmesh.control import (
    Cluster,
    Endpoint,
    Listener,
    ResponseFlag,
    Snapshot,
    TcpKeepalive,
    TcpRoute,
    VersionAffinity,
    WeightedCluster,
    WeightedPick,
)
from tcpmesh.dataplane.accesslog import AccessLogRecord, AccessLogSink, StreamAccessLog
from tcpmesh.dataplane.affinity import pick_by_address
from tcpmesh.dataplane.balancer import LoadBalancer, SmoothWeighted, endpoint_key, pick_weighted
from tcpmesh.dataplane.clienthello import Outcome, Peek
from tcpmesh.dataplane.counters import CounterStore, EndpointKey, LocalCounters
from tcpmesh.dataplane.inspect import PEEK_TIMEOUT, TlsContexts, peek_client_hello
from tcpmesh.dataplane.native import DONE, PENDING, EngineMode, NativeDriver, engine_mode
from tcpmesh.dataplane.pump import DEFAULT_HIGH_WATER, Relay, Termination
from tcpmesh.dataplane.rebalance import Rebalancer
from tcpmesh.dataplane.routing import Decision, decide, match_route
from tcpmesh.dataplane.splice import PipePool, RelayMode, relay_mode, splice_after
from tcpmesh.dataplane.stats import NO_FLAGS, ClusterStat, ProxyStats, TcpProxyStat
from tcpmesh.telemetry import UNKNOWN, Destination

log = logging.getLogger("tcpmesh.dataplane")

ListenerKey = tuple[str, int]
BACKLOG = 4096
# Istio reports TCP byte counters periodically while connections are open; here every
# 5 s, and at every scrape (counts_json), whichever comes first.
STATS_REPORT_INTERVAL = 5.0
SWEEP_MIN, SWEEP_MAX = 0.05, 1.0


class _ListenerPlan:
    """What a listener's connections need, worked out once per snapshot."""

    __slots__ = ("listener", "only_route")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        routes = listener.routes
        # The usual gateway listener: one route that matches every destination and
        # client, so no per-connection address match is needed.
        only = routes[0].match if len(routes) == 1 else None
        self.only_route = (
            routes[0]
            if only is not None and not only.destination_subnets and not only.source_prefixes
            else None
        )


class _State:
    __slots__ = ("listeners", "snapshot")

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        # One listener per address:port: Snapshot.check() holds the control plane to it,
        # and the control plane resolves a conflict by its stated rule, not the proxy.
        self.listeners: dict[ListenerKey, _ListenerPlan] = {
            (lst.address, lst.port): _ListenerPlan(lst) for lst in snapshot.listeners
        }


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
    """One bound address:port; a bind failure is retried with back-off until closed.

    ``inspect``: the listener's routes depend on the ClientHello, so connections are
    accepted here and peeked at (:mod:`tcpmesh.dataplane.inspect`) before a transport
    takes them; otherwise the event loop accepts them straight into a relay.
    """

    def __init__(self, proxy: Proxy, key: ListenerKey, inspect: bool = False) -> None:
        self._proxy = proxy
        self.key = key
        self.inspect = inspect
        self._accepting: asyncio.Task[None] | None = None
        self.server: asyncio.AbstractServer | None = None
        # On the C engine (dataplane.native): its listener id, and the socket it accepts on.
        self._native: tuple[NativeDriver, int, socket.socket] | None = None
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
            if self.inspect:
                self._accepting = loop.create_task(self._accept(sock))
                log.info("listening on %s:%d (reading ClientHellos)", address, self.sockname[1])
                self.first_attempt.set()
                return
            driver = self._proxy.native
            if driver is not None:
                accepted = functools.partial(self._proxy.native_accepted, self.key)
                self._native = (driver, driver.listen(sock, accepted), sock)
                log.info("listening on %s:%d (native engine)", address, self.sockname[1])
                self.first_attempt.set()
                return
            try:
                server = await loop.create_server(
                    functools.partial(_Connection, self._proxy, self.key),
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

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                try:
                    conn, _ = await loop.sock_accept(sock)
                except OSError as exc:
                    log.warning("accept on %s:%d failed: %s", *self.key, exc)
                    await asyncio.sleep(0.05)
                    continue
                conn.setblocking(False)
                self._proxy.inspect(self.key, conn)
        finally:
            sock.close()

    @property
    def bound(self) -> bool:
        return self.server is not None or self._accepting is not None or self._native is not None

    def close(self) -> None:
        self._closed = True
        self._task.cancel()
        self.first_attempt.set()
        if self.server is not None:
            self.server.close()
        if self._accepting is not None:
            self._accepting.cancel()
        if self._native is not None:
            driver, lid, sock = self._native
            self._native = None
            driver.unlisten(lid)
            sock.close()


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
        client_hello_timeout: float = PEEK_TIMEOUT,
        counters: CounterStore | None = None,
        relay: RelayMode | None = None,
        engine: EngineMode | None = None,
    ) -> None:
        self.rng = rng if rng is not None else random.Random()
        self.balancer = LoadBalancer(self.rng, clock, counters)
        self.rebalancer = Rebalancer(counters if counters is not None else LocalCounters())
        self.access_log: AccessLogSink = access_log if access_log is not None else StreamAccessLog()
        self.stats = stats if stats is not None else ProxyStats()
        self.high_water = high_water
        # How bytes move (dataplane.splice): TCPMESH_RELAY unless given.
        self.relay = relay if relay is not None else relay_mode(os.environ.get("TCPMESH_RELAY"))
        self.splice_after = splice_after(self.relay)
        self.pipes = PipePool(high_water) if self.splice_after >= 0 else None
        self.spliced_connections = 0  # relays handed to the zero-copy path, ever
        # Which code moves plain TCP listeners' bytes (dataplane.native): TCPMESH_ENGINE
        # unless given; the driver is made by the first apply(), in the proxy's loop.
        self.engine = engine_mode(engine or os.environ.get("TCPMESH_ENGINE"))
        self.native: NativeDriver | None = None
        self.bind_retry = bind_retry
        self._state = _State(Snapshot(version=""))
        self._listeners: dict[ListenerKey, _ListenSocket] = {}
        self._connections: set[_Accounting] = set()
        self._stats_task: asyncio.Task[None] | None = None
        # Smooth pickers by (listener, destinations): they outlive snapshots that leave
        # the route's destinations as they were.
        self._pickers: dict[tuple[ListenerKey, tuple[WeightedCluster, ...]], SmoothWeighted] = {}
        self._route_pickers: dict[int, SmoothWeighted] = {}
        self._sweep_interval = SWEEP_MAX
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.tls_contexts = TlsContexts()
        self.client_hello_timeout = client_hello_timeout
        self._inspecting: set[asyncio.Task[None]] = set()
        # The loop apply() runs in, for new connections: asyncio.get_running_loop() costs a
        # getpid() system call per connection in CPython 3.11.
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self._state.snapshot

    def apply(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the one new connections use; open connections are untouched."""
        loop = self.loop = asyncio.get_running_loop()
        if self.engine is EngineMode.NATIVE and self.native is None:
            self.native = NativeDriver(loop, self.high_water, self.splice_after)
        state = _State(snapshot)
        self._prepare_pickers(state)
        self._state = state
        for key in [k for k in self._listeners if k not in state.listeners]:
            self._listeners.pop(key).close()
            log.info("closed listener %s:%d", *key)
        for key, plan in state.listeners.items():
            inspect = plan.listener.reads_client_hello
            current = self._listeners.get(key)
            if current is None or current.inspect != inspect:
                # SO_REUSEPORT: the new socket is bound before the old one closes, so a
                # listener that starts or stops reading ClientHellos keeps its port.
                self._listeners[key] = _ListenSocket(self, key, inspect)
                if current is not None:
                    current.close()
        self.tls_contexts.retain(
            {r.tls for p in state.listeners.values() for r in p.listener.routes if r.tls}
        )
        if self._stats_task is None:
            self._stats_task = loop.create_task(self._report_stats())
        for plan in state.listeners.values():
            for route in plan.listener.routes:
                self._need_sweep(route)
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._sweep_interval, self._sweep)
        self.rebalancer.apply(snapshot)

    def _prepare_pickers(self, state: _State) -> None:
        pickers: dict[tuple[ListenerKey, tuple[WeightedCluster, ...]], SmoothWeighted] = {}
        by_route: dict[int, SmoothWeighted] = {}
        for key, plan in state.listeners.items():
            for route in plan.listener.routes:
                if len(route.destinations) < 2 or route.weighted_pick is not WeightedPick.SMOOTH:
                    continue
                pkey = (key, route.destinations)
                picker = pickers.get(pkey) or self._pickers.get(pkey)
                if picker is None:
                    picker = SmoothWeighted(route.destinations)
                pickers[pkey] = picker
                by_route[id(route)] = picker
        self._pickers = pickers
        # Keyed by identity: the routes live as long as the state that holds them.
        self._route_pickers = by_route

    def pick(self, route: TcpRoute, client_ip: str | None = None) -> WeightedCluster | None:
        """The destination of a new connection on ``route`` from ``client_ip``."""
        dests = route.destinations
        if len(dests) == 1:
            return dests[0]
        if route.version_affinity is VersionAffinity.SOURCE_IP:
            return pick_by_address(dests, client_ip)
        picker = self._route_pickers.get(id(route))
        if picker is not None:
            return picker.pick()  # the route's pick is smooth (see _prepare_pickers)
        return pick_weighted(dests, self.rng)

    async def settled(self) -> None:
        """Wait until every current listener was bound once or failed its first bind."""
        for lst in list(self._listeners.values()):
            await lst.first_attempt.wait()

    def bound_address(self, address: str, port: int) -> tuple[str, int] | None:
        lst = self._listeners.get((address, port))
        return lst.sockname if lst is not None and lst.bound else None

    def inspect(self, key: ListenerKey, conn: socket.socket) -> None:
        """Route an accepted connection by its ClientHello, then hand it to a relay."""
        task = asyncio.get_running_loop().create_task(self._inspect(key, conn))
        self._inspecting.add(task)
        task.add_done_callback(self._inspecting.discard)

    async def _inspect(self, key: ListenerKey, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            peek = await peek_client_hello(conn, timeout=self.client_hello_timeout)
            route, context = self._route_by_hello(key, conn, peek)
            factory = functools.partial(_Connection, self, key, (route,))
            if context is None:
                await loop.connect_accepted_socket(factory, sock=conn)
            else:
                await loop.connect_accepted_socket(
                    factory, sock=conn, ssl=context, ssl_handshake_timeout=self.client_hello_timeout
                )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            # A failed TLS handshake: the client never reached a route (Envoy counts it
            # on the listener's ssl.connection_error).
            log.debug("TLS handshake on %s:%d failed: %s", *key, exc)
            conn.close()
        except BaseException:
            conn.close()
            raise

    def _route_by_hello(
        self, key: ListenerKey, conn: socket.socket, peek: Peek
    ) -> tuple[TcpRoute | None, ssl.SSLContext | None]:
        """The route a peeked connection takes (None: closed with NR), and its TLS context."""
        plan = self._state.listeners.get(key)
        if plan is None or peek.outcome in (Outcome.NEED_MORE, Outcome.TOO_LARGE):
            return None, None  # Envoy's inspector closes these before any filter chain
        local, peer = conn.getsockname(), conn.getpeername()
        route = match_route(plan.listener, local[0], peek.server_name, peer[0])
        if route is None or route.tls is None:
            return route, None
        context = self.tls_contexts.get(route.tls)
        # A certificate that cannot be loaded serves nobody (Envoy: warming listener).
        return (route, context) if context is not None else (None, None)

    def native_accepted(self, key: ListenerKey, cid: int, peer: object, local: object) -> None:
        """The C engine accepted a connection on ``key``: decide, then let it connect."""
        driver = self.native
        assert driver is not None
        conn = _NativeConnection(self, driver, key, cid)
        if not conn._open(local, peer):
            driver.engine.abort(cid)
            return
        driver.owners[cid] = conn
        conn._connect_first()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def buffered_bytes(self) -> int:
        return sum(c.buffered() for c in self._connections)

    async def close(self, *, grace: float = 0.0) -> None:
        """Stop listening, then end open connections after ``grace`` seconds."""
        for lst in self._listeners.values():
            lst.close()
        self._listeners.clear()
        if grace > 0 and self._connections:
            deadline = time.monotonic() + grace
            while self._connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for task in list(self._inspecting):
            task.cancel()
        for conn in list(self._connections):
            conn.abort()
        for _ in range(40):
            if not self._connections:
                break
            await asyncio.sleep(0.025)
        self.rebalancer.close()
        if self.native is not None:
            self.native.close()
            self.native = None
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        if self.pipes is not None:
            self.pipes.close()
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

    def counts_json(self) -> bytes:
        """This worker's counts as JSON, with the bytes of open connections up to now."""
        for conn in self._connections:
            conn.report_bytes()
        return self.stats.counts.to_json()

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_REPORT_INTERVAL)
            for conn in list(self._connections):
                conn.report_bytes()

    def _need_sweep(self, route: TcpRoute) -> None:
        """Sweep often enough for the route's timeouts (the interval only shrinks)."""
        for limit in (route.idle_timeout, route.max_connection_duration):
            if limit is not None and limit > 0:
                wanted = min(SWEEP_MAX, max(SWEEP_MIN, limit / 4))
                self._sweep_interval = min(self._sweep_interval, wanted)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._connections):
            conn.check_timeouts(now)
        self._sweep_handle = loop.call_later(self._sweep_interval, self._sweep)


def _apply_keepalive_sock(sock: socket.socket, ka: TcpKeepalive) -> None:
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


def _apply_keepalive(transport: asyncio.BaseTransport, ka: TcpKeepalive) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        _apply_keepalive_sock(sock, ka)


def _addr_text(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "-"


_NO_DECISION = Decision(None)
_NO_DESTINATION: Destination = (UNKNOWN,) * 9
# The tcp_proxy stat of each way the proxy ends a connection itself, and its flag.
_TERMINATION_STATS = {
    Termination.IDLE_TIMEOUT: TcpProxyStat.IDLE_TIMEOUT,
    Termination.MAX_CONNECTION_DURATION: TcpProxyStat.MAX_DOWNSTREAM_CONNECTION_DURATION,
}
_TERMINATION_FLAGS = {Termination.MAX_CONNECTION_DURATION: ResponseFlag.DURATION_TIMEOUT}
# The cluster stat of each open-time flag that concerns a cluster.
_FLAG_CLUSTER_STATS = {
    ResponseFlag.UPSTREAM_OVERFLOW: ClusterStat.UPSTREAM_CX_OVERFLOW,
    ResponseFlag.NO_HEALTHY_UPSTREAM: ClusterStat.UPSTREAM_CX_NONE_HEALTHY,
}


# What both connection classes keep for the open-time decision and the bookkeeping.
_ACCOUNTING_SLOTS = (
    "_activity_at",
    "_activity_seen",
    "_attempts",
    "_chosen",
    "_connect_failed",
    "_decision",
    "_dest",
    "_key",
    "_local",
    "_peer",
    "_proxy",
    "_reported_rx",
    "_reported_tx",
    "_start_mono",
    "_start_wall",
    "_tried",
    "_upstream_open",
)


# Empty, and not a literal: the mixin's attributes live in its subclasses' slots.
_MIXIN_SLOTS: tuple[str, ...] = ()


class _Accounting:
    """What a connection decides and reports, whichever code moves its bytes.

    Shared by ``_Connection`` (the Python relay) and ``_NativeConnection`` (the C
    engine, dataplane.native), so route, balancer, breaker, retry, timeouts, metrics
    and the access log are one piece of code for both paths. No slots of its own (the
    Relay's layout comes first); the attributes are the subclasses' slots."""

    __slots__ = _MIXIN_SLOTS
    _proxy: Proxy
    _key: ListenerKey
    _chosen: tuple[TcpRoute | None] | None
    _decision: Decision
    _connect_failed: bool
    _attempts: int
    _tried: frozenset[EndpointKey]
    _upstream_open: bool
    _start_wall: float
    _start_mono: float
    _local: object
    _peer: object
    _dest: Destination
    _reported_rx: int
    _reported_tx: int
    _activity_seen: int
    _activity_at: float
    _loop: asyncio.AbstractEventLoop
    done: bool
    termination: str
    was_spliced: bool

    def _init_accounting(
        self, proxy: Proxy, key: ListenerKey, chosen: tuple[TcpRoute | None] | None
    ) -> None:
        self._proxy = proxy
        self._key = key
        # The route already chosen from the ClientHello, for connections that were peeked.
        self._chosen = chosen
        self._decision = _NO_DECISION
        self._connect_failed = False
        self._attempts = 1
        self._tried = frozenset()
        self._upstream_open = False
        self._start_wall = 0.0
        self._start_mono = 0.0
        self._local = None
        self._peer = None
        self._dest = _NO_DESTINATION
        self._reported_rx = 0
        self._reported_tx = 0
        self._activity_seen = 0
        self._activity_at = 0.0

    # What the relay provides (annotations only: the relay's own methods are found).
    connect: Callable[[str, int, float], None]
    abort: Callable[..., None]
    buffered: Callable[[], int]
    _bytes: Callable[[], Sequence[int]]

    # -- open ------------------------------------------------------------------------

    def _open(self, local: object, peer: object) -> bool:
        """Decide route, cluster and endpoint; False when refused (counted and logged)."""
        proxy = self._proxy
        self._start_wall = time.time()
        self._start_mono = self._activity_at = self._loop.time()
        state = proxy._state
        self._local = local
        self._peer = peer
        plan = state.listeners.get(self._key)
        route: TcpRoute | None
        peer_ip = peer[0] if isinstance(peer, tuple) else None
        if self._chosen is not None:
            route = self._chosen[0]
        elif plan is None:
            route = None
        elif plan.only_route is not None:
            route = plan.only_route
        else:
            local_ip = local[0] if isinstance(local, tuple) else ""
            route = match_route(plan.listener, local_ip, None, peer_ip)
        decision = decide(state.snapshot, route, peer_ip, proxy.balancer, proxy.pick)
        self._decision = decision
        dest = self._dest = proxy.stats.destination(
            decision.destination, decision.cluster, decision.endpoint
        )
        flag = decision.flag
        proxy.stats.opened(dest, flag or NO_FLAGS)
        if flag is not None:
            self._count_refusal(flag, plan)
            # Never relayed: the end of the relay must not report it a second time.
            self.done = True
            self._log(flag)
            return False
        assert route is not None and decision.cluster is not None
        # The sweep interval already suits the route: apply() sized it for every route
        # of the state this connection took its route from.
        proxy._connections.add(self)
        proxy.rebalancer.opened(self, self._key, route, decision.cluster.name)
        proxy.stats.relay_started(dest)
        return True

    def _connect_first(self) -> None:
        cluster, endpoint = self._decision.cluster, self._decision.endpoint
        assert cluster is not None and endpoint is not None
        self.connect(endpoint.address, endpoint.port, cluster.connect_timeout)

    def _count_refusal(self, flag: ResponseFlag, plan: _ListenerPlan | None) -> None:
        """File a connection closed at once where Envoy counts it: route or cluster."""
        stats = self._proxy.stats
        decision = self._decision
        if flag is ResponseFlag.NO_ROUTE:
            name = plan.listener.name if plan is not None else ""
            stats.event(name, TcpProxyStat.DOWNSTREAM_CX_NO_ROUTE)
        elif flag is ResponseFlag.NO_CLUSTER:
            route = decision.route
            stats.event(route.stat_prefix if route else "", TcpProxyStat.DOWNSTREAM_CX_NO_ROUTE)
        else:
            cluster_stat = _FLAG_CLUSTER_STATS.get(flag)
            if cluster_stat is not None and decision.cluster is not None:
                stats.cluster_event(decision.cluster.name, cluster_stat)

    # -- connect outcome -------------------------------------------------------------

    def _upstream_ok(self) -> Cluster:
        """The upstream accepted the connection: the balancer hears of it."""
        cluster, endpoint = self._decision.cluster, self._decision.endpoint
        assert cluster is not None and endpoint is not None
        self._upstream_open = True
        self._activity_at = self._loop.time()
        self._proxy.balancer.connect_succeeded(cluster, endpoint)
        return cluster

    def upstream_failed(self, timed_out: bool | None) -> bool:
        if timed_out is None:
            return False  # the client left while connecting: not the upstream's fault
        cluster, endpoint = self._decision.cluster, self._decision.endpoint
        assert cluster is not None and endpoint is not None
        # As Envoy's connection pool: a timeout is also a connect failure.
        if timed_out:
            self._proxy.stats.cluster_event(cluster.name, ClusterStat.UPSTREAM_CX_CONNECT_TIMEOUT)
        self._proxy.stats.cluster_event(cluster.name, ClusterStat.UPSTREAM_CX_CONNECT_FAIL)
        self._proxy.balancer.connect_failed(cluster, endpoint)
        if self._connect_again(cluster, endpoint):
            return True
        self._connect_failed = True
        return False

    def _connect_again(self, cluster: Cluster, failed: Endpoint) -> bool:
        """Envoy's tcp_proxy retry: while attempts remain, a new load-balancer pick in the
        same cluster (endpoints already tried are skipped while others are healthy; an
        endpoint the failure just ejected is not healthy), with a fresh connect timeout.
        The connection's metric labels stay those of its first pick."""
        route = self._decision.route
        if route is None or self._attempts >= route.max_connect_attempts:
            return False
        tried = self._tried | {endpoint_key(failed)}
        peer = self._peer
        client_ip = peer[0] if isinstance(peer, tuple) else None
        hashing = route.hash_policy == "source_ip"
        endpoint = self._proxy.balancer.pick(
            cluster, client_ip, hash_source_ip=hashing, exclude=tried
        )
        if endpoint is None:
            return False
        self._attempts += 1
        self._tried = tried
        self._decision = self._decision._replace(endpoint=endpoint)
        self.connect(endpoint.address, endpoint.port, cluster.connect_timeout)
        return True

    # -- close -----------------------------------------------------------------------

    def relay_done(self) -> None:
        proxy = self._proxy
        balancer = proxy.balancer
        cluster, endpoint = self._decision.cluster, self._decision.endpoint
        assert cluster is not None and endpoint is not None
        balancer.connection_ended(cluster.name, endpoint if self._upstream_open else None)
        termination = self.termination
        flag: ResponseFlag | None = None
        if self._connect_failed:
            flag = ResponseFlag.UPSTREAM_CONNECT_FAILURE
        elif termination:
            flag = _TERMINATION_FLAGS.get(Termination(termination))
        route = self._decision.route
        stat = _TERMINATION_STATS.get(Termination(termination)) if termination else None
        if stat is not None and route is not None:
            proxy.stats.event(route.stat_prefix, stat)
        self.report_bytes(flag or NO_FLAGS)
        lived = self._loop.time() - self._start_mono if self._upstream_open else None
        proxy.stats.relay_ended(self._dest, lived)
        if self.was_spliced:
            proxy.spliced_connections += 1
        proxy._connections.discard(self)
        proxy.rebalancer.closed(self)
        self._log(flag, self.termination)

    # -- timeouts (called by the proxy's sweep) -----------------------------------------

    def check_timeouts(self, now: float) -> None:
        route = self._decision.route
        if route is None or self.done:
            return
        limit = route.max_connection_duration
        if limit is not None and limit > 0 and now - self._start_mono >= limit:
            self.abort(Termination.MAX_CONNECTION_DURATION)
            return
        limit = route.idle_timeout
        if limit is None or limit <= 0 or not self._upstream_open:
            return
        received, sent = self._bytes()
        seen = received + sent
        if seen != self._activity_seen:
            # Bytes moved since the last sweep: idle from now at the earliest.
            self._activity_seen = seen
            self._activity_at = now
        elif now - self._activity_at >= limit:
            self.abort(Termination.IDLE_TIMEOUT)

    # -- bookkeeping ------------------------------------------------------------------

    @property
    def idle_since(self) -> float:
        """When bytes last moved, as far as sweeps and rebalances looked (idle ones go first)."""
        received, sent = self._bytes()
        seen = received + sent
        if seen != self._activity_seen:
            self._activity_seen = seen
            self._activity_at = self._loop.time()
        return self._activity_at

    @property
    def upstream_host(self) -> str:
        ep = self._decision.endpoint
        return f"{ep.address}:{ep.port}" if ep is not None else "-"

    @property
    def cluster_name(self) -> str:
        return self._decision.cluster_name

    def report_bytes(self, flags: str = NO_FLAGS) -> None:
        received, sent = self._bytes()
        d_rx, d_tx = received - self._reported_rx, sent - self._reported_tx
        if d_rx or d_tx:
            self._reported_rx, self._reported_tx = received, sent
            self._proxy.stats.add_bytes(self._dest, flags, d_rx, d_tx)

    def _log(self, flag: ResponseFlag | None, termination: str = "") -> None:
        proxy = self._proxy
        proxy.stats.closed(self._dest, flag or NO_FLAGS)
        received, sent = self._bytes()
        duration = self._loop.time() - self._start_mono
        proxy.access_log(
            AccessLogRecord(
                self._start_wall,
                (flag,) if flag else (),
                received,
                sent,
                int(duration * 1000),
                self.upstream_host,
                self._decision.cluster_name or "-",
                _addr_text(self._local),
                _addr_text(self._peer),
                termination,
            )
        )


class _Connection(_Accounting, Relay):
    """One client connection on the Python relay (an asyncio Protocol, dataplane.pump)."""

    __slots__ = _ACCOUNTING_SLOTS

    def __init__(
        self,
        proxy: Proxy,
        key: ListenerKey,
        chosen: tuple[TcpRoute | None] | None = None,
    ) -> None:
        # A route whose bytes the proxy reads (a TLS session it terminates) keeps copying:
        # the splicer is only offered the plain socket (Relay._maybe_splice checks).
        loop = proxy.loop or asyncio.get_running_loop()
        super().__init__(loop, proxy.high_water, proxy.splice_after, proxy.pipes)
        self._init_accounting(proxy, key, chosen)

    def _bytes(self) -> Sequence[int]:
        return self.bytes_from

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        local = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        if not self._open(local, peer):
            transport.close()
            return
        super().connection_made(transport)
        self._connect_first()

    def upstream_connected(self, sock: socket.socket) -> None:
        cluster = self._upstream_ok()
        if cluster.tcp_keepalive is not None:
            _apply_keepalive_sock(sock, cluster.tcp_keepalive)


class _NativeConnection(_Accounting):
    """One client connection whose bytes the C engine moves (dataplane.native).

    Python sees it three times in the usual case: accepted (the decision, then the
    engine's connect, which to a local peer completes at once), and closed."""

    __slots__ = (
        *_ACCOUNTING_SLOTS,
        "_cid",
        "_driver",
        "_final",
        "_loop",
        "_timer",
        "done",
        "termination",
        "was_spliced",
    )

    def __init__(self, proxy: Proxy, driver: NativeDriver, key: ListenerKey, cid: int) -> None:
        self._loop = proxy.loop or asyncio.get_running_loop()
        self._init_accounting(proxy, key, None)
        self._driver = driver
        self._cid = cid
        self._timer: asyncio.TimerHandle | None = None
        self._final: tuple[int, int] | None = None
        self.done = False
        self.termination = ""
        self.was_spliced = False

    def _bytes(self) -> Sequence[int]:
        final = self._final
        if final is not None:
            return final
        counts: tuple[int, int] | None = self._driver.engine.counts(self._cid)
        return counts if counts is not None else (0, 0)

    def connect(self, address: str, port: int, timeout: float) -> None:
        cluster = self._decision.cluster
        ka = cluster.tcp_keepalive if cluster is not None else None
        engine = self._driver.engine
        if ka is None:
            result = engine.connect(self._cid, address, port)
        else:
            # As _apply_keepalive_sock: whole seconds, at least 1; 0 keeps the default.
            idle, interval = (
                max(1, int(v)) if v is not None else 0 for v in (ka.time, ka.interval)
            )
            probes = max(1, ka.probes) if ka.probes is not None else 0
            result = engine.connect(self._cid, address, port, True, idle, interval, probes)
        if result == DONE:
            self._upstream_ok()
        elif result == PENDING:
            self._timer = self._loop.call_later(timeout, self._connect_timed_out)
        else:
            self._connect_ended(False)

    def _connect_timed_out(self) -> None:
        self._timer = None
        if self._driver.engine.connect_timeout(self._cid):
            self._connect_ended(True)

    def _connect_ended(self, timed_out: bool) -> None:
        if not self.upstream_failed(timed_out):
            self.abort()

    def native_connected(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._upstream_ok()

    def native_failed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connect_ended(False)

    def native_closed(self, received: int, sent: int, spliced: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._final = (received, sent)
        self.was_spliced = spliced
        self.done = True
        self.relay_done()

    def abort(self, termination: str = "") -> None:
        if self.done:
            return
        if termination and not self.termination:
            self.termination = termination
        info = self._driver.engine.abort(self._cid)
        if info is not None:
            self._driver.owners.pop(self._cid, None)
            self.native_closed(*info)

    def buffered(self) -> int:
        buffered: int = self._driver.engine.buffered(self._cid)
        return buffered
