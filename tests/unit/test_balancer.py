"""Cluster and endpoint choice.

Statistical tests draw from an unseeded generator (the seed is in the failure message)
and reject at alpha = 1e-6, so each has a false-failure rate of at most one in a million.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from scipy import stats

from tcpmesh.control.snapshot import Cluster, Endpoint, OutlierDetection, SlowStart, WeightedCluster
from tcpmesh.dataplane.balancer import LoadBalancer, pick_weighted, slow_start_factor

ALPHA = 1e-6


def seeded() -> tuple[random.Random, int]:
    seed = random.SystemRandom().randrange(2**32)
    return random.Random(seed), seed


class FixedDraws:
    """A random source that returns the given values in order."""

    def __init__(self, values: list[int]) -> None:
        self.values = list(values)
        self.calls: list[int] = []

    def randrange(self, stop: int, /) -> int:
        self.calls.append(stop)
        return self.values.pop(0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def endpoints(n: int, *, ready: bool = True) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"127.0.5.{i + 1}", 9000, ready=ready) for i in range(n))


def cluster(eps: tuple[Endpoint, ...], **kw: object) -> Cluster:
    return Cluster(name="outbound|9000|v1|svc", service="svc", port=9000, endpoints=eps, **kw)  # type: ignore[arg-type]


# -- weighted cluster pick --------------------------------------------------------------


def test_weighted_pick_uses_cumulative_ranges_in_list_order() -> None:
    dests = (WeightedCluster("a", 80), WeightedCluster("zero", 0), WeightedCluster("b", 20))
    for r, expected in [(0, "a"), (79, "a"), (80, "b"), (99, "b")]:
        draws = FixedDraws([r])
        chosen = pick_weighted(dests, draws)
        assert chosen is not None and chosen.cluster_name == expected
        assert draws.calls == [100]


def test_single_destination_is_always_chosen_without_drawing() -> None:
    draws = FixedDraws([])
    for weight in (100, 1, 0):
        chosen = pick_weighted((WeightedCluster("only", weight),), draws)
        assert chosen is not None and chosen.cluster_name == "only"
    assert draws.calls == []


def test_all_zero_weights_pick_nothing() -> None:
    assert (
        pick_weighted((WeightedCluster("a", 0), WeightedCluster("b", 0)), random.Random(1)) is None
    )


def test_weighted_pick_80_20_passes_exact_binomial_test() -> None:
    rng, seed = seeded()
    dests = (WeightedCluster("v1", 80), WeightedCluster("v2", 20))
    n = 100_000
    counts = Counter(pick_weighted(dests, rng).cluster_name for _ in range(n))  # type: ignore[union-attr]
    result = stats.binomtest(counts["v2"], n, 0.2, alternative="two-sided")
    assert result.pvalue > ALPHA, f"seed={seed} counts={counts} p={result.pvalue}"
    assert counts["v1"] + counts["v2"] == n


def test_weighted_pick_relative_weights_pass_chi_square_and_zero_never_chosen() -> None:
    rng, seed = seeded()
    dests = (
        WeightedCluster("a", 5),
        WeightedCluster("never", 0),
        WeightedCluster("b", 3),
        WeightedCluster("c", 2),
    )
    n = 100_000
    counts = Counter(pick_weighted(dests, rng).cluster_name for _ in range(n))  # type: ignore[union-attr]
    assert counts["never"] == 0
    observed = [counts["a"], counts["b"], counts["c"]]
    expected = [n * 0.5, n * 0.3, n * 0.2]
    result = stats.chisquare(observed, expected)
    assert result.pvalue > ALPHA, f"seed={seed} counts={counts} p={result.pvalue}"


# -- endpoint pick -----------------------------------------------------------------------


def test_least_request_with_two_endpoints_picks_the_fewer_active() -> None:
    eps = endpoints(2)
    c = cluster(eps)
    lb = LoadBalancer(random.Random(7))
    lb.connect_succeeded(c, eps[0])
    lb.connect_succeeded(c, eps[0])
    for _ in range(200):
        assert lb.pick(c) == eps[1]
    lb.connection_closed(c.name, eps[0])
    lb.connection_closed(c.name, eps[0])
    assert lb.active(c.name, eps[0]) == 0


def test_least_request_ties_between_two_are_spread() -> None:
    rng, seed = seeded()
    eps = endpoints(2)
    lb = LoadBalancer(rng)
    n = 10_000
    counts = Counter(lb.pick(cluster(eps)) for _ in range(n))
    result = stats.binomtest(counts[eps[0]], n, 0.5)
    assert result.pvalue > ALPHA, f"seed={seed} counts={counts}"


def test_least_request_never_picks_the_single_busiest_of_many() -> None:
    eps = endpoints(5)
    c = cluster(eps)
    lb = LoadBalancer(random.Random(3))
    for _ in range(10):
        lb.connect_succeeded(c, eps[0])
    picks = Counter(lb.pick(c) for _ in range(5_000))
    assert picks[eps[0]] == 0
    assert set(picks) == set(eps[1:])


def test_least_request_prefers_the_idle_endpoint_like_two_choices() -> None:
    rng, seed = seeded()
    eps = endpoints(5)
    c = cluster(eps)
    lb = LoadBalancer(rng)
    for busy in eps[:4]:
        for _ in range(5):
            lb.connect_succeeded(c, busy)
    n = 20_000
    idle_picks = sum(1 for _ in range(n) if lb.pick(c) == eps[4])
    # The idle host wins whenever it is one of the two distinct draws: p = 2/5.
    result = stats.binomtest(idle_picks, n, 0.4)
    assert result.pvalue > ALPHA, f"seed={seed} idle={idle_picks}"


def test_round_robin_cycles_in_order() -> None:
    eps = endpoints(3)
    c = cluster(eps, lb_policy="ROUND_ROBIN")
    lb = LoadBalancer(random.Random(0))
    assert [lb.pick(c) for _ in range(7)] == [*eps, *eps, eps[0]]


def test_random_is_uniform() -> None:
    rng, seed = seeded()
    eps = endpoints(4)
    c = cluster(eps, lb_policy="RANDOM")
    lb = LoadBalancer(rng)
    n = 40_000
    counts = Counter(lb.pick(c) for _ in range(n))
    result = stats.chisquare([counts[e] for e in eps])
    assert result.pvalue > ALPHA, f"seed={seed} counts={counts}"


def test_not_ready_endpoints_are_never_picked_and_none_ready_gives_none() -> None:
    ready = endpoints(2)
    unready = tuple(Endpoint(f"127.0.6.{i}", 9000, ready=False) for i in range(3))
    c = cluster(unready + ready)
    lb = LoadBalancer(random.Random(5))
    assert {lb.pick(c) for _ in range(500)} <= set(ready)
    assert lb.pick(cluster(unready)) is None
    assert lb.pick(cluster(())) is None


def test_source_ip_hash_is_sticky_and_consistent_when_an_endpoint_goes() -> None:
    eps = endpoints(5)
    lb = LoadBalancer(random.Random(0))
    clients = [f"10.1.{i // 250}.{i % 250}" for i in range(1000)]
    ring = cluster(eps, lb_policy="RING_HASH")
    before = {ip: lb.pick(ring, ip, hash_source_ip=True) for ip in clients}
    again = {ip: lb.pick(ring, ip, hash_source_ip=True) for ip in clients}
    assert before == again
    assert len(set(before.values())) == 5
    removed = eps[2]
    fewer = cluster(eps[:2] + eps[3:], lb_policy="RING_HASH")
    after = {ip: lb.pick(fewer, ip, hash_source_ip=True) for ip in clients}
    moved = [ip for ip in clients if before[ip] != after[ip]]
    assert moved and all(before[ip] == removed for ip in moved)


# -- outlier detection -------------------------------------------------------------------


def od(**kw: float) -> OutlierDetection:
    base = {"consecutive_errors": 3, "base_ejection_time": 30.0, "max_ejection_percent": 100}
    base.update(kw)
    return OutlierDetection(**base)  # type: ignore[arg-type]


def test_consecutive_connect_failures_eject_for_base_ejection_time() -> None:
    clock = FakeClock()
    eps = endpoints(3)
    c = cluster(eps, outlier_detection=od())
    lb = LoadBalancer(random.Random(1), clock)
    assert not lb.connect_failed(c, eps[0])
    assert not lb.connect_failed(c, eps[0])
    assert lb.connect_failed(c, eps[0])
    assert lb.is_ejected(c.name, eps[0])
    assert eps[0] not in {lb.pick(c) for _ in range(300)}
    clock.now += 29.9
    assert lb.is_ejected(c.name, eps[0])
    clock.now += 0.2
    assert not lb.is_ejected(c.name, eps[0])
    assert eps[0] in {lb.pick(c) for _ in range(300)}


def test_a_success_resets_the_failure_streak() -> None:
    eps = endpoints(3)
    c = cluster(eps, outlier_detection=od())
    lb = LoadBalancer(random.Random(1), FakeClock())
    lb.connect_failed(c, eps[0])
    lb.connect_failed(c, eps[0])
    lb.connect_succeeded(c, eps[0])
    assert not lb.connect_failed(c, eps[0])
    assert not lb.is_ejected(c.name, eps[0])


def test_repeat_ejection_lasts_longer() -> None:
    clock = FakeClock()
    eps = endpoints(3)
    c = cluster(eps, outlier_detection=od(consecutive_errors=1))
    lb = LoadBalancer(random.Random(1), clock)
    assert lb.connect_failed(c, eps[0])
    clock.now += 30.1
    assert lb.connect_failed(c, eps[0])
    clock.now += 59.0
    assert lb.is_ejected(c.name, eps[0])
    clock.now += 1.2
    assert not lb.is_ejected(c.name, eps[0])


def test_max_ejection_percent_bounds_ejections() -> None:
    eps = endpoints(2)
    c = cluster(eps, outlier_detection=od(consecutive_errors=1, max_ejection_percent=10))
    lb = LoadBalancer(random.Random(1), FakeClock())
    # One of two hosts is 50% > 10%: Envoy does not eject.
    assert not lb.connect_failed(c, eps[0])
    assert not lb.is_ejected(c.name, eps[0])
    c4 = cluster(endpoints(4), outlier_detection=od(consecutive_errors=1, max_ejection_percent=50))
    lb4 = LoadBalancer(random.Random(1), FakeClock())
    results = [lb4.connect_failed(c4, e) for e in c4.endpoints]
    assert results == [True, True, False, False]


def test_all_ejected_means_no_healthy_host_unless_panic_threshold() -> None:
    eps = endpoints(1)
    c = cluster(eps, outlier_detection=od(consecutive_errors=1))
    lb = LoadBalancer(random.Random(1), FakeClock())
    assert lb.connect_failed(c, eps[0])
    assert lb.pick(c) is None
    panic = cluster(eps, outlier_detection=od(consecutive_errors=1, min_health_percent=50))
    assert lb.pick(panic) == eps[0]


def test_open_connection_accounting() -> None:
    lb = LoadBalancer(random.Random(1))
    lb.connection_started("c")
    lb.connection_started("c")
    lb.connection_finished("c")
    assert lb.open_connections("c") == 1
    assert lb.open_connections("other") == 0


@pytest.mark.parametrize("policy", ["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM", "RING_HASH"])
def test_every_policy_picks_a_ready_endpoint(policy: str) -> None:
    eps = endpoints(3)
    c = cluster(eps, lb_policy=policy)
    lb = LoadBalancer(random.Random(2))
    assert all(lb.pick(c, "10.0.0.1") in eps for _ in range(50))


def test_a_hash_key_counts_only_in_a_ring_or_maglev_cluster() -> None:
    """Envoy's tcp_proxy hash_policy feeds the hash balancers only: LEAST_REQUEST and
    ROUND_ROBIN ignore it, and a ring without a key (no hash_policy) draws at random
    (envoy source/common/upstream/thread_aware_lb_impl.cc: no hash -> random)."""
    eps = endpoints(3)
    lb = LoadBalancer(random.Random(3))
    least = cluster(eps)
    assert len({lb.pick(least, "10.0.0.1", hash_source_ip=True) for _ in range(200)}) > 1
    for policy in ("RING_HASH", "MAGLEV"):
        hashed = cluster(eps, lb_policy=policy)
        assert len({lb.pick(hashed, "10.0.0.1", hash_source_ip=True) for _ in range(50)}) == 1
        assert len({lb.pick(hashed, "10.0.0.1") for _ in range(200)}) == 3


# -- slow start ---------------------------------------------------------------------------


def test_slow_start_factor_is_envoys_formula() -> None:
    """Envoy's slow_start_config: max(min_weight_percent, time_factor^(1/aggression)) with
    time_factor = max(age, 1s) / window; the full weight once the window is over."""
    cfg = SlowStart(window=100.0, aggression=2.0, min_weight_percent=10.0)
    assert slow_start_factor(cfg, 0.0) == 0.1  # (1/100)^(1/2) = 0.1
    assert slow_start_factor(cfg, 25.0) == 0.5
    assert slow_start_factor(cfg, 100.0) == 1.0
    linear = SlowStart(window=10.0)
    assert slow_start_factor(linear, 0.5) == 0.1  # the 10% floor
    assert slow_start_factor(linear, 5.0) == 0.5


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST"])
def test_a_new_endpoint_warms_up_while_the_first_ones_do_not(policy: str) -> None:
    now = [1000.0]
    lb = LoadBalancer(random.Random(11), lambda: now[0])
    first = endpoints(2)
    slow = SlowStart(window=100.0, min_weight_percent=10.0)
    c = cluster(first, lb_policy=policy, slow_start=slow)
    # The endpoints of a cluster seen for the first time start together: no warm-up.
    assert {lb.pick(c) for _ in range(50)} == set(first)
    newcomer = Endpoint("127.0.5.9", 9000)
    grown = cluster((*first, newcomer), lb_policy=policy, slow_start=slow)
    n = 3000
    hits = sum(lb.pick(grown) == newcomer for _ in range(n))
    # One second in, the newcomer weighs 10% against 1 and 1: p = 0.1 / 2.1.
    assert stats.binomtest(hits, n, 0.1 / 2.1).pvalue > 1e-6
    now[0] += 100.0
    hits = sum(lb.pick(grown) == newcomer for _ in range(n))
    if policy == "ROUND_ROBIN":
        assert hits == n // 3  # warm: plain round robin again
    else:
        assert stats.binomtest(hits, n, 1 / 3).pvalue > 1e-6
