"""VirtualService rules bound to a gateway, as the weighted tcp_proxy routes of its listeners.

References (istio/istio): model/push_context.go (VirtualServicesForGateway),
networking/core/gateway.go (buildGatewayNetworkFiltersFromTCPRoutes), networkfilter.go
(buildOutboundNetworkFilters).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from functools import partial

from tcpmesh.api import (
    MAX_CONNECT_ATTEMPTS_ANNOTATION,
    VERSION_AFFINITY_ANNOTATION,
    WEIGHTED_PICK_ANNOTATION,
    hosts_overlap,
    models,
    rebalance_settings,
)
from tcpmesh.control.policy import (
    destination_rule,
    route_settings,
)
from tcpmesh.control.resources import (
    MeshResources,
    ProxyNode,
    resolve_gateway_name,
    resolve_host,
)
from tcpmesh.control.serviceentries import entry_services, service_entry_ports
from tcpmesh.control.snapshot import (
    L4Match,
    Rebalance,
    RouteOrigin,
    TcpRoute,
    VersionAffinity,
    WeightedCluster,
    WeightedPick,
    cluster_name,
)


def virtual_services_for_gateway(
    resources: MeshResources, node: ProxyNode, gateway_name: str
) -> tuple[models.VirtualService, ...]:
    """VirtualServicesForGateway: private, then exported to the proxy's namespace, then
    public (worked out once per gateway and namespace: see ``MeshResources.memo``).

    Namespaces that no VirtualService of the gateway is private or exported to all get
    the very same tuple, the public ones: the node proxy asks once per namespace of its
    clients, and what is worked out from the tuple (``outbound``) is worked out once."""
    key = ("virtual_services_for_gateway", gateway_name, node.namespace)
    found: tuple[models.VirtualService, ...] | None = resources.memo.get(key)
    if found is None:
        public, private, exported = _bound_to(resources, gateway_name)
        mine = (*private.get(node.namespace, ()), *exported.get(node.namespace, ()))
        found = resources.memo[key] = (*mine, *public) if mine else public
    return found


Bound = tuple[
    tuple[models.VirtualService, ...],
    dict[str, list[models.VirtualService]],
    dict[str, list[models.VirtualService]],
]


def _bound_to(resources: MeshResources, gateway_name: str) -> Bound:
    """The gateway's VirtualServices in creation order, by visibility (one pass for
    every namespace): public ones, private ones by their namespace, and exported ones
    by the namespaces they are exported to."""
    key = ("bound_to", gateway_name)
    found: Bound | None = resources.memo.get(key)
    if found is not None:
        return found
    public: list[models.VirtualService] = []
    private: dict[str, list[models.VirtualService]] = {}
    exported: dict[str, list[models.VirtualService]] = {}
    for vs in resources.virtual_services_in_order:
        bound = {resolve_gateway_name(g, vs.namespace) for g in vs.spec.gateways or ["mesh"]}
        if gateway_name not in bound:
            continue
        export_to = vs.spec.export_to
        if not export_to or "*" in export_to:
            public.append(vs)
            continue
        if "." in export_to:
            private.setdefault(vs.namespace, []).append(vs)
        for namespace in dict.fromkeys(export_to):
            if namespace != "." and not (namespace == vs.namespace and "." in export_to):
                exported.setdefault(namespace, []).append(vs)
    found = resources.memo[key] = (tuple(public), private, exported)
    return found


def gateway_route(
    resources: MeshResources,
    node: ProxyNode,
    gateway: models.Gateway,
    gateway_name: str,
    server: models.Server,
    port: int,
) -> TcpRoute | None:
    server_hosts = [server_host(h, gateway.namespace) for h in server.hosts]
    for vs in candidates_for_port(resources, node, gateway_name, port):
        if not vs_matches_server_hosts(vs, server_hosts):
            continue
        for index, rule in enumerate(vs.spec.tcp):
            if not rule.route or not _l4_match_fits(rule, vs.namespace, gateway_name, port):
                continue
            return tcp_route(resources, node, vs, index, rule, port)
    return None


_ANY_PORT = 0


def candidates_for_port(
    resources: MeshResources, node: ProxyNode, gateway_name: str, port: int
) -> list[models.VirtualService]:
    """The gateway's VirtualServices, in order, that have a rule which can fit ``port``
    (a superset of those ``_l4_match_fits`` accepts; indexed once per gateway)."""
    vss = virtual_services_for_gateway(resources, node, gateway_name)
    key = ("vs_by_port", gateway_name, node.namespace)
    index: dict[int, list[int]] | None = resources.memo.get(key)
    if index is None:
        index = resources.memo[key] = {}
        for position, vs in enumerate(vss):
            for p in _rule_ports(vs, gateway_name):
                index.setdefault(p, []).append(position)
    specific, any_port = index.get(port, ()), index.get(_ANY_PORT, ())
    positions = sorted((*specific, *any_port)) if specific and any_port else specific or any_port
    return [vss[i] for i in positions]


def _rule_ports(vs: models.VirtualService, gateway_name: str) -> set[int]:
    """The ports the VirtualService's TCP rules can match on the gateway (0: any)."""
    ports: set[int] = set()
    for rule in vs.spec.tcp:
        if not rule.route:
            continue
        if not rule.match:
            return {_ANY_PORT}
        for match in rule.match:
            if match is None:
                continue
            gateways = {resolve_gateway_name(g, vs.namespace) for g in match.gateways}
            if not gateways or gateway_name in gateways:
                ports.add(match.port)
    return ports


