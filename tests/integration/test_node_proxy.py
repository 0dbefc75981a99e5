"""The node proxy on both data planes: cluster IPs with mesh-bound routes, node ports,
load-balancer addresses; the gateway's routing untouched throughout.

Client pods are real pods (a container with ``command``: tests/integration/clientpod.py)
that open connections when asked, so the node proxy sees them by their pod IPs.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scipy.stats import binomtest

from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration.harness import SAMPLES, MeshHarness, first_word, flip_under_load

pytestmark = pytest.mark.integration

ALPHA = 1e-6
ADDRESS = "127.0.0.1"
# Requested in the Service (the static band of the cluster-IP range).
CLUSTER_IP = "127.240.0.10"
NODE_PORT = 30100
CLIENT_PORT = 7000
CLIENT_SCRIPT = Path(__file__).with_name("clientpod.py")


def echo_service() -> dict[str, Any]:
    """The seed's tcp-echo Service in its LoadBalancer form."""
    service = yaml.safe_load((SAMPLES / "tcp-echo-service.yaml").read_text())
    service["spec"]["type"] = "LoadBalancer"
    service["spec"]["clusterIP"] = CLUSTER_IP
    service["spec"]["ports"][0]["nodePort"] = NODE_PORT
    return service  # type: ignore[no-any-return]


def client(name: str, labels: dict[str, str]) -> dict[str, Any]:
    container = {
        "name": "client",
        "image": "example.com/client:1",
        "command": [sys.executable, str(CLIENT_SCRIPT), str(CLIENT_PORT)],
        "ports": [{"containerPort": CLIENT_PORT}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def mesh_route(tcp: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "tcp-echo-mesh"},
        "spec": {"hosts": ["tcp-echo"], "tcp": tcp},
    }


def to(subset: str, weight: int = 100) -> dict[str, Any]:
    return {"destination": {"host": "tcp-echo", "subset": subset}, "weight": weight}


def write(path: Path, *objects: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(objects))
    return path


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshHarness]:
    if request.param == "envoy" and (missing := missing_envoy_support()) is not None:
        pytest.skip(f"Envoy data plane: {missing}")
    state = tmp_path_factory.mktemp(f"nodeproxy-{request.param}")
    harness = MeshHarness(state, ADDRESS, workers=1, dataplane=request.param)
    try:
        harness.up()
        objects = write(
            state / "objects.yaml",
            echo_service(),
            client("client-canary", {"app": "client", "version": "canary"}),
            client("client-plain", {"app": "client", "version": "stable"}),
        )
        harness.apply(SAMPLES / "tcp-echo-deployments.yaml", objects)
        harness.apply(SAMPLES / "tcp-echo-all-v1.yaml")
        harness.wait_for(
            "tcp-echo and the clients",
            lambda: harness.deployments_ready(
                "tcp-echo-v1", "tcp-echo-v2", "client-canary", "client-plain"
            ),
        )
        harness.wait_for("the cluster IP", lambda: _answers(CLUSTER_IP, 9000))
        yield harness
    finally:
        harness.down()


def _answers(address: str, port: int) -> bool:
    try:
        return first_word(address, port) in ("one", "two")
    except OSError:
        return False


