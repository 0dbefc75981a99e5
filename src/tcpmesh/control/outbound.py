"""The node proxy's table: every Service's cluster IP, node ports and load-balancer
addresses, with Istio's sidecar-outbound TCP routing on the cluster IPs.

References (istio/istio): pilot/pkg/networking/core/listener.go (one outbound listener
per Service port on its VIP, ``<vip>_<port>``), tls.go (buildSidecarOutboundTCPFilterChainOpts,
matchTCP, getConfigsForHost), networkfilter.go (buildOutboundNetworkFiltersWithSingleDestination),
model/push_context.go (VirtualServicesForGateway with the ``mesh`` gateway).

Istio builds a table per sidecar: the sidecar knows its own labels and namespace, so a
``sourceLabels`` or ``sourceNamespace`` match is decided while building. One node proxy
serves every pod of the node, and tells them apart by the address they connect from
(every pod has its own). So the builder makes Istio's per-sidecar decision once per
*source class* (the pods of one namespace with one label set, and the processes outside
any workload: no labels, no namespace, so ``sourceLabels`` and ``sourceNamespace`` never
match them), and gives every class whose outcome differs from the outsiders' a route
matched by its pods' addresses (Envoy's ``source_prefix_ranges``). The outsiders' route
matches every client and comes last. Both data planes then pick what the pod's own
sidecar would have picked.

A listener binds one cluster IP, so a ``destinationSubnets`` match is decided here too:
among the filter chains Istio would make, the one Envoy would select for that address
(the most specific subnet containing it; a chain without subnets matches any).

Node ports and load-balancer addresses are kube-proxy's: the Service port's endpoints
(with its DestinationRule's traffic policy, which the cluster carries), never routed by a
VirtualService, as in Istio, where traffic entering through them is no sidecar's
outbound traffic. A gateway's LoadBalancer Service is served by the gateway pods on the
node's address, so the node proxy leaves it alone.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from tcpmesh.api import hosts_overlap, models
from tcpmesh.control.gatewayapi import workload_labels
from tcpmesh.control.loadbalancer import capped_ports, load_balancer_frontend
from tcpmesh.control.policy import route_settings
from tcpmesh.control.resources import (
    INGRESS_GATEWAY_SELECTOR,
    MeshResources,
    ProxyNode,
    labels_match,
    resolve_gateway_name,
    resolve_host,
    service_fqdn,
)
from tcpmesh.control.routes import (
    rule_for_host,
    tcp_route,
    virtual_services_for_gateway,
)
from tcpmesh.control.snapshot import (
    Cluster,
    L4Match,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
    cluster_name,
)

# Istio's name for the sidecars' implicit gateway (constants.IstioMeshGateway).
MESH_GATEWAY = "mesh"


@dataclass(frozen=True)
class SourceClass:
    """Clients the routing cannot tell apart: one namespace, one label set.

    ``OUTSIDE`` (namespace "") stands for every process that is not a pod, and for
    host-network pods, which connect from the node's address."""

    namespace: str
    labels: tuple[tuple[str, str], ...]
    addresses: tuple[str, ...] = ()

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


OUTSIDE = SourceClass("", ())


def outbound_snapshot(
    resources: MeshResources, node: ProxyNode, clusters: tuple[Cluster, ...]
) -> Snapshot:
    # Three steps, so that a VirtualService's event does not group the pods again: the
    # classes read the pods; whether labels matter reads the rules; the views read both.
    classes = resources.cache.get(
        "source_classes",
        (resources.stamps("pods"), node),
        (),
        lambda: source_classes(resources, node),
    )
    matter = resources.cache.get(
        "labels_matter",
        resources.stamps("virtual_services", "destination_rules"),
        (),
        lambda: labels_matter(resources),
    )
    views = resources.cache.get(
        "rule_views", matter, (classes,), lambda: rule_views(classes, labels_matter=matter)
    )
    # Equal classes, the same tuple: the listeners' steps take it by identity, and a
    # pod change that leaves the classes as they were must not miss them all.
    views = resources.cache.get("source_classes_value", views, (), lambda: views)
    listeners = itertools.chain(
        cluster_ip_listeners(resources, views),
        node_port_listeners(resources, node),
        load_balancer_listeners(resources, node),
    )
    return Snapshot.build(tuple(_first_per_address(listeners)), clusters).check()


