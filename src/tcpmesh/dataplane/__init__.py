"""tcpmesh's built-in L4 proxy: applies Snapshots, relays TCP connections.

``Proxy`` serves one worker's listeners; ``SnapshotFeed`` follows the API server;
``python -m tcpmesh.dataplane`` runs the supervised worker processes.
"""

from tcpmesh.dataplane.accesslog import AccessLogRecord, ParsedLine, format_line, parse_line
from tcpmesh.dataplane.balancer import LoadBalancer, pick_weighted
from tcpmesh.dataplane.feed import SnapshotFeed
from tcpmesh.dataplane.proxy import Proxy
from tcpmesh.dataplane.routing import Decision, decide, match_route
from tcpmesh.dataplane.stats import (
    ALL_FAMILIES,
    ClusterStat,
    Family,
    ProxyStats,
    TcpProxyStat,
)

__all__ = [
    "ALL_FAMILIES",
    "AccessLogRecord",
    "ClusterStat",
    "Decision",
    "Family",
    "LoadBalancer",
    "ParsedLine",
    "Proxy",
    "ProxyStats",
    "SnapshotFeed",
    "TcpProxyStat",
    "decide",
    "format_line",
    "match_route",
    "parse_line",
    "pick_weighted",
]
