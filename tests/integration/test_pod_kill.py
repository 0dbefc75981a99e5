"""kill -9 one backend pod of two under steady load, on both data planes.

tcp-echo v1 runs two replicas behind the gateway, with Istio outlier detection
(``consecutive5xxErrors: 3``, ``interval: 1s``, ``baseEjectionTime: 2s``,
``maxEjectionPercent: 50``). One client makes new connections one at a time, paced over
the load's 12 s, while ten other connections stay open; one v1 pod is killed with SIGKILL.

The bound, from the settings: a new connection to the dead pod fails with UF until the
pod is ejected after CONSECUTIVE failed connects (the counts are the whole proxy's, on the
built-in plane as in Envoy), or until it answers again; the connection in flight when the
pod died may be cut as well. So at most CONSECUTIVE + 1 new connections fail; Envoy
ejects on its main thread (the workers post the failure there), so one more connection
may start before the ejection lands: CONSECUTIVE + 2 for Envoy. Measured once each (2 CPUs
shared): built-in 2 failed of ~2,000, last failure 0.03 s after the kill, rejoined after
4.2 s; Envoy 4 of ~3,400, 0.06 s, 4.3 s. The held
connections to the other pod are not touched; the kubelet restarts the killed pod (same
address) and it rejoins once its ejection ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration.harness import SAMPLES, MeshHarness, exchange

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.1"
PORT = 31400
CONSECUTIVE = 3
HELD = 10
LOAD_SECONDS = 12.0
LOAD_LIMIT = 4000
PACE = LOAD_SECONDS / LOAD_LIMIT  # seconds between the starts of new connections
ROUTING = f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-echo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - route:
    - destination: {{host: tcp-echo, subset: v1, port: {{number: 9000}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo, namespace: default}}
spec:
  host: tcp-echo
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: {CONSECUTIVE}
      interval: 1s
      baseEjectionTime: 2s
      maxEjectionPercent: 50
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
"""


@pytest.fixture(params=["python", "envoy"])
def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeshHarness]:
    dataplane: str = request.param
    if dataplane == "envoy" and (missing := missing_envoy_support()) is not None:
        pytest.skip(f"Envoy data plane: {missing}")
    harness = MeshHarness(tmp_path / "state", ADDRESS, workers=2, dataplane=dataplane)
    deployments = (SAMPLES / "tcp-echo-deployments.yaml").read_text()
    two_v1 = deployments.replace("replicas: 1", "replicas: 2", 1)
    try:
        harness.up()
        harness.tcpmesh("apply", "-f", "-", stdin=two_v1)
        harness.apply(SAMPLES / "tcp-echo-service.yaml")
        harness.tcpmesh("apply", "-f", "-", stdin=ROUTING)
        harness.wait_for("two ready v1 pods", lambda: len(ready_v1(harness)) == 2, 60.0)
        harness.wait_for("both pods serving", lambda: both_serve(harness), 30.0)
        yield harness
    finally:
        harness.down()


def ready_v1(mesh: MeshHarness) -> list[dict]:  # type: ignore[type-arg]
    pods = mesh.pods()
    return [
        p
        for p in pods
        if p["metadata"]["labels"].get("version") == "v1"
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]


def established_to(ip: str, port: int) -> int:
    """Server-side sockets of ``ip:port`` in ESTABLISHED state (this test's netns only)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    local = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":
            count += 1
    return count


def both_serve(mesh: MeshHarness) -> bool:
    """Both v1 pods have held a connection from the gateway (the table has both)."""
    ips = [p["status"]["podIP"] for p in ready_v1(mesh)]
    socks = [socket.create_connection((ADDRESS, PORT), timeout=5) for _ in range(6)]
    try:
        for sock in socks:
            sock.sendall(b"hello\n")
            sock.recv(100)
        return all(established_to(ip, 9000) > 0 for ip in ips)
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Load:
    """New connections back to back: (send time, answered) per connection."""

    results: list[tuple[float, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        # Paced over LOAD_SECONDS: on a fast machine LOAD_LIMIT back-to-back connections
        # finished before the restarted pod's ejection ended, so the rejoin was never seen.
        start = time.monotonic()
        deadline = start + LOAD_SECONDS
        for i in range(LOAD_LIMIT):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            self.stop.wait(max(0.0, start + i * PACE - time.monotonic()))
            sent = time.monotonic()
            try:
                answered = exchange(ADDRESS, PORT, f"load-{i}", timeout=3.0) == f"one load-{i}\n"
            except OSError:
                answered = False
            self.results.append((sent, answered))


def first_served_after(log: Path, load: Load, since: float) -> float | None:
    """When the first load line sent after ``since`` reached the pod with this log."""
    text = log.read_text(errors="replace")
    for i, (sent, _) in enumerate(load.results):
        if sent > since and f"request: load-{i}\n" in text:
            return sent
    return None


def test_kill_9_one_pod_of_two_under_load(mesh: MeshHarness) -> None:
    victim, survivor = sorted(ready_v1(mesh), key=lambda p: p["metadata"]["name"])
    survivor_ip = survivor["status"]["podIP"]
    name = victim["metadata"]["name"]
    held = [socket.create_connection((ADDRESS, PORT), timeout=5) for _ in range(HELD)]
    load = Load()
    thread = threading.Thread(target=load.run, daemon=True)
    try:
        for i, sock in enumerate(held):
            sock.sendall(f"held-{i}\n".encode())
            assert sock.recv(100) == f"one held-{i}\n".encode()
        on_survivor = established_to(survivor_ip, 9000)
        assert 0 < on_survivor < HELD, "held connections must reach both pods"
        thread.start()
        time.sleep(1.0)
        pids = json.loads((mesh.state_dir / "pods" / "default" / f"{name}.pid").read_text())
        killed_at = time.monotonic()
        for entry in pids.values():
            os.kill(int(entry["pid"]), signal.SIGKILL)
        thread.join(LOAD_SECONDS + 10)
        failed = [sent - killed_at for sent, ok in load.results if not ok]
        log = mesh.state_dir / "pods" / "default" / f"{name}.log"
        rejoined = first_served_after(log, load, killed_at + 0.1)
        alive = 0
        for i, sock in enumerate(held):
            try:
                sock.sendall(f"again-{i}\n".encode())
                alive += sock.recv(100) == f"one again-{i}\n".encode()
            except OSError:
                pass
        report = {
            "dataplane": mesh.dataplane,
            "new_connections": len(load.results),
            "failed": len(failed),
            "last_failure_after_kill_s": round(max(failed, default=0.0), 3),
            "rejoined_after_kill_s": round(rejoined - killed_at, 3) if rejoined else None,
            "held_alive": alive,
            "held_on_survivor": on_survivor,
        }
        print(json.dumps(report))
        assert all(f >= -0.05 for f in failed), report  # nothing failed before the kill
        bound = CONSECUTIVE + (2 if mesh.dataplane == "envoy" else 1)
        assert len(failed) <= bound, report
        # No other connection touched: exactly the survivor's held connections answer.
        assert alive == on_survivor, report
        assert rejoined is not None, report
    finally:
        load.stop.set()
        for sock in held:
            sock.close()
