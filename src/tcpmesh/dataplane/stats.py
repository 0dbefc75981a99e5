"""What one worker counts for Istio's TCP metrics (``reporter="source"``).

Counting is a dictionary increment into a ``telemetry.Counts``; the labels of a
destination are worked out once per (share, endpoint) and reused. The worker hands its
``Counts`` to the supervisor, which serves the sum over all workers on the pod's :15020
(see telemetry.channel); ``TCPMESH_METRICS_PORT`` additionally serves this worker's own
numbers on ``127.0.0.1:PORT+index``, for debugging one worker. The families and the
stat names are declared once, in telemetry.families (re-exported here).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry

from tcpmesh.control import Cluster, Endpoint, WeightedCluster
from tcpmesh.telemetry import (
    ALL_FAMILIES,
    NO_FLAGS,
    ClusterStat,
    Counts,
    CountsCollector,
    Destination,
    Family,
    Source,
    TcpProxyStat,
    destination,
)

__all__ = [
    "ALL_FAMILIES",
    "NO_FLAGS",
    "ClusterStat",
    "Family",
    "ProxyStats",
    "TcpProxyStat",
]

# Bounds the label cache: endpoints come and go with pods.
_CACHE_LIMIT = 4096


class ProxyStats:
    def __init__(
        self, registry: CollectorRegistry | None = None, source: Source | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.counts = Counts()
        self.source = source if source is not None else Source.from_env(os.environ)
        self._labels: dict[tuple[str, str, str, int], Destination] = {}
        self.registry.register(CountsCollector(lambda: self.counts, self.source))

    def destination(
        self, weighted: WeightedCluster | None, cluster: Cluster | None, endpoint: Endpoint | None
    ) -> Destination:
        """The destination labels of a connection, from a cache keyed by the endpoint."""
        key = (
            weighted.cluster_name if weighted is not None else "",
            endpoint.workload if endpoint else "",
            endpoint.address if endpoint else "",
            endpoint.port if endpoint else 0,
        )
        dest = self._labels.get(key)
        if dest is None:
            if len(self._labels) >= _CACHE_LIMIT:
                self._labels.clear()
            dest = self._labels[key] = destination(weighted, cluster, endpoint)
        return dest

    def opened(self, dest: Destination, flags: str) -> None:
        self.counts.row(dest, flags)[0] += 1

    def closed(self, dest: Destination, flags: str) -> None:
        self.counts.row(dest, flags)[1] += 1

    def add_bytes(self, dest: Destination, flags: str, received: int, sent: int) -> None:
        row = self.counts.row(dest, flags)
        row[2] += received
        row[3] += sent

    def relay_started(self, dest: Destination) -> None:
        active = self.counts.active
        active[dest] = active.get(dest, 0) + 1

    def relay_ended(self, dest: Destination, seconds: float | None) -> None:
        """A relayed connection ended; ``seconds`` if it reached its upstream."""
        active = self.counts.active
        active[dest] = active.get(dest, 1) - 1
        if seconds is not None:
            self.counts.observe_duration(dest, seconds)

    def event(self, stat_prefix: str, stat: TcpProxyStat) -> None:
        self.counts.event(stat_prefix, stat.value)

    def cluster_event(self, cluster_name: str, stat: ClusterStat) -> None:
        self.counts.cluster_event(cluster_name, stat.value)

    def value(self, metric: str, **labels: str) -> float:
        """Sum of a sample over the series whose labels include ``labels``."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name != metric:
                    continue
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total
