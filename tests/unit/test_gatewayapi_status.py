"""The Gateway API status documents (pure), and analyze's TCM0003 from the same binding."""

from __future__ import annotations

from typing import Any

from tcpmesh.analysis import analyze, format_message
from tcpmesh.control import MeshResources, bind_resources, builtin_gateway_classes
from tcpmesh.controllers.gatewayapi import (
    conditions_doc,
    desired_service,
    gateway_address,
    gateway_status,
    route_status,
)
from tests.unit.test_gatewayapi_binding import backend, gateway, route, service, tcp

Obj = dict[str, Any]
NOW, LATER = "2026-12-02T01:00:00Z", "2026-12-02T02:00:00Z"


def binding_of(*objects: Obj, classes: bool = True) -> Any:
    # The classes `up` creates, as on a running mesh.
    given = [*objects, *(builtin_gateway_classes() if classes else [])]
    return bind_resources(MeshResources.from_objects(given))


def test_route_status_echoes_the_parent_and_keeps_other_controllers() -> None:
    binding = binding_of(gateway(tcp("tcp", 9300)), service("v1"), route("r", [backend("v1")]))
    (result,) = binding.routes
    foreign = {"parentRef": {"name": "x"}, "controllerName": "example.com/other", "conditions": []}
    status = route_status(result, {"parents": [foreign]}, NOW)
    assert status["parents"][0] == foreign
    ours = status["parents"][1]
    assert ours["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "namespace": "infra",
        "name": "gw",
    }
    assert ours["controllerName"] == "tcpmesh.io/gateway-controller"
    assert [(c["type"], c["status"], c["reason"]) for c in ours["conditions"]] == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ]
    # Recomputed later with nothing changed: the transition times stay.
    again = route_status(result, status, LATER)
    assert again == status


def test_a_condition_that_flips_gets_a_new_transition_time() -> None:
    from tcpmesh.control import Condition

    old = conditions_doc([Condition("Accepted", "True", "Accepted")], [], 1, NOW)
    new = conditions_doc([Condition("Accepted", "False", "NoMatchingParent")], old, 2, LATER)
    assert new[0]["lastTransitionTime"] == LATER and new[0]["observedGeneration"] == 2


def test_gateway_status_is_programmed_only_with_an_address() -> None:
    binding = binding_of(gateway(tcp("tcp", 9300)), service("v1"), route("r", [backend("v1")]))
    (result,) = binding.gateways
    pending = gateway_status(result, [], None, NOW)
    programmed = {c["type"]: c["status"] for c in pending["conditions"]}
    assert programmed == {"Accepted": "True", "Programmed": "False"}
    ready = gateway_status(result, ["127.1.0.5"], pending, LATER)
    assert ready["addresses"] == [{"type": "IPAddress", "value": "127.1.0.5"}]
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Programmed"] == "True"
    (listener,) = ready["listeners"]
    assert listener["attachedRoutes"] == 1
    assert listener["supportedKinds"] == [
        {"group": "gateway.networking.k8s.io", "kind": "TCPRoute"}
    ]


def test_the_workload_service_exposes_each_listener_port_once() -> None:
    binding = binding_of(gateway(tcp("a", 9300), tcp("b", 9301)))
    svc = desired_service(binding.gateways[0].gateway)
    assert svc["metadata"]["name"] == "gw-tcpmesh" and svc["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in svc["spec"]["ports"]] == [9300, 9301]


def test_analyze_reports_what_the_status_reports() -> None:
    objects = [gateway(tcp("tcp", 9300)), route("r", [backend("missing")])]
    objects += builtin_gateway_classes()
    lines = [format_message(m) for m in analyze(objects) if m.code == "TCM0003"]
    assert lines == [
        "Error [TCM0003] (TCPRoute.gateway.networking.k8s.io infra/r) ResolvedRefs=False "
        "(BackendNotFound) on parent Gateway infra/gw: backendRef infra/missing: Service not found"
    ]


def test_each_gateway_service_asks_for_its_own_address_in_the_node_network() -> None:
    binding = binding_of(gateway(tcp("a", 9300)))
    gw = binding.gateways[0].gateway
    node = "127.0.32.1"
    assert gateway_address(gw, None, {node}, node) == "127.0.32.2"
    assert gateway_address(gw, None, {node, "127.0.32.2"}, node) == "127.0.32.3"
    held = {"spec": {"loadBalancerIP": "127.0.32.9"}}
    assert gateway_address(gw, held, {node}, node) == "127.0.32.9"
    assert gateway_address(gw, None, set(), "10.0.0.5") == ""
    assert desired_service(gw, "127.0.32.2")["spec"]["loadBalancerIP"] == "127.0.32.2"
    assert "loadBalancerIP" not in desired_service(gw)["spec"]


def test_a_requested_address_is_used_or_reported_unusable() -> None:
    for value, wanted in (("127.0.40.7", "127.0.40.7"), ("10.1.2.3", "")):
        listeners = [{"name": "a", "protocol": "TCP", "port": 9300}]
        gw_obj = gateway(*listeners)
        gw_obj["spec"]["addresses"] = [{"type": "IPAddress", "value": value}]
        (result,) = binding_of(gw_obj).gateways
        assert gateway_address(result.gateway, None, set(), "127.0.32.1") == wanted
    status = gateway_status(result, [], None, NOW, unusable_address="10.1.2.3")
    programmed = next(c for c in status["conditions"] if c["type"] == "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "AddressNotUsable")


def test_class_status_replaces_the_pending_default_and_tracks_the_generation() -> None:
    from tcpmesh.api.gatewayapi import PENDING_CLASS_STATUS
    from tcpmesh.controllers.gatewayapi import class_status

    binding = binding_of()
    tcpmesh = next(c for c in binding.classes if c.gateway_class.name == "tcpmesh")
    status = class_status(tcpmesh, PENDING_CLASS_STATUS, NOW)
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Accepted", "True", "Accepted"),
        ("SupportedVersion", "True", "SupportedVersion"),
    ]
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {NOW}
    assert {c["observedGeneration"] for c in status["conditions"]} == {1}
    # Unchanged conditions keep their transition time.
    assert class_status(tcpmesh, status, LATER) == status
