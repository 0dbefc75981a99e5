"""``build_snapshot``: Istio's gateway TCP semantics as one pure function.

The stages live in modules named for them: ``servers`` (which gateway servers hold which
port), ``routes`` (VirtualService rules as weighted routes), ``gatewaytls`` (SNI and
terminating filter chains), ``policy`` (DestinationRule lookup and traffic policy),
``clusters`` (Service clusters) and ``serviceentries`` (ServiceEntry clusters); the node
proxy's listeners come from ``outbound``. This module assembles them and checks the result.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from functools import partial

from tcpmesh.control.clusters import service_clusters
from tcpmesh.control.gatewayapi import with_gateway_api
from tcpmesh.control.gatewaytls import tls_listener_routes
from tcpmesh.control.loadbalancer import (
    load_balancer_snapshot,
    move_to_backends,
)
from tcpmesh.control.outbound import outbound_snapshot
from tcpmesh.control.resources import (
    MeshResources,
    ProxyKind,
    ProxyNode,
    service_entries_visible_to,
)
from tcpmesh.control.routes import candidates_for_port, gateway_route
from tcpmesh.control.servers import (
    ServerPort,
    gateway_servers,
    server_kind,
)
from tcpmesh.control.serviceentries import service_entry_clusters
from tcpmesh.control.snapshot import (
    Cluster,
    Listener,
    Snapshot,
    TcpRoute,
)

# What a proxy's clusters read (besides its node and the DNS answers): a step of the
# build cache keyed by these kinds' stamps, so an event that changes none of them
# (a VirtualService's weights) reuses every cluster as it is.
CLUSTER_KINDS = (
    "services",
    "endpoints",
    "pods",
    "destination_rules",
    "service_entries",
    "workload_entries",
)
# What a gateway's TCP listener reads besides its server and the VirtualServices that
# can fit its port: the route's destinations and their DestinationRules.
ROUTE_KINDS = ("services", "service_entries", "destination_rules")
# A TLS listener's routes come from every VirtualService of the gateway and its Secrets.
# (ReferenceGrants: a Gateway API certificateRef in another namespace needs one.)
TLS_LISTENER_KINDS = (*ROUTE_KINDS, "virtual_services", "secrets", "reference_grants")


def build_snapshot(resources: MeshResources, node: ProxyNode) -> Snapshot:
    resources = with_gateway_api(resources)
    entries = service_entries_visible_to(resources.service_entries, node.namespace)
    resources = dataclasses.replace(resources, service_entries=entries)
    clusters = resources.cache.get(
        "clusters",
        (resources.stamps(*CLUSTER_KINDS), tuple(sorted(resources.dns.items())), node),
        (),
        partial(_clusters, resources, node),
    )
    if node.kind is ProxyKind.NODE:
        return outbound_snapshot(resources, node, clusters)
    if node.kind is ProxyKind.LOAD_BALANCER:
        return load_balancer_snapshot(resources, clusters, partial(build_listeners, resources))
    listeners = tuple(move_to_backends(resources, build_listeners(resources, node)))
    return Snapshot.build(listeners, clusters).check()


def _clusters(resources: MeshResources, node: ProxyNode) -> tuple[Cluster, ...]:
    built = itertools.chain(
        service_clusters(resources, node), service_entry_clusters(resources, node)
    )
    return tuple(sorted(built, key=lambda c: c.name))


def build_listeners(resources: MeshResources, node: ProxyNode) -> Iterable[Listener]:
    servers, _ = gateway_servers(resources, node)
    by_port: dict[int, list[ServerPort]] = {}
    for entry in servers:
        by_port.setdefault(entry.listen_port, []).append(entry)
    route_stamps = resources.stamps(*ROUTE_KINDS)
    for group in by_port.values():
        first = group[0]
        if server_kind(first.server) == "tls":
            found = resources.cache.get(
                "gateway_tls_listener",
                (resources.stamps(*TLS_LISTENER_KINDS), node, len(group)),
                tuple(itertools.chain.from_iterable((e.gateway, e.server) for e in group)),
                partial(_tls_listener, resources, node, group),
            )
        else:
            # The listener reads its server, the VirtualServices that can fit its port
            # (in order) and, through its route, the kinds in ROUTE_KINDS.
            candidates = candidates_for_port(resources, node, first.gateway_name, first.number)
            found = resources.cache.get(
                "gateway_tcp_listener",
                (route_stamps, node, first.listen_port, len(candidates)),
                (first.gateway, first.server, *candidates),
                partial(_tcp_listener, resources, node, first),
            )
        if found is not None:
            yield found


def _tls_listener(
    resources: MeshResources, node: ProxyNode, group: Sequence[ServerPort]
) -> Listener | None:
    return _listener(node, group[0], tuple(tls_listener_routes(resources, node, group)))


def _tcp_listener(resources: MeshResources, node: ProxyNode, first: ServerPort) -> Listener | None:
    route = gateway_route(
        resources, node, first.gateway, first.gateway_name, first.server, first.number
    )
    return _listener(node, first, (route,) if route is not None else ())


def _listener(node: ProxyNode, first: ServerPort, routes: tuple[TcpRoute, ...]) -> Listener | None:
    if not routes:
        return None  # "listener missed network filter": nothing listens on the port
    return Listener(
        name=f"0.0.0.0_{first.number}",
        address=node.address,
        port=first.listen_port,
        routes=routes,
        gateway=first.gateway_name,
    )
