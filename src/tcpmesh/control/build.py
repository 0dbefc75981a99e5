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
from collections.abc import Iterable
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
from tcpmesh.control.routes import gateway_route
from tcpmesh.control.servers import (
    ServerPort,
    gateway_servers,
    server_kind,
)
from tcpmesh.control.serviceentries import service_entry_clusters
from tcpmesh.control.snapshot import (
    Listener,
    Snapshot,
)


def build_snapshot(resources: MeshResources, node: ProxyNode) -> Snapshot:
    resources = with_gateway_api(resources)
    entries = service_entries_visible_to(resources.service_entries, node.namespace)
    resources = dataclasses.replace(resources, service_entries=entries)
    built = itertools.chain(
        service_clusters(resources, node), service_entry_clusters(resources, node)
    )
    clusters = tuple(sorted(built, key=lambda c: c.name))
    if node.kind is ProxyKind.NODE:
        return outbound_snapshot(resources, node, clusters)
    if node.kind is ProxyKind.LOAD_BALANCER:
        return load_balancer_snapshot(resources, clusters, partial(build_listeners, resources))
    listeners = tuple(move_to_backends(resources, build_listeners(resources, node)))
    return Snapshot.build(listeners, clusters).check()


def build_listeners(resources: MeshResources, node: ProxyNode) -> Iterable[Listener]:
    servers, _ = gateway_servers(resources, node)
    by_port: dict[int, list[ServerPort]] = {}
    for entry in servers:
        by_port.setdefault(entry.listen_port, []).append(entry)
    for group in by_port.values():
        first = group[0]
        if server_kind(first.server) == "tls":
            routes = tuple(tls_listener_routes(resources, node, group))
        else:
            route = gateway_route(
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
