"""Real kubectl clients against a real mesh: kubeconfig, TLS, discovery and get.

The seed's verification step (Step 4) is run verbatim through ``sh -c`` with the image's
kubectl (1.27-1.33, picked by the server's /version) and with Debian's kubectl 1.20.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import SAMPLES, MeshHarness, seeded_mesh
from tests.integration.kubectl_helpers import current_kubectl, kubectl, old_kubectl

pytestmark = pytest.mark.integration

ADDRESS = "127.0.30.1"
STEP_4 = """
export INGRESS_HOST=$(kubectl -n istio-system get service istio-ingressgateway -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
export INGRESS_PORT=$(kubectl -n istio-system get service istio-ingressgateway -o jsonpath='{.spec.ports[?(@.name=="tcp")].port}')
echo "$INGRESS_HOST $INGRESS_PORT"
"""  # noqa: E501 - the seed's lines, verbatim


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    with seeded_mesh(
        tmp_path_factory.mktemp("state"),
        ADDRESS,
        SAMPLES / "tcp-echo-all-v1.yaml",
    ) as harness:
        yield harness


def kubeconfig_of(mesh: MeshHarness) -> Path:
    return Path(mesh.tcpmesh("kubeconfig", "--path").stdout.strip())


def test_kubeconfig_is_private_and_names_the_tcpmesh_context(mesh: MeshHarness) -> None:
    path = kubeconfig_of(mesh)
    assert path == mesh.state_dir / "kubeconfig"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    printed = mesh.tcpmesh("kubeconfig").stdout
    assert printed == path.read_text()
    config = kubectl(current_kubectl(), path, "config", "current-context").stdout
    assert config.strip() == "tcpmesh"
    assert "https://127.0.0.1:" in printed and "certificate-authority-data" in printed
    # The CA's key is private; its certificate is for anyone to trust.
    assert stat.S_IMODE((mesh.state_dir / "pki" / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("which", ["current", "1.20"])
def test_seed_step_4_verbatim(mesh: MeshHarness, which: str, tmp_path: Path) -> None:
    binary = current_kubectl() if which == "current" else old_kubectl()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kubectl").symlink_to(binary)
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(kubeconfig_of(mesh)),
        "HOME": str(tmp_path),  # kubectl's discovery cache goes here, not to ~/.kube
    }
    out = subprocess.run(
        ["sh", "-c", STEP_4], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == [ADDRESS, "31400"], out.stderr


@pytest.mark.parametrize("which", ["current", "1.20"])
def test_get_prints_kubectl_tables(mesh: MeshHarness, which: str) -> None:
    binary = current_kubectl() if which == "current" else old_kubectl()
    # A pod may be restarting (pod IPs are shared with every other mesh on this machine).
    mesh.wait_for(
        "both versions ready", lambda: mesh.deployments_ready("tcp-echo-v1", "tcp-echo-v2")
    )
    out = kubectl(binary, kubeconfig_of(mesh), "get", "vs,dr,gw,svc,deploy,po").stdout
    headers = {" ".join(line.split()) for line in out.splitlines() if line.startswith("NAME")}
    assert "NAME GATEWAYS HOSTS AGE" in headers
    assert "NAME HOST AGE" in headers
    assert "NAME AGE" in headers
    assert "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE" in headers
    assert "NAME READY UP-TO-DATE AVAILABLE AGE" in headers
    assert "NAME READY STATUS RESTARTS AGE" in headers
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["virtualservice.networking.istio.io/tcp-echo"][1:3] == [
        '["tcp-echo-gateway"]',
        '["*"]',
    ]
    assert rows["destinationrule.networking.istio.io/tcp-echo-destination"][1] == "tcp-echo"
    assert rows["deployment.apps/tcp-echo-v1"][1] == "1/1"
    pods = [name for name in rows if name.startswith("pod/tcp-echo-v1-")]
    assert len(pods) == 1 and rows[pods[0]][1:3] == ["1/1", "Running"]


def test_get_wide_all_namespaces_and_selectors(mesh: MeshHarness) -> None:
    config = kubeconfig_of(mesh)
    binary = current_kubectl()
    wide = kubectl(binary, config, "get", "pods", "-A", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert {line.split()[0] for line in wide[1:]} == {"default", "istio-system", "kube-system"}

    names = "-o=jsonpath={.items[*].metadata.name}"
    v2 = kubectl(binary, config, "get", "pods", "-l", "app=tcp-echo,version!=v1", names)
    assert [n.rsplit("-", 2)[0] for n in v2.stdout.split()] == ["tcp-echo-v2"]
    both = kubectl(binary, config, "get", "pods", "-l", "version in (v1,v2)", names)
    assert sorted(n.rsplit("-", 2)[0] for n in both.stdout.split()) == [
        "tcp-echo-v1",
        "tcp-echo-v2",
    ]
    gateway = kubectl(binary, config, "get", "pods", "-A", "-l", "!version,istio", names)
    assert [n.rsplit("-", 2)[0] for n in gateway.stdout.split()] == ["istio-ingressgateway"]
    by_field = kubectl(
        binary, config, "get", "pods", "-A", "--field-selector", "status.phase=Running", names
    )
    # tcp-echo v1 and v2, the ingress gateway and the node proxy.
    assert len(by_field.stdout.split()) == 4
    assert kubectl(
        binary, config, "get", "svc", "--field-selector", "metadata.name=tcp-echo", names
    ).stdout.split() == ["tcp-echo"]
    bad = kubectl(binary, config, "get", "svc", "--field-selector", "spec.nope=1", check=False)
    assert bad.code != 0 and 'field label not supported: "spec.nope"' in bad.stderr


def test_api_resources_lists_every_kind_with_short_names(mesh: MeshHarness) -> None:
    out = kubectl(current_kubectl(), kubeconfig_of(mesh), "api-resources").stdout.splitlines()
    table = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert table["virtualservices"][:2] == ["vs", "networking.istio.io/v1"]
    assert table["deployments"][:2] == ["deploy", "apps/v1"]
    assert table["pods"][:2] == ["po", "v1"]
    assert {"destinationrules", "gateways", "serviceentries", "workloadentries"} <= set(table)


def test_without_the_token_or_with_a_wrong_ca_kubectl_is_refused(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    import yaml

    from tcpmesh.apiserver.pki import ensure_ca

    config = yaml.safe_load(kubeconfig_of(mesh).read_text())
    no_token = tmp_path / "no-token"
    # A user without credentials makes kubectl prompt for a password; a made-up token is
    # what a client without the real one sends.
    config_no_token = {**config, "users": [{"name": "tcpmesh", "user": {"token": "guess"}}]}
    no_token.write_text(yaml.safe_dump(config_no_token))
    out = kubectl(current_kubectl(), no_token, "get", "pods", check=False)
    assert out.code != 0 and "error: You must be logged in to the server" in out.stderr

    other_ca = ensure_ca(tmp_path / "other")
    import base64

    cluster = {**config["clusters"][0]["cluster"]}
    cluster["certificate-authority-data"] = base64.b64encode(other_ca.cert_pem).decode()
    wrong_ca = tmp_path / "wrong-ca"
    wrong_ca.write_text(
        yaml.safe_dump({**config, "clusters": [{"name": "tcpmesh", "cluster": cluster}]})
    )
    out = kubectl(current_kubectl(), wrong_ca, "get", "pods", check=False)
    assert out.code != 0 and "certificate signed by unknown authority" in out.stderr


def test_the_tcpmesh_cli_speaks_https_with_the_ca(mesh: MeshHarness) -> None:
    status = mesh.get_json("service", "tcp-echo")
    assert status["metadata"]["name"] == "tcp-echo"
    creds = (mesh.state_dir / "apiserver.json").read_text()
    assert '"url": "https://127.0.0.1:' in creds


def test_the_official_python_client_lists_pods(mesh: MeshHarness) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(kubeconfig_of(mesh)))
    with api_client:
        pods = client.CoreV1Api(api_client).list_namespaced_pod("default")
        names = sorted(p.metadata.name.rsplit("-", 2)[0] for p in pods.items)
        assert names == ["tcp-echo-v1", "tcp-echo-v2"]
        assert all(p.status.phase == "Running" for p in pods.items)
        selected = client.CoreV1Api(api_client).list_pod_for_all_namespaces(
            label_selector="istio=ingressgateway"
        )
        assert [p.metadata.namespace for p in selected.items] == ["istio-system"]
        vs = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            "networking.istio.io", "v1", "default", "virtualservices", "tcp-echo"
        )
        assert vs["spec"]["gateways"] == ["tcp-echo-gateway"]


def test_kubectl_1_20_applies_validates_and_explains(mesh: MeshHarness, tmp_path: Path) -> None:
    """1.20 validates on the client, from the protobuf OpenAPI v2 document."""
    old, config = old_kubectl(), kubeconfig_of(mesh)
    out = kubectl(old, config, "apply", "-f", str(SAMPLES / "tcp-echo-20-v2.yaml")).stdout
    assert "virtualservice.networking.istio.io/tcp-echo configured" in out
    typo = tmp_path / "typo.yaml"
    typo.write_text((SAMPLES / "tcp-echo-all-v1.yaml").read_text().replace("subset:", "subsett:"))
    refused = kubectl(old, config, "apply", "-f", str(typo), check=False)
    assert refused.code != 0 and 'unknown field "subsett"' in refused.stderr
    negative = tmp_path / "negative.yaml"
    negative.write_text(
        (SAMPLES / "tcp-echo-20-v2.yaml").read_text().replace("weight: 80", "weight: -5")
    )
    refused = kubectl(old, config, "apply", "-f", str(negative), check=False)
    assert refused.code != 0 and "weight -5 < 0" in refused.stderr
    explained = kubectl(old, config, "explain", "vs.spec.tcp.route.weight").stdout
    assert "FIELD:    weight <integer>" in explained
    kubectl(old, config, "apply", "-f", str(SAMPLES / "tcp-echo-all-v1.yaml"))


def test_kubeconfig_without_a_running_mesh_is_one_clear_line(tmp_path: Path) -> None:
    idle = MeshHarness(tmp_path / "idle", ADDRESS)
    for args in (("kubeconfig",), ("kubeconfig", "--path")):
        out = idle.tcpmesh(*args, check=False)
        assert out.code == 1 and out.stdout == ""
        assert out.stderr.strip() == (
            f"error: tcpmesh is not running (state directory {tmp_path / 'idle'}); "
            "start it with `tcpmesh up`"
        )


TWO_GATEWAYS = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: same-name, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 31401, name: tcp, protocol: TCP}, hosts: ["*"]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-name, namespace: default}
spec:
  gatewayClassName: example
  listeners: [{name: tcp, protocol: TCP, port: 9300}]
"""


def test_istio_and_gateway_api_gateways_are_resolved_apart(mesh: MeshHarness) -> None:
    binary, config = current_kubectl(), kubeconfig_of(mesh)
    kubectl(binary, config, "apply", "-f", "-", stdin=TWO_GATEWAYS)
    try:
        istio = kubectl(
            binary, config, "get", "gateways.networking.istio.io", "same-name", "-o", "json"
        )
        k8s = kubectl(
            binary, config, "get", "gateways.gateway.networking.k8s.io", "same-name", "-o", "json"
        )
        assert '"selector"' in istio.stdout and "gatewayClassName" not in istio.stdout
        assert '"gatewayClassName": "example"' in k8s.stdout
        short = kubectl(binary, config, "get", "gw", "same-name", "-o", "jsonpath={.apiVersion}")
        assert short.stdout == "networking.istio.io/v1"
        table = kubectl(binary, config, "get", "gtw").stdout.splitlines()
        assert table[0].split() == ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
        assert table[1].split()[:2] == ["same-name", "example"]
        kubectl(binary, config, "delete", "gateways.gateway.networking.k8s.io", "same-name")
        left = kubectl(binary, config, "get", "gateways.networking.istio.io", "-o", "name")
        assert "gateway.networking.istio.io/same-name" in left.stdout
    finally:
        kubectl(binary, config, "delete", "-f", "-", "--ignore-not-found", stdin=TWO_GATEWAYS)


A_CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: example
  namespace: ignored
spec:
  controllerName: example.net/gateway-controller
  description: not ours
"""

SCRATCH = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: scratch-route
  namespace: scratch
spec:
  hosts: [tcp-echo]
  tcp:
  - route:
    - destination: {host: tcp-echo}
"""


def test_kubectl_serves_cluster_scoped_kinds(mesh: MeshHarness) -> None:
    binary, config = current_kubectl(), kubeconfig_of(mesh)
    table = kubectl(binary, config, "get", "namespaces").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "AGE"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert {"default", "kube-system", "istio-system"} <= set(rows)
    assert set(rows.values()) == {"Active"}
    label = kubectl(
        binary, config, "get", "ns", "istio-system", "-o", "jsonpath={.metadata.labels}"
    )
    assert '"kubernetes.io/metadata.name":"istio-system"' in label.stdout
    # -n is ignored for a cluster-scoped kind, and the file's namespace is dropped.
    applied = kubectl(binary, config, "apply", "-n", "other", "-f", "-", stdin=A_CLASS)
    assert applied.stdout.strip() == "gatewayclass.gateway.networking.k8s.io/example created"
    try:
        table = kubectl(binary, config, "get", "gatewayclasses", "-A").stdout.splitlines()
        assert table[0].split() == ["NAME", "CONTROLLER", "ACCEPTED", "AGE"]
        assert [r.split()[:2] for r in table[1:] if r.startswith("example ")] == [
            ["example", "example.net/gateway-controller"]
        ]
        meta = kubectl(binary, config, "get", "gc", "example", "-o", "jsonpath={.metadata}").stdout
        assert '"namespace"' not in meta
        mine = mesh.tcpmesh("get", "gatewayclass", "-A", "-n", "other").stdout.splitlines()
        assert mine[0].split() == ["NAME", "CONTROLLER", "ACCEPTED", "AGE"]
    finally:
        kubectl(binary, config, "delete", "gatewayclass", "example")
    gone = kubectl(binary, config, "get", "gc", "example", check=False)
    assert (
        gone.code == 1
        and 'gatewayclasses.gateway.networking.k8s.io "example" not found' in gone.stderr
    )


def test_kubectl_deletes_a_namespace_and_what_is_in_it(mesh: MeshHarness) -> None:
    binary, config = current_kubectl(), kubeconfig_of(mesh)
    kubectl(binary, config, "apply", "-f", "-", stdin=SCRATCH)
    phase = kubectl(binary, config, "get", "ns", "scratch", "-o", "jsonpath={.status.phase}")
    assert phase.stdout == "Active"
    # kubectl waits until the Namespace is gone, which is after its objects are.
    deleted = kubectl(binary, config, "delete", "namespace", "scratch", timeout=30)
    assert deleted.stdout.strip() == 'namespace "scratch" deleted'
    assert kubectl(binary, config, "get", "ns", "scratch", check=False).code == 1
    left = kubectl(binary, config, "get", "vs", "-n", "scratch")
    assert left.stdout == "" and "No resources found in scratch namespace." in left.stderr
    refused = kubectl(binary, config, "delete", "ns", "default", check=False)
    assert refused.code == 1
    assert 'namespaces "default" is forbidden: this namespace may not be deleted' in refused.stderr
