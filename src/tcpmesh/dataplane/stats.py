"""Istio's TCP metrics as the gateway reports them (``reporter="source"``), per worker.

Each worker owns a registry; with ``TCPMESH_METRICS_PORT=P`` worker ``i`` serves it on
``127.0.0.1:P+i`` (see worker.py), so a scraper sums over the workers' ports.

Counting happens in plain dictionaries and becomes Prometheus families only when
scraped: a ``Counter.labels(...).inc()`` takes a lock and several lookups, and the
proxy counts a few times per connection.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from tcpmesh.control.snapshot import Cluster

UNKNOWN = "unknown"
_LABELS = (
    "reporter",
    "destination_service",
    "destination_version",
    "request_protocol",
    "response_flags",
)
_EVENT_LABELS = ("stat_prefix", "event")

# (metric name, help); label values are (service, version, flags).
_FAMILIES = (
    ("istio_tcp_connections_opened", "Connections opened, per destination."),
    ("istio_tcp_connections_closed", "Connections closed, per destination."),
    ("istio_tcp_sent_bytes", "Bytes sent to the client (the response direction)."),
    ("istio_tcp_received_bytes", "Bytes received from the client (the request direction)."),
)
_EVENTS = (
    "tcpmesh_tcp_proxy_events",
    "Envoy tcp_proxy events: idle_timeout, max_downstream_connection_duration, "
    "downstream_cx_no_route, upstream_cx_connect_fail, upstream_cx_connect_timeout.",
)

Key = tuple[str, str, str]


def destination_of(cluster_name: str, cluster: Cluster | None) -> tuple[str, str]:
    """(destination_service, destination_version) for a cluster or, for NC, its name."""
    if cluster is not None:
        return cluster.service or UNKNOWN, cluster.subset or UNKNOWN
    parts = cluster_name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound"):
        return parts[3] or UNKNOWN, parts[2] or UNKNOWN
    return UNKNOWN, UNKNOWN


class _StatsCollector(Collector):
    def __init__(self, stats: ProxyStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self._stats
        for (name, doc), values in zip(
            _FAMILIES,
            (s.opened_counts, s.closed_counts, s.sent_bytes, s.received_bytes),
            strict=True,
        ):
            family = CounterMetricFamily(name, doc, labels=_LABELS)
            for (service, version, flags), value in list(values.items()):
                family.add_metric(("source", service, version, "tcp", flags), value)
            yield family
        family = CounterMetricFamily(_EVENTS[0], _EVENTS[1], labels=_EVENT_LABELS)
        for labels, value in list(s.events.items()):
            family.add_metric(labels, value)
        yield family


class ProxyStats:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.opened_counts: dict[Key, int] = {}
        self.closed_counts: dict[Key, int] = {}
        self.sent_bytes: dict[Key, int] = {}
        self.received_bytes: dict[Key, int] = {}
        self.events: dict[tuple[str, str], int] = {}
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

    def event(self, stat_prefix: str, name: str) -> None:
        key = (stat_prefix or UNKNOWN, name)
        self.events[key] = self.events.get(key, 0) + 1

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
