"""Istio's TCP metrics for every tcpmesh proxy: labels, counts, exposition, :15020.

Data planes count into ``Counts`` with destination labels from ``destination`` (the
built-in proxy per endpoint, the Envoy plane from Envoy's cluster stats, see
``envoy_counts``); the process serving ``:15020/stats/prometheus`` renders them with
``render``, so both planes expose the same families and labels.
"""

from tcpmesh.telemetry.channel import WorkerTotals, channel_name, fetch_counts, serve_counts
from tcpmesh.telemetry.counts import DURATION_BUCKETS, Counts, total
from tcpmesh.telemetry.envoy import envoy_counts
from tcpmesh.telemetry.envoy import parse_prometheus as parse_envoy_prometheus
from tcpmesh.telemetry.envoy import stats_config as envoy_stats_config
from tcpmesh.telemetry.exposition import CountsCollector, families, render
from tcpmesh.telemetry.families import (
    ALL_FAMILIES,
    ISTIO_LABELS,
    NO_FLAGS,
    TCP_CONNECTION_DURATION,
    TCP_CONNECTIONS_CLOSED,
    TCP_CONNECTIONS_OPENED,
    ClusterStat,
    Family,
    TcpProxyStat,
)
from tcpmesh.telemetry.labels import (
    DESTINATION_LABELS,
    SOURCE_LABELS,
    UNKNOWN,
    Destination,
    Source,
    common_destination,
    destination,
    workload_of,
)
from tcpmesh.telemetry.server import PROMETHEUS_PATH, PROMETHEUS_PORT, MetricsThread, make_app
from tcpmesh.telemetry.split import (
    Reading,
    Route,
    RouteDestination,
    Sampler,
    Totals,
    destination_totals,
    routes_of,
    totals_by_destination,
    view,
)

__all__ = [
    "ALL_FAMILIES",
    "DESTINATION_LABELS",
    "DURATION_BUCKETS",
    "ISTIO_LABELS",
    "NO_FLAGS",
    "PROMETHEUS_PATH",
    "PROMETHEUS_PORT",
    "SOURCE_LABELS",
    "TCP_CONNECTIONS_CLOSED",
    "TCP_CONNECTIONS_OPENED",
    "TCP_CONNECTION_DURATION",
    "UNKNOWN",
    "ClusterStat",
    "Counts",
    "CountsCollector",
    "Destination",
    "Family",
    "MetricsThread",
    "Reading",
    "Route",
    "RouteDestination",
    "Sampler",
    "Source",
    "TcpProxyStat",
    "Totals",
    "WorkerTotals",
    "channel_name",
    "common_destination",
    "destination",
    "destination_totals",
    "envoy_counts",
    "envoy_stats_config",
    "families",
    "fetch_counts",
    "make_app",
    "parse_envoy_prometheus",
    "render",
    "routes_of",
    "serve_counts",
    "total",
    "totals_by_destination",
    "view",
    "workload_of",
]
