"""The control plane: resources in, one immutable Snapshot per proxy out."""

from tcpmesh.control.build import build_snapshot, cluster_name
from tcpmesh.control.resources import MeshResources, ProxyNode
from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
    L4Match,
    Listener,
    ResponseFlag,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)

__all__ = [
    "Cluster",
    "Endpoint",
    "L4Match",
    "Listener",
    "MeshResources",
    "ProxyNode",
    "ResponseFlag",
    "RouteOrigin",
    "Snapshot",
    "TcpRoute",
    "WeightedCluster",
    "build_snapshot",
    "cluster_name",
]
