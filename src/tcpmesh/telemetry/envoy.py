"""Istio's TCP metrics derived from Envoy's own stats, as Istio's agent merges them on 15020.

Upstream Envoy has no ``istio.stats`` filter, so the Envoy plane reads what Envoy counts
anyway (``/stats/prometheus``: cluster and tcp_proxy stats) and maps it, cluster by
cluster, onto the same ``Counts`` the built-in plane fills per connection:

=====================================  ===============================================
built-in (per connection)              Envoy stat of the connection's cluster
=====================================  ===============================================
opened, response_flags="-"             upstream_cx_total
closed, response_flags="UF"            upstream_cx_connect_fail
closed, response_flags="-"             upstream_cx_total - upstream_cx_active - connect_fail
opened+closed, "UH" / "UO"             upstream_cx_none_healthy / upstream_cx_overflow
opened+closed, "NC"                    tcp.<stat_prefix>.downstream_cx_no_route, given to
                                       the route's destination that names no cluster
received / sent bytes                  upstream_cx_tx_bytes_total / upstream_cx_rx_bytes_total
tcpmesh_tcp_connections_active         upstream_cx_active
tcpmesh_tcp_connection_duration_...    upstream_cx_length_ms (ms buckets → s)
tcpmesh_cluster_events (ClusterStat)   the cluster stats of the same names
=====================================  ===============================================

Differences that remain, by construction: Envoy counts per cluster, so a cluster whose
endpoints belong to several workloads reports the labels they disagree on as
``unknown`` (a subset is normally one workload, and then the labels are the same);
connections ended by ``max_connection_duration`` close with ``-`` rather than ``DT``;
Envoy updates histograms at its stats flush (every 5 s), byte and connection counters
at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from tcpmesh.control import ResponseFlag, Snapshot
from tcpmesh.telemetry.counts import DURATION_BUCKETS, Counts
from tcpmesh.telemetry.families import ClusterStat, TcpProxyStat
from tcpmesh.telemetry.labels import common_destination, destination

# Envoy's default cluster_name tag ends at the cluster name's first dot, so
# ``outbound|9000|v1|tcp-echo.default.svc.cluster.local`` would come out as
# ``outbound|9000|v1|tcp-echo`` with the rest glued to the stat name. Istio replaces the
# default tags in its bootstrap for this reason; here the name runs to the last dot
# before a one-word stat (every stat read below is one word). The bootstrap sets these.
#
# Of the stats Envoy keeps per cluster (about a hundred) and per listener, the bootstrap
# keeps only the cluster stats read below, as Istio's default inclusion list keeps none:
# creating and tagging them was most of Envoy's first push at size (7.8 s of Envoy's CPU
# for the 4,000 clusters of 1,000 VirtualServices, 1.2 s with no stats at all). Every
# stat not per cluster or listener stays (the servers, managers, xDS updates, tcp_proxy).
CLUSTER_STATS_READ = (
    "upstream_cx_total",
    "upstream_cx_active",
    "upstream_cx_tx_bytes_total",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_length_ms",
    *ClusterStat,
)
KEPT_PREFIXES = (
    "server.",
    "cluster_manager.",
    "listener_manager.",
    "control_plane.",
    "runtime.",
    "extension_config_discovery.",
    "sds.",
    "tcp.",
    "http.",
    "main_thread.",
    "workers.",
    "overload.",
    "filesystem.",
    "tls_inspector.",
)


def stats_config(kept_prefixes: Iterable[str] = ()) -> dict[str, object]:
    """Envoy's ``stats_config``: the tags above and the stats kept (``kept_prefixes``:
    more, such as the bootstrap's own clusters)."""
    patterns = [{"prefix": p} for p in (*KEPT_PREFIXES, *kept_prefixes)]
    patterns += [{"suffix": f".{stat}"} for stat in CLUSTER_STATS_READ]
    return {
        "use_all_default_tags": False,
        "stats_tags": [
            {"tag_name": "envoy.cluster_name", "regex": r"^cluster\.((.+?)\.)[a-z0-9_]+$"},
            {"tag_name": "envoy.tcp_prefix", "regex": r"^tcp\.((.*?)\.)\w+?$"},
        ],
        "stats_matcher": {"inclusion_list": {"patterns": patterns}},
    }


# sample name -> {cluster or prefix -> value}; histograms keep (le, value) lists.
EnvoyStats = dict[str, dict[str, float]]
Buckets = dict[str, list[tuple[float, float]]]