def _first_per_address(listeners: Iterable[Listener]) -> Iterator[Listener]:
    """One listener per address:port, the first (the ranges keep them apart; this only
    guards against a Service stored with a colliding address before that rule)."""
    bound: set[tuple[str, int]] = set()
    for listener in listeners:
        if (listener.address, listener.port) not in bound:
            bound.add((listener.address, listener.port))
            yield listener


def source_classes(resources: MeshResources, node: ProxyNode) -> tuple[SourceClass, ...]:
    """The pods' source classes, by their pod IPs (host-network pods are outsiders)."""
    grouped: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = {}
    for pod in resources.pods:
        ip = str((pod.status or {}).get("podIP") or "")
        if not ip or pod.spec.host_network or ip == node.address:
            continue
        key = (pod.namespace, tuple(sorted(pod.metadata.labels.items())))
        grouped.setdefault(key, []).append(ip)
    return tuple(
        SourceClass(namespace, labels, _sorted_ips(ips))
        for (namespace, labels), ips in sorted(grouped.items())
    )


def service_cluster_ip(service: models.Service) -> str | None:
    """The Service's virtual IP; None for headless and ExternalName Services."""
    ip = service.spec.cluster_ip
    if service.spec.type == "ExternalName" or not ip or ip == "None":
        return None
    return ip


def _tcp_ports(service: models.Service) -> Iterator[tuple[int, models.ServicePort]]:
    for index, port in enumerate(service.spec.ports):
        if port.protocol == "TCP":
            yield index, port


def cluster_ip_listeners(
    resources: MeshResources, classes: tuple[SourceClass, ...]
) -> Iterator[Listener]:
    # The sidecars' VirtualServices depend on a class's namespace only, and namespaces
    # that see the same ones share an index: each listener looks its host up once per
    # distinct index, not once per class. ``sight`` maps each namespace (outsiders
    # first) to its index's place, and goes into the listeners' keys.
    namespaces = tuple(dict.fromkeys(("", *(c.namespace for c in classes))))
    indexes = [_mesh_hosts_index(resources, namespace) for namespace in namespaces]
    distinct = list({id(index): index for index in indexes}.values())
    sight = tuple(next(i for i, d in enumerate(distinct) if d is x) for x in indexes)
    for service in resources.services_in_order:
        address = service_cluster_ip(service)
        if address is None:
            continue
        fqdn = service_fqdn(service.name, service.namespace)
        seen = [_virtual_services_for_host(index, fqdn) for index in distinct]
        for index, _ in _tcp_ports(service):
            yield _cluster_ip_listener(resources, service, index, address, classes, sight, seen)


# What a cluster-IP listener reads besides its Service, the source classes and the
# ``mesh`` VirtualServices for the Service's host: its routes' destinations and rules.
ROUTE_KINDS = ("services", "service_entries", "destination_rules")


def _cluster_ip_listener(
    resources: MeshResources,
    service: models.Service,
    index: int,
    address: str,
    classes: tuple[SourceClass, ...],
    sight: tuple[int, ...],
    seen: list[tuple[models.VirtualService, ...]],
) -> Listener:
    """A step of the build cache: the VirtualServices it reads are those a sidecar in
    each class's namespace sees for the Service's host (``seen``, one entry per distinct
    view, ``sight`` saying which namespace has which); the classes fix which namespaces
    those are, and are taken by identity."""
    return resources.cache.get(
        "cluster_ip_listener",
        (resources.stamps(*ROUTE_KINDS), index, address, sight, tuple(map(len, seen))),
        (service, classes, *itertools.chain.from_iterable(seen)),
        partial(_mesh_listener, resources, service, index, address, classes),
    )


