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


def prefix_rank(subnets: tuple[str, ...], ip: str | None) -> int:
    """How specifically ``subnets`` contain ``ip``: -1 not at all, 0 for no subnets (they
    match every address), else 1 + the longest matching prefix length."""
    if not subnets:
        return 0
    addr = _address(ip) if ip else None
    if addr is None:
        return -1
    best = -1
    for cidr in subnets:
        net = _network(cidr)
        if addr.version == net.version and addr in net:
            best = max(best, net.prefixlen + 1)
    return best


def route_matches(route: TcpRoute, local_ip: str) -> bool:
    return prefix_rank(route.match.destination_subnets, local_ip) >= 0


def match_route(
    listener: Listener,
    local_ip: str,
    server_name: str | None = None,
    source_ip: str | None = None,
) -> TcpRoute | None:
    """The route whose match fits the connection, chosen as Envoy chooses a filter chain.

    Envoy narrows level by level and never backtracks: the routes whose destination
    subnets fit the address the client connected to, most specific first; among them
    the SNI (an exact name beats the longest matching ``*.suffix``, which beats a route
    without server names; without SNI only the latter can match); among those the
    client's address, the most specific source prefix. Ties keep the listener's order
    (the control plane allows no duplicate matchers).
    """
    candidates: list[TcpRoute] = list(listener.routes)
    levels: tuple[Callable[[TcpRoute], int], ...] = (
        lambda r: prefix_rank(r.match.destination_subnets, local_ip),
        lambda r: server_name_rank(r.match.server_names, server_name),
        lambda r: prefix_rank(r.match.source_prefixes, source_ip),
    )
    for rank in levels:
        scored = [(rank(r), r) for r in candidates]
        best = max((score for score, _ in scored), default=-1)
        if best < 0:
            return None
        candidates = [r for score, r in scored if score == best]
    return candidates[0]


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
