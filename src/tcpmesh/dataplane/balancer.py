"""Cluster and endpoint choice, free of I/O so it can be tested exhaustively.

Two weighted cluster picks: ``pick_weighted`` follows Envoy's
``WeightedClusterUtil::pickCluster`` (draw ``r = randrange(total)`` and walk the entries in
list order over cumulative ranges); ``SmoothWeighted`` is nginx's smooth weighted round
robin, deterministic: every run of ``total`` connections is split exactly by weight, and
the shares are interleaved (80/20 goes v1 v1 v2 v1 v1 ...), so a worker lands on the
configured split after a few connections instead of within binomial noise. The endpoint
pick follows Envoy's load balancers as Istio configures them, with "active
requests" counted as open upstream connections, which is what a request is for raw TCP.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from tcpmesh.control import (
    HASH_POLICIES,
    Cluster,
    Endpoint,
    OutlierDetection,
    SlowStart,
    WeightedCluster,
)
from tcpmesh.dataplane.counters import (
    ClusterCounters,
    CounterStore,
    EndpointCounters,
    EndpointKey,
    LocalCounters,
)

# Envoy caps the growing ejection time at max_ejection_time, 300s unless configured.
MAX_EJECTION_TIME = 300.0


class RandomSource(Protocol):
    """What the balancer needs from a random generator; ``random.Random`` fits."""

    def randrange(self, stop: int, /) -> int: ...


def pick_weighted(
    destinations: Sequence[WeightedCluster], rng: RandomSource
) -> WeightedCluster | None:
    """Envoy's weighted pick. A single destination takes everything, whatever its weight.

    Returns None only when several destinations all weigh 0, which validation rejects.
    """
    if len(destinations) == 1:
        return destinations[0]
    total = sum(max(d.weight, 0) for d in destinations)
    if total <= 0:
        return None
    r = rng.randrange(total)
    upper = 0
    for dest in destinations:
        if dest.weight <= 0:
            continue
        upper += dest.weight
        if r < upper:
            return dest
    raise AssertionError("randrange(total) returned a value outside [0, total)")


class SmoothWeighted:
    """nginx's smooth weighted round robin over one route's destinations.

    Each pick adds every weight to its entry's running score, takes the highest score
    (the earlier entry on ties) and subtracts the total from it. State is per picker;
    the proxy keeps one per route and worker.
    """

    __slots__ = ("_current", "_destinations", "_total", "_weights")

    def __init__(self, destinations: Sequence[WeightedCluster]) -> None:
        self._destinations = tuple(d for d in destinations if d.weight > 0)
        self._weights = tuple(d.weight for d in self._destinations)
        self._total = sum(self._weights)
        self._current = [0] * len(self._destinations)

    def pick(self) -> WeightedCluster | None:
        dests = self._destinations
        if len(dests) <= 1:
            return dests[0] if dests else None
        current = self._current
        best = 0
        best_score = None
        for i, weight in enumerate(self._weights):
            score = current[i] + weight
            current[i] = score
            if best_score is None or score > best_score:
                best, best_score = i, score
        current[best] -= self._total
        return dests[best]


def endpoint_key(endpoint: Endpoint) -> EndpointKey:
    return (endpoint.address, endpoint.port)


def slow_start_factor(config: SlowStart, age: float) -> float:
    """Envoy's slow start (``slow_start_config``): a host ``age`` seconds into its window
    weighs ``max(min_weight_percent, time_factor ** (1 / aggression))`` of its weight, with
    ``time_factor = max(age, 1 s) / window``; past the window, all of it."""
    if age >= config.window:
        return 1.0
    time_factor = max(age, 1.0) / config.window
    return max(config.min_weight_percent / 100.0, float(time_factor ** (1.0 / config.aggression)))


def _rendezvous_score(client: str, key: EndpointKey) -> int:
    digest = hashlib.blake2b(f"{client}|{key[0]}|{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class LoadBalancer:
    """Endpoint choice with state that outlives snapshots, kept in a ``CounterStore``.

    With ``SharedCounters`` the circuit breaker, least-request loads, round-robin position
    and outlier state are those of the whole proxy (every worker process), as Envoy's are
    per cluster across its threads; with ``LocalCounters`` (the default) they are this
    process's. Callers report the life of each upstream connection: ``try_start`` (the
    breaker), then ``connect_succeeded`` or ``connect_failed`` per attempt, then
    ``connection_closed`` after a success and ``connection_finished`` at the end (or
    both at once: ``connection_ended``).
    """

    def __init__(
        self,
        rng: RandomSource,
        clock: Callable[[], float] = time.monotonic,
        store: CounterStore | None = None,
    ) -> None:
        self._rng = rng
        self._clock = clock
        self._store: CounterStore = store if store is not None else LocalCounters()
        # Slow start: when this proxy first saw each endpoint of a warming cluster.
        self._first_seen: dict[str, dict[EndpointKey, float]] = {}

    def open_connections(self, cluster_name: str) -> int:
        """Connections counted against the cluster (connecting or open)."""
        return self._store.cluster(cluster_name).open

    def active(self, cluster_name: str, endpoint: Endpoint) -> int:
        counters = self._store.cluster(cluster_name).known_endpoint(endpoint_key(endpoint))
        return counters.active if counters is not None else 0

    def is_ejected(self, cluster_name: str, endpoint: Endpoint) -> bool:
        counters = self._store.cluster(cluster_name).known_endpoint(endpoint_key(endpoint))
        return counters is not None and counters.ejected_until > self._clock()

    def healthy_endpoints(self, cluster: Cluster) -> tuple[Endpoint, ...]:
        """Ready endpoints not ejected; all ready ones when too few are healthy (panic)."""
        ready = cluster.ready_endpoints
        od = cluster.outlier_detection
        if od is None or not ready:
            return ready
        healthy = tuple(e for e in ready if not self.is_ejected(cluster.name, e))
        if 100 * len(healthy) < od.min_health_percent * len(ready):
            return ready
        return healthy

    def pick(
        self,
        cluster: Cluster,
        client_ip: str | None = None,
        *,
        hash_source_ip: bool = False,
        exclude: frozenset[EndpointKey] = frozenset(),
    ) -> Endpoint | None:
        """Choose an endpoint, or None when the cluster has no healthy endpoint (UH).

        ``exclude`` holds endpoints a connection already failed to reach (connect
        failover skips them while others remain)."""
        candidates = self.healthy_endpoints(cluster)
        if exclude:
            remaining = tuple(e for e in candidates if endpoint_key(e) not in exclude)
            candidates = remaining or candidates
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        hashing = cluster.lb_policy in HASH_POLICIES
        if hashing and hash_source_ip and client_ip is not None:
            # Envoy hashes only in a ring or Maglev cluster; other balancers ignore the key.
            return max(candidates, key=lambda e: _rendezvous_score(client_ip, endpoint_key(e)))
        counters = self._store.cluster(cluster.name)
        warming = self._slow_start_factors(cluster, candidates)
        if warming is not None and cluster.lb_policy in ("ROUND_ROBIN", "LEAST_REQUEST"):
            return self._weighted_pick(cluster, counters, candidates, warming)
        if cluster.lb_policy == "ROUND_ROBIN":
            with counters.locked():
                position = counters.rr_next
                counters.rr_next = position + 1
            return candidates[position % len(candidates)]
        if cluster.lb_policy == "RANDOM" or hashing:
            # A hash policy without a hash key: Envoy's ring and Maglev draw at random.
            return candidates[self._rng.randrange(len(candidates))]
        return self._least_request(counters, candidates)

    def _slow_start_factors(
        self, cluster: Cluster, candidates: Sequence[Endpoint]
    ) -> list[float] | None:
        """Each candidate's slow-start share of its weight; None when none is warming.

        An endpoint warms from when this proxy first saw it in the cluster. The endpoints
        of a cluster seen for the first time start together, so none of them warms
        relative to the others (Envoy: no host in slow start, weights unchanged)."""
        config = cluster.slow_start
        if config is None:
            return None
        now = self._clock()
        seen = self._first_seen.get(cluster.name)
        if seen is None:
            seen = self._first_seen[cluster.name] = {
                endpoint_key(e): float("-inf") for e in cluster.endpoints
            }
        elif len(seen) > 2 * len(cluster.endpoints) + 16:
            current = {endpoint_key(e) for e in cluster.endpoints}
            for key in [k for k in seen if k not in current]:
                del seen[key]
        factors = [
            slow_start_factor(config, now - seen.setdefault(endpoint_key(e), now))
            for e in candidates
        ]
        return factors if min(factors) < 1.0 else None

    def _weighted_pick(
        self,
        cluster: Cluster,
        counters: ClusterCounters,
        candidates: Sequence[Endpoint],
        factors: Sequence[float],
    ) -> Endpoint:
        """Envoy's weighted round robin / least request while hosts warm up: a host's share
        is its slow-start weight, divided by (active + 1) for least request (Envoy's
        active_request_bias 1.0). Envoy schedules the weights with EDF; this draws at
        random with the same weights, so the expected shares are Envoy's."""
        weights = list(factors)
        if cluster.lb_policy == "LEAST_REQUEST":
            for i, e in enumerate(candidates):
                found = counters.known_endpoint(endpoint_key(e))
                weights[i] /= (found.active if found is not None else 0) + 1
        scaled = [max(1, round(w * 1_000_000)) for w in weights]
        r = self._rng.randrange(sum(scaled))
        for endpoint, weight in zip(candidates, scaled, strict=True):
            if r < weight:
                return endpoint
            r -= weight
        raise AssertionError("randrange(total) returned a value outside [0, total)")

    def _least_request(self, counters: ClusterCounters, candidates: Sequence[Endpoint]) -> Endpoint:
        def load(e: Endpoint) -> int:
            found = counters.known_endpoint(endpoint_key(e))
            return found.active if found is not None else 0

        if len(candidates) == 2:
            a, b = candidates
            load_a, load_b = load(a), load(b)
            if load_a != load_b:
                return a if load_a < load_b else b
            return candidates[self._rng.randrange(2)]
        # Power of two choices, two distinct hosts: the less loaded one wins, ties go to
        # the first draw (itself uniform).
        i = self._rng.randrange(len(candidates))
        j = self._rng.randrange(len(candidates) - 1)
        if j >= i:
            j += 1
        first, second = candidates[i], candidates[j]
        return second if load(second) < load(first) else first

    def try_start(self, cluster: Cluster) -> bool:
        """Count a new connection against ``max_connections``; False when the breaker is open.

        Check and count are one step under the cluster's lock, so concurrent workers
        never admit more than the limit between them."""
        counters = self._store.cluster(cluster.name)
        limit = cluster.max_connections
        with counters.locked():
            if limit is not None and counters.open >= limit:
                return False
            counters.open = counters.open + 1
        return True

    def connection_started(self, cluster_name: str) -> None:
        """Count a connection without the breaker check (the caller already decided)."""
        counters = self._store.cluster(cluster_name)
        with counters.locked():
            counters.open = counters.open + 1

    def connection_finished(self, cluster_name: str) -> None:
        counters = self._store.cluster(cluster_name)
        with counters.locked():
            counters.open = max(0, counters.open - 1)

    def connect_succeeded(self, cluster: Cluster, endpoint: Endpoint) -> None:
        counters = self._store.cluster(cluster.name)
        host = counters.endpoint(endpoint_key(endpoint))
        with counters.locked():
            host.active = host.active + 1
            if host.failures:
                host.failures = 0

    def connect_failed(self, cluster: Cluster, endpoint: Endpoint) -> bool:
        """Record a failed connect; True when it ejected the endpoint."""
        od_config = cluster.outlier_detection
        if od_config is None or od_config.consecutive_errors <= 0:
            return False
        counters = self._store.cluster(cluster.name)
        host = counters.endpoint(endpoint_key(endpoint))
        with counters.locked():
            host.failures = host.failures + 1
            if host.failures < od_config.consecutive_errors:
                return False
            host.failures = 0
            return self._eject(cluster, counters, host, od_config)

    def _eject(
        self,
        cluster: Cluster,
        counters: ClusterCounters,
        host: EndpointCounters,
        config: OutlierDetection,
    ) -> bool:
        now = self._clock()
        if host.ejected_until > now:
            return False
        ejected_now = 0
        for e in cluster.endpoints:
            other = counters.known_endpoint(endpoint_key(e))
            if other is not None and other.ejected_until > now:
                ejected_now += 1
        # Envoy's check: the ejection may not push the ejected share above the maximum.
        if 100 * (ejected_now + 1) > config.max_ejection_percent * max(len(cluster.endpoints), 1):
            return False
        ejections = host.ejections
        if ejections and config.interval > 0:
            # Envoy lowers the multiplier by one for every interval the host stayed healthy.
            healthy_intervals = int((now - host.ejected_until) // config.interval)
            ejections = max(0, ejections - healthy_intervals)
        ejections += 1
        host.ejections = ejections
        duration = min(
            config.base_ejection_time * ejections,
            max(config.base_ejection_time, MAX_EJECTION_TIME),
        )
        host.ejected_until = now + duration
        return True

    def connection_closed(self, cluster_name: str, endpoint: Endpoint) -> None:
        counters = self._store.cluster(cluster_name)
        host = counters.endpoint(endpoint_key(endpoint))
        with counters.locked():
            host.active = max(0, host.active - 1)

    def connection_ended(self, cluster_name: str, endpoint: Endpoint | None) -> None:
        """``connection_closed`` (when ``endpoint``: the connect had succeeded) and
        ``connection_finished`` as one step: one lock per closing connection, not two."""
        counters = self._store.cluster(cluster_name)
        host = counters.endpoint(endpoint_key(endpoint)) if endpoint is not None else None
        with counters.locked():
            if host is not None:
                host.active = max(0, host.active - 1)
            counters.open = max(0, counters.open - 1)
