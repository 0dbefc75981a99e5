"""Every metric family a tcpmesh proxy exports, declared once (Envoy's ``ALL_*_STATS``).

Both data planes render through ``telemetry.exposition`` from these declarations; the
event enums name the Envoy stats they stand for, so the Envoy plane maps its own stats
onto them one-to-one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tcpmesh.telemetry.labels import CONNECTION_LABELS, DESTINATION_LABELS, SOURCE_LABELS

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
    event, not the route's, and a connect timeout is also a connect failure (Envoy's
    connection pool counts ``upstream_cx_connect_fail`` for every connection that closes
    while connecting, timeouts included).
    """

    UPSTREAM_CX_CONNECT_FAIL = "upstream_cx_connect_fail"
    UPSTREAM_CX_CONNECT_TIMEOUT = "upstream_cx_connect_timeout"
    UPSTREAM_CX_OVERFLOW = "upstream_cx_overflow"  # UO: the circuit breaker was open
    UPSTREAM_CX_NONE_HEALTHY = "upstream_cx_none_healthy"  # UH: no ready endpoint


@dataclass(frozen=True)
class Family:
    """One Prometheus family: its name (counters without ``_total``), help and labels."""

    name: str
    help: str
    labels: tuple[str, ...]


ISTIO_LABELS = (*SOURCE_LABELS, *DESTINATION_LABELS, *CONNECTION_LABELS)
# The gauge and the histogram: per destination, no flags (they are not per outcome).
DESTINATION_SERIES_LABELS = (*SOURCE_LABELS, *DESTINATION_LABELS, "request_protocol")

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
TCP_CONNECTIONS_ACTIVE = Family(
    "tcpmesh_tcp_connections_active",
    "Connections open now, per destination.",
    DESTINATION_SERIES_LABELS,
)
TCP_CONNECTION_DURATION = Family(
    "tcpmesh_tcp_connection_duration_seconds",
    "How long connections that reached their upstream stayed open.",
    DESTINATION_SERIES_LABELS,
)
TCP_PROXY_EVENTS = Family(
    "tcpmesh_tcp_proxy_events",
    "Envoy tcp_proxy stats per stat prefix: " + ", ".join(TcpProxyStat) + ".",
    ("stat_prefix", "event"),
)
CLUSTER_EVENTS = Family(
    "tcpmesh_cluster_events",
    "Envoy cluster stats per cluster (connect failures among them): "
    + ", ".join(ClusterStat)
    + ".",
    ("cluster_name", "event"),
)
ALL_FAMILIES = (
    TCP_CONNECTIONS_OPENED,
    TCP_CONNECTIONS_CLOSED,
    TCP_SENT_BYTES,
    TCP_RECEIVED_BYTES,
    TCP_CONNECTIONS_ACTIVE,
    TCP_CONNECTION_DURATION,
    TCP_PROXY_EVENTS,
    CLUSTER_EVENTS,
)