_CLUSTER = "envoy_cluster_name"
_TCP_PREFIX = "envoy_tcp_prefix"
_LENGTH = "envoy_cluster_upstream_cx_length_ms"


def parse_prometheus(text: str) -> tuple[EnvoyStats, Buckets]:
    """The cluster and tcp_proxy samples of Envoy's ``/stats/prometheus`` output."""
    values: EnvoyStats = {}
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.labels.get(_CLUSTER) or sample.labels.get(_TCP_PREFIX)
            if key is None:
                continue
            if sample.name == _LENGTH + "_bucket":
                le = sample.labels.get("le", "+Inf")
                buckets.setdefault(key, []).append((float(le), float(sample.value)))
            else:
                values.setdefault(sample.name, {})[key] = float(sample.value)
                # The parser appends "_total" to counters (upstream_cx_connect_fail
                # becomes ..._connect_fail_total); keep Envoy's own name too.
                if sample.name.endswith("_total"):
                    values.setdefault(sample.name[: -len("_total")], {})[key] = sample.value
    return values, buckets


def _histogram(cumulative_ms: Iterable[tuple[float, float]], sum_ms: float) -> list[float]:
    """Envoy's cumulative ms buckets as Counts' per-bucket counts in seconds."""
    points = sorted(cumulative_ms)
    result: list[float] = []
    previous = 0.0
    for bound in (*DURATION_BUCKETS, float("inf")):
        limit = bound * 1000.0
        at = max((v for le, v in points if le <= limit), default=0.0)
        result.append(at - previous)
        previous = at
    result.append(sum_ms / 1000.0)
    return result


def _no_cluster(counts: Counts, stats: EnvoyStats, snapshot: Snapshot) -> None:
    """NC: Envoy counts it per tcp_proxy; give it to the destination that names nothing."""
    no_route = stats.get("envoy_tcp_downstream_cx_no_route", {})
    for listener in snapshot.listeners:
        for route in listener.routes:
            n = int(no_route.get(route.stat_prefix, 0))
            missing = [d for d in route.destinations if snapshot.cluster(d.cluster_name) is None]
            if n and len(missing) == 1:
                row = counts.row(destination(missing[0], None, None), ResponseFlag.NO_CLUSTER)
                row[0] += n
                row[1] += n


def envoy_counts(stats: EnvoyStats, buckets: Buckets, snapshot: Snapshot) -> Counts:
    """Counts for the clusters of ``snapshot`` from Envoy's stats (see the table above)."""
    counts = Counts()

    def get(name: str, cluster: str) -> int:
        return int(stats.get(f"envoy_cluster_{name}", {}).get(cluster, 0))

    for cluster in snapshot.clusters:
        name = cluster.name
        dest = common_destination(cluster)
        total, active, failed = (
            get(stat, name)
            for stat in ("upstream_cx_total", "upstream_cx_active", "upstream_cx_connect_fail")
        )
        if total:
            ok = counts.row(dest, "-")
            ok[0] += total
            ok[1] += max(0, total - active - failed)
            ok[2] += get("upstream_cx_tx_bytes_total", name)
            ok[3] += get("upstream_cx_rx_bytes_total", name)
            counts.active[dest] = active
        if failed:
            counts.row(dest, ResponseFlag.UPSTREAM_CONNECT_FAILURE)[1] += failed
        for flag, stat in (
            (ResponseFlag.NO_HEALTHY_UPSTREAM, ClusterStat.UPSTREAM_CX_NONE_HEALTHY),
            (ResponseFlag.UPSTREAM_OVERFLOW, ClusterStat.UPSTREAM_CX_OVERFLOW),
        ):
            n = get(stat, name)
            if n:
                row = counts.row(destination(None, cluster, None), flag)
                row[0] += n
                row[1] += n
        for stat in ClusterStat:
            n = get(stat.value, name)
            if n:
                counts.cluster_events[(name, stat.value)] = n
        if name in buckets:
            sum_ms = stats.get(_LENGTH + "_sum", {}).get(name, 0.0)
            counts.durations[dest] = _histogram(buckets[name], sum_ms)
    _no_cluster(counts, stats, snapshot)
    _events(counts, stats)
    return counts


def _events(counts: Counts, stats: Mapping[str, Mapping[str, float]]) -> None:
    for event in TcpProxyStat:
        for prefix, n in stats.get(f"envoy_tcp_{event.value}", {}).items():
            if n:
                counts.events[(prefix, event.value)] = int(n)
