"""The control plane: resources in, one immutable, checked Snapshot per proxy out.

This is the package's whole surface: the Snapshot contract (``control.snapshot``), the
builder and the Istio rules other packages reuse (one home each), and ``ControlPlane``,
imported on first use because it brings the store with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcpmesh.control.build import build_snapshot
from tcpmesh.control.buildcache import BuildCache
from tcpmesh.control.gatewayapi import (
    GATEWAY_NAME_LABEL,
    Binding,
    ClassResult,
    Condition,
    GatewayResult,
    ParentResult,
    RouteResult,
    bind_resources,
    builtin_gateway_classes,
    istio_gateway_name,
    workload_labels,
)
from tcpmesh.control.gatewaytls import downstream_tls
from tcpmesh.control.loadbalancer import (
    CappedPort,
    backend_address,
    capped_ports,
    service_bandwidth,
    wants_load_balancer,
)
from tcpmesh.control.reach import StoreCurrency
from tcpmesh.control.resources import (
    INGRESS_GATEWAY_SELECTOR,
    LOAD_BALANCER_LABELS,
    LOAD_BALANCER_NAME,
    LOAD_BALANCER_NAMESPACE,
    NODE_PROXY_LABELS,
    NODE_PROXY_NAME,
    NODE_PROXY_NAMESPACE,
    MeshResources,
    ProxyKind,
    ProxyNode,
    labels_match,
    resolve_gateway_name,
    resolve_host,
    service_fqdn,
)
from tcpmesh.control.routes import find_service
from tcpmesh.control.servers import (
    OPAQUE_TCP_PROTOCOLS,
    TERMINATING_MODES,
    PortConflict,
    ServerPort,
    gateway_servers,
)
from tcpmesh.control.serviceentries import service_entry_ports
from tcpmesh.control.snapshot import (
    HASH_POLICIES,
    BandwidthLimit,
    Cluster,
    DownstreamTls,
    Endpoint,
    L4Match,
    Listener,
    OutlierDetection,
    Rebalance,
    ResponseFlag,
    RouteOrigin,
    SlowStart,
    Snapshot,
    SnapshotError,
    SnapshotSource,
    TcpKeepalive,
    TcpRoute,
    VersionAffinity,
    WeightedCluster,
    WeightedPick,
    cluster_name,
    derived,
)

if TYPE_CHECKING:
    from tcpmesh.control.plane import ControlPlane

__all__ = [
    "GATEWAY_NAME_LABEL",
    "HASH_POLICIES",
    "INGRESS_GATEWAY_SELECTOR",
    "LOAD_BALANCER_LABELS",
    "LOAD_BALANCER_NAME",
    "LOAD_BALANCER_NAMESPACE",
    "NODE_PROXY_LABELS",
    "NODE_PROXY_NAME",
    "NODE_PROXY_NAMESPACE",
    "OPAQUE_TCP_PROTOCOLS",
    "TERMINATING_MODES",
    "BandwidthLimit",
    "Binding",
    "BuildCache",
    "CappedPort",
    "ClassResult",
    "Cluster",
    "Condition",
    "ControlPlane",
    "DownstreamTls",
    "Endpoint",
    "GatewayResult",
    "L4Match",
    "Listener",
    "MeshResources",
    "OutlierDetection",
    "ParentResult",
    "PortConflict",
    "ProxyKind",
    "ProxyNode",
    "Rebalance",
    "ResponseFlag",
    "RouteOrigin",
    "RouteResult",
    "ServerPort",
    "SlowStart",
    "Snapshot",
    "SnapshotError",
    "SnapshotSource",
    "StoreCurrency",
    "TcpKeepalive",
    "TcpRoute",
    "VersionAffinity",
    "WeightedCluster",
    "WeightedPick",
    "backend_address",
    "bind_resources",
    "build_snapshot",
    "builtin_gateway_classes",
    "capped_ports",
    "cluster_name",
    "derived",
    "downstream_tls",
    "find_service",
    "gateway_servers",
    "istio_gateway_name",
    "labels_match",
    "resolve_gateway_name",
    "resolve_host",
    "service_bandwidth",
    "service_entry_ports",
    "service_fqdn",
    "wants_load_balancer",
    "workload_labels",
]


def __getattr__(name: str) -> Any:
    if name == "ControlPlane":
        from tcpmesh.control.plane import ControlPlane

        return ControlPlane
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
