"""Snapshot.check(): one small test per invariant (go-control-plane's Consistent() style)."""

from __future__ import annotations

import dataclasses

import pytest

from tcpmesh.control import (
    Cluster,
    Endpoint,
    L4Match,
    Listener,
    RouteOrigin,
    Snapshot,
    SnapshotError,
    TcpRoute,
    WeightedCluster,
    cluster_name,
)

FQDN = "tcp-echo.default.svc.cluster.local"
V1 = cluster_name(9000, "v1", FQDN)
V9 = cluster_name(9000, "v9", FQDN)
ORIGIN = RouteOrigin("VirtualService", "default", "tcp-echo", 0)


def share(subset: str = "v1", weight: int = 100) -> WeightedCluster:
    return WeightedCluster(cluster_name(9000, subset, FQDN), weight, FQDN, subset, 9000)


def tcp_route(*shares: WeightedCluster) -> TcpRoute:
    return TcpRoute(shares or (share(),), ORIGIN, "tcp-echo.default")


def listener(name: str = "0.0.0.0_31400", port: int = 31400, **kw: object) -> Listener:
    routes = kw.pop("routes", (tcp_route(),))
    return Listener(name, str(kw.pop("address", "127.0.0.1")), port, routes)  # type: ignore[arg-type]


def v1(**changes: object) -> Cluster:
    base = Cluster(V1, FQDN, 9000, "v1", endpoints=(Endpoint("127.1.0.1", 9000),))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def problems(listeners: tuple[Listener, ...], clusters: tuple[Cluster, ...]) -> list[str]:
    with pytest.raises(SnapshotError) as caught:
        Snapshot.build(listeners, clusters).check()
    return caught.value.problems


def test_a_consistent_snapshot_passes_and_check_returns_it() -> None:
    snapshot = Snapshot.build((listener(),), (v1(),))
    assert snapshot.check() is snapshot


def test_a_destination_without_a_cluster_is_allowed_it_closes_with_nc() -> None:
    snapshot = Snapshot.build(
        (listener(routes=(tcp_route(share("v1", 80), share("v9", 20)),)),), (v1(),)
    )
    assert snapshot.check() is snapshot


def test_two_listeners_on_one_address_and_port_are_inconsistent() -> None:
    found = problems((listener("0.0.0.0_80", 80), listener("0.0.0.0_8080", 80)), (v1(),))
    assert found == ["listeners 0.0.0.0_80 and 0.0.0.0_8080 both bind 127.0.0.1:80"]


def test_two_listeners_of_one_name_are_inconsistent() -> None:
    found = problems((listener("a", 80), listener("a", 81)), (v1(),))
    assert found == ["listener name a is used twice"]


def test_a_listener_without_routes_is_inconsistent() -> None:
    assert problems((listener(routes=()),), (v1(),)) == ["listener 0.0.0.0_31400 has no route"]


def test_a_listener_port_outside_the_port_space_is_inconsistent() -> None:
    found = problems((listener(port=70000),), (v1(),))
    assert found == ["listener 0.0.0.0_31400 binds 127.0.0.1:70000, not an IP:port"]


def test_a_zero_weight_destination_is_inconsistent() -> None:
    found = problems((listener(routes=(tcp_route(share("v1", 0)),)),), (v1(),))
    assert found == [
        f"listener 0.0.0.0_31400 route 0 ({ORIGIN}): {V1} has weight 0 <= 0",
    ]


def test_a_route_without_destinations_is_inconsistent() -> None:
    empty = TcpRoute((), ORIGIN, "p")
    found = problems((listener(routes=(empty,)),), (v1(),))
    assert found == [f"listener 0.0.0.0_31400 route 0 ({ORIGIN}) has no destination"]


def test_a_destination_that_disagrees_with_its_cluster_is_inconsistent() -> None:
    wrong = WeightedCluster(V1, 100, FQDN, "v2", 9000)
    found = problems((listener(routes=(tcp_route(wrong),)),), (v1(),))
    assert found == [f"listener 0.0.0.0_31400 route 0 ({ORIGIN}): {V1} disagrees with its cluster"]


def test_a_cluster_defined_twice_is_inconsistent() -> None:
    assert problems((listener(),), (v1(), v1())) == [f"cluster {V1} is defined twice"]


def test_a_cluster_name_not_made_of_its_fields_is_inconsistent() -> None:
    found = problems((), (v1(subset="v2"),))
    assert found == [f"cluster {V1} does not match its service, subset and port"]


def test_an_endpoint_outside_the_port_space_is_inconsistent() -> None:
    found = problems((), (v1(endpoints=(Endpoint("127.1.0.1", 0),)),))
    assert found == [f"cluster {V1} has endpoint 127.1.0.1:0, not an IP:port"]


def test_an_endpoint_that_is_a_name_is_inconsistent() -> None:
    found = problems((), (v1(endpoints=(Endpoint("tcp-echo.example", 9000),)),))
    assert found == [f"cluster {V1} has endpoint tcp-echo.example:9000, not an IP:port"]


def test_a_non_positive_connect_timeout_is_inconsistent() -> None:
    assert problems((), (v1(connect_timeout=0.0),)) == [
        f"cluster {V1} has connect timeout 0.0 <= 0"
    ]


def test_a_version_that_is_not_the_content_digest_is_inconsistent() -> None:
    snapshot = Snapshot.build((listener(),), (v1(),))
    forged = Snapshot("0123456789abcdef", snapshot.listeners, snapshot.clusters)
    with pytest.raises(SnapshotError, match="is not the digest of the content"):
        forged.check()


def test_several_problems_are_reported_together() -> None:
    found = problems((listener(routes=()),), (v1(), v1()))
    assert len(found) == 2


def test_a_source_prefix_that_is_not_a_cidr_is_inconsistent() -> None:
    bad = dataclasses.replace(tcp_route(), match=L4Match(source_prefixes=("pod-a",)))
    assert problems((listener(routes=(bad,)),), (v1(),)) == [
        "listener 0.0.0.0_31400 route 0 (VirtualService default/tcp-echo tcp[0]) "
        "has subnet 'pod-a', not a CIDR"
    ]


def test_routes_told_apart_by_source_prefix_only_are_consistent() -> None:
    by_pod = dataclasses.replace(tcp_route(), match=L4Match(source_prefixes=("127.1.0.5/32",)))
    Snapshot.build((listener(routes=(by_pod, tcp_route())),), (v1(),)).check()
    twice = problems((listener(routes=(by_pod, by_pod)),), (v1(),))
    assert len(twice) == 1 and "has the same match as route 0" in twice[0]
