"""Cluster IPs and node ports as Kubernetes' Service REST storage decides them (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tcpmesh.registry import ServiceRejected, Taken, allocate

Obj = dict[str, Any]


def service(name: str = "tcp-echo", **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "tcp", "port": 9000}], **spec},
    }


def rejected(new: Obj, old: Obj | None = None, taken: Taken | None = None) -> list[str]:
    with pytest.raises(ServiceRejected) as caught:
        allocate(new, old, taken or Taken())
    return caught.value.messages


def test_the_first_automatic_cluster_ip_is_above_the_static_band() -> None:
    spec = allocate(service(), None, Taken())["spec"]
    assert spec["clusterIP"] == "127.240.1.1"
    assert spec["clusterIPs"] == ["127.240.1.1"]
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["ipFamilyPolicy"] == "SingleStack"


def test_taken_cluster_ips_are_skipped_and_never_end_in_0_or_255() -> None:
    taken = Taken(cluster_ips=frozenset(f"127.240.1.{i}" for i in range(1, 255)))
    assert allocate(service(), None, taken)["spec"]["clusterIP"] == "127.240.2.1"


def test_a_requested_cluster_ip_in_the_range_is_honoured() -> None:
    spec = allocate(service(clusterIP="127.240.0.10"), None, Taken())["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"]) == ("127.240.0.10", ["127.240.0.10"])


def test_a_cluster_ip_outside_the_range_gets_kubernetes_message() -> None:
    assert rejected(service(clusterIP="127.1.0.1")) == [
        'Service "tcp-echo" is invalid: spec.clusterIPs: Invalid value: []string{"127.1.0.1"}: '
        "failed to allocate IP 127.1.0.1: the provided IP (127.1.0.1) is not in the valid "
        "range. The range of valid IPs is 127.240.0.0/12"
    ]


def test_a_taken_cluster_ip_gets_kubernetes_message() -> None:
    taken = Taken(cluster_ips=frozenset({"127.240.0.10"}))
    assert rejected(service(clusterIP="127.240.0.10"), taken=taken) == [
        'Service "tcp-echo" is invalid: spec.clusterIPs: Invalid value: []string{"127.240.0.10"}: '
        "failed to allocate IP 127.240.0.10: provided IP is already allocated"
    ]


def test_headless_and_external_name_services_get_no_cluster_ip() -> None:
    headless = allocate(service(clusterIP="None"), None, Taken())["spec"]
    assert (headless["clusterIP"], headless["clusterIPs"]) == ("None", ["None"])
    external = allocate(service(type="ExternalName", externalName="a.example"), None, Taken())
    assert "clusterIP" not in external["spec"]


def test_an_update_without_the_cluster_ip_keeps_it() -> None:
    stored = allocate(service(), None, Taken())
    again = allocate(service(), stored, Taken())
    assert again["spec"]["clusterIP"] == stored["spec"]["clusterIP"]


def test_the_cluster_ip_is_immutable() -> None:
    stored = allocate(service(), None, Taken())
    assert rejected(service(clusterIP="127.240.0.7"), stored) == [
        'Service "tcp-echo" is invalid: spec.clusterIPs[0]: Invalid value: '
        '[]string{"127.240.0.7"}: may not change once set'
    ]


def test_a_clusterip_service_may_not_ask_for_a_node_port() -> None:
    new = service()
    new["spec"]["ports"][0]["nodePort"] = 30500
    assert rejected(new) == [
        'Service "tcp-echo" is invalid: spec.ports[0].nodePort: Forbidden: may not be used '
        "when `type` is 'ClusterIP'"
    ]


def test_node_port_and_load_balancer_services_get_node_ports() -> None:
    node_port = allocate(service(type="NodePort"), None, Taken())["spec"]
    assert node_port["ports"][0]["nodePort"] == 30086
    balanced = allocate(service(type="LoadBalancer"), None, Taken(node_ports=frozenset({30086})))
    assert balanced["spec"]["ports"][0]["nodePort"] == 30087
    assert balanced["spec"]["allocateLoadBalancerNodePorts"] is True


def test_load_balancers_may_do_without_node_ports() -> None:
    spec = allocate(
        service(type="LoadBalancer", allocateLoadBalancerNodePorts=False), None, Taken()
    )["spec"]
    assert "nodePort" not in spec["ports"][0]


def test_a_node_port_is_never_a_port_served_on_the_shared_address() -> None:
    taken = Taken(shared_lb_ports=frozenset({30086}))
    assert allocate(service(type="NodePort"), None, taken)["spec"]["ports"][0]["nodePort"] == 30087


def test_requested_node_ports_get_kubernetes_messages() -> None:
    new = service(type="NodePort")
    new["spec"]["ports"][0]["nodePort"] = 8080
    assert rejected(new) == [
        'Service "tcp-echo" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided '
        "port is not in the valid range. The range of valid ports is 30000-32767"
    ]
    new["spec"]["ports"][0]["nodePort"] = 31400
    assert rejected(new, taken=Taken(shared_lb_ports=frozenset({31400}))) == [
        'Service "tcp-echo" is invalid: spec.ports[0].nodePort: Invalid value: 31400: provided '
        "port is already allocated"
    ]
    new["spec"]["ports"][0]["nodePort"] = 30001
    assert allocate(new, None, Taken())["spec"]["ports"][0]["nodePort"] == 30001


def test_an_update_keeps_node_ports_by_port_name() -> None:
    stored = allocate(service(type="NodePort"), None, Taken())
    again = allocate(service(type="NodePort"), stored, Taken(node_ports=frozenset({30086})))
    assert again["spec"]["ports"][0]["nodePort"] == 30086


def test_a_type_change_drops_the_node_ports_the_client_left_in() -> None:
    stored = allocate(service(type="NodePort"), None, Taken())
    edited = {**stored, "spec": {**stored["spec"], "type": "ClusterIP"}}
    assert "nodePort" not in allocate(edited, stored, Taken())["spec"]["ports"][0]


def test_taken_counts_ips_node_ports_and_shared_frontends() -> None:
    a = allocate(service("a", type="LoadBalancer"), None, Taken())
    b = allocate(service("b", type="LoadBalancer", loadBalancerIP="127.0.0.9"), None, Taken())
    taken = Taken.of([a, b])
    assert taken.cluster_ips == {"127.240.1.1"}
    assert taken.node_ports == {30086}
    assert taken.shared_lb_ports == {9000}  # b serves its own address


def test_a_full_node_port_range_is_an_internal_error() -> None:
    full = Taken(node_ports=frozenset(range(30000, 32768)))
    with pytest.raises(ServiceRejected) as caught:
        allocate(service(type="NodePort"), None, full)
    assert caught.value.internal
    assert caught.value.messages == [
        "Internal error occurred: failed to allocate a nodePort: range is full"
    ]
