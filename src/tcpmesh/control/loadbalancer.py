"""The load-balancer layer: where a Service's bandwidth cap is enforced, and what it forwards to.

Alibaba Cloud's ``...-loadbalancer-bandwidth`` annotation caps a LoadBalancer Service's
SLB instance: all its connections together, each direction on its own. Envoy can only
limit one connection at a time (``tcp_bandwidth_limit``), so tcpmesh enforces the cap
where the cloud does, in front of the data plane: a built-in load balancer, the pod
``kube-system/tcpmesh-slb``, fed a Snapshot of its own built here. Every rule is decided
here; the load balancer only reads its listeners (``Listener.bandwidth``) and clusters.

- It serves only capped ports: every TCP port of a LoadBalancer Service with a valid cap,
  at ``status.loadBalancer.ingress[0].ip``. Other Services pay no extra hop.
- It forwards to the Service's ready endpoints, balancing itself (an ENI-direct SLB).
- A gateway proxy runs with the host's network, so its address *is* the load-balancer
  address: for a capped port it listens on the backend address ``127.239.C.D`` (C.D: the
  last two octets of the load-balancer address) instead, and the load balancer
  forwards there. The move waits until the load balancer pod is Ready, so that the port
  is never left without a listener.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from tcpmesh.api import load_balancer_bandwidth, models, pod_ready
from tcpmesh.control.resources import (
    LOAD_BALANCER_LABELS,
    LOAD_BALANCER_NAMESPACE,
    MeshResources,
    ProxyNode,
    labels_match,
    service_fqdn,
)
from tcpmesh.control.snapshot import (
    BandwidthLimit,
    Cluster,
    Endpoint,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
    cluster_name,
)
from tcpmesh.registry import LB_BACKEND_NETWORK

ListenersOf = Callable[[ProxyNode], Iterable[Listener]]


def service_bandwidth(service: models.Service) -> int | None:
    """The Service's cap in Mbit/s, or None (the rule is api.load_balancer_bandwidth)."""
    return load_balancer_bandwidth(service.metadata.annotations or {})


def load_balancer_frontend(service: models.Service) -> tuple[str, frozenset[int] | None] | None:
    """The load-balancer address, and the ports the Service holds there (None: all of
    them; a port another Service holds carries an ``error`` and is not this one's)."""
    ingress = ((service.status or {}).get("loadBalancer") or {}).get("ingress") or []
    first = ingress[0] if ingress and isinstance(ingress[0], Mapping) else {}
    address = first.get("ip")
    if not address:
        return None
    ports = first.get("ports")
    if not isinstance(ports, list):
        return str(address), None
    held = {int(p["port"]) for p in ports if isinstance(p, Mapping) and "error" not in p}
    return str(address), frozenset(held)


def backend_address(address: str) -> str:
    """Where a gateway on ``address`` listens for a port the load balancer took over."""
    packed = ipaddress.ip_address(address).packed
    # Gateway proxies listen there for the ports the load balancer took over.
    return str(LB_BACKEND_NETWORK[int.from_bytes(packed[-2:], "big")])


def load_balancer_ready(resources: MeshResources) -> bool:
    """Whether a load balancer pod has its first Snapshot (its status port answers)."""
    return any(
        p.namespace == LOAD_BALANCER_NAMESPACE
        and labels_match(LOAD_BALANCER_LABELS, p.metadata.labels)
        and pod_ready(p.status)
        for p in resources.pods
    )


def wants_load_balancer(services: Iterable[models.Service]) -> bool:
    """Whether any Service needs the load balancer (the runtime runs it only then)."""
    return any(s.spec.type == "LoadBalancer" and service_bandwidth(s) is not None for s in services)


@dataclass(frozen=True)
class CappedPort:
    service: models.Service
    index: int  # in spec.ports
    port: int
    address: str  # the load-balancer address
    mbps: int

    @property
    def bucket(self) -> str:
        return f"{self.service.namespace}/{self.service.name}"


