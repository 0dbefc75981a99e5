"""The Service variables the kubelet injects, named as Kubernetes' pkg/kubelet/envvars does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tcpmesh.runtime.envvars import links_enabled, service_variables
from tcpmesh.runtime.launch import pod_variables


def service(name: str, ip: str | None, *ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": list(ports), **spec}
    if ip is not None:
        body["clusterIP"] = ip
    return {"kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": body}


def test_the_seed_service_gives_kubernetes_names() -> None:
    tcp_echo = service("tcp-echo", "127.240.1.1", {"name": "tcp", "port": 9000})
    assert service_variables([tcp_echo]) == {
        "TCP_ECHO_SERVICE_HOST": "127.240.1.1",
        "TCP_ECHO_SERVICE_PORT": "9000",
        "TCP_ECHO_SERVICE_PORT_TCP": "9000",
        "TCP_ECHO_PORT": "tcp://127.240.1.1:9000",
        "TCP_ECHO_PORT_9000_TCP": "tcp://127.240.1.1:9000",
        "TCP_ECHO_PORT_9000_TCP_PROTO": "tcp",
        "TCP_ECHO_PORT_9000_TCP_PORT": "9000",
        "TCP_ECHO_PORT_9000_TCP_ADDR": "127.240.1.1",
    }


def test_the_first_port_is_the_service_port_and_each_port_gets_its_links() -> None:
    multi = service(
        "db", "127.240.1.2", {"name": "main", "port": 5432}, {"name": "st", "port": 9187}
    )
    variables = service_variables([multi])
    assert variables["DB_SERVICE_PORT"] == "5432"
    assert variables["DB_SERVICE_PORT_ST"] == "9187"
    assert variables["DB_PORT"] == "tcp://127.240.1.2:5432"
    assert variables["DB_PORT_9187_TCP_ADDR"] == "127.240.1.2"


def test_services_without_a_cluster_ip_give_nothing() -> None:
    headless = service("h", "None", {"port": 80})
    external = service("x", None, {"port": 80}, type="ExternalName", externalName="a.example")
    unallocated = service("u", None, {"port": 80})
    assert service_variables([headless, external, unallocated]) == {}


def test_enable_service_links_false_turns_them_off() -> None:
    assert links_enabled({"spec": {}})
    assert not links_enabled({"spec": {"enableServiceLinks": False}})


def test_the_container_env_wins_and_may_refer_to_them() -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    container = {
        "name": "c",
        "env": [
            {"name": "TCP_ECHO_SERVICE_PORT", "value": "1"},
            {"name": "TARGET", "value": "$(TCP_ECHO_SERVICE_HOST):9000"},
        ],
    }
    links = service_variables([service("tcp-echo", "127.240.1.1", {"port": 9000})])
    variables = pod_variables(pod, container, "127.1.0.7", "127.0.0.1", Path("/s"), links)
    assert variables["TCP_ECHO_SERVICE_PORT"] == "1"
    assert variables["TARGET"] == "127.240.1.1:9000"
    assert variables["TCP_ECHO_PORT"] == "tcp://127.240.1.1:9000"
