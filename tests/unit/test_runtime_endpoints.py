"""Endpoints of a Service from its pods, and the controller writing them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.runtime.endpoints import (
    endpoint_subsets,
    resolve_target_port,
    sync_services,
)
from tcpmesh.store import Store


def service(
    ports: list[dict[str, Any]],
    selector: dict[str, str] | None = None,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tcp-echo", "namespace": namespace, "labels": {"app": "tcp-echo"}},
        "spec": {
            "selector": {"app": "tcp-echo"} if selector is None else selector,
            "ports": ports,
            **spec,
        },
    }


def pod(
    name: str,
    ip: str | None,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    **status: Any,
) -> dict[str, Any]:
    pod_status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        **status,
    }
    if ip:
        pod_status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": {"app": "tcp-echo"} if labels is None else labels,
        },
        "spec": {"containers": [{"name": "c", "image": "x", "ports": ports or []}]},
        "status": pod_status,
    }


def ref(name: str) -> dict[str, str]:
    return {"kind": "Pod", "name": name, "namespace": "default", "uid": f"uid-{name}"}


TCP = [{"name": "tcp", "port": 9000}]


def test_ready_and_not_ready_pods_with_their_target_refs() -> None:
    pods = [pod("a", "127.1.0.1"), pod("b", "127.1.0.2", ready=False)]
    assert endpoint_subsets(service(TCP), pods) == [
        {
            "addresses": [{"ip": "127.1.0.1", "targetRef": ref("a")}],
            "notReadyAddresses": [{"ip": "127.1.0.2", "targetRef": ref("b")}],
            "ports": [{"name": "tcp", "port": 9000, "protocol": "TCP"}],
        }
    ]


def test_only_selected_pods_of_the_same_namespace_with_an_ip() -> None:
    pods = [
        pod("match", "127.1.0.1"),
        pod("other-app", "127.1.0.2", labels={"app": "other"}),
        pod("other-ns", "127.1.0.3", namespace="elsewhere"),
        pod("no-ip-yet", None),
    ]
    subsets = endpoint_subsets(service(TCP), pods)
    assert [a["targetRef"]["name"] for a in subsets[0]["addresses"]] == ["match"]
    assert "notReadyAddresses" not in subsets[0]


def test_addresses_are_ordered_by_ip_numerically() -> None:
    pods = [pod("x", "127.1.0.10"), pod("y", "127.1.0.9"), pod("z", "127.1.0.100")]
    ips = [a["ip"] for a in endpoint_subsets(service(TCP), pods)[0]["addresses"]]
    assert ips == ["127.1.0.9", "127.1.0.10", "127.1.0.100"]


@pytest.mark.parametrize(
    ("service_port", "expected"),
    [
        ({"port": 80}, 80),
        ({"port": 80, "targetPort": 8080}, 8080),
        ({"port": 80, "targetPort": "8081"}, 8081),
        ({"port": 80, "targetPort": "web"}, 9090),
        ({"port": 80, "targetPort": "nope"}, None),
        ({"port": 80, "targetPort": "web", "protocol": "UDP"}, None),
    ],
)
def test_target_port_by_number_or_by_container_port_name(
    service_port: dict[str, Any], expected: int | None
) -> None:
    p = pod("a", "127.1.0.1", ports=[{"name": "web", "containerPort": 9090}])
    assert resolve_target_port(service_port, p) == expected


def test_pods_resolving_a_named_port_differently_form_separate_subsets() -> None:
    ports = [{"name": "tcp", "port": 9000, "targetPort": "echo"}, {"name": "plain", "port": 9001}]
    pods = [
        pod("a", "127.1.0.1", ports=[{"name": "echo", "containerPort": 7000}]),
        pod("b", "127.1.0.2", ports=[{"name": "echo", "containerPort": 7001}]),
        pod("c", "127.1.0.3"),  # no "echo" port: only in the subset of port 9001
    ]
    subsets = endpoint_subsets(service(ports), pods)
    by_ports = {
        tuple(sorted((p["name"], p["port"]) for p in s["ports"])): [
            a["targetRef"]["name"] for a in s["addresses"]
        ]
        for s in subsets
    }
    assert by_ports == {
        (("plain", 9001), ("tcp", 7000)): ["a"],
        (("plain", 9001), ("tcp", 7001)): ["b"],
        (("plain", 9001),): ["c"],
    }


def test_a_pod_resolving_no_port_at_all_is_left_out() -> None:
    ports = [{"name": "tcp", "port": 9000, "targetPort": "echo"}]
    assert endpoint_subsets(service(ports), [pod("a", "127.1.0.1")]) == []


def test_a_service_without_ports_still_lists_addresses() -> None:
    subsets = endpoint_subsets(service([]), [pod("a", "127.1.0.1")])
    assert subsets == [{"addresses": [{"ip": "127.1.0.1", "targetRef": ref("a")}], "ports": []}]


def test_publish_not_ready_addresses_lists_every_pod_as_ready() -> None:
    svc = service(TCP, publishNotReadyAddresses=True)
    subsets = endpoint_subsets(svc, [pod("a", "127.1.0.1", ready=False)])
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["127.1.0.1"]


def test_finished_pods_that_will_not_restart_are_left_out() -> None:
    done = pod("done", "127.1.0.1", ready=False, phase="Failed")
    done["spec"]["restartPolicy"] = "Never"
    restarting = pod("restarting", "127.1.0.2", ready=False, phase="Failed")
    subsets = endpoint_subsets(service(TCP), [done, restarting])
    assert [a["ip"] for a in subsets[0]["notReadyAddresses"]] == ["127.1.0.2"]


def test_ports_keep_protocol_and_app_protocol() -> None:
    ports = [{"port": 9000, "protocol": "TCP", "appProtocol": "tcp"}]
    subsets = endpoint_subsets(service(ports), [pod("a", "127.1.0.1")])
    assert subsets[0]["ports"] == [{"port": 9000, "protocol": "TCP", "appProtocol": "tcp"}]


# ---------------------------------------------------------------- the controller, on a store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def test_controller_creates_updates_only_on_change_and_deletes_with_the_service(
    store: Store,
) -> None:
    store.create(service(TCP))
    store.create(pod("a", "127.1.0.1"))
    sync_services(store, "127.0.0.1")
    endpoints = store.get("Endpoints", "default", "tcp-echo")
    assert endpoints is not None
    assert endpoints["metadata"]["labels"] == {"app": "tcp-echo"}
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["127.1.0.1"]

    revision = store.revision
    sync_services(store, "127.0.0.1")
    assert store.revision == revision  # nothing changed, nothing written

    store.create(pod("b", "127.1.0.2", ready=False))
    sync_services(store, "127.0.0.1")
    endpoints = store.get("Endpoints", "default", "tcp-echo")
    assert endpoints is not None
    assert [a["ip"] for a in endpoints["subsets"][0]["notReadyAddresses"]] == ["127.1.0.2"]

    store.delete("Service", "default", "tcp-echo")
    sync_services(store, "127.0.0.1")
    assert store.get("Endpoints", "default", "tcp-echo") is None


def test_controller_leaves_endpoints_of_selectorless_services_alone(store: Store) -> None:
    store.create(service(TCP, selector={}))
    manual = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "tcp-echo", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 9000}]}],
    }
    store.create(manual)
    store.create(pod("a", "127.1.0.1"))
    sync_services(store, "127.0.0.1")
    kept = store.get("Endpoints", "default", "tcp-echo")
    assert kept is not None
    assert kept["subsets"] == manual["subsets"]


def test_controller_sets_and_clears_load_balancer_ingress(store: Store) -> None:
    store.create(service(TCP, type="LoadBalancer"))
    sync_services(store, "127.0.0.5")
    svc = store.get("Service", "default", "tcp-echo")
    assert svc is not None
    ingress = svc["status"]["loadBalancer"]["ingress"]
    assert ingress == [{"ip": "127.0.0.5", "ports": [{"port": 9000, "protocol": "TCP"}]}]
    assert svc["status"]["conditions"][0]["type"] == "LoadBalancerReady"

    store.replace({**svc, "spec": {**svc["spec"], "type": "ClusterIP"}})
    sync_services(store, "127.0.0.5")
    svc = store.get("Service", "default", "tcp-echo")
    assert svc is not None
    assert svc["status"]["loadBalancer"] == {}
    assert "conditions" not in svc["status"]
