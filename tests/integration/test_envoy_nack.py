"""A configuration Envoy rejects, end to end: NACKed, shown by `tcpmesh status`, harmless.

Nothing in tcpmesh makes Envoy reject on purpose: the test holds a port of the gateway
address with a socket of its own, then applies a Gateway whose TCP server opens that
port. Envoy binds the new listener when it adds it, fails, and NACKs the LDS update; the
gateway keeps serving its last good configuration, and removing the Gateway clears it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration.harness import SAMPLES, MeshHarness, first_word

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(missing_envoy_support() is not None, reason="needs tcpmesh[envoy]"),
]

ADDRESS = "127.0.0.12"
PORT = 31400
# A port of the gateway Service (443 -> targetPort 8443) that a TCP server may open.
TAKEN = 443
BLOCKED = f"""apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: blocked-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: {TAKEN}
      name: tcp-blocked
      protocol: TCP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: blocked
spec:
  hosts:
  - "*"
  gateways:
  - blocked-gateway
  tcp:
  - match:
    - port: {TAKEN}
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    harness = MeshHarness(
        tmp_path_factory.mktemp("state"),
        ADDRESS,
        dataplane="envoy",
        env={"TCPMESH_ENVOY_DRAIN_TIME": "2"},
    )
    try:
        harness.up()
        harness.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
        harness.wait_for(
            "tcp-echo v1 and v2", lambda: harness.deployments_ready("tcp-echo-v1", "tcp-echo-v2")
        )
        harness.apply(SAMPLES / "tcp-echo-all-v1.yaml")
        harness.wait_for("the 31400 listener", lambda: answer() == "one")
        yield harness
    finally:
        harness.down()


def answer() -> str:
    try:
        return first_word(ADDRESS, PORT)
    except OSError:
        return ""


def xds_node(mesh: MeshHarness) -> dict[str, Any]:
    status = json.loads(mesh.tcpmesh("status", "-o", "json").stdout)
    # The gateway's Envoy; the node proxy's is another node of the same server.
    (node,) = [n for n in status["xds"]["nodes"] if n["node"].startswith("istio-system/")]
    return dict(node)


def test_a_listener_envoy_cannot_bind_is_nacked_reported_and_harmless(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    good = xds_node(mesh)["appliedSnapshot"]
    holder = socket.socket()
    try:
        holder.bind((ADDRESS, TAKEN))
        holder.listen()
        bad = tmp_path / "blocked.yaml"
        bad.write_text(BLOCKED)
        mesh.apply(bad)
        mesh.wait_for("the NACK", lambda: bool(xds_node(mesh)["nacks"]), 10.0)

        node = xds_node(mesh)
        (nack,) = node["nacks"]
        assert nack["type"] == "LDS"
        # Envoy's own words: the address it could not bind.
        assert f"{ADDRESS}:{TAKEN}" in nack["error"]
        assert node["appliedSnapshot"] == good
        text = mesh.tcpmesh("status").stdout
        (line,) = [x for x in text.splitlines() if "NACK from istio-system/" in x]
        assert "LDS version" in line and f"{ADDRESS}:{TAKEN}" in line
        # The listener that was there keeps serving.
        assert [answer() for _ in range(20)] == ["one"] * 20
    finally:
        holder.close()

    mesh.tcpmesh("delete", "-f", str(bad))
    mesh.wait_for("the NACK to clear", lambda: xds_node(mesh)["nacks"] == [], 10.0)
    node = xds_node(mesh)
    assert node["pendingSnapshot"] == ""
    assert node["appliedSnapshot"] == good
    assert "NACK" not in mesh.tcpmesh("status").stdout
    assert answer() == "one"


def test_rebalancing_on_envoy_warns_once_on_apply_and_analyze_reports_it(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    """Envoy cannot close a chosen share of connections: apply says why, once."""
    split = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
    asking = split.replace(
        "metadata:\n  name: tcp-echo\n",
        "metadata:\n  name: tcp-echo\n  annotations:\n"
        "    traffic.tcpmesh.io/rebalance: on-weight-change\n",
        1,
    )
    assert asking != split
    path = tmp_path / "rebalance.yaml"
    path.write_text(asking)
    try:
        applied = mesh.apply(path)
        warnings = [line for line in applied.stderr.splitlines() if "rebalancing" in line]
        assert len(warnings) == 1, applied.stderr
        assert "metadata.annotations[traffic.tcpmesh.io/rebalance]" in warnings[0]
        assert "is not available on Envoy" in warnings[0]
        analyzed = mesh.tcpmesh("analyze", check=False).stdout
        assert re.search(r"Info \[TCM0001\].*rebalancing is not available on Envoy", analyzed), (
            analyzed
        )
    finally:
        mesh.apply(SAMPLES / "tcp-echo-all-v1.yaml")