def _mesh_listener(
    resources: MeshResources,
    service: models.Service,
    index: int,
    address: str,
    classes: tuple[SourceClass, ...],
) -> Listener:
    routes = mesh_routes(resources, service, index, address, classes)
    return Listener(
        f"{address}_{service.spec.ports[index].port}",
        address,
        service.spec.ports[index].port,
        routes,
    )


def mesh_routes(
    resources: MeshResources,
    service: models.Service,
    index: int,
    address: str,
    classes: Sequence[SourceClass],
) -> tuple[TcpRoute, ...]:
    """The listener's routes: per client address where a class fares unlike outsiders."""
    outside = sidecar_route(resources, service, index, address, OUTSIDE)
    by_route: dict[TcpRoute, list[str]] = {}
    for source in classes:
        route = sidecar_route(resources, service, index, address, source)
        if route != outside:
            by_route.setdefault(route, []).extend(source.addresses)
    sourced = (
        dataclasses.replace(route, match=L4Match(source_prefixes=_prefixes(addresses)))
        for route, addresses in by_route.items()
    )
    return (*sourced, outside)


def labels_matter(resources: MeshResources) -> bool:
    """Whether a class's labels can change a route: some VirtualService matches
    sourceLabels, or some DestinationRule selects workloads."""
    return any(dr.spec.workload_selector is not None for dr in resources.destination_rules) or any(
        match is not None and match.source_labels
        for vs in resources.virtual_services
        for rule in vs.spec.tcp
        for match in rule.match or ()
    )


def rule_views(classes: Sequence[SourceClass], *, labels_matter: bool) -> tuple[SourceClass, ...]:
    """The classes as the rules see them: namespace always, labels only where they
    matter (``labels_matter``). Classes that differ in nothing else merge (their
    addresses together), so a Service's routes are worked out once per view, not once
    per pod label set."""
    if labels_matter:
        return tuple(classes)
    merged: dict[str, list[str]] = {}
    for source in classes:
        merged.setdefault(source.namespace, []).extend(source.addresses)
    return tuple(
        SourceClass(namespace, (), _sorted_ips(ips)) for namespace, ips in sorted(merged.items())
    )


def _sorted_ips(ips: Iterable[str]) -> tuple[str, ...]:
    """The distinct addresses in numeric order."""
    return tuple(sorted(set(ips), key=_ip_order))


@functools.lru_cache(maxsize=1 << 16)
def _ip_order(address: str) -> tuple[int, int]:
    """An address's place in numeric order, parsed once (the pods' addresses are sorted
    again whenever a pod changes, and parsing is most of that)."""
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def _prefixes(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"{a}/32" for a in _sorted_ips(addresses))


def sidecar_route(
    resources: MeshResources,
    service: models.Service,
    index: int,
    address: str,
    source: SourceClass,
) -> TcpRoute:
    """The route a sidecar of ``source`` would give a connection to ``address``."""
    chains = sidecar_tcp_chains(resources, service, index, source)
    return max(chains, key=lambda chain: _subnet_rank(chain[0], address))[1]


def _subnet_rank(subnets: tuple[str, ...], address: str) -> int:
    """Envoy's destination match: -1 outside, 0 no subnets, 1 + the longest prefix."""
    if not subnets:
        return 0
    ip = ipaddress.ip_address(address)
    ranks = [
        net.prefixlen + 1
        for net in (ipaddress.ip_network(s, strict=False) for s in subnets)
        if net.version == ip.version and ip in net
    ]
    return max(ranks, default=-1)


Chain = tuple[tuple[str, ...], TcpRoute]


