"""The read-only views of a running mesh: status, get, describe and logs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.harness import SAMPLES, MeshHarness, first_word, seeded_mesh

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.22"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    routes = (SAMPLES / "tcp-echo-20-v2.yaml", SAMPLES / "tcp-echo-all-v1.yaml")
    with seeded_mesh(tmp_path_factory.mktemp("state"), ADDRESS, *routes) as harness:
        yield harness


def _word() -> str:
    try:
        return first_word(ADDRESS, 31400)
    except OSError:
        return ""


def test_status_reports_the_gateway_and_its_listener(mesh: MeshHarness) -> None:
    state = json.loads(mesh.tcpmesh("status", "-o", "json").stdout)
    assert state["gatewayReady"] is True
    assert state["nodeProxyReady"] is True
    assert [(x["address"], x["port"]) for x in state["listeners"]] == [(ADDRESS, 31400)]
    assert {p["name"].rsplit("-", 2)[0] for p in state["pods"]} == {
        "tcp-echo-v1",
        "tcp-echo-v2",
        "istio-ingressgateway",
        "tcpmesh-node-proxy",
    }


def test_describe_virtual_service_shows_the_routes_it_produces(mesh: MeshHarness) -> None:
    out = mesh.tcpmesh("describe", "vs", "tcp-echo").stdout
    assert "Kind:         VirtualService" in out
    assert f"listener 0.0.0.0_31400 ({ADDRESS}:31400) from VirtualService default/tcp-echo" in out
    assert (
        "100.0%  outbound|9000|v1|tcp-echo.default.svc.cluster.local  (1 ready endpoint(s))" in out
    )


def test_describe_destination_rule_lists_its_clusters(mesh: MeshHarness) -> None:
    out = mesh.tcpmesh("describe", "destinationrule", "tcp-echo-destination").stdout
    assert "cluster outbound|9000|v2|tcp-echo.default.svc.cluster.local: 127." in out


def test_describe_unknown_object_is_a_kubectl_style_error(mesh: MeshHarness) -> None:
    result = mesh.tcpmesh("describe", "vs", "ghost", check=False)
    assert result.code == 1
    assert result.stderr.strip() == (
        'Error from server (NotFound): virtualservices.networking.istio.io "ghost" not found'
    )


def test_get_lists_kinds_tables_and_names(mesh: MeshHarness) -> None:
    table = mesh.tcpmesh("get", "gw,vs").stdout
    assert "tcp-echo-gateway" in table and '["tcp-echo-gateway"]' in table
    names = mesh.tcpmesh("-n", "istio-system", "get", "deploy", "-o", "name").stdout
    assert names == "deployment.apps/istio-ingressgateway\n"
    unknown = mesh.tcpmesh("get", "frobs", check=False)
    assert unknown.code == 1
    assert unknown.stderr.strip() == 'error: the server doesn\'t have a resource type "frobs"'


def test_logs_show_the_echo_server_and_the_gateway_access_log(mesh: MeshHarness) -> None:
    _word()
    pods = {p["metadata"]["labels"].get("version"): p["metadata"]["name"] for p in mesh.pods()}
    echo_log = mesh.tcpmesh("logs", pods["v1"]).stdout
    assert "listening on 127." in echo_log and "prefix: one" in echo_log
    gateway = mesh.pods("istio-system")[0]["metadata"]["name"]
    mesh.wait_for(
        "an access-log line",
        lambda: "outbound|9000|v1|" in mesh.tcpmesh("logs", "-n", "istio-system", gateway).stdout,
        5.0,
    )
