"""kubectl's everyday verbs against a real mesh, and the official Python client.

One mesh for the module; the seed's manifests are applied by kubectl itself (client-side,
then server-side), and each test puts the VirtualService in the state it needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SAMPLES, MeshHarness, first_word
from tests.integration.kubectl_helpers import current_kubectl, kubectl

pytestmark = pytest.mark.integration

ADDRESS = "127.0.30.2"
PORT = 31400
FILES = ("tcp-echo-deployments.yaml", "tcp-echo-service.yaml", "tcp-echo-all-v1.yaml")
# Rewrites a VirtualService's only route to 80/20 between subsets v1 and v2.
EDITOR = """
import sys, yaml
path = sys.argv[-1]
vs = yaml.safe_load(open(path))
first = vs["spec"]["tcp"][0]["route"][0]
first["weight"] = 80
second = {"destination": {**first["destination"], "subset": "v2"}, "weight": 20}
vs["spec"]["tcp"][0]["route"] = [first, second]
open(path, "w").write(yaml.safe_dump(vs))
"""


class Kubectl:
    def __init__(self, mesh: MeshHarness) -> None:
        self.mesh = mesh
        self.config = mesh.state_dir / "kubeconfig"

    def __call__(self, *args: str, **kwargs: Any) -> Any:
        return kubectl(current_kubectl(), self.config, *args, **kwargs)

    def json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json").stdout)

    def weights(self) -> list[int]:
        routes = self.json("vs", "tcp-echo")["spec"]["tcp"][0]["route"]
        return [r.get("weight", 0) for r in routes]


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    mesh = MeshHarness(tmp_path_factory.mktemp("state"), ADDRESS, workers=1)
    try:
        mesh.up()
        client = Kubectl(mesh)
        out = client("apply", *(a for f in FILES for a in ("-f", str(SAMPLES / f)))).stdout
        assert "virtualservice.networking.istio.io/tcp-echo created" in out
        assert "deployment.apps/tcp-echo-v1 created" in out
        mesh.wait_for("routes to v1", lambda: _word() == "one", 60)
        yield client
    finally:
        mesh.down()


def _word() -> str:
    try:
        return first_word(ADDRESS, PORT)
    except OSError:
        return ""


def route_all_to(k: Kubectl, subset: str) -> None:
    k("apply", "-f", str(SAMPLES / f"tcp-echo-all-{subset}.yaml"))
    word = {"v1": "one", "v2": "two"}[subset]
    k.mesh.wait_for(f"routes to {subset}", lambda: _word() == word, 10)


def test_client_side_apply_keeps_the_last_applied_configuration(k: Kubectl) -> None:
    vs = k.json("vs", "tcp-echo")
    last = json.loads(
        vs["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert last["spec"]["tcp"][0]["route"][0]["destination"]["subset"] == "v1"
    again = k("apply", "-f", str(SAMPLES / "tcp-echo-all-v1.yaml")).stdout
    assert "virtualservice.networking.istio.io/tcp-echo unchanged" in again


def test_server_side_apply_owns_fields_and_reports_conflicts(k: Kubectl) -> None:
    route_all_to(k, "v1")
    conflict = k("apply", "--server-side", "-f", str(SAMPLES / "tcp-echo-all-v2.yaml"), check=False)
    assert conflict.code != 0
    assert 'conflict with "kubectl-client-side-apply"' in conflict.stderr
    assert ".spec.tcp" in conflict.stderr
    assert k.json("vs", "tcp-echo")["spec"]["tcp"][0]["route"][0]["destination"]["subset"] == "v1"
    out = k(
        "apply", "--server-side", "--force-conflicts", "-f", str(SAMPLES / "tcp-echo-all-v2.yaml")
    ).stdout
    assert "virtualservice.networking.istio.io/tcp-echo serverside-applied" in out
    k.mesh.wait_for("routes to v2", lambda: _word() == "two", 10)
    shown = k("get", "vs", "tcp-echo", "-o", "json", "--show-managed-fields").stdout
    managers = {m["manager"]: m for m in json.loads(shown)["metadata"]["managedFields"]}
    assert managers["kubectl"]["operation"] == "Apply"
    assert "f:tcp" in managers["kubectl"]["fieldsV1"]["f:spec"]
    # Server-side apply of a Deployment: containers are merged by name (a map list).
    dep = k("apply", "--server-side", "--force-conflicts", "-f", str(SAMPLES / FILES[0])).stdout
    assert "deployment.apps/tcp-echo-v1 serverside-applied" in dep
    route_all_to(k, "v1")


def test_get_watch_shows_an_update_made_by_tcpmesh_apply(k: Kubectl) -> None:
    route_all_to(k, "v1")
    watcher = subprocess.Popen(
        [current_kubectl(), "--kubeconfig", str(k.config), "get", "vs", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout or []), daemon=True)
    reader.start()
    try:
        k.mesh.wait_for("the initial list", lambda: len(lines) >= 1, 20)
        k.mesh.apply(SAMPLES / "tcp-echo-20-v2.yaml")
        k.mesh.wait_for("the update", lambda: len(lines) >= 2, 20)
    finally:
        watcher.terminate()
        watcher.wait(10)
    assert lines[:2] == ["virtualservice.networking.istio.io/tcp-echo\n"] * 2
    assert k.weights() == [80, 20]


def test_edit_shifts_the_traffic_to_80_20(k: Kubectl, tmp_path: Path) -> None:
    route_all_to(k, "v1")
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    out = k("edit", "vs", "tcp-echo", env={"EDITOR": f"{sys.executable} {script}"}).stdout
    assert "virtualservice.networking.istio.io/tcp-echo edited" in out
    assert k.weights() == [80, 20]
    k.mesh.wait_for("v2 answers", lambda: "two" in {_word() for _ in range(40)}, 10)
    sent = k.mesh.tcpmesh(
        "send",
        f"{ADDRESS}:{PORT}",
        "-c",
        "1000",
        "--concurrency",
        "20",
        "--expect",
        "v1=80,v2=20",
        "-o",
        "json",
    )
    report = json.loads(sent.stdout)
    assert report["consistent"] is True and sum(report["groups"].values()) == 1000


def test_patch_merge_and_json(k: Kubectl) -> None:
    route_all_to(k, "v1")
    route = [{"destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": "v2"}}]
    merge = json.dumps({"spec": {"tcp": [{"match": [{"port": 31400}], "route": route}]}})
    assert "patched" in k("patch", "vs", "tcp-echo", "--type", "merge", "-p", merge).stdout
    k.mesh.wait_for("routes to v2", lambda: _word() == "two", 10)
    ops = '[{"op":"replace","path":"/spec/tcp/0/route/0/destination/subset","value":"v1"}]'
    assert "patched" in k("patch", "vs", "tcp-echo", "--type", "json", "-p", ops).stdout
    k.mesh.wait_for("routes to v1", lambda: _word() == "one", 10)
    # Strategic merge patch of a Deployment merges containers by name.
    container = {"name": "tcp-echo", "env": [{"name": "A", "value": "1"}]}
    env = json.dumps({"spec": {"template": {"spec": {"containers": [container]}}}})
    k("patch", "deploy", "tcp-echo-v2", "-p", env)
    containers = k.json("deploy", "tcp-echo-v2")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1 and containers[0]["image"] == "docker.io/istio/tcp-echo-server:1.1"
    assert containers[0]["env"] == [{"name": "A", "value": "1"}]


def test_annotate_and_label(k: Kubectl) -> None:
    assert "annotated" in k("annotate", "vs", "tcp-echo", "owner=team-a", "--overwrite").stdout
    assert "labeled" in k("label", "vs", "tcp-echo", "tier=edge", "--overwrite").stdout
    meta = k.json("vs", "tcp-echo")["metadata"]
    assert meta["annotations"]["owner"] == "team-a" and meta["labels"]["tier"] == "edge"
    names = k("get", "vs", "-l", "tier=edge", "-o", "name").stdout.split()
    assert names == ["virtualservice.networking.istio.io/tcp-echo"]
    k("label", "vs", "tcp-echo", "tier-")
    assert "tier" not in (k.json("vs", "tcp-echo")["metadata"].get("labels") or {})


def test_scale_starts_a_second_pod_and_rollout_status_waits_for_it(k: Kubectl) -> None:
    assert "scaled" in k("scale", "deploy/tcp-echo-v2", "--replicas=2").stdout
    status = k("rollout", "status", "deploy/tcp-echo-v2", "--timeout=60s").stdout
    assert 'deployment "tcp-echo-v2" successfully rolled out' in status
    pods = k.json("pods", "-l", "version=v2")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    k("wait", "--for=condition=Available", "deploy/tcp-echo-v2", "--timeout=30s")
    # What the runtime did is in the Events, as kubectl get events and describe show them.
    events = k("get", "events", "--field-selector", "involvedObject.name=tcp-echo-v2").stdout
    header, *rows = events.splitlines()
    assert header.split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any("ScalingReplicaSet" in r and "to 2" in r for r in rows), events
    described = k("describe", "pod", pods[-1]["metadata"]["name"]).stdout
    assert "Started container tcp-echo" in described and "kubelet" in described
    k("scale", "deploy/tcp-echo-v2", "--replicas=1")
    k.mesh.wait_for("one v2 pod", lambda: len(k.json("pods", "-l", "version=v2")["items"]) == 1)


def test_rollout_restart_replaces_the_pods(k: Kubectl) -> None:
    before = {p["metadata"]["name"] for p in k.json("pods", "-l", "version=v1")["items"]}
    assert "restarted" in k("rollout", "restart", "deploy/tcp-echo-v1").stdout
    k("rollout", "status", "deploy/tcp-echo-v1", "--timeout=60s")
    k.mesh.wait_for(
        "the old pod to go",
        lambda: {
            p["metadata"]["name"] for p in k.json("pods", "-l", "version=v1")["items"]
        }.isdisjoint(before),
    )
    route_all_to(k, "v1")


def test_logs_tail_and_follow(k: Kubectl) -> None:
    route_all_to(k, "v1")
    pod = k("get", "pods", "-l", "version=v1", "-o", "jsonpath={.items[0].metadata.name}").stdout
    follower = subprocess.Popen(
        [current_kubectl(), "--kubeconfig", str(k.config), "logs", "-f", "--tail=0", pod],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout or []), daemon=True)
    reader.start()
    token = f"followed-{time.monotonic_ns()}"
    try:
        time.sleep(1.0)  # kubectl is connected and following
        k.mesh.tcpmesh("send", f"{ADDRESS}:{PORT}", "-c", "3", "--message", token)
        k.mesh.wait_for("followed output", lambda: any(token in line for line in lines), 20)
    finally:
        follower.terminate()
        follower.wait(10)
    full = k("logs", pod).stdout.splitlines()
    assert any(token in line for line in full)
    assert k("logs", pod, "--tail=1").stdout.splitlines() == full[-1:]
    assert k("logs", pod, "--tail=0").stdout == ""
    wrong = k("logs", pod, "-c", "nope", check=False)
    assert wrong.code != 0 and "container nope is not valid for pod" in wrong.stderr


def test_explain_answers_from_the_models(k: Kubectl) -> None:
    out = k("explain", "virtualservice.spec.tcp.route.weight").stdout
    assert "FIELD: weight <integer>" in out and "relative proportion" in out
    ports = k("explain", "svc.spec.ports").stdout
    assert "targetPort" in ports


def test_diff_shows_what_apply_would_change(k: Kubectl) -> None:
    route_all_to(k, "v1")
    same = k("diff", "-f", str(SAMPLES / "tcp-echo-all-v1.yaml"), check=False)
    assert same.code == 0 and same.stdout == ""
    changed = k("diff", "-f", str(SAMPLES / "tcp-echo-20-v2.yaml"), check=False)
    assert changed.code == 1 and "+      weight: 20" in changed.stdout
    assert k.weights() == [0]  # a diff is a dry run: nothing changed


def test_negative_weight_is_refused_with_istios_message(k: Kubectl, tmp_path: Path) -> None:
    route_all_to(k, "v1")
    before = k.json("vs", "tcp-echo")["metadata"]["resourceVersion"]
    bad = (SAMPLES / "tcp-echo-20-v2.yaml").read_text().replace("weight: 80", "weight: -5")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    out = k("apply", "-f", str(path), check=False)
    assert out.code != 0
    assert (
        'The VirtualService "tcp-echo" is invalid: spec.tcp[0].route[0].weight: weight -5 < 0'
        in out.stderr
    )
    assert k.json("vs", "tcp-echo")["metadata"]["resourceVersion"] == before


def test_unknown_field_is_refused_naming_it(k: Kubectl, tmp_path: Path) -> None:
    bad = (SAMPLES / "tcp-echo-20-v2.yaml").read_text().replace("weight: 20", "wieght: 20")
    path = tmp_path / "typo.yaml"
    path.write_text(bad)
    before = k.json("vs", "tcp-echo")["metadata"]["resourceVersion"]
    out = k("apply", "-f", str(path), check=False)
    assert out.code != 0 and 'unknown field "spec.tcp[0].route[1].wieght"' in out.stderr
    assert k.json("vs", "tcp-echo")["metadata"]["resourceVersion"] == before


def test_dry_run_server_writes_nothing(k: Kubectl) -> None:
    route_all_to(k, "v1")
    out = k("apply", "--dry-run=server", "-f", str(SAMPLES / "tcp-echo-20-v2.yaml")).stdout
    assert "(server dry run)" in out
    assert k.weights() == [0]


def test_python_client_watches_and_patches_a_virtual_service(k: Kubectl) -> None:
    from kubernetes import client, config, watch

    route_all_to(k, "v1")
    with config.new_client_from_config(str(k.config)) as api_client:
        custom = client.CustomObjectsApi(api_client)
        listed = custom.list_namespaced_custom_object(
            "networking.istio.io", "v1", "default", "virtualservices"
        )
        version = listed["metadata"]["resourceVersion"]
        patch = {"metadata": {"labels": {"patched-by": "python"}}}
        custom.patch_namespaced_custom_object(
            "networking.istio.io", "v1", "default", "virtualservices", "tcp-echo", patch
        )
        events = watch.Watch().stream(
            custom.list_namespaced_custom_object,
            "networking.istio.io",
            "v1",
            "default",
            "virtualservices",
            resource_version=version,
            timeout_seconds=10,
        )
        first = next(iter(events))
        assert first["type"] == "MODIFIED"
        assert first["object"]["metadata"]["labels"]["patched-by"] == "python"


def test_delete_f_removes_the_objects(k: Kubectl) -> None:
    out = k("delete", "-f", str(SAMPLES / "tcp-echo-all-v1.yaml")).stdout
    assert 'virtualservice.networking.istio.io "tcp-echo" deleted' in out
    gone = k("get", "vs", "tcp-echo", check=False)
    assert (
        gone.code != 0 and 'virtualservices.networking.istio.io "tcp-echo" not found' in gone.stderr
    )
