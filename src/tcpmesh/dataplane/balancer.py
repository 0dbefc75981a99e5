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
from dataclasses import dataclass, field
from typing import Protocol

from tcpmesh.control import Cluster, Endpoint, OutlierDetection, WeightedCluster

EndpointKey = tuple[str, int]

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


def _rendezvous_score(client: str, key: EndpointKey) -> int:
    digest = hashlib.blake2b(f"{client}|{key[0]}|{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class _OutlierState:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


@dataclass
class _ClusterState:
    # Keyed by address:port so counts survive a snapshot that rebuilds the Endpoint objects.
    active: dict[EndpointKey, int] = field(default_factory=dict)
    outlier: dict[EndpointKey, _OutlierState] = field(default_factory=dict)
    rr_next: int = 0
    open_connections: int = 0


class LoadBalancer:
    """Per-worker endpoint choice with state that outlives snapshots.

    Callers report the life of each upstream connection: ``connect_succeeded`` or
    ``connect_failed`` once, and ``connection_closed`` after a success.
    """

    def __init__(self, rng: RandomSource, clock: Callable[[], float] = time.monotonic) -> None:
        self._rng = rng
        self._clock = clock
        self._clusters: dict[str, _ClusterState] = {}

    def _state(self, cluster_name: str) -> _ClusterState:
        state = self._clusters.get(cluster_name)
        if state is None:
            state = self._clusters[cluster_name] = _ClusterState()
        return state

    def open_connections(self, cluster_name: str) -> int:
        """Connections counted against the cluster (connecting or open)."""
        state = self._clusters.get(cluster_name)
        return state.open_connections if state else 0

    def active(self, cluster_name: str, endpoint: Endpoint) -> int:
        state = self._clusters.get(cluster_name)
        return state.active.get(endpoint_key(endpoint), 0) if state else 0

    def is_ejected(self, cluster_name: str, endpoint: Endpoint) -> bool:
        state = self._clusters.get(cluster_name)
        if state is None:
            return False
        od = state.outlier.get(endpoint_key(endpoint))
        return od is not None and od.ejected_until > self._clock()

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
        self, cluster: Cluster, client_ip: str | None = None, *, hash_source_ip: bool = False
    ) -> Endpoint | None:
        """Choose an endpoint, or None when the cluster has no healthy endpoint (UH)."""
        candidates = self.healthy_endpoints(cluster)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if (hash_source_ip or cluster.lb_policy == "RING_HASH") and client_ip is not None:
            return max(candidates, key=lambda e: _rendezvous_score(client_ip, endpoint_key(e)))
        state = self._state(cluster.name)
        if cluster.lb_policy == "ROUND_ROBIN":
            chosen = candidates[state.rr_next % len(candidates)]
            state.rr_next = (state.rr_next + 1) % len(candidates)
            return chosen
        if cluster.lb_policy in ("RANDOM", "RING_HASH"):
            return candidates[self._rng.randrange(len(candidates))]
        return self._least_request(state, candidates)

    def _least_request(self, state: _ClusterState, candidates: Sequence[Endpoint]) -> Endpoint:
        def load(e: Endpoint) -> int:
            return state.active.get(endpoint_key(e), 0)

        if len(candidates) == 2:
            a, b = candidates
            if load(a) != load(b):
                return a if load(a) < load(b) else b
            return candidates[self._rng.randrange(2)]
        # Power of two choices, two distinct hosts: the less loaded one wins, ties go to
        # the first draw (itself uniform).
        i = self._rng.randrange(len(candidates))
        j = self._rng.randrange(len(candidates) - 1)
        if j >= i:
            j += 1
        first, second = candidates[i], candidates[j]
        return second if load(second) < load(first) else first

    def connection_started(self, cluster_name: str) -> None:
        """A downstream connection now counts against the cluster's max_connections."""
        self._state(cluster_name).open_connections += 1

    def connection_finished(self, cluster_name: str) -> None:
        state = self._state(cluster_name)
        state.open_connections = max(0, state.open_connections - 1)

    def connect_succeeded(self, cluster: Cluster, endpoint: Endpoint) -> None:
        state = self._state(cluster.name)
        key = endpoint_key(endpoint)
        state.active[key] = state.active.get(key, 0) + 1
        od = state.outlier.get(key)
        if od is not None:
            od.consecutive_failures = 0

    def connect_failed(self, cluster: Cluster, endpoint: Endpoint) -> bool:
        """Record a failed connect; True when it ejected the endpoint."""
        od_config = cluster.outlier_detection
        if od_config is None or od_config.consecutive_errors <= 0:
            return False
        state = self._state(cluster.name)
        key = endpoint_key(endpoint)
        od = state.outlier.setdefault(key, _OutlierState())
        od.consecutive_failures += 1
        if od.consecutive_failures < od_config.consecutive_errors:
            return False
        od.consecutive_failures = 0
        return self._eject(cluster, state, key, od, od_config)

    def _eject(
        self,
        cluster: Cluster,
        state: _ClusterState,
        key: EndpointKey,
        od: _OutlierState,
        config: OutlierDetection,
    ) -> bool:
        now = self._clock()
        if od.ejected_until > now:
            return False
        keys = {endpoint_key(e) for e in cluster.endpoints}
        ejected_now = sum(
            1 for k, s in state.outlier.items() if k in keys and s.ejected_until > now
        )
        # Envoy's check: the ejection may not push the ejected share above the maximum.
        if 100 * (ejected_now + 1) > config.max_ejection_percent * max(len(keys), 1):
            return False
        if od.ejections and config.interval > 0:
            # Envoy lowers the multiplier by one for every interval the host stayed healthy.
            healthy_intervals = int((now - od.ejected_until) // config.interval)
            od.ejections = max(0, od.ejections - healthy_intervals)
        od.ejections += 1
        duration = min(
            config.base_ejection_time * od.ejections,
            max(config.base_ejection_time, MAX_EJECTION_TIME),
        )
        od.ejected_until = now + duration
        return True

    def connection_closed(self, cluster_name: str, endpoint: Endpoint) -> None:
        state = self._state(cluster_name)
        key = endpoint_key(endpoint)
        left = state.active.get(key, 0) - 1
        if left > 0:
            state.active[key] = left
        else:
            state.active.pop(key, None)