def sidecar_tcp_chains(
    resources: MeshResources, service: models.Service, index: int, source: SourceClass
) -> list[Chain]:
    """buildSidecarOutboundTCPFilterChainOpts for one sidecar: (destination subnets,
    route) in Istio's order, ending at the first rule or match without subnets, or with
    the Service's own route when no such rule fits."""
    port = service.spec.ports[index].port
    # The DestinationRules are looked up as a sidecar of the source class would.
    sidecar = ProxyNode(source.namespace, "", source.labels, "")
    chains: list[Chain] = []
    fqdn = service_fqdn(service.name, service.namespace)
    for vs in mesh_virtual_services(resources, fqdn, source.namespace):
        for rule_index, rule in enumerate(vs.spec.tcp):
            if not rule.route:
                continue
            subnets: list[str] = []
            for match in rule.match or [None]:
                if not _match_tcp(match, vs.namespace, source, port):
                    continue
                if match is None or not match.destination_subnets:
                    chains.append(((), tcp_route(resources, sidecar, vs, rule_index, rule, port)))
                    return chains
                subnets.extend(match.destination_subnets)
            if subnets:
                chains.append(
                    (tuple(subnets), tcp_route(resources, sidecar, vs, rule_index, rule, port))
                )
    chains.append(((), service_route(resources, sidecar, service, index)))
    return chains


def mesh_virtual_services(
    resources: MeshResources, fqdn: str, namespace: str
) -> tuple[models.VirtualService, ...]:
    """getConfigsForHost over the ``mesh`` VirtualServices a sidecar in ``namespace``
    sees (exportTo from its namespace; outsiders, namespace "", see the public ones only)."""
    return _virtual_services_for_host(_mesh_hosts_index(resources, namespace), fqdn)


def _virtual_services_for_host(
    index: MeshHostsIndex, fqdn: str
) -> tuple[models.VirtualService, ...]:
    exact, wild, vss = index
    found = exact.get(fqdn, ())
    if not wild:
        return tuple(vss[p] for p in found)
    positions = set(found)
    positions.update(
        p
        for p in wild
        if any(hosts_overlap(resolve_host(h, vss[p].namespace), fqdn) for h in vss[p].spec.hosts)
    )
    return tuple(vss[p] for p in sorted(positions))


@functools.lru_cache(maxsize=4096)
def _sidecar(namespace: str) -> ProxyNode:
    """A sidecar in ``namespace``, as ``virtual_services_for_gateway`` sees it (it reads
    the namespace only)."""
    return ProxyNode(namespace, "", (), "")


MeshHostsIndex = tuple[dict[str, list[int]], tuple[int, ...], tuple[models.VirtualService, ...]]


def _mesh_hosts_index(resources: MeshResources, namespace: str) -> MeshHostsIndex:
    """The ``mesh`` VirtualServices a sidecar in ``namespace`` sees, in order: by exact
    host, the positions of those with a wildcard host (which are matched one by one),
    and all of them. A Service's VirtualServices without scanning them all; worked out
    once per set of resources and namespace."""
    vss = virtual_services_for_gateway(resources, _sidecar(namespace), MESH_GATEWAY)
    # By the tuple (the memo holds it, so its id stays its own): namespaces that see
    # the same VirtualServices share one tuple, and one index.
    key = ("mesh_hosts", id(vss))
    found: MeshHostsIndex | None = resources.memo.get(key)
    if found is not None:
        return found
    exact: dict[str, list[int]] = {}
    wild: list[int] = []
    for position, vs in enumerate(vss):
        for host in vs.spec.hosts:
            resolved = resolve_host(host, vs.namespace)
            if resolved.startswith("*"):
                if not wild or wild[-1] != position:
                    wild.append(position)
            elif not exact.get(resolved) or exact[resolved][-1] != position:
                exact.setdefault(resolved, []).append(position)
    found = exact, tuple(wild), vss
    resources.memo[key] = found
    return found


def _match_tcp(
    match: models.L4MatchAttributes | None, namespace: str, source: SourceClass, port: int
) -> bool:
    """matchTCP: gateways, source labels, port and source namespace, for one sidecar."""
    if match is None:
        return True
    gateways = {resolve_gateway_name(g, namespace) for g in match.gateways}
    return (
        (not gateways or MESH_GATEWAY in gateways)
        # An outsider has no labels, so a non-empty sourceLabels never fits it.
        and labels_match(match.source_labels, source.label_dict())
        and match.port in (0, port)
        and (not match.source_namespace or match.source_namespace == source.namespace)
    )


