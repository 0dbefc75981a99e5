"""Istio's TCP metrics as the gateway reports them (``reporter="source"``), per worker.

Each worker owns a registry; with ``TCPMESH_METRICS_PORT=P`` worker ``i`` serves it on
``127.0.0.1:P+i`` (see worker.py), so a scraper sums over the workers' ports.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from tcpmesh.control.snapshot import Cluster

UNKNOWN = "unknown"
_LABELS = (
    "reporter",
    "destination_service",
    "destination_version",
    "request_protocol",
    "response_flags",
)


def destination_of(cluster_name: str, cluster: Cluster | None) -> tuple[str, str]:
    """(destination_service, destination_version) for a cluster or, for NC, its name."""
    if cluster is not None:
        return cluster.service or UNKNOWN, cluster.subset or UNKNOWN
    parts = cluster_name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound"):
        return parts[3] or UNKNOWN, parts[2] or UNKNOWN
    return UNKNOWN, UNKNOWN


class ProxyStats:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self._opened = Counter(
            "istio_tcp_connections_opened",
            "Connections opened, per destination.",
            _LABELS,
            registry=reg,
        )
        self._closed = Counter(
            "istio_tcp_connections_closed",
            "Connections closed, per destination.",
            _LABELS,
            registry=reg,
        )
        self._sent = Counter(
            "istio_tcp_sent_bytes",
            "Bytes sent to the client (the response direction).",
            _LABELS,
            registry=reg,
        )
        self._received = Counter(
            "istio_tcp_received_bytes",
            "Bytes received from the client (the request direction).",
            _LABELS,
            registry=reg,
        )
        self._events = Counter(
            "tcpmesh_tcp_proxy_events",
            "Envoy tcp_proxy events: idle_timeout, max_downstream_connection_duration, "
            "downstream_cx_no_route, upstream_cx_connect_fail, upstream_cx_connect_timeout.",
            ("stat_prefix", "event"),
            registry=reg,
        )

    @staticmethod
    def _labels(service: str, version: str, flags: str) -> tuple[str, str, str, str, str]:
        return ("source", service, version, "tcp", flags)

    def opened(self, service: str, version: str, flags: str) -> None:
        self._opened.labels(*self._labels(service, version, flags)).inc()

    def closed(self, service: str, version: str, flags: str) -> None:
        self._closed.labels(*self._labels(service, version, flags)).inc()

    def add_bytes(self, service: str, version: str, flags: str, received: int, sent: int) -> None:
        labels = self._labels(service, version, flags)
        if received:
            self._received.labels(*labels).inc(received)
        if sent:
            self._sent.labels(*labels).inc(sent)

    def event(self, stat_prefix: str, name: str) -> None:
        self._events.labels(stat_prefix or UNKNOWN, name).inc()

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