def capped_ports(resources: MeshResources) -> tuple[CappedPort, ...]:
    """The TCP ports the load balancer serves: none until its pod is Ready (a step of the
    build cache: it reads the Services and the pods)."""
    return resources.cache.get(
        "capped_ports",
        resources.stamps("services", "pods"),
        (),
        lambda: _capped_ports(resources),
    )


def _capped_ports(resources: MeshResources) -> tuple[CappedPort, ...]:
    if not load_balancer_ready(resources):
        return ()
    found: list[CappedPort] = []
    for service in resources.services:
        mbps = service_bandwidth(service)
        frontend = load_balancer_frontend(service)
        if service.spec.type != "LoadBalancer" or mbps is None or frontend is None:
            continue
        address, held = frontend
        for index, port in enumerate(service.spec.ports):
            if port.protocol == "TCP" and (held is None or port.port in held):
                found.append(CappedPort(service, index, port.port, address, mbps))
    return tuple(found)


def move_to_backends(resources: MeshResources, listeners: Iterable[Listener]) -> Iterator[Listener]:
    """A proxy's listeners, those on a capped load-balancer address:port moved behind it."""
    capped = {(c.address, c.port) for c in capped_ports(resources)}
    for listener in listeners:
        if (listener.address, listener.port) not in capped:
            yield listener
            continue
        backend = backend_address(listener.address)
        yield replace(listener, name=f"{backend}_{listener.port}", address=backend)


def load_balancer_snapshot(
    resources: MeshResources, clusters: Iterable[Cluster], listeners_of: ListenersOf
) -> Snapshot:
    """The load balancer's table: a shaped listener per capped port, and its cluster."""
    by_name = {c.name: c for c in clusters}
    listeners: list[Listener] = []
    used: list[Cluster] = []
    for capped in capped_ports(resources):
        fqdn = service_fqdn(capped.service.name, capped.service.namespace)
        cluster = by_name.get(cluster_name(capped.port, "", fqdn))
        if cluster is None:
            continue
        cluster = _behind(resources, cluster, capped, listeners_of)
        if cluster is None:
            continue
        listeners.append(_shaped_listener(capped, cluster))
        used.append(cluster)
    return Snapshot.build(tuple(listeners), tuple(sorted(used, key=lambda c: c.name))).check()


def _shaped_listener(capped: CappedPort, cluster: Cluster) -> Listener:
    service = capped.service
    origin = RouteOrigin("Service", service.namespace, service.name, capped.index, "ports")
    destination = WeightedCluster(cluster.name, 1, cluster.service, "", cluster.port)
    route = TcpRoute((destination,), origin, stat_prefix=cluster.name, idle_timeout=None)
    return Listener(
        name=f"{capped.address}_{capped.port}",
        address=capped.address,
        port=capped.port,
        routes=(route,),
        bandwidth=BandwidthLimit(capped.bucket, capped.mbps),
    )


def _behind(
    resources: MeshResources, cluster: Cluster, capped: CappedPort, listeners_of: ListenersOf
) -> Cluster | None:
    """The cluster with a gateway endpoint on the load-balancer address replaced by the
    gateway's backend listener; None when such a gateway does not listen on the port
    (its status port, say), which is then left to it untouched."""
    endpoints: list[Endpoint] = []
    dropped = False
    for endpoint in cluster.endpoints:
        if endpoint.address != capped.address:
            endpoints.append(endpoint)
        elif _listens(resources, endpoint, capped, listeners_of):
            backend = backend_address(capped.address)
            endpoints.append(replace(endpoint, address=backend, port=capped.port))
        else:
            dropped = True
    if dropped and not endpoints:
        return None
    return replace(cluster, lb_policy="ROUND_ROBIN", endpoints=tuple(endpoints))


def _listens(
    resources: MeshResources, endpoint: Endpoint, capped: CappedPort, listeners_of: ListenersOf
) -> bool:
    namespace, _, name = endpoint.workload.partition("/")
    pod = next((p for p in resources.pods if (p.namespace, p.name) == (namespace, name)), None)
    if pod is None:
        return False
    node = ProxyNode.from_pod(pod)
    return any(
        (lst.address, lst.port) == (capped.address, capped.port) for lst in listeners_of(node)
    )