def server_host(host: str, gateway_namespace: str) -> tuple[str, str]:
    """A server host as (namespace or "*", dns name); ``./h`` means the gateway's namespace."""
    if "/" not in host:
        return "*", host
    namespace, dns = host.split("/", 1)
    return (gateway_namespace if namespace == "." else namespace), dns


def vs_matches_server_hosts(vs: models.VirtualService, server_hosts: list[tuple[str, str]]) -> bool:
    for namespace, dns in server_hosts:
        if namespace not in ("*", vs.namespace):
            continue
        if any(hosts_overlap(resolve_host(h, vs.namespace), dns) for h in vs.spec.hosts):
            return True
    return False


def _l4_match_fits(rule: models.TCPRoute, namespace: str, gateway_name: str, port: int) -> bool:
    """l4MultiMatch on a gateway: only ``port`` and ``gateways`` count."""
    if not rule.match:
        return True
    for match in rule.match:
        if match is None:
            continue
        if match.port not in (0, port):
            continue
        gateways = {resolve_gateway_name(g, namespace) for g in match.gateways}
        if gateways and gateway_name not in gateways:
            continue
        return True
    return False


def tcp_route(
    resources: MeshResources,
    node: ProxyNode,
    vs: models.VirtualService,
    index: int,
    rule: models.TCPRoute | models.TLSRoute,
    listener_port: int,
    section: str = "tcp",
) -> TcpRoute:
    """buildOutboundNetworkFilters: the weighted tcp_proxy of a ``tcp`` or ``tls`` rule.

    One step of the build cache: the route reads the VirtualService (the rule is in it),
    the rule the proxy uses for the first destination's host, and per destination host
    its Service, or, without one, the ServiceEntries (any of them may cover the host)."""
    entries = [r for r in rule.route if r is not None and r.destination is not None]
    first = entries[0].destination if entries else None
    settings_rule = _settings_rule(resources, node, first, vs.namespace)
    inputs: list[object] = [vs, settings_rule]
    for entry in entries:
        assert entry.destination is not None
        service = find_service(resources, resolve_host(entry.destination.host, vs.namespace))
        inputs += [service] if service is not None else [None, *resources.service_entries]
    return resources.cache.get(
        "tcp_route",
        (id(rule), index, listener_port, section, node.namespace, node.labels, len(inputs)),
        tuple(inputs),
        partial(_tcp_route, resources, vs, index, rule, listener_port, section, settings_rule),
    )


def _tcp_route(
    resources: MeshResources,
    vs: models.VirtualService,
    index: int,
    rule: models.TCPRoute | models.TLSRoute,
    listener_port: int,
    section: str,
    settings_rule: models.DestinationRule | None,
) -> TcpRoute:
    entries = [r for r in rule.route if r is not None and r.destination is not None]
    named = [
        (destination_for(resources, r.destination, vs.namespace, listener_port), r.weight)
        for r in entries
        if r.destination is not None
    ]
    if len(named) == 1:
        destinations: tuple[WeightedCluster, ...] = (dataclasses.replace(named[0][0], weight=100),)
        stat_prefix = named[0][0].cluster_name
    else:
        destinations = tuple(dataclasses.replace(d, weight=w) for d, w in named if w > 0)
        stat_prefix = f"{vs.name}.{vs.namespace}"
    first = entries[0].destination if entries else None
    single = len(named) == 1
    subset = (first.subset or "") if first is not None and single else ""
    settings = route_settings(settings_rule, subset)
    return TcpRoute(
        destinations=destinations,
        origin=RouteOrigin(vs.kind, vs.namespace, vs.name, index, section),
        stat_prefix=stat_prefix,
        match=L4Match(),
        idle_timeout=settings.idle_timeout,
        max_connection_duration=settings.max_connection_duration,
        hash_policy=settings.hash_policy,
        weighted_pick=_weighted_pick(vs),
        version_affinity=_version_affinity(vs),
        max_connect_attempts=_max_connect_attempts(vs),
        rebalance=_rebalance(vs, destinations),
    )


