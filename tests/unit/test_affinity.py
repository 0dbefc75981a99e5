"""Sticky versions: the consistent weighted pick by client address."""

from __future__ import annotations

import ipaddress
import random

import pytest
from scipy import stats

from tcpmesh.control import WeightedCluster
from tcpmesh.dataplane.affinity import address_point, pick_by_address

ALPHA = 1e-6
N = 10_000
# 10,000 distinct loopback sources, as the integration test binds them.
SUBNET = [
    str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("127.12.0.1")) + i)) for i in range(N)
]
# And 10,000 unrelated addresses (a fixed seed: the test is deterministic).
SCATTERED = list(
    dict.fromkeys(str(ipaddress.IPv4Address(x)) for x in random.Random(12).sample(range(2**32), N))
)


def split(v1: int, v2: int) -> tuple[WeightedCluster, ...]:
    return (WeightedCluster("outbound|9000|v1|s", v1), WeightedCluster("outbound|9000|v2|s", v2))


def picks(weights: tuple[WeightedCluster, ...], addresses: list[str]) -> list[str]:
    chosen = [pick_by_address(weights, a) for a in addresses]
    return [c.cluster_name if c else "" for c in chosen]


def consistent(observed: int, n: int, share: float) -> bool:
    return stats.binomtest(observed, n, share, alternative="two-sided").pvalue >= ALPHA


@pytest.mark.parametrize("addresses", [SUBNET, SCATTERED], ids=["subnet", "scattered"])
def test_80_20_to_70_30_repins_at_most_10_5_percent(addresses: list[str]) -> None:
    before = picks(split(80, 20), addresses)
    after = picks(split(70, 30), addresses)
    moved = sum(a != b for a, b in zip(before, after, strict=True))
    assert moved / N <= 0.105, moved
    # Only v1 -> v2 moves happen: nobody leaves the version that grew.
    assert all(
        b.startswith("outbound|9000|v1") for a, b in zip(after, before, strict=True) if a != b
    )
    for chosen, share in ((before, 0.2), (after, 0.3)):
        v2 = sum(c.startswith("outbound|9000|v2") for c in chosen)
        assert consistent(v2, N, share), v2


def test_the_same_client_always_gets_the_same_version() -> None:
    weights = split(50, 50)
    for address in SUBNET[:200]:
        assert len(set(picks(weights, [address] * 50))) == 1


def test_ipv6_and_bad_addresses_are_deterministic() -> None:
    weights = split(80, 20)
    v6 = "2001:db8::17"
    assert 0.0 <= address_point(v6) < 1.0
    assert picks(weights, [v6] * 5) == picks(weights, [v6]) * 5
    assert pick_by_address(weights, None) == weights[0]
    assert pick_by_address(weights, "not-an-ip") == weights[0]
    assert pick_by_address(split(0, 0), "127.0.0.1") is None


def test_a_zero_weight_gets_nobody() -> None:
    assert set(picks(split(100, 0), SUBNET[:1000])) == {"outbound|9000|v1|s"}


def test_the_proxy_picks_by_address_on_an_affine_route() -> None:
    from tcpmesh.control import RouteOrigin, TcpRoute, VersionAffinity
    from tcpmesh.dataplane import Proxy

    route = TcpRoute(
        destinations=split(70, 30),
        origin=RouteOrigin("VirtualService", "default", "tcp-echo", 0),
        stat_prefix="tcp-echo.default",
        version_affinity=VersionAffinity.SOURCE_IP,
    )
    proxy = Proxy.__new__(Proxy)  # pick() reads only the route (and the rng otherwise)
    chosen = [proxy.pick(route, a) for a in SUBNET[:2000]]
    assert chosen == [pick_by_address(route.destinations, a) for a in SUBNET[:2000]]
