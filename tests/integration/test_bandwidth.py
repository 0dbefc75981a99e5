"""The SLB bandwidth cap, measured through real sockets on both data planes.

``service.beta.kubernetes.io/alibaba-cloud-loadbalancer-bandwidth`` caps a LoadBalancer
Service's load balancer: all its connections together, each direction on its own. The
rate IS the behaviour under test here (a cap), so these are tests, not benchmarks; each
transfer is kept to a few seconds, rates are taken over a window after the burst, and the
tolerance is the issue's ±10%. Every transfer is checked byte for byte (SHA-256).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tcpmesh.control import LOAD_BALANCER_LABELS, backend_address, labels_match
from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration import bulk
from tests.integration.addresses import idle_gateway_address
from tests.integration.harness import SAMPLES, MeshHarness, first_word
from tests.integration.kubectl_helpers import current_kubectl, kubectl

pytestmark = pytest.mark.integration

ANNOTATION = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-bandwidth"
LEGACY_ANNOTATION = "service.beta.kubernetes.io/alicloud-loadbalancer-bandwidth"
GATEWAY = ("istio-system", "istio-ingressgateway")
ECHO = ("default", "tcp-echo")
TOLERANCE = 0.10
SECONDS = 3.0
WARMUP = 1.0  # the burst and the socket buffers are behind us after this
# After a change, the new rate is measured over this window (seconds after the change).
# The replies' rate must be there within 2 s; the sender's, measured where it sends, lags
# while tcp-echo's own socket buffers (grown at the old rate) drain at the new one.
AFTER_CHANGE = (2.0, 3.5)


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshHarness]:
    dataplane: str = request.param
    if dataplane == "envoy" and (missing := missing_envoy_support()) is not None:
        pytest.skip(f"Envoy data plane: {missing}")
    address = idle_gateway_address("127.0.0.170")
    harness = MeshHarness(tmp_path_factory.mktemp(f"bw-{dataplane}"), address, dataplane=dataplane)
    try:
        harness.up()
        harness.apply(
            SAMPLES / "tcp-echo-deployments.yaml",
            SAMPLES / "tcp-echo-service-slb.yaml",
            SAMPLES / "tcp-echo-all-v1.yaml",
        )
        harness.wait_for(
            "tcp-echo", lambda: harness.deployments_ready("tcp-echo-v1", "tcp-echo-v2")
        )
        harness.wait_for("the gateway", lambda: _answers(address, 31400), 30.0)
        yield harness
    finally:
        harness.down()


def _answers(address: str, port: int) -> bool:
    try:
        return first_word(address, port) in ("one", "two")
    except OSError:
        return False


def set_bandwidth(
    mesh: MeshHarness, service: tuple[str, str], value: str | None, key: str = ANNOTATION
) -> float:
    """``kubectl annotate`` the cap under ``key`` and remove the other prefix's (None: remove
    both); returns when kubectl returned."""
    namespace, name = service
    changes = [f"{k}-" for k in (ANNOTATION, LEGACY_ANNOTATION) if k != key or value is None]
    if value is not None:
        changes.append(f"{key}={value}")
    config = mesh.state_dir / "kubeconfig"
    args = ("-n", namespace, "annotate", "svc", name, *changes, "--overwrite")
    kubectl(current_kubectl(), config, *args)
    return time.monotonic()


def load_balancer_ip(mesh: MeshHarness, service: tuple[str, str]) -> str:
    namespace, name = service
    template = "jsonpath={.status.loadBalancer.ingress[0].ip}"
    return mesh.tcpmesh("-n", namespace, "get", "svc", name, "-o", template).stdout.strip()


def slb_pods(mesh: MeshHarness) -> list[dict[str, Any]]:
    """The load balancer's pods (kube-system also holds the node proxy)."""
    pods = mesh.pods("kube-system")
    return [p for p in pods if labels_match(LOAD_BALANCER_LABELS, p["metadata"].get("labels", {}))]


def slb_serves(mesh: MeshHarness) -> bool:
    pods = slb_pods(mesh)
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for p in pods
        for c in (p.get("status") or {}).get("conditions") or []
    )


def assert_rate(transfers: list[bulk.Transfer], mbps: float, end: float | None = None) -> None:
    """Each direction's aggregate over the window is ``mbps`` ±10%; bytes are intact."""
    start = transfers[0].started + WARMUP
    end = end or transfers[0].started + SECONDS
    up = bulk.aggregate_mbps(transfers, start, end, sent=True)
    down = bulk.aggregate_mbps(transfers, start, end, sent=False)
    print(f"measured: client->server {up:.2f} Mbit/s, server->client {down:.2f} Mbit/s")
    for direction, rate in (("client->server", up), ("server->client", down)):
        assert abs(rate - mbps) <= mbps * TOLERANCE, f"{direction}: {rate:.2f} Mbit/s, cap {mbps}"
    assert_intact(transfers)


