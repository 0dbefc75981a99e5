"""The Gateway API kinds: parsing, the CRDs' checks with their messages, and `get` columns."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tcpmesh.api import kinds, validate_object
from tcpmesh.cli import printers

Obj = dict[str, Any]
GROUP = "gateway.networking.k8s.io"


def gateway(*listeners: Obj) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "tcpmesh", "listeners": list(listeners)},
    }


def tcp_listener(name: str = "tcp", port: int = 9300, **extra: Any) -> Obj:
    return {"name": name, "protocol": "TCP", "port": port, **extra}


def route(kind: str = "TCPRoute", version: str = "v1", **spec: Any) -> Obj:
    base: Obj = {
        "parentRefs": [{"name": "gw", "sectionName": "tcp"}],
        "rules": [{"backendRefs": [{"name": "echo", "port": 9000}]}],
    }
    if kind == "TLSRoute":
        base["hostnames"] = ["a.example.com"]
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": kind,
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {**base, **spec},
    }


def errors(obj: Obj) -> list[str]:
    return validate_object(obj)[0]


def test_valid_objects_of_every_served_version_pass() -> None:
    assert errors(gateway(tcp_listener())) == []
    for version in ("v1", "v1alpha2"):
        assert errors(route("TCPRoute", version)) == []
        assert errors(route("TLSRoute", version)) == []
    grant = {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "backend"},
        "spec": {
            "from": [{"group": GROUP, "kind": "TCPRoute", "namespace": "default"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    assert errors(grant) == []
    assert errors({**grant, "apiVersion": f"{GROUP}/v1"}) == []


def test_the_two_gateways_are_two_kinds() -> None:
    istio = kinds.resolve("gateways.networking.istio.io")
    k8s = kinds.resolve("gateways.gateway.networking.k8s.io")
    assert (istio.group, k8s.group) == ("networking.istio.io", GROUP)
    assert kinds.resolve("gw") is istio and kinds.resolve("gateways") is istio
    assert kinds.resolve("gtw") is k8s
    assert kinds.for_object(gateway()) is k8s
    # An Istio Gateway's fields are not a Gateway API Gateway's.
    wrong = {**gateway(), "spec": {"selector": {"istio": "ingressgateway"}}}
    assert any("spec.selector" in e for e in errors(wrong))


@pytest.mark.parametrize(
    ("listeners", "message"),
    [
        (
            [tcp_listener(tls={"mode": "Passthrough"})],
            "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
        ),
        ([tcp_listener(hostname="a.example.com")], "hostname must not be specified"),
        (
            [{"name": "tls", "protocol": "TLS", "port": 443}],
            "tls mode must be set for protocol TLS",
        ),
        ([tcp_listener(), tcp_listener(port=9301)], "Listener name must be unique"),
        (
            [tcp_listener(), tcp_listener(name="other")],
            "Combination of port, protocol and hostname must be unique",
        ),
        (
            [{"name": "t", "protocol": "TLS", "port": 443, "tls": {"mode": "Terminate"}}],
            "certificateRefs or options must be specified when mode is Terminate",
        ),
        ([tcp_listener(port=0)], "spec.listeners[0].port: Invalid value: 0"),
        ([], "spec.listeners: Required value: must have at least 1 items"),
    ],
)
def test_gateway_listener_rules_of_the_crd(listeners: list[Obj], message: str) -> None:
    found = errors(gateway(*listeners))
    assert any(message in e for e in found), found
    assert all(e.startswith('Gateway "gw" is invalid: ') for e in found)


def test_route_rules_of_the_crd() -> None:
    two_rules = [{"backendRefs": [{"name": "a", "port": 1}]}] * 2
    assert any(
        "spec.rules: Too many: 2: must have at most 1 items" in e
        for e in errors(route(rules=two_rules))
    )
    assert errors(route(version="v1alpha2", rules=two_rules)) == []
    no_port = [{"backendRefs": [{"name": "a"}]}]
    assert any("Must have port for Service reference" in e for e in errors(route(rules=no_port)))
    heavy = [{"backendRefs": [{"name": "a", "port": 1, "weight": 1_000_001}]}]
    assert any("weight: Invalid value: 1000001" in e for e in errors(route(rules=heavy)))
    zero = [{"backendRefs": [{"name": "a", "port": 1, "weight": 0}]}]
    assert errors(route(rules=zero)) == []


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("10.0.0.1", "Hostnames cannot contain an IP"),
        ("a.*.example.com", "Wildcards on hostnames must be the first label"),
        ("Upper.example.com", "Hostnames must be valid based on RFC-1123"),
    ],
)
def test_tls_route_hostnames(host: str, message: str) -> None:
    found = errors(route("TLSRoute", hostnames=[host]))
    assert any(f'spec.hostnames[0]: Invalid value: "{host}": {message}' in e for e in found), found


def test_a_v1_tls_route_needs_a_hostname_and_v1alpha2_does_not() -> None:
    assert any(
        "spec.hostnames: Required value" in e for e in errors(route("TLSRoute", hostnames=[]))
    )
    assert errors(route("TLSRoute", "v1alpha2", hostnames=[])) == []


def test_get_prints_the_crd_printer_columns() -> None:
    obj = copy.deepcopy(gateway(tcp_listener()))
    obj["metadata"]["creationTimestamp"] = "2026-12-02T00:00:00Z"
    obj["status"] = {
        "addresses": [{"type": "IPAddress", "value": "127.0.0.9"}],
        "conditions": [{"type": "Programmed", "status": "True"}],
    }
    now = datetime(2026, 12, 2, 0, 5, tzinfo=UTC)
    text = printers.print_table(kinds.resolve("gtw"), [obj], now=now)
    assert text.splitlines() == [
        "NAME   CLASS     ADDRESS     PROGRAMMED   AGE",
        "gw     tcpmesh   127.0.0.9   True         5m",
    ]
    listed = printers.print_table(kinds.resolve("tcproutes"), [route()], now=now)
    assert listed.splitlines()[0].split() == ["NAME", "AGE"]
