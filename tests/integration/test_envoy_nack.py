"""A configuration Envoy rejects, end to end: NACKed, shown by `tcpmesh status`, harmless.

The mesh runs with the test hook TCPMESH_XDS_TEST_REJECT: clusters whose name contains
the marker are served with a connect timeout Envoy refuses. Adding a Service of that
name together with a route change makes Envoy NACK the clusters; the route change must
then not reach Envoy, and traffic keeps flowing on the last good configuration.
"""

from __future__ import annotations

import json
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
MARKER = "rejected-by-envoy"
BAD_SERVICE = f"""apiVersion: v1
kind: Service
metadata:
  name: {MARKER}
spec:
  selector:
    app: tcp-echo
  ports:
  - name: tcp
    port: 9000
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    harness = MeshHarness(
        tmp_path_factory.mktemp("state"),
        ADDRESS,
        dataplane="envoy",
        env={"TCPMESH_XDS_TEST_REJECT": MARKER, "TCPMESH_ENVOY_DRAIN_TIME": "2"},
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
    (node,) = status["xds"]["nodes"]
    return dict(node)


def test_rejected_clusters_are_nacked_reported_and_change_no_route(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    good = xds_node(mesh)["appliedSnapshot"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SERVICE + "---\n" + (SAMPLES / "tcp-echo-all-v2.yaml").read_text())
    mesh.apply(bad)
    mesh.wait_for("the NACK", lambda: bool(xds_node(mesh)["nacks"]), 10.0)

    node = xds_node(mesh)
    (nack,) = node["nacks"]
    assert nack["type"] == "CDS"
    assert "Expected positive duration" in nack["error"]
    assert node["appliedSnapshot"] == good
    text = mesh.tcpmesh("status").stdout
    (line,) = [x for x in text.splitlines() if "NACK from istio-system/" in x]
    assert "CDS version" in line
    assert "rejected: Invalid duration: Expected positive duration" in line
    # The route change in the same apply never reached Envoy.
    assert [answer() for _ in range(20)] == ["one"] * 20

    mesh.tcpmesh("delete", "service", MARKER)
    mesh.wait_for("the v2 route", lambda: answer() == "two", 10.0)
    node = xds_node(mesh)
    assert node["nacks"] == []
    assert node["pendingSnapshot"] == ""
    assert "NACK" not in mesh.tcpmesh("status").stdout