def _settings_rule(
    resources: MeshResources,
    client: ProxyNode,
    destination: models.Destination | None,
    namespace: str,
) -> models.DestinationRule | None:
    """The DestinationRule ``client`` uses for the destination's host, when that host is a
    Service or ServiceEntry host (its owner's namespace counts for the lookup)."""
    if destination is None:
        return None
    return rule_for_host(resources, client, resolve_host(destination.host, namespace))


def rule_for_host(
    resources: MeshResources, client: ProxyNode, fqdn: str
) -> models.DestinationRule | None:
    """The DestinationRule ``client`` uses for ``fqdn`` (None: no rule, or not a host of
    a Service or ServiceEntry)."""
    service = find_service(resources, fqdn)
    owner = service.namespace if service is not None else None
    if owner is None:
        entry = entry_services(resources).get(fqdn)
        owner = entry.namespace if entry is not None else None
    if owner is None:
        return None
    index, labels = resources.destination_rule_index, client.label_dict()
    return destination_rule(index, fqdn, owner, client.namespace, labels)


def _weighted_pick(vs: models.VirtualService) -> WeightedPick:
    """The VirtualService's ``tcpmesh.io/weighted-pick``; validation rejects other values
    at apply time, and one stored before that rule existed counts as the default."""
    try:
        return WeightedPick(vs.metadata.annotations.get(WEIGHTED_PICK_ANNOTATION, "smooth"))
    except ValueError:
        return WeightedPick.SMOOTH


def _max_connect_attempts(vs: models.VirtualService) -> int:
    """The VirtualService's ``traffic.tcpmesh.io/max-connect-attempts`` (validated at apply;
    a value stored before that rule existed counts as Envoy's default, 1)."""
    value = vs.metadata.annotations.get(MAX_CONNECT_ATTEMPTS_ANNOTATION, "1")
    return int(value) if value.isascii() and value.isdigit() and int(value) >= 1 else 1


def _version_affinity(vs: models.VirtualService) -> VersionAffinity:
    """The VirtualService's ``traffic.tcpmesh.io/version-affinity`` (validated at apply)."""
    try:
        return VersionAffinity(vs.metadata.annotations.get(VERSION_AFFINITY_ANNOTATION, "none"))
    except ValueError:
        return VersionAffinity.NONE


def _rebalance(
    vs: models.VirtualService, destinations: Sequence[WeightedCluster]
) -> Rebalance | None:
    """The route's rebalance request (``api.rebalance_settings``).

    With ``on-weight-change`` the request id also carries a digest of the route's
    weights, so every weight change is a new request that data planes act on once,
    while a rebuild for any other reason (an endpoint came up) leaves the id as it was.
    """
    settings = rebalance_settings(vs.metadata.annotations)
    if settings is None:
        return None
    parts = [settings.request] if settings.request else []
    if settings.on_weight_change:
        weights = ",".join(f"{d.cluster_name}={d.weight}" for d in destinations)
        parts.append("w" + hashlib.sha256(weights.encode()).hexdigest()[:12])
    return Rebalance("+".join(parts), settings.over, settings.max_share)


def destination_for(
    resources: MeshResources,
    destination: models.Destination,
    namespace: str,
    listener_port: int,
) -> WeightedCluster:
    """The share of a route destination (weight 0 here; the caller sets it)."""
    fqdn = resolve_host(destination.host, namespace)
    port = destination.port.number if destination.port and destination.port.number else 0
    if not port:
        service = find_service(resources, fqdn)
        if service is not None:
            ports = [p.port for p in service.spec.ports]
        else:
            ports = service_entry_ports(resources, fqdn)
        port = ports[0] if len(ports) == 1 else listener_port
    subset = destination.subset or ""
    return WeightedCluster(cluster_name(port, subset, fqdn), 0, fqdn, subset, port)


def find_service(resources: MeshResources, fqdn: str) -> models.Service | None:
    return resources.services_by_fqdn.get(fqdn)
