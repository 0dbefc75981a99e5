"""Istio's TCP metrics as the gateway reports them (``reporter="source"``), per worker.

Each worker owns a registry; with ``TCPMESH_METRICS_PORT=P`` worker ``i`` serves it on
``127.0.0.1:P+i`` (see worker.py), so a scraper sums over the workers' ports.

Counting happens in plain dictionaries and becomes Prometheus families only when
scraped: a ``Counter.labels(...).inc()`` takes a lock and several lookups, and the
proxy counts a few times per connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from tcpmesh.control import Cluster, WeightedCluster

UNKNOWN = "unknown"
# The flags label when a connection ended without a response flag (Envoy prints "-").
NO_FLAGS = "-"


class TcpProxyStat(StrEnum):
    """The Envoy tcp_proxy stats (``ALL_TCP_PROXY_STATS``) the built-in proxy counts.

    Counted per route under its ``stat_prefix`` (per listener for ``NR``, which has no
    route), as Envoy counts them under ``tcp.<stat_prefix>``.
    """

    # No route matched (NR), or the picked destination names no cluster (NC): Envoy
    # counts both here.
    DOWNSTREAM_CX_NO_ROUTE = "downstream_cx_no_route"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DOWNSTREAM_CONNECTION_DURATION = "max_downstream_connection_duration"


class ClusterStat(StrEnum):
    """The Envoy cluster stats the built-in proxy counts, filed on the cluster itself.

    As in Envoy (``cluster.<name>.upstream_cx_*``): a failed connect is the cluster's
    event, not the route's.
    """

    UPSTREAM_CX_CONNECT_FAIL = "upstream_cx_connect_fail"
    UPSTREAM_CX_CONNECT_TIMEOUT = "upstream_cx_connect_timeout"
    UPSTREAM_CX_OVERFLOW = "upstream_cx_overflow"  # UO: the circuit breaker was open
    UPSTREAM_CX_NONE_HEALTHY = "upstream_cx_none_healthy"  # UH: no ready endpoint


@dataclass(frozen=True)
class Family:
    """One Prometheus counter family: its name (without ``_total``), help and labels."""

    name: str
    help: str
    labels: tuple[str, ...]


ISTIO_LABELS = (
    "reporter",
    "destination_service",
    "destination_version",
    "request_protocol",
    "response_flags",
)
# Every family the proxy exports, declared once; label values of the Istio families are
# (service, version, flags), reported as ("source", service, version, "tcp", flags).
TCP_CONNECTIONS_OPENED = Family(
    "istio_tcp_connections_opened", "Connections opened, per destination.", ISTIO_LABELS
)
TCP_CONNECTIONS_CLOSED = Family(
    "istio_tcp_connections_closed", "Connections closed, per destination.", ISTIO_LABELS
)
TCP_SENT_BYTES = Family(
    "istio_tcp_sent_bytes", "Bytes sent to the client (the response direction).", ISTIO_LABELS
)
TCP_RECEIVED_BYTES = Family(
    "istio_tcp_received_bytes",
    "Bytes received from the client (the request direction).",
    ISTIO_LABELS,
)
TCP_PROXY_EVENTS = Family(
    "tcpmesh_tcp_proxy_events",
    "Envoy tcp_proxy stats per stat prefix: " + ", ".join(TcpProxyStat) + ".",
    ("stat_prefix", "event"),
)
CLUSTER_EVENTS = Family(
    "tcpmesh_cluster_events",
    "Envoy cluster stats per cluster: " + ", ".join(ClusterStat) + ".",
    ("cluster_name", "event"),
)
ALL_FAMILIES = (
    TCP_CONNECTIONS_OPENED,
    TCP_CONNECTIONS_CLOSED,
    TCP_SENT_BYTES,
    TCP_RECEIVED_BYTES,
    TCP_PROXY_EVENTS,
    CLUSTER_EVENTS,
)

Key = tuple[str, str, str]


def destination_of(weighted: WeightedCluster | None, cluster: Cluster | None) -> tuple[str, str]:
    """(destination_service, destination_version) of a connection's destination.

    From the cluster when it exists, else from what the route's share was meant for
    (an NC share), else unknown (no route, NR)."""
    if cluster is not None:
        return cluster.service or UNKNOWN, cluster.subset or UNKNOWN
    if weighted is not None:
        return weighted.service or UNKNOWN, weighted.subset or UNKNOWN
    return UNKNOWN, UNKNOWN


class _StatsCollector(Collector):
    def __init__(self, stats: ProxyStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self._stats
        for spec, values in (
            (TCP_CONNECTIONS_OPENED, s.opened_counts),
            (TCP_CONNECTIONS_CLOSED, s.closed_counts),
            (TCP_SENT_BYTES, s.sent_bytes),
            (TCP_RECEIVED_BYTES, s.received_bytes),
        ):
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for (service, version, flags), value in list(values.items()):
                family.add_metric(("source", service, version, "tcp", str(flags)), value)
            yield family
        for spec, events in ((TCP_PROXY_EVENTS, s.events), (CLUSTER_EVENTS, s.cluster_events)):
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for (owner, event), value in list(events.items()):
                family.add_metric((owner, str(event)), value)
            yield family


class ProxyStats:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.opened_counts: dict[Key, int] = {}
        self.closed_counts: dict[Key, int] = {}
        self.sent_bytes: dict[Key, int] = {}
        self.received_bytes: dict[Key, int] = {}
        self.events: dict[tuple[str, TcpProxyStat], int] = {}
        self.cluster_events: dict[tuple[str, ClusterStat], int] = {}
        self.registry.register(_StatsCollector(self))

    def opened(self, service: str, version: str, flags: str) -> None:
        key = (service, version, flags)
        counts = self.opened_counts
        counts[key] = counts.get(key, 0) + 1

    def closed(self, service: str, version: str, flags: str) -> None:
        key = (service, version, flags)
        counts = self.closed_counts
        counts[key] = counts.get(key, 0) + 1

    def add_bytes(self, service: str, version: str, flags: str, received: int, sent: int) -> None:
        key = (service, version, flags)
        if received:
            self.received_bytes[key] = self.received_bytes.get(key, 0) + received
        if sent:
            self.sent_bytes[key] = self.sent_bytes.get(key, 0) + sent

    def event(self, stat_prefix: str, stat: TcpProxyStat) -> None:
        key = (stat_prefix or UNKNOWN, stat)
        self.events[key] = self.events.get(key, 0) + 1

    def cluster_event(self, cluster_name: str, stat: ClusterStat) -> None:
        key = (cluster_name, stat)
        self.cluster_events[key] = self.cluster_events.get(key, 0) + 1

    def value(self, metric: str, **labels: str) -> float:
        """Sum of a counter over the series whose labels include ``labels``."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name != metric:
                    continue
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total
