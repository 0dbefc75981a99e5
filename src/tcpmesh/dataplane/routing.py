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

# (route, client address) -> the destination of a new connection.
Pick = Callable[[TcpRoute, str | None], WeightedCluster | None]


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


def match_route(
    listener: Listener, local_ip: str, server_name: str | None = None
) -> TcpRoute | None:
    """The route whose match fits the connection, chosen as Envoy chooses a filter chain.

    Among the routes that fit the address the client connected to, the SNI decides as in
    Envoy's ``server_names`` match: an exact name beats the longest matching ``*.suffix``,
    which beats a route without server names; without SNI only the latter can match.
    Ties keep the listener's order (the control plane allows no duplicate matchers).
    """
    best: TcpRoute | None = None
    best_rank = -1
    for route in listener.routes:
        if not route_matches(route, local_ip):
            continue
        rank = server_name_rank(route.match.server_names, server_name)
        if rank > best_rank:
            best, best_rank = route, rank
    return best


def server_name_rank(names: tuple[str, ...], server_name: str | None) -> int:
    """How specifically ``names`` match ``server_name``: -1 not at all, 0 catch-all, more
    for a longer wildcard suffix, highest for the exact name."""
    if not names:
        return 0
    if server_name is None:
        return -1
    rank = -1
    for name in names:
        if name == server_name:
            return 1 << 16
        if name.startswith("*.") and server_name.endswith(name[1:]):
            rank = max(rank, len(name))
    return rank


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
    weighted = pick(route, client_ip)
    if weighted is None:
        return Decision(route, flag=ResponseFlag.NO_CLUSTER)
    cluster = snapshot.cluster(weighted.cluster_name)
    if cluster is None:
        return Decision(route, weighted, flag=ResponseFlag.NO_CLUSTER)
    if not balancer.try_start(cluster):
        return Decision(route, weighted, cluster, flag=ResponseFlag.UPSTREAM_OVERFLOW)
    endpoint = balancer.pick(cluster, client_ip, hash_source_ip=route.hash_policy == "source_ip")
    if endpoint is None:
        balancer.connection_finished(cluster.name)
        return Decision(route, weighted, cluster, flag=ResponseFlag.NO_HEALTHY_UPSTREAM)
    return Decision(route, weighted, cluster, endpoint)
