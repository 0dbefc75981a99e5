"""``build_snapshot``: Istio's gateway TCP semantics as one pure function.

References (istio/istio): pilot/pkg/networking/core/gateway.go
(buildGatewayNetworkFiltersFromTCPRoutes), networkfilter.go (buildOutboundNetworkFilters),
cluster_builder.go (subset clusters), model/push_context.go (VirtualServicesForGateway),
model/gateway.go (mergeGateways). Each rule below names the behaviour it reproduces.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from tcpmesh.api import (
    CA_CERT_KEY,
    TLS_CERT_KEY,
    TLS_PRIVATE_KEY_KEY,
    VERSION_AFFINITY_ANNOTATION,
    WEIGHTED_PICK_ANNOTATION,
    hosts_overlap,
    is_ip,
    is_valid_cipher_suite,
    models,
    parse_duration,
    pod_ready,
    secret_bytes,
)
from tcpmesh.control.resources import (
    MeshResources,
    ProxyNode,
    creation_order_key,
    labels_match,
    resolve_gateway_name,
    resolve_host,
    service_entries_visible_to,
    service_fqdn,
)
from tcpmesh.control.snapshot import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    Cluster,
    DownstreamTls,
    Endpoint,
    L4Match,
    LbPolicy,
    Listener,
    OutlierDetection,
    RouteOrigin,
    Snapshot,
    TcpKeepalive,
    TcpRoute,
    VersionAffinity,
    WeightedCluster,
    WeightedPick,
    cluster_name,
)

# Protocols whose gateway servers become plain tcp_proxy listeners. HTTP-family servers
# need an HTTP connection manager, which the L4 data planes of tcpmesh do not have.
OPAQUE_TCP_PROTOCOLS = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})


def build_snapshot(resources: MeshResources, node: ProxyNode) -> Snapshot:
    entries = service_entries_visible_to(resources.service_entries, node.namespace)
    resources = dataclasses.replace(resources, service_entries=entries)
    clusters = tuple(sorted(_build_clusters(resources), key=lambda c: c.name))
    listeners = tuple(_build_listeners(resources, node))
    return Snapshot.build(listeners, clusters).check()


# ---------------------------------------------------------------- listeners


def gateways_for_node(resources: MeshResources, node: ProxyNode) -> list[models.Gateway]:
    labels = node.label_dict()
    selected = [g for g in resources.gateways if labels_match(g.spec.selector, labels)]
    return sorted(selected, key=creation_order_key)


def exposed_ports(resources: MeshResources, node: ProxyNode) -> dict[int, int]:
    """Gateway server port → port to listen on, for the ports the node's Services expose.

    A server number names a Service port (or its targetPort, as Istio's port translation
    allows); the proxy listens on the Service port, because that is what clients dial on
    the load balancer address, which is the node's own address here.
    """
    labels = node.label_dict()
    mapping: dict[int, int] = {}
    for service in resources.services:
        selector = service.spec.selector
        if not selector or not labels_match(selector, labels):
            continue
        for port in service.spec.ports:
            mapping.setdefault(port.port, port.port)
            if isinstance(port.target_port, int):
                mapping.setdefault(port.target_port, port.port)
    return mapping


@dataclass(frozen=True)
class ServerPort:
    """A gateway server that asked for a port, and the port the proxy listens on for it."""

    gateway: models.Gateway
    server: models.Server
    number: int  # the server's port number
    listen_port: int  # the Service port clients dial (see exposed_ports)

    @property
    def gateway_name(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"


@dataclass(frozen=True)
class PortConflict:
    """A server dropped because an earlier one holds its listen port (see gateway_servers)."""

    kept: ServerPort
    dropped: ServerPort


def gateway_servers(
    resources: MeshResources, node: ProxyNode
) -> tuple[list[ServerPort], list[PortConflict]]:
    """The plain TCP servers that get a listener on the node, and those that lose their port.

    The rule (mergeGateways keeps one plain-text TCP server per port): servers are taken
    in gateway creation order, then in the order of ``servers``; the first server that
    resolves to a listen port holds it, and every later server resolving to the same
    port (the same number again, or a Service targetPort mapped to it) is dropped and
    reported by ``analyze`` (IST0145). Servers whose port no Service of the node
    exposes, HTTP-family and TLS servers get no listener and hold no port.
    """
    ports = exposed_ports(resources, node)
    kept: dict[int, list[ServerPort]] = {}
    conflicts: list[PortConflict] = []
    for gateway in gateways_for_node(resources, node):
        for server in gateway.spec.servers:
            if server is None or server.port is None or server_kind(server) is None:
                continue
            number = server.port.number
            listen_port = ports.get(number)
            if listen_port is None:
                continue
            candidate = ServerPort(gateway, server, number, listen_port)
            group = kept.setdefault(listen_port, [])
            # TLS servers share a port (mergeGateways: one filter chain per SNI match);
            # a plain TCP server holds its port alone.
            if not group or _shares_port(group[0], candidate):
                group.append(candidate)
            else:
                conflicts.append(PortConflict(group[0], candidate))
    return [entry for group in kept.values() for entry in group], conflicts


def server_kind(server: models.Server) -> str | None:
    """How a gateway server is served at L4: "tcp", "tls" (SNI-routed), or None (not at all).

    ``tls`` covers PASSTHROUGH (TLS or HTTPS port: routed by the ClientHello's SNI to the
    VirtualService's ``tls`` rules) and SIMPLE/(OPTIONAL_)MUTUAL on a TLS port (terminated, then the
    ``tcp`` rules). Terminating HTTPS needs an HTTP connection manager; AUTO_PASSTHROUGH
    routes by Istio's generated ``outbound_.<port>_.<subset>_.<host>`` names, which only
    multi-cluster east-west gateways use; ISTIO_MUTUAL is the mesh's own mTLS: none of
    these has an L4 meaning in tcpmesh.
    """
    assert server.port is not None
    protocol = server.port.protocol.upper()
    if server.tls is None:
        return "tcp" if protocol in OPAQUE_TCP_PROTOCOLS else None
    mode = server.tls.mode
    if protocol in ("TLS", "HTTPS") and mode == "PASSTHROUGH":
        return "tls"
    if protocol == "TLS" and mode in TERMINATING_MODES:
        return "tls"
    return None


def _shares_port(holder: ServerPort, candidate: ServerPort) -> bool:
    return server_kind(holder.server) == server_kind(candidate.server) == "tls"


def _build_listeners(resources: MeshResources, node: ProxyNode) -> Iterable[Listener]:
    servers, _ = gateway_servers(resources, node)
    by_port: dict[int, list[ServerPort]] = {}
    for entry in servers:
        by_port.setdefault(entry.listen_port, []).append(entry)
    for group in by_port.values():
        first = group[0]
        if server_kind(first.server) == "tls":
            routes = tuple(_tls_listener_routes(resources, node, group))
        else:
            route = _gateway_route(
                resources, node, first.gateway, first.gateway_name, first.server, first.number
            )
            routes = (route,) if route is not None else ()
        if not routes:
            continue  # "listener missed network filter": nothing listens on the port
        yield Listener(
            name=f"0.0.0.0_{first.number}",
            address=node.address,
            port=first.listen_port,
            routes=routes,
            gateway=first.gateway_name,
        )


def virtual_services_for_gateway(
    resources: MeshResources, node: ProxyNode, gateway_name: str
) -> list[models.VirtualService]:
    """VirtualServicesForGateway: private, then exported to the proxy's namespace, then public."""
    private: list[models.VirtualService] = []
    exported: list[models.VirtualService] = []
    public: list[models.VirtualService] = []
    for vs in sorted(resources.virtual_services, key=creation_order_key):
        bound = {resolve_gateway_name(g, vs.namespace) for g in vs.spec.gateways or ["mesh"]}
        if gateway_name not in bound:
            continue
        export_to = vs.spec.export_to
        if not export_to or "*" in export_to:
            public.append(vs)
        elif vs.namespace == node.namespace and "." in export_to:
            private.append(vs)
        elif node.namespace in export_to:
            exported.append(vs)
    return private + exported + public


