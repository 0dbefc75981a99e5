"""Where a new connection goes, decided once when it opens, without I/O.

The order of checks is Envoy's tcp_proxy: route (filter chain) match, weighted cluster
pick, cluster lookup (NC), circuit breaker (UO), then a host from the load balancer (UH).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import NamedTuple

from tcpmesh.control import (
    Cluster,
    Endpoint,
    Listener,
    ResponseFlag,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)
from tcpmesh.dataplane.balancer import LoadBalancer

Pick = Callable[[TcpRoute], WeightedCluster | None]


@functools.lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


@functools.lru_cache(maxsize=4096)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None


def route_matches(route: TcpRoute, local_ip: str) -> bool:
    subnets = route.match.destination_subnets
    if not subnets:
        return True
    addr = _address(local_ip)
    if addr is None:
        return False
    for cidr in subnets:
        net = _network(cidr)
        if addr.version == net.version and addr in net:
            return True
    return False


def match_route(listener: Listener, local_ip: str) -> TcpRoute | None:
    """The listener's first route whose match fits the address the client connected to."""
    return next((r for r in listener.routes if route_matches(r, local_ip)), None)


class Decision(NamedTuple):
    """The outcome of the open-time choices; ``flag`` set means: close at once.

    A named tuple: one is built per connection, and tuples are the cheapest to build."""

    route: TcpRoute | None
    destination: WeightedCluster | None = None
    cluster: Cluster | None = None
    endpoint: Endpoint | None = None
    flag: ResponseFlag | None = None

    @property
    def cluster_name(self) -> str:
        """The cluster the connection was routed to (for NC: the name that resolved to nothing)."""
        return self.destination.cluster_name if self.destination is not None else ""


def decide(
    snapshot: Snapshot,
    route: TcpRoute | None,
    client_ip: str | None,
    balancer: LoadBalancer,
    pick: Pick,
) -> Decision:
    """Pick cluster and endpoint for a connection on ``route`` (None: no route matched).

    A decision without flag counts against ``max_connections`` until the caller reports
    ``connection_finished``. ``pick`` chooses among the route's destinations, by the
    route's split algorithm."""
    if route is None:
        return Decision(None, flag=ResponseFlag.NO_ROUTE)
    weighted = pick(route)
    if weighted is None:
        return Decision(route, flag=ResponseFlag.NO_CLUSTER)
    cluster = snapshot.cluster(weighted.cluster_name)
    if cluster is None:
        return Decision(route, weighted, flag=ResponseFlag.NO_CLUSTER)
    if (
        cluster.max_connections is not None
        and balancer.open_connections(cluster.name) >= cluster.max_connections
    ):
        return Decision(route, weighted, cluster, flag=ResponseFlag.UPSTREAM_OVERFLOW)
    endpoint = balancer.pick(cluster, client_ip, hash_source_ip=route.hash_policy == "source_ip")
    if endpoint is None:
        return Decision(route, weighted, cluster, flag=ResponseFlag.NO_HEALTHY_UPSTREAM)
    balancer.connection_started(cluster.name)
    return Decision(route, weighted, cluster, endpoint)
