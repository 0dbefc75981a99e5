"""A build that reuses earlier steps (control.buildcache) equals the full rebuild.

The control plane keeps one BuildCache across generations; after any sequence of edits,
every proxy's Snapshot built with it must be the one a fresh build makes: same parts,
same version, same JSON. Hypothesis draws the edits (weights, ports, gateways, subsets,
pod labels, endpoints, traffic policy, sourceLabels, ServiceEntries, deletions) over a
small mesh with a gateway, a node proxy and a load balancer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpmesh.api import from_dict
from tcpmesh.control import (
    LOAD_BALANCER_LABELS,
    MeshResources,
    ProxyNode,
    Snapshot,
    build_snapshot,
)
from tcpmesh.control.buildcache import BuildCache

NS = "app"
SERVICES = 3
GATEWAY_POD = ("istio-system", "gw-0", {"istio": "ingressgateway"}, "127.0.0.10")
NODE_PROXY_POD = (
    "kube-system",
    "tcpmesh-node-proxy",
    {"app": "tcpmesh-node-proxy", "tcpmesh.io/component": "node-proxy"},
    "127.0.0.11",
)
SLB_POD = ("kube-system", "tcpmesh-slb", dict(LOAD_BALANCER_LABELS), "127.0.0.12")
Objects = dict[tuple[str, str, str], dict[str, Any]]


def meta(name: str, namespace: str = NS, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:00Z"}


def pod(namespace: str, name: str, labels: dict[str, str], ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta(name, namespace), "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {
            "podIP": ip,
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def service(i: int) -> list[dict[str, Any]]:
    name = f"svc-{i}"
    pods = [(f"{name}-{v}", v, f"10.0.{i}.{k + 1}") for k, v in enumerate(("v1", "v2"))]
    objs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name),
            "spec": {
                "clusterIP": f"10.96.0.{i + 1}",
                "selector": {"app": name},
                "ports": [{"name": "tcp", "port": 9000}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta(name),
            "subsets": [
                {
                    "addresses": [
                        {"ip": ip, "targetRef": {"kind": "Pod", "name": p, "namespace": NS}}
                        for p, _, ip in pods
                    ],
                    "ports": [{"name": "tcp", "port": 9000}],
                }
            ],
        },
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": meta(name),
            "spec": {
                "host": name,
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
        virtual_service(i, 80, 31400 + i, ["gw"]),
    ]
    objs += [pod(NS, p, {"app": name, "version": v}, ip) for p, v, ip in pods]
    return objs


def virtual_service(i: int, weight: int, port: int, gateways: list[str]) -> dict[str, Any]:
    host = f"svc-{i}"
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": meta(f"vs-{i}"),
        "spec": {
            "hosts": ["*"] if "mesh" not in gateways else [host],
            "gateways": gateways,
            "tcp": [
                {
                    "match": [{"port": port}] if "mesh" not in gateways else [],
                    "route": [
                        {"destination": {"host": host, "subset": "v1"}, "weight": weight},
                        {"destination": {"host": host, "subset": "v2"}, "weight": 100 - weight},
                    ],
                }
            ],
        },
    }


def mesh() -> Objects:
    objs = [pod(*GATEWAY_POD), pod(*NODE_PROXY_POD), pod(*SLB_POD)]
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("istio-ingressgateway", "istio-system"),
            "spec": {
                "type": "LoadBalancer",
                "selector": {"istio": "ingressgateway"},
                "ports": [{"name": f"tcp-{p}", "port": 31400 + p} for p in range(SERVICES + 2)],
            },
        }
    )
    objs.append(
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "Gateway",
            "metadata": meta("gw"),
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {
                        "port": {"number": 31400 + i, "name": f"tcp-{i}", "protocol": "TCP"},
                        "hosts": ["*"],
                    }
                    for i in range(SERVICES + 1)
                ],
            },
        }
    )
    for i in range(SERVICES):
        objs += service(i)
    return {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}


def _get(objs: Objects, kind: str, name: str) -> dict[str, Any] | None:
    return objs.get((kind, NS, name))


def edit_weight(objs: Objects, i: int, x: int) -> None:
    vs = _get(objs, "VirtualService", f"vs-{i}")
    route = vs["spec"]["tcp"][0]["route"] if vs is not None else []
    if len(route) == 2:
        route[0]["weight"], route[1]["weight"] = x, 100 - x


def edit_port(objs: Objects, i: int, x: int) -> None:
    objs[("VirtualService", NS, f"vs-{i}")] = virtual_service(
        i, 50, 31400 + x % (SERVICES + 1), ["gw"]
    )


def edit_to_mesh(objs: Objects, i: int, x: int) -> None:
    objs[("VirtualService", NS, f"vs-{i}")] = virtual_service(i, x, 0, ["mesh"])


def edit_source_labels(objs: Objects, i: int, x: int) -> None:
    vs = virtual_service(i, x, 0, ["mesh"])
    vs["spec"]["tcp"][0]["match"] = [{"sourceLabels": {"version": "v1"}}]
    objs[("VirtualService", NS, f"vs-{i}")] = vs


def edit_mesh_wildcard(objs: Objects, i: int, x: int) -> None:
    """A mesh rule for every Service of the namespace, listed after its exact ones."""
    vs = virtual_service(i, x, 0, ["mesh"])
    vs["spec"]["hosts"] = [f"*.{NS}.svc.cluster.local"]
    objs[("VirtualService", NS, f"vs-{i}")] = vs


def edit_export_to(objs: Objects, i: int, x: int) -> None:
    """A mesh rule only its own namespace's sidecars see (outsiders keep the Service's)."""
    vs = virtual_service(i, x, 0, ["mesh"])
    vs["spec"]["exportTo"] = ["other" if x % 2 else "."]
    objs[("VirtualService", NS, f"vs-{i}")] = vs


def edit_source_namespace(objs: Objects, i: int, x: int) -> None:
    """A client pod in another namespace (a class of its own) and a rule for it alone."""
    objs[("Pod", "other", f"client-{i}")] = pod("other", f"client-{i}", {}, f"10.8.0.{i + 1}")
    vs = virtual_service(i, x, 0, ["mesh"])
    vs["spec"]["tcp"][0]["match"] = [{"sourceNamespace": "other" if x % 2 else NS}]
    objs[("VirtualService", NS, f"vs-{i}")] = vs


def edit_workload_selector(objs: Objects, i: int, x: int) -> None:
    """A DestinationRule for the v1 pods only: the classes' labels start to matter."""
    dr = _get(objs, "DestinationRule", f"svc-{i}")
    if dr is not None:
        dr["spec"]["workloadSelector"] = {"matchLabels": {"version": "v1"}}
        dr["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"idleTimeout": f"{x + 1}s"}}}


def edit_delete_vs(objs: Objects, i: int, x: int) -> None:
    objs.pop(("VirtualService", NS, f"vs-{i}"), None)


def edit_subsets(objs: Objects, i: int, x: int) -> None:
    dr = _get(objs, "DestinationRule", f"svc-{i}")
    if dr is not None:
        dr["spec"]["subsets"] = dr["spec"]["subsets"][: x % 3]


def edit_policy(objs: Objects, i: int, x: int) -> None:
    dr = _get(objs, "DestinationRule", f"svc-{i}")
    if dr is not None:
        dr["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"idleTimeout": f"{x + 1}s"}}}


def edit_delete_dr(objs: Objects, i: int, x: int) -> None:
    objs.pop(("DestinationRule", NS, f"svc-{i}"), None)


def edit_pod_labels(objs: Objects, i: int, x: int) -> None:
    p = _get(objs, "Pod", f"svc-{i}-v1")
    if p is not None:
        p["metadata"]["labels"]["version"] = "v2" if x % 2 else "v1"


def edit_endpoints(objs: Objects, i: int, x: int) -> None:
    ep = _get(objs, "Endpoints", f"svc-{i}")
    if ep is not None:
        addresses = ep["subsets"][0]["addresses"]
        ep["subsets"][0]["addresses"] = addresses[: x % 3] if x % 3 < len(addresses) else addresses


def edit_service_port(objs: Objects, i: int, x: int) -> None:
    svc = _get(objs, "Service", f"svc-{i}")
    if svc is not None:
        svc["spec"]["ports"] = [{"name": "tcp", "port": 9000 + x % 2}]
        svc["spec"]["type"] = "NodePort" if x % 2 else "ClusterIP"
        if x % 2:
            svc["spec"]["ports"][0]["nodePort"] = 30000 + i


def edit_service_entry(objs: Objects, i: int, x: int) -> None:
    objs[("ServiceEntry", NS, f"se-{i}")] = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "ServiceEntry",
        "metadata": meta(f"se-{i}"),
        "spec": {
            "hosts": [f"ext-{i}.example"],
            "ports": [{"number": 7000 + x % 3, "name": "tcp", "protocol": "TCP"}],
            "resolution": "STATIC",
            "endpoints": [{"address": f"10.9.0.{i + 1}"}],
        },
    }
    vs = virtual_service(i, 100, 31400 + i, ["gw"])
    vs["spec"]["tcp"][0]["route"] = [{"destination": {"host": f"ext-{i}.example"}}]
    objs[("VirtualService", NS, f"vs-{i}")] = vs


def edit_gateway(objs: Objects, i: int, x: int) -> None:
    gw = objs[("Gateway", NS, "gw")]
    server = gw["spec"]["servers"][i]
    server["port"]["number"] = 31400 + (i + x) % (SERVICES + 2)


def edit_restore(objs: Objects, i: int, x: int) -> None:
    fresh = mesh()
    for key in [k for k in fresh if k[2] in (f"svc-{i}", f"vs-{i}", f"svc-{i}-v1", f"svc-{i}-v2")]:
        objs[key] = fresh[key]


EDITS: list[Callable[[Objects, int, int], None]] = [
    edit_weight,
    edit_port,
    edit_to_mesh,
    edit_source_labels,
    edit_mesh_wildcard,
    edit_export_to,
    edit_source_namespace,
    edit_workload_selector,
    edit_delete_vs,
    edit_subsets,
    edit_policy,
    edit_delete_dr,
    edit_pod_labels,
    edit_endpoints,
    edit_service_port,
    edit_service_entry,
    edit_gateway,
    edit_restore,
]
NODES = [GATEWAY_POD, NODE_PROXY_POD, SLB_POD]


class Follower:
    """What the control plane does: typed objects kept until rewritten, one cache."""

    def __init__(self) -> None:
        self.cache = BuildCache()
        self.typed: dict[tuple[str, str, str], tuple[dict[str, Any], Any]] = {}

    def sync(self, objs: Objects) -> MeshResources:
        for key in [k for k in self.typed if k not in objs]:
            del self.typed[key]
        for key, obj in objs.items():
            known = self.typed.get(key)
            if known is None or known[0] != obj:
                self.typed[key] = (copy.deepcopy(obj), from_dict(copy.deepcopy(obj)))
        self.cache.advance()
        return MeshResources.from_resources((t for _, t in self.typed.values()), None, self.cache)


def node_of(resources: MeshResources, namespace: str, name: str) -> ProxyNode:
    found = next(p for p in resources.pods if (p.namespace, p.name) == (namespace, name))
    return ProxyNode.from_pod(found)


def full_build(objs: Objects, namespace: str, name: str) -> Snapshot:
    resources = MeshResources.from_resources(from_dict(copy.deepcopy(o)) for o in objs.values())
    return build_snapshot(resources, node_of(resources, namespace, name))


def assert_same(incremental: Snapshot, full: Snapshot) -> None:
    assert incremental == full
    assert incremental.version == full.version
    assert incremental.to_json() == full.to_json()


edits = st.lists(
    st.tuples(st.sampled_from(EDITS), st.integers(0, SERVICES - 1), st.integers(0, 100)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_every_proxy_gets_the_full_rebuilds_snapshot_after_any_edits(
    steps: list[tuple[Callable[[Objects, int, int], None], int, int]],
) -> None:
    objs = mesh()
    follower = Follower()
    for edit, i, x in [(edit_restore, 0, 0), *steps]:
        edit(objs, i, x)
        resources = follower.sync(objs)
        for namespace, name, _, _ in NODES:
            node = node_of(resources, namespace, name)
            assert_same(build_snapshot(resources, node), full_build(objs, namespace, name))


def test_an_unchanged_part_is_the_same_object_and_a_changed_one_is_new() -> None:
    objs = mesh()
    follower = Follower()
    gateway = GATEWAY_POD[:2]
    before = build_snapshot(resources := follower.sync(objs), node_of(resources, *gateway))
    assert len(before.listeners) == SERVICES
    edit_weight(objs, 1, 30)
    after = build_snapshot(resources := follower.sync(objs), node_of(resources, *gateway))
    assert after.version != before.version
    by_name = {lst.name: lst for lst in before.listeners}
    changed = [lst.name for lst in after.listeners if lst is not by_name[lst.name]]
    assert changed == ["0.0.0.0_31401"]
    assert all(a is b for a, b in zip(after.clusters, before.clusters, strict=True))
    assert follower.cache.misses > 0 and follower.cache.hits > 0


def test_a_cache_drops_what_no_build_used_since_the_last_advance() -> None:
    cache = BuildCache()
    inputs = (object(),)
    assert cache.get("step", 1, inputs, lambda: "first") == "first"
    cache.advance()
    assert cache.get("step", 1, inputs, lambda: "again") == "first"  # used: kept
    cache.advance()
    cache.advance()
    assert len(cache) == 0
    assert cache.get("step", 1, inputs, lambda: "again") == "again"


def test_a_node_proxy_rebuild_makes_only_the_listener_its_mesh_rule_changes() -> None:
    objs = mesh()
    follower = Follower()
    node_proxy = NODE_PROXY_POD[:2]
    edit_to_mesh(objs, 1, 30)
    before = build_snapshot(resources := follower.sync(objs), node_of(resources, *node_proxy))
    edit_weight(objs, 0, 10)  # a gateway's rule: nothing of the node proxy's changes
    same = build_snapshot(resources := follower.sync(objs), node_of(resources, *node_proxy))
    assert same.version == before.version
    assert all(a is b for a, b in zip(same.listeners, before.listeners, strict=True))
    edit_weight(objs, 1, 40)  # the mesh rule of svc-1
    after = build_snapshot(resources := follower.sync(objs), node_of(resources, *node_proxy))
    by_name = {lst.name: lst for lst in before.listeners}
    changed = [lst.name for lst in after.listeners if lst is not by_name[lst.name]]
    assert changed == ["10.96.0.2_9000"]
    weights = [d.weight for d in after.listeners[1].routes[-1].destinations]
    assert weights == [40, 60]
