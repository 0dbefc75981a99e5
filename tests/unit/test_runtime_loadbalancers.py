"""Which LoadBalancer Service gets which address:port (pure), and the status it writes."""

from __future__ import annotations

from typing import Any

from tcpmesh.runtime import assign_load_balancers
from tcpmesh.runtime.loadbalancers import PORT_IN_USE, load_balancer_status

Obj = dict[str, Any]
NODE = "127.0.0.1"


def lb(name: str, created: str, *ports: int, ip: str | None = None, **spec: Any) -> Obj:
    service: Obj = {
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {"type": "LoadBalancer", "ports": [{"port": p} for p in ports], **spec},
    }
    if ip is not None:
        service["spec"]["loadBalancerIP"] = ip
    return service


def holding(service: Obj, address: str, *ports: int) -> Obj:
    ingress = {"ip": address, "ports": [{"port": p, "protocol": "TCP"} for p in ports]}
    return {**service, "status": {"loadBalancer": {"ingress": [ingress]}}}


def test_every_load_balancer_shares_the_node_address_on_different_ports() -> None:
    outcomes = assign_load_balancers([lb("a", "t1", 9000), lb("b", "t2", 9001)], NODE)
    assert outcomes["default", "a"].address == NODE
    assert outcomes["default", "b"].load_balancer() == {
        "ingress": [{"ip": NODE, "ports": [{"port": 9001, "protocol": "TCP"}]}]
    }


def test_the_later_service_on_a_taken_port_gets_no_address() -> None:
    outcomes = assign_load_balancers([lb("late", "t2", 9000), lb("early", "t1", 9000)], NODE)
    assert outcomes["default", "early"].address == NODE
    late = outcomes["default", "late"]
    assert late.address is None
    assert late.problem is not None
    assert "port 9000/TCP of 127.0.0.1 is taken by the LoadBalancer Service default/early" in (
        late.problem
    )


def test_a_port_that_serves_is_never_taken_by_an_older_service() -> None:
    # "young" holds 9001; "old" is edited later to add 9001 too: old keeps its address,
    # and its 9001 is marked, not taken from young.
    young = holding(lb("young", "t2", 9001), NODE, 9001)
    old = holding(lb("old", "t1", 9000, 9001), NODE, 9000)
    outcomes = assign_load_balancers([old, young], NODE)
    assert outcomes["default", "young"].problem is None
    ports = outcomes["default", "old"].load_balancer()["ingress"][0]["ports"]
    assert ports == [
        {"port": 9000, "protocol": "TCP"},
        {"port": 9001, "protocol": "TCP", "error": PORT_IN_USE},
    ]


def test_a_load_balancer_ip_is_another_address() -> None:
    outcomes = assign_load_balancers(
        [lb("a", "t1", 9000), lb("b", "t2", 9000, ip="127.0.0.9")], NODE
    )
    assert outcomes["default", "b"].address == "127.0.0.9"
    assert outcomes["default", "b"].problem is None


def test_a_load_balancer_ip_off_the_node_network_waits_with_a_reason() -> None:
    outcome = assign_load_balancers([lb("a", "t1", 9000, ip="127.240.1.1")], NODE)["default", "a"]
    assert outcome.address is None
    assert outcome.problem is not None
    assert "127.240.1.1 is not a load-balancer address" in outcome.problem


def test_node_ports_come_before_load_balancer_frontends() -> None:
    node_port: Obj = {
        "kind": "Service",
        "metadata": {"name": "np", "namespace": "default", "creationTimestamp": "t9"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30100}]},
    }
    outcome = assign_load_balancers([node_port, lb("a", "t1", 30100)], NODE)["default", "a"]
    assert outcome.address is None
    assert "node port of Service default/np" in str(outcome.problem)


def test_the_status_carries_a_condition_that_says_why() -> None:
    outcomes = assign_load_balancers([lb("a", "t1", 9000), lb("b", "t2", 9000)], NODE)
    status = load_balancer_status(outcomes["default", "b"], {})
    assert status["loadBalancer"] == {}
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "LoadBalancerReady",
        "False",
        "Pending",
    )
    assert "taken by the LoadBalancer Service default/a" in condition["message"]
    assert load_balancer_status(None, status) == {"loadBalancer": {}}