def _client_pod(mesh: MeshHarness, version: str) -> dict[str, Any]:
    pods = [
        p
        for p in mesh.pods()
        if p["metadata"].get("labels", {}).get("version") == version
        and p["metadata"]["labels"].get("app") == "client"
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def ask(mesh: MeshHarness, version: str, count: int) -> dict[str, int]:
    """Have the client pod labelled ``version`` open ``count`` connections to tcp-echo's
    ``$TCP_ECHO_SERVICE_HOST:$TCP_ECHO_SERVICE_PORT`` (its cluster IP)."""
    address = (_client_pod(mesh, version)["status"]["podIP"], CLIENT_PORT)
    with socket.create_connection(address, timeout=60) as sock:
        sock.sendall(f"{CLIENT_IP_PORT} {count}\n".encode())
        return json.loads(sock.makefile().readline())  # type: ignore[no-any-return]


# Expanded by the client pod from the variables the kubelet injected (the Service existed
# when the pods started), so the test follows the Service's cluster IP and port from there.
CLIENT_IP_PORT = "$TCP_ECHO_SERVICE_HOST $TCP_ECHO_SERVICE_PORT"


def gateway_words(count: int = 20) -> set[str]:
    return {first_word(ADDRESS, 31400) for _ in range(count)}


def test_without_a_mesh_route_pods_and_shells_reach_every_endpoint(mesh: MeshHarness) -> None:
    mesh.tcpmesh("delete", "virtualservice", "tcp-echo-mesh", check=False)
    mesh.wait_for("no mesh route", lambda: len(_words_from_shell(40)) == 2, 10.0)
    assert set(ask(mesh, "stable", 40)) == {"one", "two"}
    # The gateway's own route (all to v1) is another matter.
    assert gateway_words() == {"one"}


def _words_from_shell(count: int, address: str = CLUSTER_IP, port: int = 9000) -> set[str]:
    return {first_word(address, port) for _ in range(count)}


def test_a_mesh_80_20_split_from_a_pod_passes_an_exact_binomial_test(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    split = mesh_route([{"route": [to("v1", 80), to("v2", 20)]}])
    mesh.apply(write(tmp_path / "split.yaml", split))
    mesh.wait_for("the 80/20 route", lambda: _shell_share_of_two(100) > 0.05, 10.0)
    counts = ask(mesh, "stable", 2000)
    assert set(counts) <= {"one", "two"}, counts
    assert counts["one"] + counts["two"] == 2000
    assert binomtest(counts["two"], 2000, 0.2).pvalue >= ALPHA
    assert gateway_words() == {"one"}


def _shell_share_of_two(count: int) -> float:
    return sum(first_word(CLUSTER_IP, 9000) == "two" for _ in range(count)) / count


def test_source_labels_send_the_canary_pod_to_v2_and_everyone_else_to_v1(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    canary = {"match": [{"sourceLabels": {"version": "canary"}}], "route": [to("v2")]}
    routes = mesh_route([canary, {"route": [to("v1")]}])
    mesh.apply(write(tmp_path / "canary.yaml", routes))
    mesh.wait_for("the canary route", lambda: ask(mesh, "canary", 10) == {"two": 10}, 10.0)
    assert ask(mesh, "canary", 100) == {"two": 100}
    assert ask(mesh, "stable", 100) == {"one": 100}
    # The user's shell is outside every workload: no sourceLabels rule matches it.
    assert _words_from_shell(50) == {"one"}
    assert gateway_words() == {"one"}
    described = mesh.tcpmesh("describe", "vs", "tcp-echo-mesh").stdout
    canary_ip = _client_pod(mesh, "canary")["status"]["podIP"]
    assert (
        f"listener {CLUSTER_IP}_9000 ({CLUSTER_IP}:9000) for clients {canary_ip}/32 "
        "from VirtualService default/tcp-echo-mesh tcp[0]"
    ) in described


def test_node_port_and_load_balancer_address_balance_over_the_endpoints(
    mesh: MeshHarness,
) -> None:
    service = mesh.get_json("service", "tcp-echo")
    address = service["status"]["loadBalancer"]["ingress"][0]["ip"]
    # kube-proxy's path: every endpoint, whatever the mesh routes say.
    assert _words_from_shell(60, address, 9000) == {"one", "two"}
    assert _words_from_shell(60, ADDRESS, NODE_PORT) == {"one", "two"}


def test_route_flips_under_load_on_the_cluster_ip_reset_nothing(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    routes = {
        v: write(tmp_path / f"mesh-{v}.yaml", mesh_route([{"route": [to(v)]}]))
        for v in ("v1", "v2")
    }
    mesh.apply(routes["v1"])
    mesh.wait_for("all on v1", lambda: _words_from_shell(10) == {"one"}, 10.0)
    flip_under_load(mesh, CLUSTER_IP, 9000, routes)
    assert gateway_words() == {"one"}


def test_the_node_proxy_comes_back_after_down_and_up(mesh: MeshHarness, tmp_path: Path) -> None:
    mesh.apply(write(tmp_path / "v2.yaml", mesh_route([{"route": [to("v2")]}])))
    mesh.wait_for("all on v2", lambda: _words_from_shell(10) == {"two"}, 10.0)
    mesh.down()
    mesh.up()
    mesh.wait_for("tcp-echo again", lambda: mesh.deployments_ready("tcp-echo-v1", "tcp-echo-v2"))
    mesh.wait_for("the cluster IP again", lambda: _words_from_shell(10) == {"two"}, 20.0)
    assert _words_from_shell(20, ADDRESS, NODE_PORT) == {"one", "two"}
