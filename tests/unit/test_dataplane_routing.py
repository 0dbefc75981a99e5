"""Open-time decisions: route match, cluster lookup and the response flags they give."""

from __future__ import annotations

import dataclasses
import random

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
from tcpmesh.dataplane.balancer import LoadBalancer, pick_weighted
from tcpmesh.dataplane.routing import Decision, decide, match_route

V1 = "outbound|9000|v1|tcp-echo.default.svc.cluster.local"


def route(*dests: tuple[str, int], subnets: tuple[str, ...] = (), source: str = "r") -> TcpRoute:
    return TcpRoute(
        destinations=tuple(WeightedCluster(n, w) for n, w in dests),
        origin=RouteOrigin("VirtualService", "default", source, 0),
        stat_prefix=source,
        match=L4Match(destination_subnets=subnets),
    )


def decide_on(
    snap: Snapshot,
    lst: Listener | None,
    local_ip: str,
    client_ip: str | None,
    rng: random.Random,
    lb: LoadBalancer,
) -> Decision:
    """Match the listener's route for ``local_ip``, then decide with Envoy's random pick."""
    matched = match_route(lst, local_ip) if lst is not None else None
    return decide(snap, matched, client_ip, lb, lambda r, _: pick_weighted(r.destinations, rng))


def listener(*routes: TcpRoute) -> Listener:
    return Listener("0.0.0.0_31400", "0.0.0.0", 31400, routes)


def v1(
    endpoints: tuple[Endpoint, ...] = (Endpoint("127.0.3.1", 9000),),
    max_connections: int | None = None,
) -> Cluster:
    return Cluster(
        name=V1,
        service="tcp-echo.default.svc.cluster.local",
        port=9000,
        subset="v1",
        max_connections=max_connections,
        endpoints=endpoints,
    )


def test_first_matching_route_wins_and_empty_match_matches_all() -> None:
    a = route((V1, 100), subnets=("10.0.0.0/8",), source="a")
    b = route((V1, 100), subnets=("127.0.0.1",), source="b")
    c = route((V1, 100), source="c")
    lst = listener(a, b, c)
    assert match_route(lst, "10.2.3.4") is a
    assert match_route(lst, "127.0.0.1") is b
    assert match_route(lst, "127.0.0.2") is c
    assert match_route(listener(a), "192.168.1.1") is None
    assert match_route(listener(route((V1, 1), subnets=("::1/128",))), "::1") is not None


def test_decide_success_counts_against_the_cluster() -> None:
    snap = Snapshot.build((listener(route((V1, 100))),), (v1(),))
    lb = LoadBalancer(random.Random(1))
    d = decide_on(snap, snap.listeners[0], "127.0.0.1", "127.0.0.9", random.Random(1), lb)
    assert d.flag is None and d.cluster_name == V1
    assert d.endpoint == Endpoint("127.0.3.1", 9000)
    assert lb.open_connections(V1) == 1


def test_decide_flags() -> None:
    lb = LoadBalancer(random.Random(1))
    rng = random.Random(1)
    missing = "outbound|9000|v3|tcp-echo.default.svc.cluster.local"
    snap = Snapshot.build((listener(route((missing, 100))),), (v1(),))
    nc = decide_on(snap, snap.listeners[0], "127.0.0.1", None, rng, lb)
    assert (nc.flag, nc.cluster_name, nc.cluster) == (ResponseFlag.NO_CLUSTER, missing, None)

    empty = Snapshot.build((listener(route((V1, 100))),), (v1(()),))
    assert decide_on(empty, empty.listeners[0], "127.0.0.1", None, rng, lb).flag == "UH"

    unready = v1((Endpoint("127.0.3.1", 9000, ready=False),))
    snap_unready = Snapshot.build((listener(route((V1, 100))),), (unready,))
    unready_listener = snap_unready.listeners[0]
    assert decide_on(snap_unready, unready_listener, "127.0.0.1", None, rng, lb).flag == "UH"

    assert decide_on(snap, None, "127.0.0.1", None, rng, lb).flag == "NR"
    only_10 = listener(route((V1, 100), subnets=("10.0.0.0/8",)))
    assert decide_on(snap, only_10, "127.0.0.1", None, rng, lb).flag == "NR"


def test_max_connections_overflow_gives_uo() -> None:
    snap = Snapshot.build((listener(route((V1, 100))),), (v1(max_connections=2),))
    lb = LoadBalancer(random.Random(1))
    rng = random.Random(1)
    flags = [decide_on(snap, snap.listeners[0], "127.0.0.1", None, rng, lb).flag for _ in range(3)]
    assert flags == [None, None, "UO"]
    lb.connection_finished(V1)
    assert decide_on(snap, snap.listeners[0], "127.0.0.1", None, rng, lb).flag is None


def test_source_ip_hash_policy_is_sticky() -> None:
    eps = tuple(Endpoint(f"127.0.3.{i}", 9000) for i in range(1, 6))
    r = TcpRoute(
        destinations=(WeightedCluster(V1, 100),),
        origin=RouteOrigin("VirtualService", "default", "r", 0),
        stat_prefix="r",
        hash_policy="source_ip",
    )
    ring = dataclasses.replace(v1(eps), lb_policy="RING_HASH")
    snap = Snapshot.build((listener(r),), (ring,))
    lb = LoadBalancer(random.Random(1))
    rng = random.Random(1)
    picks = {
        decide_on(snap, snap.listeners[0], "127.0.0.1", "10.9.8.7", rng, lb).endpoint
        for _ in range(50)
    }
    assert len(picks) == 1


def test_source_prefixes_pick_the_most_specific_client_route_after_the_destination() -> None:
    pod = dataclasses.replace(
        route((V1, 100), source="pod"), match=L4Match(source_prefixes=("127.1.0.5/32",))
    )
    pods = dataclasses.replace(
        route((V1, 100), source="pods"), match=L4Match(source_prefixes=("127.1.0.0/16",))
    )
    anyone = route((V1, 100), source="anyone")
    lst = listener(anyone, pods, pod)
    assert match_route(lst, "127.240.1.1", None, "127.1.0.5") is pod
    assert match_route(lst, "127.240.1.1", None, "127.1.0.6") is pods
    assert match_route(lst, "127.240.1.1", None, "127.0.0.1") is anyone
    assert match_route(lst, "127.240.1.1", None, None) is anyone
    # Envoy never backtracks: the most specific destination wins before the source is looked at.
    narrow = route((V1, 100), subnets=("127.240.1.1/32",), source="narrow")
    narrow = dataclasses.replace(
        narrow, match=dataclasses.replace(narrow.match, source_prefixes=("127.1.0.9/32",))
    )
    assert match_route(listener(pod, anyone, narrow), "127.240.1.1", None, "127.1.0.5") is None
