"""``Counts`` as Prometheus families (prometheus-client renders the text format).

The family names, label names and label order are the contract a dashboard relies on
(declared once in telemetry.families); both data planes go through this one function,
so their output differs only in values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tcpmesh.telemetry.counts import CLOSED, DURATION_BUCKETS, OPENED, RECEIVED, SENT, Counts
from tcpmesh.telemetry.families import (
    CLUSTER_EVENTS,
    TCP_CONNECTION_DURATION,
    TCP_CONNECTIONS_ACTIVE,
    TCP_CONNECTIONS_CLOSED,
    TCP_CONNECTIONS_OPENED,
    TCP_PROXY_EVENTS,
    TCP_RECEIVED_BYTES,
    TCP_SENT_BYTES,
    Family,
)
from tcpmesh.telemetry.labels import UNKNOWN, Source

# (family, column of the Counts.connections row)
_CONNECTION_FAMILIES = (
    (TCP_CONNECTIONS_OPENED, OPENED),
    (TCP_CONNECTIONS_CLOSED, CLOSED),
    (TCP_SENT_BYTES, SENT),
    (TCP_RECEIVED_BYTES, RECEIVED),
)


def _counter(spec: Family) -> CounterMetricFamily:
    return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)


def families(counts: Counts, source: Source) -> Iterator[Metric]:
    """Every family, even when empty, so a scraper sees the full list from the start."""
    src = source.values()
    # reporter="source": Istio leaves connection_security_policy unknown there.
    for spec, column in _CONNECTION_FAMILIES:
        family = _counter(spec)
        for (dest, flags), row in counts.connections.items():
            family.add_metric((*src, *dest, "tcp", flags, UNKNOWN), row[column])
        yield family
    active = TCP_CONNECTIONS_ACTIVE
    gauge = GaugeMetricFamily(active.name, active.help, labels=active.labels)
    for dest, n in counts.active.items():
        gauge.add_metric((*src, *dest, "tcp"), n)
    yield gauge
    duration = TCP_CONNECTION_DURATION
    hist = HistogramMetricFamily(duration.name, duration.help, labels=duration.labels)
    for dest, values in counts.durations.items():
        cumulative, buckets = 0.0, []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), values[:-1], strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        hist.add_metric((*src, *dest, "tcp"), buckets, values[-1])
    yield hist
    for spec, events in (
        (TCP_PROXY_EVENTS, counts.events),
        (CLUSTER_EVENTS, counts.cluster_events),
    ):
        family = _counter(spec)
        for (owner, event), n in events.items():
            family.add_metric((owner or UNKNOWN, event), n)
        yield family


class CountsCollector(Collector):
    """A prometheus-client collector over whatever ``read()`` returns at scrape time."""

    def __init__(self, read: Callable[[], Counts], source: Source) -> None:
        self._read = read
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from families(self._read(), self._source)


def render(counts: Counts, source: Source) -> bytes:
    """The Prometheus text exposition of ``counts``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountsCollector(lambda: counts, source))
    body: bytes = generate_latest(registry)
    return body