def service_route(
    resources: MeshResources, client: ProxyNode, service: models.Service, index: int
) -> TcpRoute:
    """buildOutboundNetworkFiltersWithSingleDestination: all of it to the Service port's
    cluster, with the route-level settings of the DestinationRule ``client`` uses (a step
    of the build cache: it reads the Service and that rule)."""
    fqdn = service_fqdn(service.name, service.namespace)
    rule = rule_for_host(resources, client, fqdn)
    return resources.cache.get(
        "service_route",
        (index, client.namespace, client.labels),
        (service, rule),
        partial(_service_route, service, index, rule),
    )


def _service_route(
    service: models.Service, index: int, rule: models.DestinationRule | None
) -> TcpRoute:
    fqdn = service_fqdn(service.name, service.namespace)
    port = service.spec.ports[index].port
    name = cluster_name(port, "", fqdn)
    settings = route_settings(rule, "")
    return TcpRoute(
        destinations=(WeightedCluster(name, 100, fqdn, "", port),),
        origin=RouteOrigin("Service", service.namespace, service.name, index, "ports"),
        stat_prefix=name,
        idle_timeout=settings.idle_timeout,
        max_connection_duration=settings.max_connection_duration,
        hash_policy=settings.hash_policy,
    )


def listener(
    resources: MeshResources, address: str, port: int, routes: tuple[TcpRoute, ...]
) -> Listener:
    """``<address>_<port>`` with its routes; the same object as the last build's when the
    routes are the same objects (so its JSON and digest are not worked out again)."""
    return resources.cache.get(
        "node_listener",
        (address, port),
        routes,
        partial(Listener, f"{address}_{port}", address, port, routes),
    )


def node_port_listeners(resources: MeshResources, node: ProxyNode) -> Iterator[Listener]:
    """``--address:nodePort`` for every TCP node port (NodePort and LoadBalancer Services)."""
    for service in resources.services_in_order:
        if service.spec.type not in ("NodePort", "LoadBalancer"):
            continue
        for index, port in _tcp_ports(service):
            if port.node_port:
                route = service_route(resources, node, service, index)
                yield listener(resources, node.address, port.node_port, (route,))


def load_balancer_listeners(resources: MeshResources, node: ProxyNode) -> Iterator[Listener]:
    """The load-balancer address:port of every LoadBalancer Service but the gateways',
    and but those the load balancer serves itself (a bandwidth cap: control.loadbalancer)."""
    shaped = {(c.address, c.port) for c in capped_ports(resources)}
    for service in resources.services_in_order:
        frontend = load_balancer_frontend(service)
        if service.spec.type != "LoadBalancer" or frontend is None:
            continue
        if serves_itself(resources, service):
            continue
        address, held = frontend
        for index, port in _tcp_ports(service):
            if (held is None or port.port in held) and (address, port.port) not in shaped:
                route = service_route(resources, node, service, index)
                yield listener(resources, address, port.port, (route,))


def serves_itself(resources: MeshResources, service: models.Service) -> bool:
    """Whether the Service's own pods listen on its load-balancer address: a gateway's
    Service (its selector covers an Istio Gateway's or the ingress gateway's; not a Gateway
    API Gateway's, whose pods run on their pod IPs), or one that selects
    host-network pods. Decided by labels, not by which pods run now, so the node proxy
    never binds such a port while the gateway starts."""
    selector = service.spec.selector or {}
    if not selector:
        return False
    if any(selector == workload_labels(kg) for kg in resources.kube_gateways):
        # A Gateway API Gateway's workload runs on its pod IP (controllers.gatewayapi):
        # the node proxy serves its Service's own load-balancer address.
        return False
    gateway_selectors = [INGRESS_GATEWAY_SELECTOR, *(g.spec.selector for g in resources.gateways)]
    if any(s and labels_match(s, selector) for s in gateway_selectors):
        return True
    return any(
        p.spec.host_network
        and p.namespace == service.namespace
        and labels_match(selector, p.metadata.labels)
        for p in resources.pods
    )
