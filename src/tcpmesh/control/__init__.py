"""The control plane: resources in, one immutable Snapshot per proxy out."""

from tcpmesh.control.build import build_snapshot
from tcpmesh.control.resources import MeshResources, ProxyNode
from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
    L4Match,
    Listener,
    ResponseFlag,
    RouteOrigin,
    Snapshot,
    SnapshotError,
    SnapshotSource,
    TcpRoute,
    WeightedCluster,
    WeightedPick,
    cluster_name,
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
    "SnapshotError",
    "SnapshotSource",
    "TcpRoute",
    "WeightedCluster",
    "WeightedPick",
    "build_snapshot",
    "cluster_name",
]