def _gateway_route(
    resources: MeshResources,
    node: ProxyNode,
    gateway: models.Gateway,
    gateway_name: str,
    server: models.Server,
    port: int,
) -> TcpRoute | None:
    server_hosts = [_server_host(h, gateway.namespace) for h in server.hosts]
    for vs in virtual_services_for_gateway(resources, node, gateway_name):
        if not _vs_matches_server_hosts(vs, server_hosts):
            continue
        for index, rule in enumerate(vs.spec.tcp):
            if not rule.route or not _l4_match_fits(rule, vs.namespace, gateway_name, port):
                continue
            return _tcp_route(resources, vs, index, rule, port)
    return None


def _server_host(host: str, gateway_namespace: str) -> tuple[str, str]:
    """A server host as (namespace or "*", dns name); ``./h`` means the gateway's namespace."""
    if "/" not in host:
        return "*", host
    namespace, dns = host.split("/", 1)
    return (gateway_namespace if namespace == "." else namespace), dns


def _vs_matches_server_hosts(
    vs: models.VirtualService, server_hosts: list[tuple[str, str]]
) -> bool:
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


def _tcp_route(
    resources: MeshResources,
    vs: models.VirtualService,
    index: int,
    rule: models.TCPRoute | models.TLSRoute,
    listener_port: int,
    section: str = "tcp",
) -> TcpRoute:
    """buildOutboundNetworkFilters: the weighted tcp_proxy of a ``tcp`` or ``tls`` rule."""
    entries = [r for r in rule.route if r is not None and r.destination is not None]
    named = [
        (_destination_for(resources, r.destination, vs.namespace, listener_port), r.weight)
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
    tcp, hash_by_source_ip = _route_policy(resources, first, vs.namespace)
    return TcpRoute(
        destinations=destinations,
        origin=RouteOrigin("VirtualService", vs.namespace, vs.name, index, section),
        stat_prefix=stat_prefix,
        match=L4Match(),
        idle_timeout=_idle_timeout(tcp),
        max_connection_duration=_optional_duration(tcp.max_connection_duration if tcp else None),
        hash_policy="source_ip" if hash_by_source_ip else None,
        weighted_pick=_weighted_pick(vs),
        version_affinity=_version_affinity(vs),
    )


# ---------------------------------------------------------------- TLS servers
#
# istio/istio pilot/pkg/networking/core/gateway.go: buildGatewayNetworkFiltersFromTLSRoutes
# (PASSTHROUGH: one filter chain per matching ``tls`` match, SNI hosts deduplicated, the
# first claim wins) and createGatewayTCPFilterChainOpts (SIMPLE/MUTUAL on a TLS port: the
# server's hosts become the SNI match, the ``tcp`` rules route the plaintext).

TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
_ENVOY_TLS_VERSIONS = {
    "TLSV1_0": "TLSv1_0",
    "TLSV1_1": "TLSv1_1",
    "TLSV1_2": "TLSv1_2",
    "TLSV1_3": "TLSv1_3",
}


def _tls_listener_routes(
    resources: MeshResources, node: ProxyNode, group: Sequence[ServerPort]
) -> Iterator[TcpRoute]:
    """The filter chains of one TLS port, servers in order; an SNI name is claimed once."""
    taken: set[str] = set()
    for entry in group:
        assert entry.server.tls is not None
        if entry.server.tls.mode == "PASSTHROUGH":
            candidates = list(_passthrough_routes(resources, node, entry))
        else:
            route = _terminating_route(resources, node, entry)
            candidates = [route] if route is not None else []
        for route in candidates:
            names = set(route.match.server_names) or {"*"}
            if names & taken:
                continue  # Istio: "skipping ... duplicate SNI host names" (rejected config)
            taken |= names
            yield route


def _passthrough_routes(
    resources: MeshResources, node: ProxyNode, entry: ServerPort
) -> Iterator[TcpRoute]:
    server_hosts = [_server_host(h, entry.gateway.namespace) for h in entry.server.hosts]
    for vs in virtual_services_for_gateway(resources, node, entry.gateway_name):
        if not _vs_matches_server_hosts(vs, server_hosts):
            continue
        for index, rule in enumerate(vs.spec.tls):
            if rule is None or not rule.route:
                continue
            for match in rule.match:
                # l4SingleMatch: only port and gateways count on a gateway.
                if match is None or match.port not in (0, entry.number):
                    continue
                gateways = {resolve_gateway_name(g, vs.namespace) for g in match.gateways}
                if gateways and entry.gateway_name not in gateways:
                    continue
                route = _tcp_route(resources, vs, index, rule, entry.number, "tls")
                names = server_names(match.sni_hosts)
                yield dataclasses.replace(route, match=L4Match(server_names=names))


def server_names(hosts: Iterable[str]) -> tuple[str, ...]:
    """SNI hosts as Envoy's ``server_names``: lowercase; a ``*`` among them matches all."""
    names = tuple(dict.fromkeys(h.lower() for h in hosts))
    return () if "*" in names else names


def _terminating_route(
    resources: MeshResources, node: ProxyNode, entry: ServerPort
) -> TcpRoute | None:
    route = _gateway_route(
        resources, node, entry.gateway, entry.gateway_name, entry.server, entry.number
    )
    settings = entry.server.tls
    if route is None or settings is None:
        return None
    tls = downstream_tls(resources, node, settings)
    if tls is None:
        # Istio's gateway waits for a credential SDS never delivers: nothing is served.
        return None
    names = server_names(_server_host(h, entry.gateway.namespace)[1] for h in entry.server.hosts)
    return dataclasses.replace(route, match=L4Match(server_names=names), tls=tls)


def downstream_tls(
    resources: MeshResources, node: ProxyNode, settings: models.ServerTLSSettings
) -> DownstreamTls | None:
    """The certificate of a terminating server, from ``credentialName`` in the gateway's
    namespace (Istio's credential lookup: ``tls.crt``/``tls.key``, the client CA in
    ``ca.crt`` or in the Secret ``<name>-cacert``). None when it is missing or unusable;
    file-path certificates (``serverCertificate``) are files of Istio's gateway pods and
    have no meaning here."""
    if not settings.credential_name:
        return None
    secret = find_secret(resources, node.namespace, settings.credential_name)
    if secret is None:
        return None
    chain = _pem(secret, TLS_CERT_KEY, "CERTIFICATE")
    key = _pem(secret, TLS_PRIVATE_KEY_KEY, "PRIVATE KEY")
    if chain is None or key is None:
        return None
    ca = ""
    if settings.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        ca_secret = find_secret(resources, node.namespace, f"{settings.credential_name}-cacert")
        ca = (
            _pem(secret, CA_CERT_KEY, "CERTIFICATE")
            or (_pem(ca_secret, CA_CERT_KEY, "CERTIFICATE") if ca_secret else None)
            or ""
        )
        if not ca:
            return None  # MUTUAL without a client CA cannot verify anyone
    suites = tuple(dict.fromkeys(c for c in settings.cipher_suites if is_valid_cipher_suite(c)))
    return DownstreamTls(
        secret=f"{secret.namespace}/{secret.name}",
        certificate_chain=chain,
        private_key=key,
        ca_certificates=ca,
        client_optional=settings.mode == "OPTIONAL_MUTUAL",
        min_protocol_version=_ENVOY_TLS_VERSIONS.get(settings.min_protocol_version, ""),
        max_protocol_version=_ENVOY_TLS_VERSIONS.get(settings.max_protocol_version, ""),
        cipher_suites=suites,
    )


def find_secret(resources: MeshResources, namespace: str, name: str) -> models.Secret | None:
    return next((s for s in resources.secrets if s.namespace == namespace and s.name == name), None)


def _pem(secret: models.Secret, key: str, label: str) -> str | None:
    """A PEM value of the Secret, if it holds one with ``label`` (decoded, ASCII)."""
    try:
        raw = secret_bytes(secret.data, key)
        text = raw.decode("ascii") if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    if text is None or (f"-----BEGIN {label}" not in text and f" {label}-----" not in text):
        return None
    return text


def _weighted_pick(vs: models.VirtualService) -> WeightedPick:
    """The VirtualService's ``tcpmesh.io/weighted-pick``; validation rejects other values
    at apply time, and one stored before that rule existed counts as the default."""
    try:
        return WeightedPick(vs.metadata.annotations.get(WEIGHTED_PICK_ANNOTATION, "smooth"))
    except ValueError:
        return WeightedPick.SMOOTH


def _version_affinity(vs: models.VirtualService) -> VersionAffinity:
    """The VirtualService's ``traffic.tcpmesh.io/version-affinity`` (validated at apply)."""
    try:
        return VersionAffinity(vs.metadata.annotations.get(VERSION_AFFINITY_ANNOTATION, "none"))
    except ValueError:
        return VersionAffinity.NONE


def _destination_for(
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
    return next((s for s in resources.services if service_fqdn(s.name, s.namespace) == fqdn), None)


def _route_policy(
    resources: MeshResources, destination: models.Destination | None, namespace: str
) -> tuple[models.TCPSettings | None, bool]:
    """Listener-level settings come from the DR of route[0]'s host, top level only."""
    if destination is None:
        return None, False
    fqdn = resolve_host(destination.host, namespace)
    rule = destination_rule_for(resources, fqdn, namespace)
    if rule is None or rule.spec.traffic_policy is None:
        return None, False
    policy = rule.spec.traffic_policy
    tcp = policy.connection_pool.tcp if policy.connection_pool else None
    by_source_ip = _uses_source_ip_hash(policy.load_balancer)
    for subset in rule.spec.subsets:
        if subset is not None and subset.name == destination.subset and subset.traffic_policy:
            by_source_ip = by_source_ip or _uses_source_ip_hash(subset.traffic_policy.load_balancer)
    return tcp, by_source_ip


def _uses_source_ip_hash(lb: models.LoadBalancerSettings | None) -> bool:
    return bool(lb and lb.consistent_hash and lb.consistent_hash.use_source_ip)


def _idle_timeout(tcp: models.TCPSettings | None) -> float | None:
    if tcp is None or tcp.idle_timeout is None:
        return DEFAULT_IDLE_TIMEOUT
    seconds = parse_duration(tcp.idle_timeout)
    return None if seconds == 0 else seconds


def _optional_duration(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


# ---------------------------------------------------------------- clusters


def destination_rule_for(
    resources: MeshResources, fqdn: str, preferred_namespace: str
) -> models.DestinationRule | None:
    """The DR for a host: an exact host beats a wildcard; the client's namespace first."""
    candidates = [dr for dr in resources.destination_rules if _dr_applies(dr, fqdn)]
    if not candidates:
        return None

    def rank(dr: models.DestinationRule) -> tuple[int, int, tuple[str, str, str]]:
        wildcard = int(resolve_host(dr.spec.host, dr.namespace) != fqdn)
        foreign = int(dr.namespace != preferred_namespace)
        return wildcard, foreign, creation_order_key(dr)

    return min(candidates, key=rank)


def unique_subsets(rule: models.DestinationRule) -> Iterator[models.Subset]:
    """The subsets of a rule; a subset defined twice keeps its first definition."""
    seen: set[str] = set()
    for subset in rule.spec.subsets:
        if subset is not None and subset.name not in seen:
            seen.add(subset.name)
            yield subset


def _dr_applies(rule: models.DestinationRule, fqdn: str) -> bool:
    host = resolve_host(rule.spec.host, rule.namespace)
    return host == fqdn or (host.startswith("*") and fqdn.endswith(host[1:]))


def _build_clusters(resources: MeshResources) -> Iterable[Cluster]:
    pods = {(p.namespace, p.name): p for p in resources.pods}
    endpoints = {(e.namespace, e.name): e for e in resources.endpoints}
    for service in resources.services:
        fqdn = service_fqdn(service.name, service.namespace)
        rule = destination_rule_for(resources, fqdn, service.namespace)
        service_endpoints = endpoints.get((service.namespace, service.name))
        for port in service.spec.ports:
            members = tuple(_endpoints_for_port(service_endpoints, port, pods))
            yield _cluster(fqdn, port.port, "", members, _policies(rule, None, port.port))
            if rule is None:
                continue
            for subset in unique_subsets(rule):
                selected = tuple(e for e in members if labels_match(subset.labels, e.label_dict()))
                policies = _policies(rule, subset, port.port)
                yield _cluster(fqdn, port.port, subset.name, selected, policies)
    yield from _service_entry_clusters(resources)


def _endpoints_for_port(
    service_endpoints: models.Endpoints | None,
    port: models.ServicePort,
    pods: dict[tuple[str, str], models.Pod],
) -> Iterable[Endpoint]:
    if service_endpoints is None:
        return
    for subset in service_endpoints.subsets:
        target = _endpoint_port(subset.ports, port)
        if target is None:
            continue
        for address, ready in [(a, True) for a in subset.addresses] + [
            (a, False) for a in subset.not_ready_addresses
        ]:
            labels: dict[str, str] = {}
            workload = ""
            ref = address.target_ref
            if ref is not None:
                namespace = ref.namespace or service_endpoints.namespace
                pod = pods.get((namespace, ref.name))
                labels = pod.metadata.labels if pod is not None else {}
                workload = f"{namespace}/{ref.name}"
            yield Endpoint(
                address=address.ip,
                port=target,
                labels=tuple(sorted(labels.items())),
                ready=ready,
                workload=workload,
            )


def _endpoint_port(ports: Sequence[models.EndpointPort], port: models.ServicePort) -> int | None:
    if len(ports) == 1 and (ports[0].name or None) == (port.name or None):
        return ports[0].port
    return next((p.port for p in ports if p.name and p.name == port.name), None)


# ---------------------------------------------------------------- ServiceEntry clusters
#
# References (istio/istio): pilot/pkg/serviceregistry/serviceentry/conversion.go
# (convertServices, convertServiceEntryToInstances, convertWorkloadInstanceToServiceInstance,
# mergeServicesInstancesByNamespaceHost), model/sidecar.go (appendSidecarServices),
# networking/core/cluster.go (convertResolution) and cluster_builder.go (buildCluster).

DNS_RESOLUTIONS = frozenset({"DNS", "DNS_ROUND_ROBIN"})
UNIX_ADDRESS_PREFIX = "unix://"
HEALTH_CHECKS_ANNOTATION = "proxy.istio.io/health-checks-enabled"
_GO_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})


@dataclass(frozen=True)
class EntryService:
    """One host of the ServiceEntries a proxy sees, with the entries merged into it.

    Entries of the same namespace and host merge (their ports and endpoints add up); for
    one host in several namespaces the first entry in :func:`service_entries_visible_to`
    order wins, as in appendSidecarServices. ``resolution`` is that first entry's.
    """

    host: str
    namespace: str
    resolution: str
    entries: tuple[models.ServiceEntry, ...]

    @property
    def ports(self) -> tuple[models.ServiceEntryPort, ...]:
        """The merged ports, one per number (the first definition wins)."""
        found: dict[int, models.ServiceEntryPort] = {}
        for entry in self.entries:
            for port in entry.spec.ports:
                if port is not None:
                    found.setdefault(port.number, port)
        return tuple(found.values())


@dataclass(frozen=True)
class _Instance:
    """An endpoint of one entry port before name resolution: ``address`` may be a name."""

    address: str
    port: int
    labels: tuple[tuple[str, str], ...]
    ready: bool
    workload: str


def entry_services(resources: MeshResources) -> dict[str, EntryService]:
    """Host → the ServiceEntries behind it; a Kubernetes Service of that name wins."""
    kubernetes = {service_fqdn(s.name, s.namespace) for s in resources.services}
    found: dict[str, EntryService] = {}
    for entry in resources.service_entries:
        for host in dict.fromkeys(entry.spec.hosts):
            if host in kubernetes:
                continue
            current = found.get(host)
            if current is None:
                found[host] = EntryService(host, entry.namespace, entry.spec.resolution, (entry,))
            elif current.namespace == entry.namespace:
                merged = (*current.entries, entry)
                found[host] = dataclasses.replace(current, entries=merged)
    return found


def service_entry_ports(resources: MeshResources, fqdn: str) -> list[int]:
    """The port numbers of the entry for ``fqdn``, or of the closest wildcard host covering it."""
    services = entry_services(resources)
    service = services.get(fqdn)
    if service is None:
        covering = [h for h in services if h.startswith("*") and fqdn.endswith(h[1:])]
        if not covering:
            return []
        service = services[max(covering, key=len)]
    return [p.number for p in service.ports]


def dns_names(resources: MeshResources) -> set[str]:
    """The host names the endpoints of DNS ServiceEntries need looked up (for every proxy)."""
    names: set[str] = set()
    for entry in resources.service_entries:
        if entry.spec.resolution not in DNS_RESOLUTIONS:
            continue
        for host in entry.spec.hosts:
            for port in entry.spec.ports:
                if port is None:
                    continue
                for instance in _entry_instances(resources, entry, host, port):
                    if not is_ip(instance.address) and not instance.address.startswith("*"):
                        names.add(instance.address)
    return names


def _service_entry_clusters(resources: MeshResources) -> Iterable[Cluster]:
    for host, service in entry_services(resources).items():
        rule = destination_rule_for(resources, host, service.namespace)
        # Envoy builds no STRICT_DNS/LOGICAL_DNS cluster without endpoints (cluster_builder
        # buildCluster): routes to it find no cluster (NC) rather than no healthy host (UH).
        dns = service.resolution in DNS_RESOLUTIONS
        for port in service.ports:
            if port.protocol.upper() == "UDP":
                continue  # Istio builds no clusters for UDP ports
            instances = _port_instances(resources, service, port.number)
            if instances or not dns:
                endpoints = _resolve(resources.dns, instances, service.resolution)
                policies = _policies(rule, None, port.number)
                yield _cluster(host, port.number, "", endpoints, policies)
            if rule is None:
                continue
            for subset in unique_subsets(rule):
                selected = [i for i in instances if labels_match(subset.labels, dict(i.labels))]
                if not selected and dns:
                    continue
                endpoints = _resolve(resources.dns, selected, service.resolution)
                policies = _policies(rule, subset, port.number)
                yield _cluster(host, port.number, subset.name, endpoints, policies)


def _port_instances(
    resources: MeshResources, service: EntryService, number: int
) -> list[_Instance]:
    instances: list[_Instance] = []
    for entry in service.entries:
        port = next((p for p in entry.spec.ports if p is not None and p.number == number), None)
        if port is not None:
            instances += _entry_instances(resources, entry, service.host, port)
    if service.resolution == "DNS_ROUND_ROBIN":
        # LOGICAL_DNS takes a single endpoint; mergeServicesInstancesByNamespaceHost keeps
        # the first one per port.
        return instances[:1]
    return instances


def _entry_instances(
    resources: MeshResources,
    entry: models.ServiceEntry,
    host: str,
    port: models.ServiceEntryPort,
) -> list[_Instance]:
    """convertServiceEntryToInstances plus the workloads a ``workloadSelector`` picks."""
    spec = entry.spec
    dns = spec.resolution in DNS_RESOLUTIONS
    owner = f"{entry.namespace}/{entry.name}"
    if spec.workload_selector is None:
        if not spec.endpoints and dns:
            # No endpoints: the host itself is looked up, on the target port.
            return [_Instance(host, port.target_port or port.number, (), True, owner)]
        return [
            instance
            for i, endpoint in enumerate(spec.endpoints)
            if endpoint is not None
            for instance in _workload_instance(
                endpoint.address,
                endpoint.ports,
                endpoint.labels,
                port,
                ready=True,
                workload=f"{owner}-{i}",
                allow_names=dns,
            )
        ]
    selector = spec.workload_selector.labels
    instances: list[_Instance] = []
    # Istio orders selected workloads by kind ("Kubernetes" pods before WorkloadEntries),
    # then namespace and name.
    for pod in sorted(resources.pods, key=lambda p: p.name):
        pod_ip = str((pod.status or {}).get("podIP") or "")
        if pod.namespace != entry.namespace or not pod_ip:
            continue
        if not labels_match(selector, pod.metadata.labels):
            continue
        instances += _workload_instance(
            pod_ip,
            _pod_port_map(pod),
            pod.metadata.labels,
            port,
            ready=pod_ready(pod.status),
            workload=f"{pod.namespace}/{pod.name}",
            allow_names=False,
        )
    for workload in sorted(resources.workload_entries, key=lambda w: w.name):
        if workload.namespace != entry.namespace:
            continue
        # ConvertWorkloadEntry: metadata labels win over spec labels.
        labels = {**workload.spec.labels, **workload.metadata.labels}
        if not labels_match(selector, labels):
            continue
        instances += _workload_instance(
            workload.spec.address,
            workload.spec.ports,
            labels,
            port,
            ready=_workload_entry_healthy(workload),
            workload=f"{workload.namespace}/{workload.name}",
            allow_names=dns,
        )
    return instances


def _workload_instance(
    address: str,
    port_map: Mapping[str, int],
    labels: Mapping[str, str],
    port: models.ServiceEntryPort,
    *,
    ready: bool,
    workload: str,
    allow_names: bool,
) -> list[_Instance]:
    """convertWorkloadInstanceToServiceInstance for one entry port.

    The endpoint port is the workload's own port of that name, else the entry port's
    targetPort, else its number. Host names serve DNS entries only (DNSServiceEntryOnly);
    Unix sockets and address-less entries (reached through a network gateway) have no
    TCP address here.
    """
    if not address or address.startswith(UNIX_ADDRESS_PREFIX):
        return []
    if not allow_names and not is_ip(address):
        return []
    target = port_map.get(port.name, 0) or port.target_port or port.number
    return [_Instance(address, target, tuple(sorted(labels.items())), ready, workload)]


def _pod_port_map(pod: models.Pod) -> dict[str, int]:
    """getPortMap: named TCP container ports, the first of a name winning."""
    found: dict[str, int] = {}
    for container in pod.spec.containers:
        for port in container.ports:
            if port.name and port.protocol == "TCP":
                found.setdefault(port.name, port.container_port)
    return found


def _workload_entry_healthy(workload: models.WorkloadEntry) -> bool:
    """isHealthy: with health checks enabled, only a Healthy condition makes it ready."""
    if workload.metadata.annotations.get(HEALTH_CHECKS_ANNOTATION, "") not in _GO_TRUE:
        return True
    conditions = (workload.status or {}).get("conditions") or []
    return any(
        isinstance(c, dict) and c.get("type") == "Healthy" and c.get("status") == "True"
        for c in conditions
    )


def _resolve(
    dns: Mapping[str, tuple[str, ...]], instances: Sequence[_Instance], resolution: str
) -> tuple[Endpoint, ...]:
    """Instances → endpoints, host names replaced by the addresses looked up for them.

    STRICT_DNS (``DNS``) keeps every address, in a stable order so that a rotating answer
    does not churn snapshots; LOGICAL_DNS (``DNS_ROUND_ROBIN``) connects to the first
    address of the latest answer.
    """
    endpoints: list[Endpoint] = []
    for instance in instances:
        if is_ip(instance.address):
            addresses: Sequence[str] = (instance.address,)
        elif resolution == "DNS_ROUND_ROBIN":
            addresses = dns.get(instance.address, ())[:1]
        elif resolution == "DNS":
            addresses = sorted(dns.get(instance.address, ()), key=ipaddress.ip_address)
        else:
            continue
        endpoints += [
            Endpoint(
                address=address,
                port=instance.port,
                labels=instance.labels,
                ready=instance.ready,
                workload=instance.workload,
            )
            for address in addresses
        ]
    return tuple(endpoints)


PolicyParts = tuple[
    models.LoadBalancerSettings | None,
    models.ConnectionPoolSettings | None,
    models.OutlierDetection | None,
]


def _policies(
    rule: models.DestinationRule | None, subset: models.Subset | None, port: int
) -> PolicyParts:
    """Merge order of Istio's MergeTrafficPolicy: DR, DR port level, subset, subset port level."""
    lb: models.LoadBalancerSettings | None = None
    pool: models.ConnectionPoolSettings | None = None
    outlier: models.OutlierDetection | None = None
    layers: list[models.TrafficPolicy | models.PortTrafficPolicy] = []
    for policy in (
        rule.spec.traffic_policy if rule else None,
        subset.traffic_policy if subset else None,
    ):
        if policy is None:
            continue
        layers.append(policy)
        layers.extend(
            p for p in policy.port_level_settings if p.port is not None and p.port.number == port
        )
    for layer in layers:
        lb = layer.load_balancer or lb
        pool = layer.connection_pool or pool
        outlier = layer.outlier_detection or outlier
    return lb, pool, outlier


def _cluster(
    fqdn: str, port: int, subset: str, endpoints: tuple[Endpoint, ...], policies: PolicyParts
) -> Cluster:
    lb, pool, outlier = policies
    tcp = pool.tcp if pool else None
    return Cluster(
        name=cluster_name(port, subset, fqdn),
        service=fqdn,
        port=port,
        subset=subset,
        lb_policy=_lb_policy(lb),
        connect_timeout=(
            parse_duration(tcp.connect_timeout)
            if tcp and tcp.connect_timeout
            else DEFAULT_CONNECT_TIMEOUT
        ),
        max_connections=tcp.max_connections if tcp else None,
        outlier_detection=_outlier(outlier),
        tcp_keepalive=_keepalive(tcp.tcp_keepalive if tcp else None),
        endpoints=endpoints,
    )


def _lb_policy(lb: models.LoadBalancerSettings | None) -> LbPolicy:
    """Istio's load balancer settings as the policy every data plane applies.

    PASSTHROUGH is Istio's ORIGINAL_DST: connect to the address the client dialled. On a
    gateway that address is the gateway itself, so it would loop; both data planes
    balance over the subset's endpoints by least request instead (decided here, once).
    """
    if lb is None:
        return "LEAST_REQUEST"
    if lb.consistent_hash is not None:
        return "RING_HASH"
    if lb.simple == "ROUND_ROBIN" or lb.simple == "RANDOM":
        return lb.simple
    # UNSPECIFIED, LEAST_REQUEST, the deprecated LEAST_CONN, and PASSTHROUGH (above).
    return "LEAST_REQUEST"


def _outlier(od: models.OutlierDetection | None) -> OutlierDetection | None:
    if od is None:
        return None
    defaults = OutlierDetection()
    # For TCP, Envoy counts connect failures as 5xx unless local-origin errors are split.
    if od.split_external_local_origin_errors:
        consecutive = od.consecutive_local_origin_failures
    else:
        consecutive = od.consecutive_5xx_errors or od.consecutive_errors
    return OutlierDetection(
        consecutive_errors=consecutive if consecutive is not None else defaults.consecutive_errors,
        interval=parse_duration(od.interval) if od.interval else defaults.interval,
        base_ejection_time=(
            parse_duration(od.base_ejection_time)
            if od.base_ejection_time
            else defaults.base_ejection_time
        ),
        max_ejection_percent=(
            od.max_ejection_percent
            if od.max_ejection_percent is not None
            else defaults.max_ejection_percent
        ),
        min_health_percent=(
            od.min_health_percent
            if od.min_health_percent is not None
            else defaults.min_health_percent
        ),
    )


def _keepalive(ka: models.TcpKeepalive | None) -> TcpKeepalive | None:
    if ka is None:
        return None
    return TcpKeepalive(
        probes=ka.probes,
        time=parse_duration(ka.time) if ka.time else None,
        interval=parse_duration(ka.interval) if ka.interval else None,
    )
