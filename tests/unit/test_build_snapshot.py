"""Every semantics rule of the snapshot builder, without sockets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tcpmesh.control import (
    MeshResources,
    ProxyNode,
    RouteOrigin,
    Snapshot,
    VersionAffinity,
    WeightedPick,
    build_snapshot,
)

FQDN = "tcp-echo.default.svc.cluster.local"
V1 = f"outbound|9000|v1|{FQDN}"
V2 = f"outbound|9000|v2|{FQDN}"
NODE = ProxyNode(
    namespace="istio-system",
    name="istio-ingressgateway-abc",
    labels=(("app", "istio-ingressgateway"), ("istio", "ingressgateway")),
    address="127.0.0.1",
)


def meta(name: str, namespace: str = "default", created: str = "2026-01-01T00:00:00Z") -> dict:
    return {"name": name, "namespace": namespace, "creationTimestamp": created}


def gateway_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("istio-ingressgateway", "istio-system"),
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
            "ports": [
                {"name": "status-port", "port": 15021, "targetPort": 15021},
                {"name": "http2", "port": 80, "targetPort": 8080},
                {"name": "tcp", "port": 31400, "targetPort": 31400},
            ],
        },
    }


def echo_service(ports: tuple[int, ...] = (9000,)) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("tcp-echo"),
        "spec": {
            "selector": {"app": "tcp-echo"},
            "ports": [{"name": f"tcp-{p}", "port": p} for p in ports],
        },
    }


def pod(name: str, version: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta(name), "labels": {"app": "tcp-echo", "version": version}},
        "spec": {"containers": [{"name": "tcp-echo", "image": "istio/tcp-echo-server:1.1"}]},
        "status": {"podIP": ip},
    }


def endpoints(ready: list[tuple[str, str]], not_ready: list[tuple[str, str]] = ()) -> dict:  # type: ignore[assignment]
    def address(ip: str, pod_name: str) -> dict[str, Any]:
        return {"ip": ip, "targetRef": {"kind": "Pod", "name": pod_name, "namespace": "default"}}

    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta("tcp-echo"),
        "subsets": [
            {
                "addresses": [address(ip, n) for ip, n in ready],
                "notReadyAddresses": [address(ip, n) for ip, n in not_ready],
                "ports": [{"name": "tcp-9000", "port": 9000}],
            }
        ],
    }


def gateway(name: str = "tcp-echo-gateway", port: int = 31400, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "Gateway",
        "metadata": meta(
            name, extra.pop("namespace", "default"), extra.pop("created", "2026-01-01T00:00:00Z")
        ),
        "spec": {
            "selector": extra.pop("selector", {"istio": "ingressgateway"}),
            "servers": [
                {
                    "port": {
                        "number": port,
                        "name": "tcp",
                        "protocol": extra.pop("protocol", "TCP"),
                    },
                    "hosts": ["*"],
                }
            ],
        },
    }


def route(
    subset: str | None, weight: int | None = None, port: int | None = 9000, host: str = "tcp-echo"
) -> dict:
    destination: dict[str, Any] = {"host": host}
    if subset is not None:
        destination["subset"] = subset
    if port is not None:
        destination["port"] = {"number": port}
    entry: dict[str, Any] = {"destination": destination}
    if weight is not None:
        entry["weight"] = weight
    return entry


def virtual_service(
    routes: list[dict],
    name: str = "tcp-echo",
    gateways: list[str] | None = None,
    match: list[dict] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    namespace: str = "default",
    extra_rules: list[dict] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"route": routes}
    rule["match"] = [{"port": 31400}] if match is None else match
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": meta(name, namespace, created),
        "spec": {
            "hosts": ["*"],
            "gateways": ["tcp-echo-gateway"] if gateways is None else gateways,
            "tcp": [*(extra_rules or []), rule],
        },
    }


def destination_rule(traffic_policy: dict | None = None, subsets: list[dict] | None = None) -> dict:
    spec: dict[str, Any] = {
        "host": "tcp-echo",
        "subsets": subsets
        if subsets is not None
        else [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    }
    if traffic_policy is not None:
        spec["trafficPolicy"] = traffic_policy
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": meta("tcp-echo-destination"),
        "spec": spec,
    }


def seed(*routing: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        gateway_service(),
        echo_service(),
        pod("tcp-echo-v1-a", "v1", "127.1.0.1"),
        pod("tcp-echo-v2-a", "v2", "127.1.0.2"),
        endpoints([("127.1.0.1", "tcp-echo-v1-a"), ("127.1.0.2", "tcp-echo-v2-a")]),
        gateway(),
        destination_rule(),
        *routing,
    ]


def build(objects: list[dict[str, Any]], node: ProxyNode = NODE) -> Snapshot:
    return build_snapshot(MeshResources.from_objects(objects), node)


def only_route(snapshot: Snapshot):  # type: ignore[no-untyped-def]
    assert len(snapshot.listeners) == 1
    listener = snapshot.listeners[0]
    assert len(listener.routes) == 1
    return listener.routes[0]


def destinations(snapshot: Snapshot) -> list[tuple[str, int]]:
    return [(d.cluster_name, d.weight) for d in only_route(snapshot).destinations]


def test_seed_all_v1_builds_one_listener_on_the_gateway_port() -> None:
    snapshot = build(seed(virtual_service([route("v1")])))
    listener = snapshot.listeners[0]
    assert (listener.name, listener.address, listener.port) == ("0.0.0.0_31400", "127.0.0.1", 31400)
    assert listener.gateway == "default/tcp-echo-gateway"
    assert destinations(snapshot) == [(V1, 100)]
    route_ = only_route(snapshot)
    assert route_.stat_prefix == V1
    assert route_.source == "VirtualService default/tcp-echo tcp[0]"
    assert route_.origin == RouteOrigin("VirtualService", "default", "tcp-echo", 0)


def test_weighted_clusters_carry_service_subset_and_port_even_without_a_cluster() -> None:
    snapshot = build(seed(virtual_service([route("v1", 80), route("v9", 20)])))
    v1, v9 = only_route(snapshot).destinations
    assert (v1.service, v1.subset, v1.port) == (FQDN, "v1", 9000)
    # v9 names no cluster (NC): what it was meant for is still known without its name.
    assert snapshot.cluster(v9.cluster_name) is None
    assert (v9.service, v9.subset, v9.port, v9.weight) == (FQDN, "v9", 9000, 20)


def test_subset_clusters_select_endpoints_by_labels() -> None:
    snapshot = build(seed(virtual_service([route("v1")])))
    names = {c.name for c in snapshot.clusters}
    assert {f"outbound|9000||{FQDN}", V1, V2} <= names
    v1 = snapshot.cluster(V1)
    v2 = snapshot.cluster(V2)
    default = snapshot.cluster(f"outbound|9000||{FQDN}")
    assert v1 is not None and v2 is not None and default is not None
    assert [(e.address, e.port) for e in v1.endpoints] == [("127.1.0.1", 9000)]
    assert [(e.address, e.port) for e in v2.endpoints] == [("127.1.0.2", 9000)]
    assert len(default.endpoints) == 2
    assert v1.endpoints[0].workload == "default/tcp-echo-v1-a"


def test_eighty_twenty_keeps_order_and_uses_vs_stat_prefix() -> None:
    snapshot = build(seed(virtual_service([route("v1", 80), route("v2", 20)])))
    assert destinations(snapshot) == [(V1, 80), (V2, 20)]
    assert only_route(snapshot).stat_prefix == "tcp-echo.default"


def test_weight_zero_entries_are_dropped() -> None:
    snapshot = build(seed(virtual_service([route("v1", 0), route("v2", 100)])))
    assert destinations(snapshot) == [(V2, 100)]


def test_single_destination_takes_everything_whatever_its_weight() -> None:
    snapshot = build(seed(virtual_service([route("v2", 0)])))
    assert destinations(snapshot) == [(V2, 100)]


def test_relative_weights_are_kept_as_given() -> None:
    snapshot = build(seed(virtual_service([route("v1", 3), route("v2", 1)])))
    assert destinations(snapshot) == [(V1, 3), (V2, 1)]


def test_short_host_resolves_in_the_rules_namespace() -> None:
    vs = virtual_service([route("v1")], namespace="other", gateways=["default/tcp-echo-gateway"])
    snapshot = build(seed(vs))
    assert destinations(snapshot) == [("outbound|9000|v1|tcp-echo.other.svc.cluster.local", 100)]
    assert snapshot.cluster("outbound|9000|v1|tcp-echo.other.svc.cluster.local") is None


def test_gateway_short_name_resolves_in_the_rules_namespace() -> None:
    vs = virtual_service([route("v1")], namespace="other")  # "tcp-echo-gateway" → other/...
    assert build(seed(vs)).listeners == ()


def test_destination_port_defaults_to_the_services_only_port() -> None:
    snapshot = build(seed(virtual_service([route("v1", port=None)])))
    assert destinations(snapshot) == [(V1, 100)]


def test_destination_port_defaults_to_listener_port_for_multi_port_services() -> None:
    objects = seed(virtual_service([route("v1", port=None)]))
    objects[1] = echo_service((9000, 9001))
    snapshot = build(objects)
    missing = f"outbound|31400|v1|{FQDN}"
    assert destinations(snapshot) == [(missing, 100)]
    assert snapshot.cluster(missing) is None  # connections get NC


def test_unknown_subset_keeps_a_share_that_names_no_cluster() -> None:
    snapshot = build(seed(virtual_service([route("v1", 50), route("v3", 50)])))
    v3 = f"outbound|9000|v3|{FQDN}"
    assert destinations(snapshot) == [(V1, 50), (v3, 50)]
    assert snapshot.cluster(v3) is None


def test_subset_without_pods_is_a_cluster_without_endpoints() -> None:
    objects = seed(virtual_service([route("v2")]))
    objects[4] = endpoints([("127.1.0.1", "tcp-echo-v1-a")])
    cluster = build(objects).cluster(V2)
    assert cluster is not None and cluster.endpoints == ()


def test_not_ready_addresses_are_endpoints_marked_not_ready() -> None:
    objects = seed(virtual_service([route("v1")]))
    objects[4] = endpoints([("127.1.0.2", "tcp-echo-v2-a")], [("127.1.0.1", "tcp-echo-v1-a")])
    cluster = build(objects).cluster(V1)
    assert cluster is not None
    assert [(e.address, e.ready) for e in cluster.endpoints] == [("127.1.0.1", False)]
    assert cluster.ready_endpoints == ()


def test_virtual_service_without_gateways_binds_to_mesh_only() -> None:
    assert build(seed(virtual_service([route("v1")], gateways=[]))).listeners == ()


def test_no_virtual_service_means_nothing_listens() -> None:
    assert build(seed()).listeners == ()


def test_gateway_selecting_other_workloads_opens_nothing() -> None:
    objects = seed(virtual_service([route("v1")]))
    objects[5] = gateway(selector={"istio": "egressgateway"})
    assert build(objects).listeners == ()


def test_port_the_gateway_service_does_not_expose_opens_nothing() -> None:
    objects = seed(virtual_service([route("v1")], match=[{"port": 31401}]))
    objects[5] = gateway(port=31401)
    assert build(objects).listeners == ()


def test_http_servers_are_not_served_by_the_l4_proxy() -> None:
    objects = seed(virtual_service([route("v1")]))
    objects[5] = gateway(protocol="HTTP")
    assert build(objects).listeners == ()


def test_first_virtual_service_by_creation_time_wins() -> None:
    older = virtual_service([route("v2")], name="zz-older", created="2026-01-01T00:00:00Z")
    newer = virtual_service([route("v1")], name="aa-newer", created="2026-01-02T00:00:00Z")
    assert destinations(build(seed(newer, older))) == [(V2, 100)]


def test_creation_time_ties_are_broken_by_name() -> None:
    b = virtual_service([route("v2")], name="b")
    a = virtual_service([route("v1")], name="a")
    assert destinations(build(seed(b, a))) == [(V1, 100)]


def test_first_fitting_tcp_rule_wins_and_only_port_and_gateways_count() -> None:
    wrong_port = {"match": [{"port": 9999}], "route": [route("v2")]}
    wrong_gateway = {"match": [{"gateways": ["other-gateway"]}], "route": [route("v2")]}
    vs = virtual_service(
        [route("v1")],
        match=[{"port": 31400, "sourceLabels": {"app": "nobody"}, "sourceNamespace": "x"}],
        extra_rules=[wrong_port, wrong_gateway],
    )
    snapshot = build(seed(vs))
    assert destinations(snapshot) == [(V1, 100)]
    assert only_route(snapshot).source == "VirtualService default/tcp-echo tcp[2]"


def test_rule_without_match_fits_every_port() -> None:
    assert destinations(build(seed(virtual_service([route("v1")], match=[])))) == [(V1, 100)]


def test_later_gateway_on_the_same_port_is_skipped() -> None:
    second = gateway(name="second", created="2026-01-05T00:00:00Z")
    vs2 = virtual_service([route("v2")], name="for-second", gateways=["second"])
    snapshot = build(seed(virtual_service([route("v1")]), second, vs2))
    assert destinations(snapshot) == [(V1, 100)]


def test_private_virtual_service_of_another_namespace_is_invisible() -> None:
    vs = virtual_service([route("v1")])
    vs["spec"]["exportTo"] = ["."]
    assert build(seed(vs)).listeners == ()


def test_defaults_match_istio_and_envoy() -> None:
    snapshot = build(seed(virtual_service([route("v1")])))
    route_ = only_route(snapshot)
    assert route_.idle_timeout == 3600.0
    assert route_.max_connection_duration is None
    assert route_.hash_policy is None
    cluster = snapshot.cluster(V1)
    assert cluster is not None
    assert cluster.connect_timeout == 10.0
    assert cluster.lb_policy == "LEAST_REQUEST"
    assert cluster.tcp_keepalive is None
    assert cluster.max_connections is None
    assert cluster.outlier_detection is None


def test_destination_rule_tcp_settings_reach_route_and_clusters() -> None:
    policy = {
        "connectionPool": {
            "tcp": {
                "connectTimeout": "250ms",
                "idleTimeout": "0s",
                "maxConnectionDuration": "30s",
                "maxConnections": 7,
                "tcpKeepalive": {"time": "60s", "interval": "5s", "probes": 3},
            }
        },
        "loadBalancer": {"consistentHash": {"useSourceIp": True}},
        "outlierDetection": {"consecutive5xxErrors": 2, "baseEjectionTime": "15s"},
    }
    objects = seed(virtual_service([route("v1")]))
    objects[6] = destination_rule(policy)
    snapshot = build(objects)
    route_ = only_route(snapshot)
    assert route_.idle_timeout is None
    assert route_.max_connection_duration == 30.0
    assert route_.hash_policy == "source_ip"
    cluster = snapshot.cluster(V1)
    assert cluster is not None
    assert cluster.connect_timeout == 0.25
    assert cluster.max_connections == 7
    assert cluster.lb_policy == "RING_HASH"
    assert cluster.tcp_keepalive is not None and cluster.tcp_keepalive.time == 60.0
    assert cluster.outlier_detection is not None
    assert cluster.outlier_detection.consecutive_errors == 2
    assert cluster.outlier_detection.base_ejection_time == 15.0


def test_subset_and_port_level_policies_override_in_istio_order() -> None:
    policy = {
        "loadBalancer": {"simple": "RANDOM"},
        "portLevelSettings": [
            {"port": {"number": 9000}, "loadBalancer": {"simple": "ROUND_ROBIN"}}
        ],
    }
    subsets = [
        {"name": "v1", "labels": {"version": "v1"}},
        {
            "name": "v2",
            "labels": {"version": "v2"},
            "trafficPolicy": {
                "connectionPool": {"tcp": {"connectTimeout": "2s"}},
                "loadBalancer": {"simple": "LEAST_REQUEST"},
            },
        },
    ]
    objects = seed(virtual_service([route("v1")]))
    objects[6] = destination_rule(policy, subsets)
    snapshot = build(objects)
    v1, v2 = snapshot.cluster(V1), snapshot.cluster(V2)
    assert v1 is not None and v2 is not None
    assert v1.lb_policy == "ROUND_ROBIN"
    assert (v2.lb_policy, v2.connect_timeout) == ("LEAST_REQUEST", 2.0)


def test_first_definition_of_a_duplicated_subset_wins() -> None:
    subsets = [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v1", "labels": {"version": "v2"}},
    ]
    objects = seed(virtual_service([route("v1")]))
    objects[6] = destination_rule(subsets=subsets)
    cluster = build(objects).cluster(V1)
    assert cluster is not None
    assert [e.address for e in cluster.endpoints] == ["127.1.0.1"]


def test_version_is_a_content_digest() -> None:
    a = build(seed(virtual_service([route("v1")])))
    b = build(seed(virtual_service([route("v1")])))
    c = build(seed(virtual_service([route("v1", 80), route("v2", 20)])))
    assert a.version == b.version
    assert a.version != c.version


def test_snapshot_round_trips_through_json() -> None:
    objects = seed(virtual_service([route("v1", 80), route("v2", 20)]))
    objects[6] = destination_rule(
        {"connectionPool": {"tcp": {"tcpKeepalive": {"probes": 2}}}, "outlierDetection": {}}
    )
    snapshot = build(objects)
    assert Snapshot.from_json(snapshot.to_json()) == snapshot


def test_builder_does_not_mutate_its_input() -> None:
    objects = seed(virtual_service([route("v1")]))
    before = copy.deepcopy(objects)
    build(objects)
    assert objects == before


@pytest.mark.parametrize("address", ["127.0.0.1", "127.9.9.9"])
def test_listener_binds_the_node_address(address: str) -> None:
    node = ProxyNode(NODE.namespace, NODE.name, NODE.labels, address)
    assert build(seed(virtual_service([route("v1")])), node).listeners[0].address == address


def port_80_and_8080() -> list[dict[str, Any]]:
    """The gateway Service maps port 80 to targetPort 8080; two TCP servers ask for both."""
    first = gateway(name="on-80", port=80, created="2026-01-02T00:00:00Z")
    second = gateway(name="on-8080", port=8080, created="2026-01-03T00:00:00Z")
    vs = virtual_service([route("v1")], gateways=["on-80", "on-8080"], match=[])
    return [o for o in seed(vs) if o["kind"] != "Gateway"] + [second, first]


def test_a_service_port_and_its_target_port_are_one_listener_the_first_server_wins() -> None:
    snapshot = build(port_80_and_8080())
    assert [(lst.name, lst.port, lst.gateway) for lst in snapshot.listeners] == [
        ("0.0.0.0_80", 80, "default/on-80")
    ]


def test_the_dropped_server_is_reported_by_gateway_servers() -> None:
    from tcpmesh.control import gateway_servers

    servers, conflicts = gateway_servers(MeshResources.from_objects(port_80_and_8080()), NODE)
    assert [(s.gateway_name, s.number, s.listen_port) for s in servers] == [
        ("default/on-80", 80, 80)
    ]
    assert [(c.kept.number, c.dropped.gateway_name, c.dropped.number) for c in conflicts] == [
        (80, "default/on-8080", 8080)
    ]


def test_passthrough_is_mapped_once_to_least_request() -> None:
    objects = seed(virtual_service([route("v1")]))
    objects[6] = destination_rule({"loadBalancer": {"simple": "PASSTHROUGH"}})
    cluster = build(objects).cluster(V1)
    # A gateway's original destination is the gateway itself: both planes get least request.
    assert cluster is not None and cluster.lb_policy == "LEAST_REQUEST"


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [(None, WeightedPick.SMOOTH), ("smooth", WeightedPick.SMOOTH), ("random", WeightedPick.RANDOM)],
)
def test_the_weighted_pick_is_a_route_field_from_the_virtual_service(
    annotation: str | None, expected: WeightedPick
) -> None:
    vs = virtual_service([route("v1", 80), route("v2", 20)])
    if annotation is not None:
        vs["metadata"]["annotations"] = {"tcpmesh.io/weighted-pick": annotation}
    assert only_route(build(seed(vs))).weighted_pick is expected


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [(None, VersionAffinity.NONE), ("source-ip", VersionAffinity.SOURCE_IP)],
)
def test_version_affinity_is_a_route_field_from_the_virtual_service(
    annotation: str | None, expected: VersionAffinity
) -> None:
    vs = virtual_service([route("v1", 80), route("v2", 20)])
    if annotation is not None:
        vs["metadata"]["annotations"] = {"traffic.tcpmesh.io/version-affinity": annotation}
    snapshot = build(seed(vs))
    assert only_route(snapshot).version_affinity is expected
    assert only_route(Snapshot.from_dict(snapshot.to_dict())).version_affinity is expected


@pytest.mark.parametrize(("annotation", "expected"), [(None, 1), ("3", 3), ("junk", 1)])
def test_max_connect_attempts_is_a_route_field_from_the_virtual_service(
    annotation: str | None, expected: int
) -> None:
    vs = virtual_service([route("v1", 80), route("v2", 20)])
    if annotation is not None:
        vs["metadata"]["annotations"] = {"traffic.tcpmesh.io/max-connect-attempts": annotation}
    snapshot = build(seed(vs))
    assert only_route(snapshot).max_connect_attempts == expected
    assert Snapshot.from_json(snapshot.to_json()) == snapshot
