"""Services on a real mesh: cluster IPs, node ports, load-balancer addresses, the errors
Kubernetes gives (through ``tcpmesh apply`` and real kubectl), the kubelet's Service
variables, and all of it kept across ``down``/``up``."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.addresses import idle_gateway_address
from tests.integration.harness import MeshHarness
from tests.integration.kubectl_helpers import current_kubectl, kubectl

pytestmark = pytest.mark.integration

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: tcp-echo}
spec:
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: np}
spec:
  type: NodePort
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 9000}]
---
apiVersion: v1
kind: Service
metadata:
  name: lb
  annotations: {service.beta.kubernetes.io/alicloud-loadbalancer-bandwidth: "20"}
spec:
  type: LoadBalancer
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: lb-later}
spec:
  type: LoadBalancer
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 9000}]
"""

# Two pods that print their environment: one with the Service links, one without.
ENV_PODS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: %(name)s}
spec:
  selector: {matchLabels: {app: %(name)s}}
  template:
    metadata: {labels: {app: %(name)s}}
    spec:
      enableServiceLinks: %(links)s
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "env | sort; exec sleep 600"]
"""


def service(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "tcp", "port": 9000}], **spec},
    }
    return json.dumps(body)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    address = idle_gateway_address("127.0.72.1")
    harness = MeshHarness(tmp_path_factory.mktemp("services"), address, workers=1)
    try:
        harness.up()
        harness.tcpmesh("apply", "-f", "-", stdin=SERVICES)
        for name, links in (("with-links", "true"), ("without-links", "false")):
            harness.tcpmesh("apply", "-f", "-", stdin=ENV_PODS % {"name": name, "links": links})
        harness.wait_for(
            "the env pods",
            lambda: harness.deployments_ready("with-links", "without-links"),
            timeout=60,
        )
        yield harness
    finally:
        harness.down()


def services(mesh: MeshHarness) -> dict[str, dict[str, Any]]:
    found = mesh.get_json("svc", "-A")["items"]
    return {s["metadata"]["name"]: s for s in found}


def rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines()[1:] if line.strip()}


def test_every_service_gets_its_addresses(mesh: MeshHarness) -> None:
    found = services(mesh)
    ips = {name: s["spec"]["clusterIP"] for name, s in found.items()}
    assert len(set(ips.values())) == len(ips)
    assert all(ip.startswith("127.240.") for ip in ips.values())
    assert found["tcp-echo"]["spec"]["clusterIPs"] == [ips["tcp-echo"]]
    assert "nodePort" not in found["tcp-echo"]["spec"]["ports"][0]
    node_ports = [found[n]["spec"]["ports"][0]["nodePort"] for n in ("np", "lb", "lb-later")]
    assert len(set(node_ports)) == 3 and all(30000 <= p <= 32767 for p in node_ports)
    mesh.wait_for(
        "the load balancer",
        lambda: bool(services(mesh)["lb"].get("status", {}).get("loadBalancer")),
    )
    lb = services(mesh)["lb"]["status"]["loadBalancer"]["ingress"][0]
    assert lb == {"ip": mesh.address, "ports": [{"port": 9000, "protocol": "TCP"}]}


def test_get_svc_prints_kubectl_columns_from_both_clients(mesh: MeshHarness) -> None:
    found = services(mesh)
    np_port = found["np"]["spec"]["ports"][0]["nodePort"]
    for out in (
        mesh.tcpmesh("get", "svc").stdout,
        kubectl(current_kubectl(), mesh.state_dir / "kubeconfig", "get", "svc").stdout,
    ):
        table = rows(out)
        assert out.split()[:6] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
        assert table["tcp-echo"][1:5] == [
            "ClusterIP",
            found["tcp-echo"]["spec"]["clusterIP"],
            "<none>",
            "9000/TCP",
        ]
        assert table["np"][4] == f"9000:{np_port}/TCP"
        assert table["lb"][3] == mesh.address
        assert table["lb-later"][3] == "<pending>"


def test_the_later_load_balancer_says_why_it_waits(mesh: MeshHarness) -> None:
    mesh.wait_for(
        "the pending condition",
        lambda: bool(services(mesh)["lb-later"].get("status", {}).get("conditions")),
    )
    described = mesh.tcpmesh("describe", "svc", "lb-later").stdout
    reason = f"port 9000/TCP of {mesh.address} is taken by the LoadBalancer Service default/lb"
    assert reason in " ".join(described.split())
    events = kubectl(current_kubectl(), mesh.state_dir / "kubeconfig", "get", "events").stdout
    assert "SyncLoadBalancerFailed" in events and "service/lb-later" in events


BAD = [
    (
        service("bad", clusterIP="127.1.2.3"),
        'Service "bad" is invalid: spec.clusterIPs: Invalid value: []string{"127.1.2.3"}: '
        "failed to allocate IP 127.1.2.3: the provided IP (127.1.2.3) is not in the valid "
        "range. The range of valid IPs is 127.240.0.0/12",
    ),
    (
        service("bad", type="NodePort", ports=[{"port": 9000, "nodePort": 8080}]),
        'Service "bad" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port '
        "is not in the valid range. The range of valid ports is 30000-32767",
    ),
    (
        service("bad", type="NodePort", ports=[{"port": 9000, "nodePort": 31400}]),
        'Service "bad" is invalid: spec.ports[0].nodePort: Invalid value: 31400: provided port '
        "is already allocated",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), BAD)
def test_kubernetes_errors_are_one_line_and_store_nothing(
    mesh: MeshHarness, manifest: str, message: str, tmp_path: Path
) -> None:
    result = mesh.tcpmesh("apply", "-f", "-", stdin=manifest, check=False)
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [f"Error from server (Invalid): {message}"]
    file = tmp_path / "bad.json"
    file.write_text(manifest)
    config = mesh.state_dir / "kubeconfig"
    result = kubectl(current_kubectl(), config, "apply", "-f", str(file), check=False)
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [f"The {message}"]
    assert "bad" not in services(mesh)


def test_a_taken_cluster_ip_and_a_changed_one_are_refused(mesh: MeshHarness) -> None:
    taken = services(mesh)["tcp-echo"]["spec"]["clusterIP"]
    result = mesh.tcpmesh("apply", "-f", "-", stdin=service("bad", clusterIP=taken), check=False)
    assert result.stderr.strip().splitlines() == [
        f'Error from server (Invalid): Service "bad" is invalid: spec.clusterIPs: Invalid '
        f'value: []string{{"{taken}"}}: failed to allocate IP {taken}: provided IP is already '
        "allocated"
    ]
    patch = json.dumps({"spec": {"clusterIP": "127.240.0.77", "clusterIPs": ["127.240.0.77"]}})
    config = mesh.state_dir / "kubeconfig"
    result = kubectl(current_kubectl(), config, "patch", "svc", "np", "-p", patch, check=False)
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [
        'The Service "np" is invalid: spec.clusterIPs[0]: Invalid value: '
        '[]string{"127.240.0.77"}: may not change once set'
    ]
    assert services(mesh)["np"]["spec"]["clusterIP"] != "127.240.0.77"


def test_a_bad_bandwidth_annotation_is_refused_naming_it(mesh: MeshHarness) -> None:
    manifest = textwrap.dedent(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: bw
          annotations: {service.beta.kubernetes.io/alibaba-cloud-loadbalancer-bandwidth: "0"}
        spec:
          type: LoadBalancer
          ports: [{port: 9100}]
        """
    )
    result = mesh.tcpmesh("apply", "-f", "-", stdin=manifest, check=False)
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [
        '<stdin>: Service "bw" is invalid: metadata.annotations[service.beta.kubernetes.io/'
        'alibaba-cloud-loadbalancer-bandwidth]: Invalid value: "0": must be a whole number of '
        "Mbit/s from 1 to 5000 (the most an Alibaba Cloud SLB allows)"
    ]
    assert "bw" not in services(mesh)


