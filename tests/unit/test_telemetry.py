"""The pure parts of tcpmesh.telemetry: labels, counts, exposition, the Envoy mapping."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tcpmesh.control import (
    Cluster,
    Endpoint,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)
from tcpmesh.telemetry import (
    Counts,
    Source,
    WorkerTotals,
    channel_name,
    common_destination,
    destination,
    envoy_counts,
    parse_envoy_prometheus,
    render,
    serve_counts,
    workload_of,
)

SERVICE = "tcp-echo.default.svc.cluster.local"
V1 = f"outbound|9000|v1|{SERVICE}"


def endpoint(version: str, pod: str) -> Endpoint:
    return Endpoint(
        "127.1.0.1", 9000, (("app", "tcp-echo"), ("version", version)), workload=f"default/{pod}"
    )


def cluster(subset: str, *endpoints: Endpoint) -> Cluster:
    return Cluster(f"outbound|9000|{subset}|{SERVICE}", SERVICE, 9000, subset, endpoints=endpoints)


def test_workload_is_the_deployment_of_a_replicaset_pod() -> None:
    assert workload_of("tcp-echo-v1-7dd5c5dcfb-xk2mp") == "tcp-echo-v1"
    assert workload_of("standalone") == "standalone"


def test_destination_labels_come_from_the_endpoint_pod() -> None:
    c = cluster("v2", endpoint("v2", "tcp-echo-v2-7dd5c5dcfb-xk2mp"))
    assert destination(None, c, c.endpoints[0]) == (
        "tcp-echo-v2",
        "default",
        "tcp-echo",
        "v2",
        SERVICE,
        "tcp-echo",
        "default",
        "unknown",
        "Kubernetes",
    )


def test_a_share_without_endpoint_keeps_its_service_and_subset() -> None:
    share = WeightedCluster(f"outbound|9000|v3|{SERVICE}", 10, SERVICE, "v3", 9000)
    dest = destination(share, None, None)
    assert dest[3:7] == ("v3", SERVICE, "tcp-echo", "default")
    assert dest[0] == "unknown"


def test_common_destination_marks_disagreeing_labels_unknown() -> None:
    one = endpoint("v1", "tcp-echo-v1-7dd5c5dcfb-aaaaa")
    two = endpoint("v2", "tcp-echo-v2-7dd5c5dcfb-bbbbb")
    same = cluster("v1", one, endpoint("v1", "tcp-echo-v1-7dd5c5dcfb-ccccc"))
    assert common_destination(same) == destination(None, same, one)
    mixed = common_destination(cluster("", one, two))
    assert (mixed[0], mixed[2], mixed[3]) == ("unknown", "tcp-echo", "unknown")


def test_counts_survive_json_and_add_up() -> None:
    c = cluster("v1", endpoint("v1", "tcp-echo-v1-7dd5c5dcfb-aaaaa"))
    dest = destination(None, c, c.endpoints[0])
    a = Counts()
    a.row(dest, "-")[0] += 3
    a.active[dest] = 2
    a.observe_duration(dest, 0.002)
    a.observe_duration(dest, 5000.0)
    a.cluster_event(c.name, "upstream_cx_connect_fail")
    a.event("tcp-echo.default", "idle_timeout")
    b = Counts.from_json(a.to_json())
    assert b == a
    b.merge(a, gauges=False)
    assert b.row(dest, "-")[0] == 6
    assert b.active[dest] == 2
    assert b.durations[dest][2] == 2 and b.durations[dest][-2] == 2
    assert b.cluster_events[(c.name, "upstream_cx_connect_fail")] == 2
    assert b.events[("tcp-echo.default", "idle_timeout")] == 2
    with pytest.raises(ValueError):
        Counts.from_json(b'{"connections": [[1, 2]]}')


def test_render_uses_istios_families_and_a_cumulative_histogram() -> None:
    c = cluster("v1", endpoint("v1", "tcp-echo-v1-7dd5c5dcfb-aaaaa"))
    dest = destination(None, c, c.endpoints[0])
    counts = Counts()
    counts.row(dest, "-")[:] = [5, 4, 100, 200]
    counts.observe_duration(dest, 0.003)
    counts.observe_duration(dest, 0.3)
    text = render(counts, Source("istio-ingressgateway", "istio-system", "gw", "unknown"))
    samples = {
        (s.name, s.labels.get("le", "")): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }
    assert samples[("istio_tcp_connections_opened_total", "")] == 5
    assert samples[("istio_tcp_connections_closed_total", "")] == 4
    assert samples[("istio_tcp_received_bytes_total", "")] == 100
    assert samples[("istio_tcp_sent_bytes_total", "")] == 200
    hist = "tcpmesh_tcp_connection_duration_seconds"
    assert samples[(hist + "_bucket", "0.001")] == 0
    assert samples[(hist + "_bucket", "0.005")] == 1
    assert samples[(hist + "_bucket", "0.5")] == 2
    assert samples[(hist + "_bucket", "+Inf")] == 2
    assert samples[(hist + "_count", "")] == 2
    assert samples[(hist + "_sum", "")] == pytest.approx(0.303)


ENVOY_TEXT = f"""
# TYPE envoy_cluster_upstream_cx_total counter
envoy_cluster_upstream_cx_total{{envoy_cluster_name="outbound|9000|v1|{SERVICE}"}} 10
envoy_cluster_upstream_cx_total{{envoy_cluster_name="outbound|9000|v2|{SERVICE}"}} 4
# TYPE envoy_cluster_upstream_cx_connect_fail counter
envoy_cluster_upstream_cx_connect_fail{{envoy_cluster_name="outbound|9000|v2|{SERVICE}"}} 1
# TYPE envoy_cluster_upstream_cx_connect_timeout counter
envoy_cluster_upstream_cx_connect_timeout{{envoy_cluster_name="outbound|9000|v2|{SERVICE}"}} 1
# TYPE envoy_cluster_upstream_cx_tx_bytes_total counter
envoy_cluster_upstream_cx_tx_bytes_total{{envoy_cluster_name="outbound|9000|v1|{SERVICE}"}} 70
# TYPE envoy_cluster_upstream_cx_rx_bytes_total counter
envoy_cluster_upstream_cx_rx_bytes_total{{envoy_cluster_name="outbound|9000|v1|{SERVICE}"}} 110
# TYPE envoy_cluster_upstream_cx_active gauge
envoy_cluster_upstream_cx_active{{envoy_cluster_name="outbound|9000|v1|{SERVICE}"}} 3
# TYPE envoy_cluster_upstream_cx_none_healthy counter
envoy_cluster_upstream_cx_none_healthy{{envoy_cluster_name="outbound|9000|v3|{SERVICE}"}} 2
# TYPE envoy_tcp_downstream_cx_no_route counter
envoy_tcp_downstream_cx_no_route{{envoy_tcp_prefix="tcp-echo.default"}} 5
# TYPE envoy_cluster_upstream_cx_length_ms histogram
envoy_cluster_upstream_cx_length_ms_bucket{{envoy_cluster_name="{V1}",le="0.5"}} 1
envoy_cluster_upstream_cx_length_ms_bucket{{envoy_cluster_name="{V1}",le="5"}} 6
envoy_cluster_upstream_cx_length_ms_bucket{{envoy_cluster_name="{V1}",le="+Inf"}} 7
envoy_cluster_upstream_cx_length_ms_sum{{envoy_cluster_name="outbound|9000|v1|{SERVICE}"}} 4000
envoy_cluster_upstream_cx_length_ms_count{{envoy_cluster_name="outbound|9000|v1|{SERVICE}"}} 7
"""


def test_envoy_cluster_stats_map_onto_the_same_counts() -> None:
    v1 = cluster("v1", endpoint("v1", "tcp-echo-v1-7dd5c5dcfb-aaaaa"))
    v2 = cluster("v2", endpoint("v2", "tcp-echo-v2-7dd5c5dcfb-bbbbb"))
    v3 = cluster("v3")
    v9 = WeightedCluster(f"outbound|9000|v9|{SERVICE}", 20, SERVICE, "v9", 9000)
    route = TcpRoute(
        (WeightedCluster(v1.name, 50), WeightedCluster(v2.name, 30), v9),
        RouteOrigin("VirtualService", "default", "tcp-echo", 0),
        "tcp-echo.default",
    )
    snap = Snapshot("1", (Listener("0.0.0.0_31400", "0.0.0.0", 31400, (route,)),), (v1, v2, v3))
    counts = envoy_counts(*parse_envoy_prometheus(ENVOY_TEXT), snap)
    d1, d2 = common_destination(v1), common_destination(v2)
    assert counts.row(d1, "-") == [10, 7, 70, 110]
    assert counts.active[d1] == 3
    assert counts.row(d2, "-")[:2] == [4, 3]
    assert counts.row(d2, "UF")[:2] == [0, 1]
    assert counts.cluster_events[(v2.name, "upstream_cx_connect_fail")] == 1
    assert counts.cluster_events[(v2.name, "upstream_cx_connect_timeout")] == 1
    assert counts.cluster_events[(v3.name, "upstream_cx_none_healthy")] == 2
    assert counts.row(destination(None, v3, None), "UH")[:2] == [2, 2]
    nc = destination(v9, None, None)
    assert counts.row(nc, "NC")[:2] == [5, 5]
    hist = counts.durations[d1]
    # 0.5 ms -> bucket 0.0005 s; 5 ms -> 0.005 s; one beyond every bucket.
    assert (hist[0], hist[2], hist[-2], hist[-1]) == (1, 5, 1, 4.0)


def test_worker_totals_keep_a_restarted_workers_counters() -> None:
    c = cluster("v1", endpoint("v1", "tcp-echo-v1-7dd5c5dcfb-aaaaa"))
    dest = destination(None, c, c.endpoints[0])
    worker = Counts()

    async def main() -> tuple[Counts, Counts, Counts]:
        supervisor = 999_999_001
        totals = WorkerTotals(supervisor)
        server = await serve_counts(channel_name(supervisor, 0), worker.to_json)
        try:
            worker.row(dest, "-")[0] = 7
            worker.active[dest] = 2
            first = await totals.collect([(0, 100)])
            # Worker 0 is replaced by pid 101, which starts from zero.
            worker.row(dest, "-")[0] = 1
            worker.active[dest] = 1
            second = await totals.collect([(0, 101)])
            gone = await totals.collect([(0, None)])
        finally:
            server.close()
        return first, second, gone

    first, second, gone = asyncio.run(main())
    assert (first.row(dest, "-")[0], first.active[dest]) == (7, 2)
    assert (second.row(dest, "-")[0], second.active[dest]) == (8, 1)
    assert gone.row(dest, "-")[0] == 8 and gone.active.get(dest, 0) == 0
