"""Real Envoy (the gateway launcher) against the ADS server, without the rest of the mesh.

Envoy runs with a 2 s drain time. The control experiment shows that this is short enough
to matter: with Istio's layout (tcp_proxy inside the listener) one weight change cuts
every open connection when the drain ends; with tcpmesh's (tcp_proxy over ECDS) flips
leave them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)
from tcpmesh.xds.envoyfiles import missing_envoy_support, write_xds_address
from tcpmesh.xds.translate import (
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    EnvoyConfig,
)

ORIGIN = RouteOrigin("VirtualService", "default", "tcp-echo", 0)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(missing_envoy_support() is not None, reason="needs tcpmesh[envoy]"),
]

GATEWAY = "127.0.71.9"
PORT = 31400
BACKENDS = {"one": "127.0.71.1", "two": "127.0.71.2"}
V1 = "outbound|9000|v1|echo.default.svc.cluster.local"
V2 = "outbound|9000|v2|echo.default.svc.cluster.local"
EMPTY = "outbound|9000|v9|echo.default.svc.cluster.local"
MISSING = "outbound|9000|v3|echo.default.svc.cluster.local"
NODE = "default/envoy-test"
DRAIN_TIME = 2


def snapshot(*weights: tuple[str, int]) -> Snapshot:
    route = TcpRoute(tuple(WeightedCluster(n, w) for n, w in weights), ORIGIN, "echo.default")
    clusters = (
        Cluster(V1, "echo", 9000, "v1", endpoints=(Endpoint(BACKENDS["one"], 9000),)),
        Cluster(V2, "echo", 9000, "v2", endpoints=(Endpoint(BACKENDS["two"], 9000),)),
        Cluster(EMPTY, "echo", 9000, "v9"),
    )
    return Snapshot.build((Listener("0.0.0.0_31400", GATEWAY, PORT, (route,)),), clusters)


def istio_layout(config: EnvoyConfig) -> EnvoyConfig:
    """Istio's way: the tcp_proxy config inline in the listener's filter chain."""
    filters = config.of(EXTENSION_CONFIG_TYPE)
    listeners = {}
    for name, listener in config.of(LISTENER_TYPE).items():
        chains = [
            {
                **chain,
                "filters": [
                    {"name": "envoy.filters.network.tcp_proxy", **_typed(filters[f["name"]])}
                    for f in chain["filters"]
                ],
            }
            for chain in listener["filter_chains"]
        ]
        listeners[name] = {**listener, "filter_chains": chains}
    return EnvoyConfig(
        config.snapshot_version,
        {**config.resources, LISTENER_TYPE: listeners, EXTENSION_CONFIG_TYPE: {}},
    )


def _typed(extension_config: dict[str, Any]) -> dict[str, Any]:
    return {"typed_config": extension_config["typed_config"]}


class Source:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Snapshot] = asyncio.Queue()

    def current(self, node_id: str) -> Snapshot | None:
        return None

    async def watch(self, node_id: str) -> AsyncIterator[Snapshot]:
        while True:
            yield await self.queue.get()


class Rig:
    """An ADS server on its own loop thread, two echo backends and the Envoy gateway."""

    def __init__(self, state_dir: Path) -> None:
        from tcpmesh.xds.server import XdsServer

        self.state_dir = state_dir
        self.log_path = state_dir / "envoy.log"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.source = Source()
        self.server = XdsServer(self.source)
        self.processes: list[subprocess.Popen[bytes]] = []

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self, transform: Callable[[EnvoyConfig], EnvoyConfig] | None) -> None:
        self.server.transform = transform
        self.thread.start()
        port = self.call(self.server.start())
        write_xds_address(self.state_dir, "127.0.0.1", port)
        base = {**os.environ, "TCPMESH_STATE_DIR": str(self.state_dir)}
        for prefix, address in BACKENDS.items():
            self._spawn(
                [sys.executable, "-m", "tcpmesh.runtime.tcpecho", "9000", prefix],
                {**base, "POD_IP": address},
                subprocess.DEVNULL,
            )
        namespace, pod = NODE.split("/")
        env = {
            **base,
            "POD_NAMESPACE": namespace,
            "POD_NAME": pod,
            "POD_IP": GATEWAY,
            "TCPMESH_WORKERS": "1",
            "TCPMESH_ENVOY_DRAIN_TIME": str(DRAIN_TIME),
        }
        with open(self.log_path, "ab") as log:
            self._spawn([sys.executable, "-m", "tcpmesh.xds.gateway"], env, log)

    def _spawn(self, argv: list[str], env: dict[str, str], out: Any) -> None:
        self.processes.append(
            subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
        )

    def stop(self) -> None:
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.thread.is_alive():
            self.call(self.server.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def node(self) -> dict[str, Any]:
        nodes = self.server.status()["nodes"]
        return dict(nodes[0]) if nodes else {}

    def push(self, snap: Snapshot, wait: bool = True) -> None:
        self.loop.call_soon_threadsafe(self.source.queue.put_nowait, snap)
        if wait:
            wait_for(
                f"snapshot {snap.version}",
                lambda: self.node().get("appliedSnapshot") == snap.version,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 15.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def reply(line: str = "probe") -> str:
    """The first word of the answer to one line, '' when the gateway closes at once."""
    try:
        with socket.create_connection((GATEWAY, PORT), timeout=3) as sock:
            sock.sendall(line.encode() + b"\n")
            data = sock.makefile("rb").readline().decode()
    except OSError:
        return ""
    return data.split(" ", 1)[0]


@contextlib.contextmanager
def rig_with(
    tmp_path: Path, transform: Callable[[EnvoyConfig], EnvoyConfig] | None = None
) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        rig.start(transform)
        rig.push(snapshot((V1, 100)))
        wait_for("the gateway", lambda: reply() == "one")
        yield rig
    finally:
        rig.stop()


class LongLived:
    """Connections that each send a line every 50 ms and check every answer."""

    def __init__(self, count: int) -> None:
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.prefixes: list[set[str]] = [set() for _ in range(count)]
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]

    def __enter__(self) -> LongLived:
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self, index: int) -> None:
        try:
            with socket.create_connection((GATEWAY, PORT), timeout=5) as sock:
                reader = sock.makefile("rb")
                deadline = time.monotonic() + 30
                n = 0
                while not self.stop.is_set() and time.monotonic() < deadline:
                    sock.sendall(f"c{index} n{n}\n".encode())
                    line = reader.readline().decode()
                    if not line.endswith(f"c{index} n{n}\n"):
                        self.errors.append(f"client {index}: unexpected reply {line!r}")
                        return
                    self.prefixes[index].add(line.split(" ", 1)[0])
                    n += 1
                    time.sleep(0.05)
        except OSError as exc:
            self.errors.append(f"client {index}: {exc!r}")


def flip(rig: Rig, flips: int) -> list[float]:
    follow = []
    for i in range(flips):
        target, word = ((V2, "two"), (V1, "one"))[i % 2]
        rig.push(snapshot((target, 100)))
        follow.append(wait_for(f"new connections on {word}", lambda w=word: reply() == w, 1.0))
        time.sleep(0.4)
    return follow


def test_weight_flips_over_ecds_leave_open_connections_alone(tmp_path: Path) -> None:
    with rig_with(tmp_path) as rig:
        start = time.monotonic()
        with LongLived(20) as clients:
            follow = flip(rig, 8)
            # Past the drain time after the last flip: a drain would have cut them by now.
            time.sleep(DRAIN_TIME + 1.0)
        assert time.monotonic() - start > 5
        assert clients.errors == []
        assert all(p == {"one"} for p in clients.prefixes)
        assert max(follow) < 1.0


def test_istio_layout_cuts_open_connections_when_the_drain_ends(tmp_path: Path) -> None:
    """The control experiment: the same flip with tcp_proxy inside the listener."""
    with rig_with(tmp_path, istio_layout) as rig, LongLived(10) as clients:
        flip(rig, 1)
        wait_for("connections cut", lambda: len(clients.errors) == 10, DRAIN_TIME + 5.0)
    assert all("unexpected reply ''" in e or "Error" in e for e in clients.errors)


def test_missing_cluster_share_closes_with_nc(tmp_path: Path) -> None:
    with rig_with(tmp_path) as rig:
        rig.push(snapshot((V1, 50), (MISSING, 50)))
        answers = [reply() for _ in range(60)]
        # P(all 60 on one side) = 2 * 0.5**60: never.
        assert set(answers) == {"one", ""}
        wait_for("NC in the access log", lambda: " NC 0 0 " in rig.log(), 5.0)


def test_cluster_without_endpoints_closes_with_uh(tmp_path: Path) -> None:
    with rig_with(tmp_path) as rig:
        rig.push(snapshot((EMPTY, 100)))
        assert [reply() for _ in range(5)] == [""] * 5
        wait_for("UH in the access log", lambda: " UH 0 0 " in rig.log() and EMPTY in rig.log())


def with_listener_on(base: Snapshot, port: int) -> Snapshot:
    """``base`` plus a second listener, on ``port`` of the gateway address."""
    extra = Listener(f"0.0.0.0_{port}", GATEWAY, port, base.listeners[0].routes)
    return Snapshot.build((*base.listeners, extra), base.clusters)


def test_rejected_config_is_nacked_and_traffic_stays_on_the_last_good(tmp_path: Path) -> None:
    # A configuration Envoy really rejects: a listener on a port another socket holds
    # (Envoy binds when it adds the listener, and NACKs the LDS update that failed).
    holder = socket.socket()
    holder.bind((GATEWAY, 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        with rig_with(tmp_path) as rig:
            good = rig.node()["appliedSnapshot"]
            bad = with_listener_on(snapshot((V1, 100)), taken)
            rig.push(bad, wait=False)
            wait_for("the NACK", lambda: bool(rig.node()["nacks"]))
            node = rig.node()
            (nack,) = node["nacks"]
            assert nack["type"] == "LDS"
            assert nack["snapshot"] == bad.version
            # Envoy's own words for the failed bind.
            assert f"{GATEWAY}:{taken}" in nack["error"]
            assert node["appliedSnapshot"] == good
            assert [reply() for _ in range(20)] == ["one"] * 20
            # Once the port is free, the same kind of change goes through.
            holder.close()
            fixed = with_listener_on(snapshot((V2, 100)), taken)
            rig.push(fixed)
            assert rig.node()["nacks"] == []
            wait_for("the fixed route", lambda: reply() == "two", 5.0)
    finally:
        holder.close()


def test_cluster_and_endpoint_updates_apply_promptly_and_cut_nothing(tmp_path: Path) -> None:
    base = snapshot((V1, 100))

    def with_v1(**changes: Any) -> Snapshot:
        clusters = tuple(
            dataclasses.replace(c, **changes) if c.name == V1 else c for c in base.clusters
        )
        return Snapshot.build(base.listeners, clusters)

    with rig_with(tmp_path) as rig, LongLived(10) as clients:
        # An updated cluster warms until its endpoints are sent again, unchanged or not.
        start = time.monotonic()
        rig.push(with_v1(connect_timeout=3.0, max_connections=1000))
        assert time.monotonic() - start < 3.0
        extra = (Endpoint(BACKENDS["one"], 9000), Endpoint("127.0.71.5", 9000))
        rig.push(with_v1(connect_timeout=3.0, max_connections=1000, endpoints=extra))
        time.sleep(DRAIN_TIME + 1.0)
    assert clients.errors == []
    assert all(p == {"one"} for p in clients.prefixes)