def _environment(mesh: MeshHarness, app: str) -> dict[str, str]:
    (pod,) = [p for p in mesh.pods() if p["metadata"]["labels"].get("app") == app]
    log = mesh.tcpmesh("logs", pod["metadata"]["name"]).stdout
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


def test_pods_get_the_service_variables_unless_they_opt_out(mesh: MeshHarness) -> None:
    ip = services(mesh)["tcp-echo"]["spec"]["clusterIP"]
    env = _environment(mesh, "with-links")
    assert {k: v for k, v in env.items() if k.startswith("TCP_ECHO_")} == {
        "TCP_ECHO_SERVICE_HOST": ip,
        "TCP_ECHO_SERVICE_PORT": "9000",
        "TCP_ECHO_SERVICE_PORT_TCP": "9000",
        "TCP_ECHO_PORT": f"tcp://{ip}:9000",
        "TCP_ECHO_PORT_9000_TCP": f"tcp://{ip}:9000",
        "TCP_ECHO_PORT_9000_TCP_PROTO": "tcp",
        "TCP_ECHO_PORT_9000_TCP_PORT": "9000",
        "TCP_ECHO_PORT_9000_TCP_ADDR": ip,
    }
    assert env["LB_SERVICE_HOST"] == services(mesh)["lb"]["spec"]["clusterIP"]
    assert not any("_SERVICE_HOST" in k for k in _environment(mesh, "without-links"))


def test_down_and_up_keep_every_address(mesh: MeshHarness) -> None:
    def addresses() -> dict[str, Any]:
        return {
            name: (
                s["spec"].get("clusterIP"),
                [p.get("nodePort") for p in s["spec"]["ports"]],
                (s.get("status") or {}).get("loadBalancer"),
            )
            for name, s in services(mesh).items()
        }

    before = addresses()
    mesh.down()
    mesh.up()
    assert addresses() == before
