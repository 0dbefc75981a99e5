"""Gateway servers and the ports they hold on a node.

References (istio/istio): pilot/pkg/networking/core/gateway.go, model/gateway.go
(mergeGateways: one plain-text TCP server per port; TLS servers share a port by SNI).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from tcpmesh.api import models
from tcpmesh.control.resources import (
    MeshResources,
    ProxyNode,
    creation_order_key,
    labels_match,
)

OPAQUE_TCP_PROTOCOLS = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})


TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")


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
) -> tuple[tuple[ServerPort, ...], tuple[PortConflict, ...]]:
    """The plain TCP servers that get a listener on the node, and those that lose their port.

    A step of the build cache: it reads the Gateways and the Services, and the node.
    """
    return resources.cache.get(
        "gateway_servers",
        (resources.stamps("gateways", "services"), node),
        (),
        partial(_gateway_servers, resources, node),
    )


def _gateway_servers(
    resources: MeshResources, node: ProxyNode
) -> tuple[tuple[ServerPort, ...], tuple[PortConflict, ...]]:
    """The rule of ``gateway_servers``.

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
    return tuple(entry for group in kept.values() for entry in group), tuple(conflicts)


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
