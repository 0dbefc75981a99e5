"""The proxy's stat names, declared once, and where each event is filed."""

from __future__ import annotations

from tcpmesh.control import Cluster, ResponseFlag, WeightedCluster
from tcpmesh.dataplane.stats import ALL_FAMILIES, ClusterStat, ProxyStats, TcpProxyStat

FQDN = "tcp-echo.default.svc.cluster.local"
V1 = f"outbound|9000|v1|{FQDN}"


def test_response_flags_are_envoys_codes() -> None:
    assert [f.value for f in ResponseFlag] == ["NR", "NC", "UH", "UO", "UF", "DT"]
    assert ResponseFlag.NO_CLUSTER == "NC" and f"{ResponseFlag.NO_ROUTE}" == "NR"


def test_every_family_is_exported_once_with_its_declared_labels() -> None:
    stats = ProxyStats()
    cluster = Cluster(V1, FQDN, 9000, "v1")
    dest = stats.destination(WeightedCluster(V1, 100, FQDN, "v1", 9000), cluster, None)
    stats.opened(dest, "-")
    stats.relay_started(dest)
    stats.relay_ended(dest, 0.01)
    stats.event("tcp-echo.default", TcpProxyStat.IDLE_TIMEOUT)
    stats.cluster_event(V1, ClusterStat.UPSTREAM_CX_CONNECT_FAIL)
    exported = {f.name: f for f in stats.registry.collect()}
    assert sorted(exported) == sorted(f.name for f in ALL_FAMILIES)
    for spec in ALL_FAMILIES:
        for sample in exported[spec.name].samples:
            # A histogram's buckets add Prometheus' own "le".
            labels = tuple(k for k in sample.labels if k != "le")
            assert labels == spec.labels


def test_cluster_events_go_to_the_cluster_route_events_to_the_stat_prefix() -> None:
    stats = ProxyStats()
    stats.cluster_event(V1, ClusterStat.UPSTREAM_CX_CONNECT_TIMEOUT)
    stats.event("tcp-echo.default", TcpProxyStat.DOWNSTREAM_CX_NO_ROUTE)
    assert (
        stats.value(
            "tcpmesh_cluster_events_total",
            cluster_name=V1,
            event="upstream_cx_connect_timeout",
        )
        == 1
    )
    assert stats.value("tcpmesh_tcp_proxy_events_total", event="upstream_cx_connect_timeout") == 0
    assert (
        stats.value(
            "tcpmesh_tcp_proxy_events_total",
            stat_prefix="tcp-echo.default",
            event="downstream_cx_no_route",
        )
        == 1
    )


def test_destination_reads_fields_never_the_cluster_name() -> None:
    stats = ProxyStats()
    cluster = Cluster(V1, FQDN, 9000, "v1")
    dest = stats.destination(WeightedCluster(V1, 100, FQDN, "v1", 9000), cluster, None)
    assert (dest[4], dest[3]) == (FQDN, "v1")
    # An NC share: no cluster, but the share knows what it was meant for.
    missing = WeightedCluster("outbound|9000|v9|x", 10, FQDN, "v9", 9000)
    dest = stats.destination(missing, None, None)
    assert (dest[4], dest[3]) == (FQDN, "v9")
    # A name in cluster-name shape is not taken apart.
    dest = ProxyStats().destination(WeightedCluster(V1, 100), None, None)
    assert (dest[4], dest[3]) == ("unknown", "unknown")
    dest = stats.destination(None, None, None)
    assert (dest[4], dest[3]) == ("unknown", "unknown")
