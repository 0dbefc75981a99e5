"""The node proxy's Snapshot: Istio's sidecar-outbound TCP rules for a proxy shared by
every pod, told apart by their addresses; node ports and load-balancer addresses."""

from __future__ import annotations

from typing import Any

from tcpmesh.control import (
    NODE_PROXY_LABELS,
    NODE_PROXY_NAMESPACE,
    Listener,
    MeshResources,
    ProxyKind,
    ProxyNode,
    Snapshot,
    TcpRoute,
    build_snapshot,
)
from tcpmesh.dataplane import match_route
from tcpmesh.xds.translate import listener_resource

FQDN = "tcp-echo.default.svc.cluster.local"
V1 = f"outbound|9000|v1|{FQDN}"
V2 = f"outbound|9000|v2|{FQDN}"
ALL = f"outbound|9000||{FQDN}"
VIP = "127.240.1.1"
NODE = ProxyNode(
    NODE_PROXY_NAMESPACE,
    "tcpmesh-node-proxy-abc",
    tuple(sorted(NODE_PROXY_LABELS.items())),
    "127.0.0.1",
)
CANARY_IP = "127.1.0.20"
PLAIN_IP = "127.1.0.21"
OTHER_NS_IP = "127.1.0.22"
SHELL_IP = "127.0.0.1"


def meta(name: str, namespace: str = "default", created: str = "2026-01-01T00:00:00Z") -> dict:
    return {"name": name, "namespace": namespace, "creationTimestamp": created}


def service(
    name: str = "tcp-echo",
    type_: str = "ClusterIP",
    cluster_ip: str | None = VIP,
    node_port: int | None = None,
    status: dict[str, Any] | None = None,
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "tcp", "port": 9000}
    if node_port is not None:
        port["nodePort"] = node_port
    spec: dict[str, Any] = {
        "type": type_,
        "selector": selector or {"app": name},
        "ports": [port],
    }
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": meta(name), "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def pod(name: str, ip: str, labels: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta(name, namespace), "labels": labels},
        "spec": {"containers": [{"name": "c", "command": ["sleep", "1"]}]},
        "status": {"podIP": ip},
    }


def echo_pods() -> list[dict[str, Any]]:
    return [
        pod("echo-v1", "127.1.0.1", {"app": "tcp-echo", "version": "v1"}),
        pod("echo-v2", "127.1.0.2", {"app": "tcp-echo", "version": "v2"}),
    ]


def clients() -> list[dict[str, Any]]:
    return [
        pod("canary", CANARY_IP, {"app": "client", "version": "canary"}),
        pod("plain", PLAIN_IP, {"app": "client"}),
        pod("other", OTHER_NS_IP, {"app": "client", "version": "canary"}, namespace="other"),
    ]


def destination_rule() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": meta("tcp-echo"),
        "spec": {
            "host": "tcp-echo",
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }


def endpoints() -> dict[str, Any]:
    def address(ip: str, name: str) -> dict[str, Any]:
        return {"ip": ip, "targetRef": {"kind": "Pod", "name": name, "namespace": "default"}}

    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta("tcp-echo"),
        "subsets": [
            {
                "addresses": [address("127.1.0.1", "echo-v1"), address("127.1.0.2", "echo-v2")],
                "ports": [{"name": "tcp", "port": 9000}],
            }
        ],
    }


def virtual_service(
    tcp: list[dict[str, Any]],
    hosts: tuple[str, ...] = ("tcp-echo",),
    gateways: list[str] | None = None,
    name: str = "tcp-echo",
    created: str = "2026-01-02T00:00:00Z",
    namespace: str = "default",
    export_to: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": list(hosts), "tcp": tcp}
    if gateways is not None:
        spec["gateways"] = gateways
    if export_to is not None:
        spec["exportTo"] = export_to
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta(name, namespace, created),
        "spec": spec,
    }


