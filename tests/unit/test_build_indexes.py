"""The builder's indexes (MeshResources.memo) answer as the scans they replaced.

A gateway server takes the first VirtualService, in creation order, with a rule that fits
its port; the port index must keep that order when port-specific and any-port rules mix.
The node proxy merges pod classes the rules cannot tell apart, and keeps them apart where
a sourceLabels match can. The Snapshot's JSON is exactly dataclasses.asdict's.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tcpmesh.control import MeshResources, ProxyNode, Snapshot, build_snapshot
from tests.unit.test_build_snapshot import (
    NODE,
    echo_service,
    endpoints,
    gateway_service,
    meta,
    pod,
    route,
)


def gateway_with_ports(*ports: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "Gateway",
        "metadata": meta("gw"),
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {"port": {"number": p, "name": f"tcp-{p}", "protocol": "TCP"}, "hosts": ["*"]}
                for p in ports
            ],
        },
    }


def vs(name: str, created: str, subset: str, match: list[dict[str, Any]] | None) -> dict:
    rule: dict[str, Any] = {"route": [route(subset)]}
    if match is not None:
        rule["match"] = match
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": meta(name, created=created),
        "spec": {"hosts": ["*"], "gateways": ["gw"], "tcp": [rule]},
    }


def gateway_service_ports(*ports: int) -> dict[str, Any]:
    svc = gateway_service()
    svc["spec"]["ports"] = [{"name": f"tcp-{p}", "port": p} for p in ports]
    return svc


def subsets_by_port(objects: list[dict[str, Any]]) -> dict[int, str]:
    snap = build_snapshot(MeshResources.from_objects(objects), NODE)
    return {lst.port: lst.routes[0].destinations[0].subset for lst in snap.listeners}


def test_the_oldest_fitting_virtual_service_wins_each_port() -> None:
    base = [
        gateway_service_ports(31400, 31401, 31402),
        echo_service(),
        gateway_with_ports(31400, 31401, 31402),
    ]
    routing = [
        vs("only-31401", "2026-01-01T00:00:01Z", "v1", [{"port": 31401}]),
        vs("any-port", "2026-01-01T00:00:02Z", "v2", None),
        vs("only-31402", "2026-01-01T00:00:03Z", "v3", [{"port": 31402}]),
        vs("zero-port", "2026-01-01T00:00:04Z", "v4", [{"port": 0}]),
    ]
    # 31401: its own rule is older than the any-port one; 31402: the any-port one is older.
    assert subsets_by_port(base + routing) == {31400: "v2", 31401: "v1", 31402: "v2"}
    # Without the any-port rule, a port 0 match fits every port, after older exact ones.
    assert subsets_by_port([*base, routing[0], routing[2], routing[3]]) == {
        31400: "v4",
        31401: "v1",
        31402: "v3",
    }


def mesh_vs(name: str, host: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": meta(name),
        "spec": {"hosts": [host], "tcp": [rule]},
    }


NODE_PROXY = ProxyNode(
    "kube-system",
    "tcpmesh-node-proxy",
    (("app", "tcpmesh-node-proxy"), ("tcpmesh.io/component", "node-proxy")),
    "127.0.0.50",
)


def node_routes(objects: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], str]]:
    echo = {**echo_service(), "spec": {**echo_service()["spec"], "clusterIP": "10.96.0.10"}}
    base = [
        echo,
        pod("tcp-echo-v1-a", "v1", "127.1.0.1"),
        pod("tcp-echo-v2-a", "v2", "127.1.0.2"),
        endpoints([("127.1.0.1", "tcp-echo-v1-a"), ("127.1.0.2", "tcp-echo-v2-a")]),
    ]
    snap = build_snapshot(MeshResources.from_objects(base + objects), NODE_PROXY)
    (listener,) = [lst for lst in snap.listeners if lst.address == "10.96.0.10"]
    return [(r.match.source_prefixes, r.destinations[0].subset) for r in listener.routes]


def test_pods_the_rules_cannot_tell_apart_share_the_outsiders_route() -> None:
    rule = {"route": [route("v1")]}
    assert node_routes([mesh_vs("all-v1", "tcp-echo", rule)]) == [((), "v1")]


def test_a_source_labels_rule_still_sets_its_pods_apart() -> None:
    rule = {"match": [{"sourceLabels": {"version": "v2"}}], "route": [route("v2")]}
    fallback = {"route": [route("v1")]}
    vs_doc = mesh_vs("canary", "tcp-echo", rule)
    vs_doc["spec"]["tcp"].append(fallback)
    assert node_routes([vs_doc]) == [(("127.1.0.2/32",), "v2"), ((), "v1")]


def test_a_wildcard_host_and_an_exact_host_keep_creation_order() -> None:
    wild = mesh_vs("wild", "*.default.svc.cluster.local", {"route": [route("v2")]})
    exact = mesh_vs("exact", "tcp-echo", {"route": [route("v1")]})
    wild["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"  # older: it wins
    assert node_routes([exact, wild]) == [((), "v2")]


def test_the_snapshot_json_is_dataclasses_asdict() -> None:
    objects = [
        gateway_service_ports(31400, 31401),
        echo_service(),
        pod("tcp-echo-v1-a", "v1", "127.1.0.1"),
        endpoints([("127.1.0.1", "tcp-echo-v1-a")]),
        gateway_with_ports(31400, 31401),
        vs("a", "2026-01-01T00:00:01Z", "v1", [{"port": 31400}]),
        vs("b", "2026-01-01T00:00:02Z", "v2", None),
    ]
    snap = build_snapshot(MeshResources.from_objects(objects), NODE)
    reference = {
        "version": snap.version,
        "listeners": [dataclasses.asdict(lst) for lst in snap.listeners],
        "clusters": [dataclasses.asdict(c) for c in snap.clusters],
    }
    assert json.loads(snap.to_json()) == json.loads(json.dumps(reference))
    assert Snapshot.from_json(snap.to_json()) == snap
