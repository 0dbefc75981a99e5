"""Gateway API through the mesh, on both data planes: a Gateway of class tcpmesh gets its
own gateway workload; TCPRoute weights 70/30/0 (the conformance case TCPRouteWeightedRouting,
500 connections, within 5 points) and proportional rejection of a missing backend."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from tests.integration.harness import MeshHarness

pytestmark = pytest.mark.integration

ADDRESS = "127.0.31.1"
ALPHA = 1e-6  # false-failure rate of each exact test
CONNECTIONS = 500
G = "gateway.networking.k8s.io"


def backend(name: str, reply: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: tcp-echo
        image: docker.io/istio/tcp-echo-server:1.1
        args: ["3000", "{reply}"]
        ports: [{{containerPort: 3000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: tcp, port: 3000, targetPort: 3000}}]
"""


GATEWAY = f"""
apiVersion: {G}/v1
kind: Gateway
metadata: {{name: tcp-weighted-gateway}}
spec:
  gatewayClassName: tcpmesh
  listeners:
  - {{name: tcp, protocol: TCP, port: 9300, allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}}}
  - {{name: reject, protocol: TCP, port: 9301, allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}}}
---
apiVersion: {G}/v1alpha2
kind: TCPRoute
metadata: {{name: tcp-weighted-route}}
spec:
  parentRefs: [{{name: tcp-weighted-gateway, sectionName: tcp}}]
  rules:
  - backendRefs:
    - {{name: tcp-backend-v1, port: 3000, weight: 70}}
    - {{name: tcp-backend-v2, port: 3000, weight: 30}}
    - {{name: tcp-backend-v3, port: 3000, weight: 0}}
---
apiVersion: {G}/v1
kind: TCPRoute
metadata: {{name: mostly-missing}}
spec:
  parentRefs: [{{name: tcp-weighted-gateway, sectionName: reject}}]
  rules:
  - backendRefs:
    - {{name: no-such-service, port: 3000, weight: 80}}
    - {{name: tcp-backend-v1, port: 3000, weight: 20}}
"""


def get_json(mesh: MeshHarness, kind: str, name: str) -> dict[str, Any]:
    out = mesh.tcpmesh("get", kind, name, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def gateway_address(mesh: MeshHarness) -> str:
    status = get_json(mesh, f"gateways.{G}", "tcp-weighted-gateway").get("status") or {}
    programmed = [c for c in status.get("conditions", []) if c["type"] == "Programmed"]
    if not programmed or programmed[0]["status"] != "True" or not status.get("addresses"):
        return ""
    return str(status["addresses"][0]["value"])


def reply(address: str, port: int) -> str:
    """The first word answered to one line on a new connection; "" when it is closed."""
    try:
        with socket.create_connection((address, port), timeout=5) as sock:
            sock.sendall(b"probe\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return ""
    return data.decode().split(" ", 1)[0] if data else ""


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshHarness]:
    harness = MeshHarness(tmp_path_factory.mktemp("state"), ADDRESS, dataplane=request.param)
    manifests: Path = tmp_path_factory.mktemp("manifests")
    text = "---".join([*(backend(f"tcp-backend-v{i}", f"v{i}") for i in (1, 2, 3)), GATEWAY])
    (manifests / "all.yaml").write_text(text)
    try:
        harness.up()
        harness.apply(manifests / "all.yaml")
        harness.wait_for(
            "the Gateway programmed", lambda: bool(gateway_address(harness)), timeout=60
        )
        address = gateway_address(harness)
        harness.wait_for("v1 answers", lambda: reply(address, 9300) in ("v1", "v2"), timeout=60)
        yield harness
    finally:
        harness.down()


def test_route_and_gateway_status(mesh: MeshHarness) -> None:
    route = get_json(mesh, f"tcproutes.{G}", "tcp-weighted-route")
    (parent,) = route["status"]["parents"]
    assert parent["parentRef"] == {
        "group": G,
        "kind": "Gateway",
        "namespace": "default",
        "name": "tcp-weighted-gateway",
        "sectionName": "tcp",
    }
    assert parent["controllerName"] == "tcpmesh.io/gateway-controller"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}
    assert conditions == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    missing = get_json(mesh, f"tcproutes.{G}", "mostly-missing")["status"]["parents"][0]
    resolved = next(c for c in missing["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    gateway = get_json(mesh, f"gateways.{G}", "tcp-weighted-gateway")["status"]
    assert [(li["name"], li["attachedRoutes"]) for li in gateway["listeners"]] == [
        ("tcp", 1),
        ("reject", 1),
    ]
    assert gateway["listeners"][0]["supportedKinds"] == [{"group": G, "kind": "TCPRoute"}]
    # The workload and its LoadBalancer Service, as Istio's deployment controller names them.
    service = get_json(mesh, "service", "tcp-weighted-gateway-tcpmesh")
    assert service["spec"]["type"] == "LoadBalancer"
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [9300, 9301]


def test_weights_70_30_0_over_500_connections(mesh: MeshHarness) -> None:
    address = gateway_address(mesh)
    seen = Counter(reply(address, 9300) for _ in range(CONNECTIONS))
    assert set(seen) <= {"v1", "v2"}, seen  # weight 0 gets nothing, nothing is rejected
    for name, share in (("v1", 0.7), ("v2", 0.3)):
        assert abs(seen[name] / CONNECTIONS - share) <= 0.05, seen
    assert binomtest(seen["v1"], CONNECTIONS, 0.7).pvalue >= ALPHA, seen


def test_a_missing_backend_rejects_its_share(mesh: MeshHarness) -> None:
    address = gateway_address(mesh)
    seen = Counter(reply(address, 9301) for _ in range(CONNECTIONS))
    assert set(seen) <= {"", "v1"}, seen
    assert binomtest(seen[""], CONNECTIONS, 0.8).pvalue >= ALPHA, seen


def test_get_describe_and_analyze_know_the_gateway_api(mesh: MeshHarness) -> None:
    table = mesh.tcpmesh("get", "gtw").stdout.splitlines()
    assert table[0].split() == ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
    assert table[1].split()[:4] == [
        "tcp-weighted-gateway",
        "tcpmesh",
        gateway_address(mesh),
        "True",
    ]
    described = mesh.tcpmesh("describe", "tcproutes", "tcp-weighted-route").stdout
    assert "from TCPRoute default/tcp-weighted-route tcp[0]" in described
    assert " 70.0%  outbound|3000||tcp-backend-v1.default.svc.cluster.local" in described
    gateway = mesh.tcpmesh("describe", f"gateways.{G}", "tcp-weighted-gateway").stdout
    assert "listener 0.0.0.0_9300" in gateway and "listener 0.0.0.0_9301" in gateway
    analyzed = mesh.tcpmesh("analyze", check=False)
    assert analyzed.code == 1
    assert (
        "Error [TCM0003] (TCPRoute.gateway.networking.k8s.io default/mostly-missing) "
        "ResolvedRefs=False (BackendNotFound)" in analyzed.stdout
    )