def assert_intact(transfers: list[bulk.Transfer]) -> None:
    for transfer in transfers:
        assert transfer.error is None
        assert transfer.received_digest == transfer.sent_digest


def settle_time(transfer: bulk.Transfer, changed: float, mbps: float) -> float:
    """Seconds after ``changed`` until the replies arrive at ``mbps`` (+10%) over 0.5 s."""
    step = 0.05
    at = changed
    while at < changed + 5.0:
        if transfer.received.mbps(at, at + 0.5) <= mbps * (1 + TOLERANCE):
            return at - changed
        at += step
    return float("inf")


def capped(mesh: MeshHarness, service: tuple[str, str], address: str, port: int) -> None:
    """Wait until the load balancer serves the port (the cap is on)."""
    mesh.wait_for("the load balancer", lambda: slb_serves(mesh), 30.0)
    mesh.wait_for("the capped port", lambda: _answers(address, port), 10.0)


def check_cap(
    mesh: MeshHarness, service: tuple[str, str], address: str, port: int, single: bool = True
) -> None:
    if single:
        assert_rate(bulk.run(address, port, SECONDS), 20)
    shared = bulk.run(address, port, SECONDS, connections=4)
    assert_rate(shared, 20)
    start, end = shared[0].started + WARMUP, shared[0].started + SECONDS
    shares = [t.received.mbps(start, end) / 20 for t in shared]
    print("shares of the cap:", " ".join(f"{share:.0%}" for share in shares))
    assert all(0.15 <= share <= 0.35 for share in shares)  # fair: 25% each
    background = bulk.Background(address, port, 60.0)
    time.sleep(1.2)
    asked = time.monotonic()
    changed = set_bandwidth(mesh, service, "5")
    background.transfer.until = changed + AFTER_CHANGE[1]
    transfer = background.finish(timeout=60)
    took = settle_time(transfer, changed, 5)
    since_asked = settle_time(transfer, asked, 5)
    print(
        f"kubectl annotate took {changed - asked:.2f} s; the new rate held from {since_asked:.2f} s"
        f" after it started ({took:.2f} s after it returned)"
    )
    assert took <= 2.0
    window = (changed + AFTER_CHANGE[0], changed + AFTER_CHANGE[1])
    up, down = transfer.sent.mbps(*window), transfer.received.mbps(*window)
    print(f"after the change: client->server {up:.2f}, server->client {down:.2f} Mbit/s")
    assert abs(up - 5) <= 5 * TOLERANCE and abs(down - 5) <= 5 * TOLERANCE
    assert_intact([transfer])


def test_the_load_balancer_address_answers_and_is_capped(mesh: MeshHarness) -> None:
    address = load_balancer_ip(mesh, ECHO)
    capped(mesh, ECHO, address, 9000)
    words = {first_word(address, 9000) for _ in range(12)}
    assert words <= {"one", "two"} and words
    check_cap(mesh, ECHO, address, 9000)


def assert_uncapped(address: str, port: int) -> None:
    fast = bulk.run(address, port, 2.0, connections=2, fixed_buffer=False)
    rate = bulk.aggregate_mbps(fast, fast[0].started + 0.5, fast[0].started + 2.0, sent=False)
    print(f"uncapped through {address}:{port}: {rate:.0f} Mbit/s")
    assert rate > 200
    assert_intact(fast)


def test_the_ingress_gateway_uncapped_then_capped(mesh: MeshHarness) -> None:
    address = load_balancer_ip(mesh, GATEWAY)
    assert address == mesh.address
    assert_uncapped(address, 31400)
    set_bandwidth(mesh, GATEWAY, "20", key=LEGACY_ANNOTATION)
    capped(mesh, GATEWAY, address, 31400)
    check_cap(mesh, GATEWAY, address, 31400, single=False)


def test_removing_the_caps_gives_the_ports_back(mesh: MeshHarness) -> None:
    set_bandwidth(mesh, GATEWAY, None)
    mesh.wait_for("the gateway", lambda: _serves_directly(mesh), 10.0)
    assert_uncapped(mesh.address, 31400)
    set_bandwidth(mesh, ECHO, None)
    mesh.wait_for("the load balancer to go", lambda: not slb_pods(mesh), 20.0)
    # Uncapped, the node proxy serves tcp-echo's load-balancer address itself.
    address = load_balancer_ip(mesh, ECHO)
    mesh.wait_for("tcp-echo's address", lambda: _answers(address, 9000), 20.0)
    assert_uncapped(address, 9000)


def _serves_directly(mesh: MeshHarness) -> bool:
    """The gateway took its port back: its backend listener is gone and the port answers."""
    with socket.socket() as probe:
        behind = probe.connect_ex((backend_address(mesh.address), 31400)) == 0
    return not behind and _answers(mesh.address, 31400)
