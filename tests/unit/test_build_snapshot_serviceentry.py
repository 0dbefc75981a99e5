"""ServiceEntry and WorkloadEntry in the snapshot builder, and DNS in the control plane.

Routing to a workload tcpmesh does not run: the entry's hosts become clusters
``outbound|<port>|<subset>|<host>``, its endpoints (or the WorkloadEntries and pods its
``workloadSelector`` picks) become endpoints, and DestinationRule subsets select them by
label. Each test states the Istio rule it checks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.control import MeshResources, ProxyNode, Snapshot, build_snapshot
from tcpmesh.control.plane import ControlPlane
from tcpmesh.control.serviceentries import dns_names, entry_services, service_entry_ports
from tcpmesh.store import Store

Obj = dict[str, Any]
HOST = "vm-echo.example.internal"
ALL = f"outbound|9000||{HOST}"
V1 = f"outbound|9000|v1|{HOST}"
V2 = f"outbound|9000|v2|{HOST}"
NODE = ProxyNode(
    namespace="istio-system",
    name="istio-ingressgateway-abc",
    labels=(("app", "istio-ingressgateway"), ("istio", "ingressgateway")),
    address="127.0.0.1",
)
T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-02T00:00:00Z"


def meta(name: str, namespace: str = "default", created: str = T0, **extra: Any) -> Obj:
    return {"name": name, "namespace": namespace, "creationTimestamp": created, **extra}


def gateway_service() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("istio-ingressgateway", "istio-system"),
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
            "ports": [{"name": "tcp", "port": 31400, "targetPort": 31400}],
        },
    }


def gateway() -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": meta("vm-gateway"),
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
            ],
        },
    }


def virtual_service(*routes: tuple[str, str | None, int], port: int | None = None) -> Obj:
    entries = []
    for host, subset, weight in routes:
        destination: Obj = {"host": host}
        if subset:
            destination["subset"] = subset
        if port:
            destination["port"] = {"number": port}
        entries.append({"destination": destination, "weight": weight})
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta("vm-echo"),
        "spec": {
            "hosts": ["*"],
            "gateways": ["vm-gateway"],
            "tcp": [{"match": [{"port": 31400}], "route": entries}],
        },
    }


def destination_rule(host: str = HOST, traffic_policy: Obj | None = None) -> Obj:
    spec: Obj = {
        "host": host,
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    }
    if traffic_policy:
        spec["trafficPolicy"] = traffic_policy
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": meta("vm-echo"),
        "spec": spec,
    }


def service_entry(
    name: str = "vm-echo",
    namespace: str = "default",
    created: str = T0,
    **spec: Any,
) -> Obj:
    body: Obj = {
        "hosts": [HOST],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP"}],
        "endpoints": [
            {"address": "10.0.0.1", "labels": {"version": "v1"}},
            {"address": "10.0.0.2", "labels": {"version": "v2"}},
        ],
    }
    body.update(spec)
    for key in [k for k, v in body.items() if v is None]:
        del body[key]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": meta(name, namespace, created),
        "spec": body,
    }


def workload_entry(
    name: str,
    address: str,
    labels: dict[str, str],
    namespace: str = "default",
    *,
    ports: dict[str, int] | None = None,
    meta_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    status: Obj | None = None,
) -> Obj:
    metadata = meta(name, namespace, labels=meta_labels or {}, annotations=annotations or {})
    obj: Obj = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": metadata,
        "spec": {"address": address, "labels": labels, "ports": ports or {}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def pod(
    name: str, ip: str, labels: Obj, *, ready: bool = True, ports: list[Obj] | None = None
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta(name), "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "example/app", "ports": ports or []}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def routing(*extra: Obj, vs: Obj | None = None) -> list[Obj]:
    return [
        gateway_service(),
        gateway(),
        destination_rule(),
        vs or virtual_service((HOST, "v1", 50), (HOST, "v2", 50)),
        *extra,
    ]


def build(objects: list[Obj], dns: dict[str, tuple[str, ...]] | None = None) -> Snapshot:
    return build_snapshot(MeshResources.from_objects(objects, dns), NODE)


def endpoints_of(snapshot: Snapshot, name: str) -> list[tuple[str, int, str]]:
    cluster = snapshot.cluster(name)
    assert cluster is not None, f"no cluster {name}"
    return [(e.address, e.port, e.label_dict().get("version", "")) for e in cluster.endpoints]


def route_destinations(snapshot: Snapshot) -> list[tuple[str, int]]:
    [listener] = snapshot.listeners
    [route] = listener.routes
    return [(d.cluster_name, d.weight) for d in route.destinations]


# ---------------------------------------------------------------- STATIC endpoints


def test_static_entry_gives_a_cluster_per_port_and_subset() -> None:
    snapshot = build(routing(service_entry()))
    assert sorted(c.name for c in snapshot.clusters if HOST in c.name) == sorted([ALL, V1, V2])
    assert endpoints_of(snapshot, ALL) == [("10.0.0.1", 9000, "v1"), ("10.0.0.2", 9000, "v2")]
    assert endpoints_of(snapshot, V1) == [("10.0.0.1", 9000, "v1")]
    assert endpoints_of(snapshot, V2) == [("10.0.0.2", 9000, "v2")]
    cluster = snapshot.cluster(V1)
    assert cluster is not None
    assert (cluster.service, cluster.port, cluster.subset) == (HOST, 9000, "v1")
    assert cluster.endpoints[0].workload == "default/vm-echo-0"
    assert cluster.endpoints[0].ready


def test_route_to_an_entry_host_uses_its_only_port() -> None:
    # Destination port: the one given, else the service's only port, else the listener's.
    snapshot = build(routing(service_entry()))
    assert route_destinations(snapshot) == [(V1, 50), (V2, 50)]


def test_entry_with_several_ports_leaves_the_listener_port() -> None:
    ports = [{"number": 9000, "name": "tcp"}, {"number": 9001, "name": "tcp-alt"}]
    snapshot = build(routing(service_entry(ports=ports)))
    assert route_destinations(snapshot) == [
        (f"outbound|31400|v1|{HOST}", 50),
        (f"outbound|31400|v2|{HOST}", 50),
    ]
    assert {c.name for c in snapshot.clusters if HOST in c.name} >= {V1, f"outbound|9001|v1|{HOST}"}


def test_endpoint_port_prefers_the_endpoints_own_then_target_port_then_number() -> None:
    ports = [
        {"number": 9000, "name": "tcp", "targetPort": 7000},
        {"number": 9001, "name": "other"},
    ]
    endpoints = [
        {"address": "10.0.0.1", "ports": {"tcp": 7100}, "labels": {"version": "v1"}},
        {"address": "10.0.0.2", "labels": {"version": "v2"}},
    ]
    snapshot = build(routing(service_entry(ports=ports, endpoints=endpoints)))
    assert endpoints_of(snapshot, ALL) == [("10.0.0.1", 7100, "v1"), ("10.0.0.2", 7000, "v2")]
    assert endpoints_of(snapshot, f"outbound|9001||{HOST}") == [
        ("10.0.0.1", 9001, "v1"),
        ("10.0.0.2", 9001, "v2"),
    ]


def test_static_entry_without_endpoints_has_empty_clusters() -> None:
    # An EDS cluster exists even with no endpoints: connections close with UH, not NC.
    snapshot = build(routing(service_entry(endpoints=None)))
    assert endpoints_of(snapshot, V1) == []


def test_destination_rule_policy_applies_to_entry_clusters() -> None:
    policy = {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "connectionPool": {"tcp": {"connectTimeout": "2s", "maxConnections": 7}},
    }
    snapshot = build(
        [*routing(service_entry())[:2], destination_rule(traffic_policy=policy), service_entry()]
    )
    cluster = snapshot.cluster(V2)
    assert cluster is not None
    assert (cluster.lb_policy, cluster.connect_timeout, cluster.max_connections) == (
        "ROUND_ROBIN",
        2.0,
        7,
    )


def test_udp_ports_unix_sockets_and_address_less_endpoints_give_nothing_to_dial() -> None:
    ports = [{"number": 9000, "name": "tcp"}, {"number": 53, "name": "dns", "protocol": "UDP"}]
    endpoints = [
        {"address": "unix:///run/echo.sock", "labels": {"version": "v1"}},
        {"network": "vm-net", "labels": {"version": "v1"}},
        {"address": "10.0.0.2", "labels": {"version": "v2"}},
    ]
    snapshot = build(routing(service_entry(ports=ports, endpoints=endpoints)))
    assert snapshot.cluster(f"outbound|53||{HOST}") is None
    assert endpoints_of(snapshot, ALL) == [("10.0.0.2", 9000, "v2")]


def test_none_resolution_serves_selected_workloads_on_a_gateway() -> None:
    # convertResolution: gateways cannot use passthrough clusters, so NONE falls back to EDS.
    entry = service_entry(
        resolution="NONE", endpoints=None, workloadSelector={"labels": {"app": "vm"}}
    )
    we = workload_entry("vm-1", "10.0.1.1", {"app": "vm", "version": "v1"})
    snapshot = build(routing(entry, we))
    assert endpoints_of(snapshot, V1) == [("10.0.1.1", 9000, "v1")]


# ---------------------------------------------------------------- workloadSelector


def test_selector_picks_workload_entries_and_pods_of_its_namespace() -> None:
    entry = service_entry(
        endpoints=None,
        ports=[{"number": 9000, "name": "tcp"}],
        workloadSelector={"labels": {"app": "vm"}},
    )
    objects = routing(
        entry,
        workload_entry("vm-1", "10.0.1.1", {"app": "vm", "version": "v1"}, ports={"tcp": 7001}),
        # Metadata labels win over spec labels (ConvertWorkloadEntry).
        workload_entry(
            "vm-2", "10.0.1.2", {"app": "vm", "version": "v1"}, meta_labels={"version": "v2"}
        ),
        workload_entry("other-app", "10.0.1.3", {"app": "db", "version": "v1"}),
        workload_entry("other-ns", "10.0.1.4", {"app": "vm", "version": "v1"}, namespace="prod"),
        workload_entry("by-name", "vm-5.example.internal", {"app": "vm", "version": "v1"}),
        pod(
            "vm-pod",
            "127.1.0.9",
            {"app": "vm", "version": "v2"},
            ports=[{"name": "tcp", "containerPort": 8000}],
        ),
        pod("starting", "127.1.0.10", {"app": "vm", "version": "v2"}, ready=False),
    )
    snapshot = build(objects)
    # Pods come before WorkloadEntries, as Istio sorts selected workloads by kind.
    assert endpoints_of(snapshot, ALL) == [
        ("127.1.0.10", 9000, "v2"),
        ("127.1.0.9", 8000, "v2"),
        ("10.0.1.1", 7001, "v1"),
        ("10.0.1.2", 9000, "v2"),
    ]
    cluster = snapshot.cluster(V2)
    assert cluster is not None
    assert [(e.workload, e.ready) for e in cluster.endpoints] == [
        ("default/starting", False),
        ("default/vm-pod", True),
        ("default/vm-2", True),
    ]
    assert [e.address for e in cluster.ready_endpoints] == ["127.1.0.9", "10.0.1.2"]


def test_workload_entry_with_health_checks_is_ready_only_when_healthy() -> None:
    entry = service_entry(endpoints=None, workloadSelector={"labels": {"app": "vm"}})
    annotations = {"proxy.istio.io/health-checks-enabled": "true"}
    healthy = {"conditions": [{"type": "Healthy", "status": "True"}]}
    objects = routing(
        entry,
        workload_entry(
            "checked-ok",
            "10.0.1.1",
            {"app": "vm", "version": "v1"},
            annotations=annotations,
            status=healthy,
        ),
        workload_entry(
            "checked-new", "10.0.1.2", {"app": "vm", "version": "v1"}, annotations=annotations
        ),
        workload_entry("unchecked", "10.0.1.3", {"app": "vm", "version": "v1"}),
    )
    cluster = build(objects).cluster(V1)
    assert cluster is not None
    assert [(e.address, e.ready) for e in cluster.endpoints] == [
        ("10.0.1.2", False),
        ("10.0.1.1", True),
        ("10.0.1.3", True),
    ]


# ---------------------------------------------------------------- DNS


def test_dns_entry_without_endpoints_resolves_its_host() -> None:
    entry = service_entry(
        resolution="DNS",
        endpoints=None,
        ports=[{"number": 9000, "name": "tcp", "targetPort": 7000}],
    )
    objects = routing(entry, vs=virtual_service((HOST, None, 100)))
    resources = MeshResources.from_objects(objects)
    assert dns_names(resources) == {HOST}
    snapshot = build(objects, {HOST: ("10.0.2.2", "10.0.2.1")})
    # STRICT_DNS keeps every address, in a stable order.
    assert endpoints_of(snapshot, ALL) == [("10.0.2.1", 7000, ""), ("10.0.2.2", 7000, "")]
    assert route_destinations(snapshot) == [(ALL, 100)]


def test_unresolved_dns_host_leaves_the_cluster_empty() -> None:
    objects = routing(service_entry(resolution="DNS", endpoints=None))
    assert endpoints_of(build(objects), ALL) == []


def test_dns_endpoints_resolve_and_keep_their_labels() -> None:
    endpoints = [
        {"address": "vm-1.example.internal", "labels": {"version": "v1"}},
        {"address": "10.0.2.9", "labels": {"version": "v2"}},
    ]
    entry = service_entry(resolution="DNS", endpoints=endpoints)
    resources = MeshResources.from_objects(routing(entry))
    assert dns_names(resources) == {"vm-1.example.internal"}
    snapshot = build(routing(entry), {"vm-1.example.internal": ("10.0.2.1", "10.0.2.3")})
    assert endpoints_of(snapshot, V1) == [("10.0.2.1", 9000, "v1"), ("10.0.2.3", 9000, "v1")]
    assert endpoints_of(snapshot, V2) == [("10.0.2.9", 9000, "v2")]


def test_dns_subset_without_endpoints_has_no_cluster() -> None:
    # Envoy builds no DNS cluster without endpoints: that share closes with NC.
    endpoints = [{"address": "vm-1.example.internal", "labels": {"version": "v1"}}]
    snapshot = build(routing(service_entry(resolution="DNS", endpoints=endpoints)))
    assert snapshot.cluster(V2) is None
    assert snapshot.cluster(V1) is not None
    assert route_destinations(snapshot) == [(V1, 50), (V2, 50)]


def test_dns_round_robin_uses_the_first_endpoint_and_the_first_address() -> None:
    entry = service_entry(
        resolution="DNS_ROUND_ROBIN",
        endpoints=None,
        workloadSelector={"labels": {"app": "vm"}},
    )
    objects = routing(
        entry,
        workload_entry("vm-a", "a.example.internal", {"app": "vm", "version": "v1"}),
        workload_entry("vm-b", "10.0.3.2", {"app": "vm", "version": "v2"}),
    )
    resources = MeshResources.from_objects(objects)
    assert dns_names(resources) == {"a.example.internal"}
    snapshot = build(objects, {"a.example.internal": ("10.0.3.9", "10.0.3.1")})
    assert endpoints_of(snapshot, ALL) == [("10.0.3.9", 9000, "v1")]
    assert snapshot.cluster(V2) is None


def test_static_entry_needs_no_lookups() -> None:
    resources = MeshResources.from_objects(routing(service_entry()))
    assert dns_names(resources) == set()


# ---------------------------------------------------------------- hosts, merging, visibility


def test_kubernetes_service_of_the_same_name_wins() -> None:
    fqdn = "tcp-echo.default.svc.cluster.local"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("tcp-echo"),
        "spec": {"selector": {"app": "tcp-echo"}, "ports": [{"name": "tcp", "port": 9000}]},
    }
    snapshot = build([*routing(), service, service_entry(hosts=[fqdn])])
    cluster = snapshot.cluster(f"outbound|9000||{fqdn}")
    assert cluster is not None
    assert cluster.endpoints == ()


def test_entries_for_one_host_in_one_namespace_merge() -> None:
    first = service_entry(endpoints=[{"address": "10.0.0.1", "labels": {"version": "v1"}}])
    second = service_entry(
        name="vm-echo-more",
        created=T1,
        ports=[{"number": 9000, "name": "tcp"}, {"number": 9100, "name": "admin"}],
        endpoints=[{"address": "10.0.0.2", "labels": {"version": "v2"}}],
    )
    resources = MeshResources.from_objects(routing(first, second))
    assert service_entry_ports(resources, HOST) == [9000, 9100]
    snapshot = build(routing(first, second))
    assert endpoints_of(snapshot, ALL) == [("10.0.0.1", 9000, "v1"), ("10.0.0.2", 9000, "v2")]
    assert endpoints_of(snapshot, f"outbound|9100||{HOST}") == [("10.0.0.2", 9100, "v2")]


def test_same_host_in_another_namespace_the_older_entry_wins() -> None:
    older = service_entry(
        namespace="prod", endpoints=[{"address": "10.9.0.1", "labels": {"version": "v1"}}]
    )
    newer = service_entry(
        created=T1, endpoints=[{"address": "10.0.0.1", "labels": {"version": "v1"}}]
    )
    snapshot = build(routing(newer, older))
    # The prod entry wins, so the "default" DestinationRule is not the service's: a gateway
    # in the root namespace does not see it (push_context destinationRule), no subsets.
    assert endpoints_of(snapshot, ALL) == [("10.9.0.1", 9000, "v1")]
    assert snapshot.cluster(V1) is None


def test_entry_exported_to_the_gateways_namespace_beats_a_public_one() -> None:
    public = service_entry(
        namespace="prod", endpoints=[{"address": "10.9.0.1", "labels": {"version": "v1"}}]
    )
    exported = service_entry(
        created=T1,
        exportTo=["istio-system"],
        endpoints=[{"address": "10.0.0.1", "labels": {"version": "v1"}}],
    )
    snapshot = build(routing(public, exported))
    assert endpoints_of(snapshot, V1) == [("10.0.0.1", 9000, "v1")]


@pytest.mark.parametrize(
    ("export_to", "visible"),
    [
        (None, True),
        (["*"], True),
        (["istio-system"], True),
        (["."], False),
        (["~"], False),
        (["prod"], False),
    ],
)
def test_export_to_decides_whether_the_gateway_sees_the_entry(
    export_to: list[str] | None, visible: bool
) -> None:
    snapshot = build(routing(service_entry(exportTo=export_to)))
    assert (snapshot.cluster(V1) is not None) is visible


def test_wildcard_entry_host() -> None:
    entry = service_entry(hosts=["*.example.internal"])
    resources = MeshResources.from_objects(routing(entry))
    assert list(entry_services(resources)) == ["*.example.internal"]
    # A destination under the wildcard takes the entry's only port, but clusters are named
    # after the entry's host, as Istio names them, so that host has no cluster (NC).
    snapshot = build(routing(entry))
    assert route_destinations(snapshot) == [(V1, 50), (V2, 50)]
    assert snapshot.cluster(V1) is None
    # The wildcard host itself names the cluster.
    wildcard_route = virtual_service(("*.example.internal", "v1", 100))
    wildcard_rule = destination_rule(host="*.example.internal")
    snapshot = build([gateway_service(), gateway(), wildcard_rule, wildcard_route, entry])
    assert route_destinations(snapshot) == [("outbound|9000|v1|*.example.internal", 100)]
    assert endpoints_of(snapshot, "outbound|9000|v1|*.example.internal") == [
        ("10.0.0.1", 9000, "v1")
    ]


def test_build_is_pure_and_deterministic() -> None:
    objects = routing(service_entry(resolution="DNS", endpoints=None))
    resources = MeshResources.from_objects(objects, {HOST: ("10.0.2.1",)})
    first = build_snapshot(resources, NODE)
    second = build_snapshot(resources, NODE)
    assert first == second
    assert first.version == second.version
    assert len(resources.service_entries) == 1
    assert Snapshot.from_json(first.to_json()) == first


# ---------------------------------------------------------------- DNS in the control plane


class FakeResolver:
    """Answers from a table; a name maps to addresses or to an exception to raise."""

    def __init__(self, answers: dict[str, tuple[str, ...] | BaseException]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, name: str) -> tuple[str, ...]:
        self.asked.append(name)
        answer = self.answers.get(
            name, socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        )
        if isinstance(answer, BaseException):
            raise answer
        return answer


def dns_entry(name: str = "vm-echo", host: str = HOST, created: str = T0) -> Obj:
    return service_entry(name=name, created=created, hosts=[host], resolution="DNS", endpoints=None)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def gateway_pod() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **meta(NODE.name, NODE.namespace),
            "labels": dict(NODE.labels),
        },
        "spec": {
            "hostNetwork": True,
            "containers": [{"name": "istio-proxy", "image": "istio/proxyv2"}],
        },
        "status": {"podIP": "127.0.0.1"},
    }


def run_plane(
    tmp_path: Path,
    resolver: FakeResolver,
    scenario: Callable[[Store, ControlPlane], Any],
    dns_refresh: float = 3600,
) -> None:
    store = Store(tmp_path / "store.db")

    async def main() -> None:
        plane = ControlPlane(store, resolver=resolver, dns_refresh=dns_refresh)
        await plane.start()
        try:
            await scenario(store, plane)
        finally:
            await plane.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        store.close()


def addresses(plane: ControlPlane, name: str = ALL) -> list[str]:
    snapshot = plane.snapshot(f"{NODE.namespace}/{NODE.name}")
    if snapshot is None:
        return []
    cluster = snapshot.cluster(name)
    return [e.address for e in cluster.endpoints] if cluster else []


def test_plane_resolves_dns_entries_when_they_appear(tmp_path: Path) -> None:
    resolver = FakeResolver({HOST: ("10.0.2.1",), "late.example.internal": ("10.0.4.1",)})

    async def scenario(store: Store, plane: ControlPlane) -> None:
        store.apply([gateway_pod(), *routing(dns_entry())])
        await wait_until(lambda: addresses(plane) == ["10.0.2.1"])
        # A new name is looked up at once, not at the next (hour-long) refresh.
        store.apply([dns_entry("late", "late.example.internal", T1)])
        await wait_until(
            lambda: addresses(plane, "outbound|9000||late.example.internal") == ["10.0.4.1"]
        )
        assert set(resolver.asked) == {HOST, "late.example.internal"}

    run_plane(tmp_path, resolver, scenario)


def test_plane_refresh_follows_changes_and_survives_failures(tmp_path: Path) -> None:
    resolver = FakeResolver({HOST: ("10.0.2.1",)})

    async def scenario(store: Store, plane: ControlPlane) -> None:
        store.apply([gateway_pod(), *routing(dns_entry())])
        await wait_until(lambda: addresses(plane) == ["10.0.2.1"])
        resolver.answers[HOST] = ("10.0.2.7", "10.0.2.5")
        assert await plane.refresh_dns() is True
        assert addresses(plane) == ["10.0.2.5", "10.0.2.7"]
        # A failed lookup keeps the last answer, as Envoy's DNS clusters do.
        resolver.answers[HOST] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
        assert await plane.refresh_dns() is False
        resolver.answers[HOST] = TimeoutError()
        assert await plane.refresh_dns() is False
        assert addresses(plane) == ["10.0.2.5", "10.0.2.7"]
        # A name that no longer exists has no addresses.
        del resolver.answers[HOST]
        assert await plane.refresh_dns() is True
        assert addresses(plane) == []

    run_plane(tmp_path, resolver, scenario)


def test_plane_only_looks_up_names_dns_entries_need(tmp_path: Path) -> None:
    resolver = FakeResolver({})

    async def scenario(store: Store, plane: ControlPlane) -> None:
        store.apply([gateway_pod(), *routing(service_entry())])
        await wait_until(lambda: addresses(plane, V1) == ["10.0.0.1"])
        assert await plane.refresh_dns() is False
        assert resolver.asked == []

    run_plane(tmp_path, resolver, scenario)


def test_plane_keeps_refreshing_after_a_resolver_breaks(tmp_path: Path) -> None:
    resolver = FakeResolver({HOST: ValueError("resolver bug")})

    async def scenario(store: Store, plane: ControlPlane) -> None:
        store.apply([gateway_pod(), *routing(dns_entry())])
        await wait_until(lambda: len(resolver.asked) >= 1)
        assert addresses(plane) == []
        resolver.answers[HOST] = ("10.0.2.1",)
        await wait_until(lambda: addresses(plane) == ["10.0.2.1"])
        assert len(resolver.asked) >= 2

    run_plane(tmp_path, resolver, scenario, dns_refresh=0.05)


# ---------------------------------------------------------------- Services select WorkloadEntries


def echo_service(target_port: int | str = 9000) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("tcp-echo"),
        "spec": {
            "selector": {"app": "tcp-echo"},
            "ports": [{"name": "tcp", "port": 9000, "targetPort": target_port}],
        },
    }


def echo_rule() -> Obj:
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


def vm_entry(name: str, address: str, version: str, **extra: Any) -> Obj:
    spec = {"address": address, "labels": {"app": "tcp-echo", "version": version}, **extra}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": meta(name),
        "spec": spec,
    }


SVC = "tcp-echo.default.svc.cluster.local"


def test_a_kubernetes_service_selects_workload_entries_and_subsets_split_them() -> None:
    # serviceInstanceFromWorkloadInstance: the kube registry adds the entries its selector
    # picks; DestinationRule subsets select them by label like pods.
    snapshot = build(
        [
            echo_service(),
            echo_rule(),
            vm_entry("vm-1", "10.0.0.7", "v1"),
            vm_entry("vm-2", "10.0.0.8", "v2", ports={"tcp": 9100}),
            {**vm_entry("other-ns", "10.0.0.9", "v1"), "metadata": meta("o", "prod")},
        ]
    )
    assert endpoints_of(snapshot, f"outbound|9000|v1|{SVC}") == [("10.0.0.7", 9000, "v1")]
    # The entry names the Service's port: its own number wins over the targetPort.
    assert endpoints_of(snapshot, f"outbound|9000|v2|{SVC}") == [("10.0.0.8", 9100, "v2")]


def test_a_named_target_port_needs_the_entry_to_name_it() -> None:
    snapshot = build(
        [
            echo_service("echo"),
            vm_entry("named", "10.0.0.7", "v1", ports={"echo": 9200}),
            vm_entry("unnamed", "10.0.0.8", "v1"),
        ]
    )
    assert endpoints_of(snapshot, f"outbound|9000||{SVC}") == [("10.0.0.7", 9200, "v1")]


def test_an_unhealthy_auto_registered_entry_is_not_ready() -> None:
    entry = vm_entry("vm-1", "10.0.0.7", "v1")
    entry["metadata"]["annotations"] = {"proxy.istio.io/health-checks-enabled": "true"}
    entry["status"] = {"conditions": [{"type": "Healthy", "status": "False"}]}
    cluster = build([echo_service(), entry]).cluster(f"outbound|9000||{SVC}")
    assert cluster is not None
    assert [e.ready for e in cluster.endpoints] == [False]


def test_a_service_without_a_selector_selects_no_entry() -> None:
    service = echo_service()
    del service["spec"]["selector"]
    cluster = build([service, vm_entry("vm-1", "10.0.0.7", "v1")]).cluster(f"outbound|9000||{SVC}")
    assert cluster is not None and cluster.endpoints == ()
