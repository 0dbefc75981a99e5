"""The load-balancer layer's rules (control.loadbalancer), without sockets."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from tcpmesh.api import models
from tcpmesh.control import (
    LOAD_BALANCER_LABELS,
    NODE_PROXY_LABELS,
    BandwidthLimit,
    Listener,
    MeshResources,
    ProxyNode,
    Snapshot,
    SnapshotError,
    backend_address,
    build_snapshot,
    capped_ports,
    service_bandwidth,
    wants_load_balancer,
)
from tests.unit.test_build_snapshot import (
    NODE,
    gateway_service,
    meta,
    route,
    seed,
    virtual_service,
)

ANNOTATION = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-bandwidth"
LEGACY = "service.beta.kubernetes.io/alicloud-loadbalancer-bandwidth"
SLB_NODE = ProxyNode(
    namespace="kube-system",
    name="tcpmesh-slb-abc",
    labels=tuple(sorted(LOAD_BALANCER_LABELS.items())),
    address="127.0.0.1",
)
READY = {"conditions": [{"type": "Ready", "status": "True"}]}


def slb_pod(ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **meta("tcpmesh-slb-abc", "kube-system"),
            "labels": dict(LOAD_BALANCER_LABELS),
        },
        "spec": {"hostNetwork": True, "containers": [{"name": "slb", "image": "tcpmesh-slb"}]},
        "status": {"podIP": "127.0.0.1", **(READY if ready else {})},
    }


def gateway_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **meta("istio-ingressgateway-abc", "istio-system"),
            "labels": dict(NODE.labels),
        },
        "spec": {"hostNetwork": True, "containers": [{"name": "istio-proxy", "image": "proxyv2"}]},
        "status": {"podIP": "127.0.0.1", **READY},
    }


def gateway_endpoints() -> dict[str, Any]:
    target = {"kind": "Pod", "name": "istio-ingressgateway-abc", "namespace": "istio-system"}
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta("istio-ingressgateway", "istio-system"),
        "subsets": [
            {
                "addresses": [{"ip": "127.0.0.1", "targetRef": target}],
                "ports": [
                    {"name": "status-port", "port": 15021},
                    {"name": "http2", "port": 8080},
                    {"name": "tcp", "port": 31400},
                ],
            }
        ],
    }


def capped(service: dict[str, Any], value: str, key: str = ANNOTATION) -> dict[str, Any]:
    capped = copy.deepcopy(service)
    capped["metadata"].setdefault("annotations", {})[key] = value
    capped["status"] = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
    return capped


def lb_echo(value: str | None = "20") -> dict[str, Any]:
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("tcp-echo"),
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "tcp-echo"},
            "ports": [{"name": "tcp-9000", "port": 9000}],
        },
    }
    return capped(service, value) if value is not None else service


def world(*objects: dict[str, Any], slb_ready: bool = True) -> list[dict[str, Any]]:
    """The seed (gateway Service replaced by ``objects`` of the same name), its pods, the SLB."""
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    all_v1 = virtual_service([route("v1")])
    base = [o for o in seed(all_v1) if (o["kind"], o["metadata"]["name"]) not in names]
    return [
        *base,
        *objects,
        gateway_pod(),
        gateway_endpoints(),
        slb_pod(slb_ready),
    ]


def service(obj: dict[str, Any]) -> models.Service:
    return models.Service.model_validate(obj)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({ANNOTATION: "20"}, 20),
        ({LEGACY: "5"}, 5),
        ({ANNOTATION: "20", LEGACY: "5"}, 20),  # the current prefix wins
        ({ANNOTATION: "5000"}, 5000),
        ({ANNOTATION: "5001"}, None),
        ({ANNOTATION: "0"}, None),
        ({ANNOTATION: "2.5"}, None),
        (
            {ANNOTATION: "abc", LEGACY: "5"},
            None,
        ),  # a bad current value is not replaced by an old one
        ({}, None),
    ],
)
def test_the_cap_is_read_from_either_annotation(
    annotations: dict[str, str], expected: int | None
) -> None:
    obj = lb_echo(None)
    obj["metadata"]["annotations"] = annotations
    assert service_bandwidth(service(obj)) == expected


def test_only_capped_load_balancer_services_want_the_load_balancer() -> None:
    cluster_ip = lb_echo("20")
    cluster_ip["spec"]["type"] = "ClusterIP"
    assert not wants_load_balancer([service(cluster_ip), service(lb_echo(None))])
    assert wants_load_balancer([service(lb_echo("20"))])


def test_backend_addresses_keep_the_last_two_octets() -> None:
    assert backend_address("127.0.0.1") == "127.239.0.1"
    assert backend_address("127.0.3.170") == "127.239.3.170"


def test_nothing_is_capped_until_the_load_balancer_is_ready() -> None:
    resources = MeshResources.from_objects(world(lb_echo(), slb_ready=False))
    assert capped_ports(resources) == ()
    assert build_snapshot(resources, SLB_NODE).listeners == ()


def test_the_load_balancer_serves_a_capped_port_with_the_services_endpoints() -> None:
    snapshot = build_snapshot(MeshResources.from_objects(world(lb_echo())), SLB_NODE)
    (listener,) = snapshot.listeners
    assert (listener.address, listener.port) == ("127.0.0.1", 9000)
    assert listener.bandwidth == BandwidthLimit("default/tcp-echo", 20)
    (cluster,) = snapshot.clusters
    assert listener.routes[0].destinations[0].cluster_name == cluster.name
    assert [(e.address, e.port) for e in cluster.endpoints] == [
        ("127.1.0.1", 9000),
        ("127.1.0.2", 9000),
    ]


def test_a_port_another_service_holds_is_not_the_load_balancers() -> None:
    echo = lb_echo()
    echo["status"]["loadBalancer"]["ingress"][0]["ports"] = [
        {"port": 9000, "protocol": "TCP", "error": "port is already allocated"}
    ]
    assert build_snapshot(MeshResources.from_objects(world(echo)), SLB_NODE).listeners == ()


def test_a_capped_gateway_listens_behind_the_load_balancer() -> None:
    resources = MeshResources.from_objects(world(capped(gateway_service(), "20", LEGACY)))
    (gateway_listener,) = build_snapshot(resources, NODE).listeners
    assert (gateway_listener.address, gateway_listener.port) == ("127.239.0.1", 31400)
    assert gateway_listener.name == "127.239.0.1_31400"
    slb = build_snapshot(resources, SLB_NODE)
    # Only the port the gateway serves: 80 and the status port stay with the gateway.
    (listener,) = slb.listeners
    assert (listener.address, listener.port) == ("127.0.0.1", 31400)
    assert listener.bandwidth == BandwidthLimit("istio-system/istio-ingressgateway", 20)
    (cluster,) = slb.clusters
    assert [(e.address, e.port) for e in cluster.endpoints] == [("127.239.0.1", 31400)]


def test_an_uncapped_gateway_keeps_its_address() -> None:
    resources = MeshResources.from_objects(world(lb_echo()))
    (gateway_listener,) = build_snapshot(resources, NODE).listeners
    assert (gateway_listener.address, gateway_listener.port) == ("127.0.0.1", 31400)


def test_the_load_balancers_snapshot_survives_json() -> None:
    snapshot = build_snapshot(MeshResources.from_objects(world(lb_echo())), SLB_NODE)
    assert Snapshot.from_json(snapshot.to_json()) == snapshot


def _shaped(listener: Listener, bucket: str, mbps: int) -> Listener:
    return dataclasses.replace(listener, bandwidth=BandwidthLimit(bucket, mbps))


def test_check_rejects_a_cap_out_of_range_and_buckets_that_disagree() -> None:
    (listener,) = build_snapshot(MeshResources.from_objects(world(lb_echo())), SLB_NODE).listeners
    other = dataclasses.replace(listener, name="other", port=9001)
    with pytest.raises(SnapshotError, match=r"not 1\.\.5000"):
        Snapshot.build((_shaped(listener, "default/tcp-echo", 0),), ()).check()
    with pytest.raises(SnapshotError, match="disagrees on bucket default/tcp-echo"):
        Snapshot.build(
            (_shaped(listener, "default/tcp-echo", 20), _shaped(other, "default/tcp-echo", 5)), ()
        ).check()


def test_the_node_proxy_leaves_a_capped_port_to_the_load_balancer() -> None:
    node_proxy = ProxyNode(
        namespace="kube-system",
        name="tcpmesh-node-proxy-abc",
        labels=tuple(sorted(NODE_PROXY_LABELS.items())),
        address="127.0.0.1",
    )
    bound = {
        (lst.address, lst.port)
        for lst in build_snapshot(
            MeshResources.from_objects(world(lb_echo())), node_proxy
        ).listeners
    }
    assert ("127.0.0.1", 9000) not in bound
    before = MeshResources.from_objects(world(lb_echo(), slb_ready=False))
    assert ("127.0.0.1", 9000) in {
        (lst.address, lst.port) for lst in build_snapshot(before, node_proxy).listeners
    }