def to(subset: str, weight: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = {"destination": {"host": "tcp-echo", "subset": subset}}
    if weight:
        entry["weight"] = weight
    return entry


def build(*objects: dict[str, Any], node: ProxyNode = NODE) -> Snapshot:
    base = [service(), endpoints(), destination_rule(), *echo_pods(), *clients()]
    return build_snapshot(MeshResources.from_objects([*base, *objects]), node)


def listener_at(snapshot: Snapshot, address: str, port: int = 9000) -> Listener:
    found = [lst for lst in snapshot.listeners if (lst.address, lst.port) == (address, port)]
    assert len(found) == 1, [lst.name for lst in snapshot.listeners]
    return found[0]


def route_for(snapshot: Snapshot, source_ip: str, address: str = VIP) -> TcpRoute:
    route = match_route(listener_at(snapshot, address), address, None, source_ip)
    assert route is not None
    return route


def clusters_of(route: TcpRoute) -> dict[str, int]:
    return {d.cluster_name: d.weight for d in route.destinations}


def test_node_proxy_is_a_node_kind_and_gateways_are_routers() -> None:
    assert NODE.kind is ProxyKind.NODE
    gateway = ProxyNode("istio-system", "gw", (("istio", "ingressgateway"),), "127.0.0.1")
    assert gateway.kind is ProxyKind.ROUTER
    # The labels outside kube-system are a router: the namespace is part of the identity.
    assert ProxyNode("default", "x", NODE.labels, "127.0.0.1").kind is ProxyKind.ROUTER


def test_without_virtual_service_the_cluster_ip_balances_over_the_service() -> None:
    snapshot = build()
    lst = listener_at(snapshot, VIP)
    assert lst.name == f"{VIP}_9000"
    assert len(lst.routes) == 1
    route = lst.routes[0]
    assert clusters_of(route) == {ALL: 100}
    assert str(route.origin) == "Service default/tcp-echo ports[0]"
    cluster = snapshot.cluster(ALL)
    assert cluster is not None
    assert {e.address for e in cluster.ready_endpoints} == {"127.1.0.1", "127.1.0.2"}


def test_headless_external_name_and_unallocated_services_get_no_listener() -> None:
    snapshot = build(
        service("headless", cluster_ip="None"),
        service("external", type_="ExternalName", cluster_ip=None),
        service("pending", cluster_ip=None),
    )
    assert [lst.address for lst in snapshot.listeners] == [VIP]


def test_a_mesh_virtual_service_splits_by_weight_for_every_client() -> None:
    vs = virtual_service([{"route": [to("v1", 80), to("v2", 20)]}])
    snapshot = build(vs)
    lst = listener_at(snapshot, VIP)
    assert len(lst.routes) == 1
    assert clusters_of(lst.routes[0]) == {V1: 80, V2: 20}
    assert str(lst.routes[0].origin) == "VirtualService default/tcp-echo tcp[0]"


def test_gateway_bound_virtual_service_leaves_mesh_traffic_alone() -> None:
    vs = virtual_service([{"route": [to("v2")]}], gateways=["tcp-echo-gateway"])
    assert clusters_of(route_for(build(vs), PLAIN_IP)) == {ALL: 100}
    both = virtual_service([{"route": [to("v2")]}], gateways=["tcp-echo-gateway", "mesh"])
    assert clusters_of(route_for(build(both), PLAIN_IP)) == {V2: 100}


def test_a_match_for_another_gateway_does_not_apply_to_the_mesh() -> None:
    vs = virtual_service(
        [
            {"match": [{"gateways": ["tcp-echo-gateway"]}], "route": [to("v2")]},
            {"route": [to("v1")]},
        ],
        gateways=["tcp-echo-gateway", "mesh"],
    )
    assert clusters_of(route_for(build(vs), PLAIN_IP)) == {V1: 100}


def test_source_labels_route_the_canary_pod_alone_to_v2() -> None:
    vs = virtual_service(
        [
            {"match": [{"sourceLabels": {"version": "canary"}}], "route": [to("v2")]},
            {"route": [to("v1")]},
        ]
    )
    snapshot = build(vs)
    assert clusters_of(route_for(snapshot, CANARY_IP)) == {V2: 100}
    assert clusters_of(route_for(snapshot, PLAIN_IP)) == {V1: 100}
    # Labels are matched whatever the namespace (no sourceNamespace given).
    assert clusters_of(route_for(snapshot, OTHER_NS_IP)) == {V2: 100}
    # The user's shell, or any address no pod has, is outside every workload.
    assert clusters_of(route_for(snapshot, SHELL_IP)) == {V1: 100}
    assert clusters_of(route_for(snapshot, "127.1.0.99")) == {V1: 100}
    sourced = [r for r in listener_at(snapshot, VIP).routes if r.match.source_prefixes]
    assert [r.match.source_prefixes for r in sourced] == [(f"{CANARY_IP}/32", f"{OTHER_NS_IP}/32")]


def test_a_source_labels_rule_without_fallback_leaves_others_the_service() -> None:
    vs = virtual_service(
        [{"match": [{"sourceLabels": {"version": "canary"}}], "route": [to("v2")]}]
    )
    snapshot = build(vs)
    assert clusters_of(route_for(snapshot, CANARY_IP)) == {V2: 100}
    assert clusters_of(route_for(snapshot, PLAIN_IP)) == {ALL: 100}
    assert clusters_of(route_for(snapshot, SHELL_IP)) == {ALL: 100}


def test_source_namespace_matches_pods_of_that_namespace_only() -> None:
    vs = virtual_service(
        [{"match": [{"sourceNamespace": "other"}], "route": [to("v2")]}, {"route": [to("v1")]}]
    )
    snapshot = build(vs)
    assert clusters_of(route_for(snapshot, OTHER_NS_IP)) == {V2: 100}
    assert clusters_of(route_for(snapshot, CANARY_IP)) == {V1: 100}
    assert clusters_of(route_for(snapshot, SHELL_IP)) == {V1: 100}


def test_port_match_fits_the_listener_port_only() -> None:
    vs = virtual_service([{"match": [{"port": 9001}], "route": [to("v2")]}, {"route": [to("v1")]}])
    assert clusters_of(route_for(build(vs), PLAIN_IP)) == {V1: 100}
    vs = virtual_service([{"match": [{"port": 9000}], "route": [to("v2")]}])
    assert clusters_of(route_for(build(vs), PLAIN_IP)) == {V2: 100}


def test_destination_subnets_are_decided_for_the_cluster_ip() -> None:
    vs = virtual_service(
        [
            {"match": [{"destinationSubnets": ["10.0.0.0/8"]}], "route": [to("v2")]},
            {"match": [{"destinationSubnets": ["127.240.0.0/12"]}], "route": [to("v1")]},
        ]
    )
    # 10/8 does not contain the cluster IP; 127.240/12 does.
    assert clusters_of(route_for(build(vs), PLAIN_IP)) == {V1: 100}
    wider = virtual_service(
        [
            {"match": [{"destinationSubnets": ["127.0.0.0/8"]}], "route": [to("v2")]},
            {"match": [{"destinationSubnets": [f"{VIP}/32"]}], "route": [to("v1")]},
        ]
    )
    # Envoy takes the most specific subnet, not the first rule.
    assert clusters_of(route_for(build(wider), PLAIN_IP)) == {V1: 100}


def test_a_catch_all_rule_ends_the_list_as_in_istio() -> None:
    vs = virtual_service(
        [
            {"route": [to("v1")]},
            {"match": [{"sourceLabels": {"version": "canary"}}], "route": [to("v2")]},
        ]
    )
    assert clusters_of(route_for(build(vs), CANARY_IP)) == {V1: 100}


def test_hosts_match_short_names_fqdns_and_wildcards() -> None:
    for hosts in (("tcp-echo",), (FQDN,), ("*.default.svc.cluster.local",), ("*",)):
        vs = virtual_service([{"route": [to("v2")]}], hosts=hosts)
        assert clusters_of(route_for(build(vs), PLAIN_IP)) == {V2: 100}, hosts
    other = virtual_service([{"route": [to("v2")]}], hosts=("tcp-echo.other.svc.cluster.local",))
    assert clusters_of(route_for(build(other), PLAIN_IP)) == {ALL: 100}


def test_the_older_virtual_service_wins_for_a_host() -> None:
    older = virtual_service([{"route": [to("v1")]}], name="a", created="2026-01-02T00:00:00Z")
    newer = virtual_service([{"route": [to("v2")]}], name="b", created="2026-01-03T00:00:00Z")
    assert clusters_of(route_for(build(newer, older), PLAIN_IP)) == {V1: 100}


def test_export_to_hides_a_virtual_service_from_other_namespaces() -> None:
    private = virtual_service([{"route": [to("v2")]}], export_to=["."])
    snapshot = build(private)
    assert clusters_of(route_for(snapshot, PLAIN_IP)) == {V2: 100}
    assert clusters_of(route_for(snapshot, OTHER_NS_IP)) == {ALL: 100}
    assert clusters_of(route_for(snapshot, SHELL_IP)) == {ALL: 100}


def test_missing_subset_is_kept_for_nc() -> None:
    vs = virtual_service([{"route": [to("v3")]}])
    route = route_for(build(vs), PLAIN_IP)
    name = f"outbound|9000|v3|{FQDN}"
    assert clusters_of(route) == {name: 100}
    assert build(vs).cluster(name) is None


def test_node_ports_and_load_balancer_addresses_serve_the_service() -> None:
    lb_status = {"loadBalancer": {"ingress": [{"ip": "127.0.0.7"}]}}
    snapshot = build(
        service("np", type_="NodePort", cluster_ip="127.240.1.2", node_port=30100),
        service("lb", "LoadBalancer", "127.240.1.3", node_port=30101, status=lb_status),
        virtual_service([{"route": [to("v2")]}], hosts=("np", "lb")),
    )
    node_port = listener_at(snapshot, "127.0.0.1", 30100)
    assert clusters_of(node_port.routes[0]) == {"outbound|9000||np.default.svc.cluster.local": 100}
    assert listener_at(snapshot, "127.0.0.1", 30101).name == "127.0.0.1_30101"
    frontend = listener_at(snapshot, "127.0.0.7", 9000)
    # kube-proxy's path: a VirtualService never routes node ports or load balancers.
    assert clusters_of(frontend.routes[0]) == {"outbound|9000||lb.default.svc.cluster.local": 100}


def test_a_port_held_by_another_service_is_not_served() -> None:
    taken = {
        "loadBalancer": {
            "ingress": [
                {
                    "ip": "127.0.0.7",
                    "ports": [
                        {"port": 9000, "protocol": "TCP", "error": "port is already allocated"}
                    ],
                }
            ]
        }
    }
    snapshot = build(service("lb", "LoadBalancer", "127.240.1.3", status=taken))
    assert all(lst.address != "127.0.0.7" for lst in snapshot.listeners)


def test_gateway_load_balancers_are_left_to_the_gateway_pods() -> None:
    status = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
    gateway = service(
        "istio-ingressgateway",
        "LoadBalancer",
        "127.240.1.9",
        selector={"app": "istio-ingressgateway", "istio": "ingressgateway"},
        status=status,
    )
    snapshot = build(gateway)
    assert all(lst.address != "127.0.0.1" for lst in snapshot.listeners)
    # Its cluster IP is served like any other.
    assert listener_at(snapshot, "127.240.1.9").routes


def test_envoy_gets_source_prefix_ranges() -> None:
    vs = virtual_service(
        [
            {"match": [{"sourceLabels": {"version": "canary"}}], "route": [to("v2")]},
            {"route": [to("v1")]},
        ]
    )
    resource = listener_resource(listener_at(build(vs), VIP))
    chains = resource["filter_chains"]
    assert chains[0]["filter_chain_match"] == {
        "source_prefix_ranges": [
            {"address_prefix": CANARY_IP, "prefix_len": 32},
            {"address_prefix": OTHER_NS_IP, "prefix_len": 32},
        ]
    }
    assert "filter_chain_match" not in chains[1]


def test_the_gateway_snapshot_does_not_change_with_mesh_rules() -> None:
    gateway_node = ProxyNode(
        "istio-system",
        "gw",
        (("app", "istio-ingressgateway"), ("istio", "ingressgateway")),
        "127.0.0.1",
    )
    gateway_objects = [
        service(
            "istio-ingressgateway",
            "LoadBalancer",
            "127.240.1.9",
            selector={"app": "istio-ingressgateway", "istio": "ingressgateway"},
        ),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": meta("tcp-echo-gateway"),
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {"port": {"number": 9000, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
                ],
            },
        },
        virtual_service([{"route": [to("v1")]}], name="gw", gateways=["tcp-echo-gateway"]),
    ]
    before = build(*gateway_objects, node=gateway_node)
    mesh = virtual_service([{"route": [to("v2")]}], name="mesh-only", gateways=["mesh"])
    after = build(*gateway_objects, mesh, node=gateway_node)
    assert before.listeners == after.listeners
