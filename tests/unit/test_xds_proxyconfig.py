"""proxy-config tables: the snapshot and Envoy's admin output give the same rows."""

from __future__ import annotations

from typing import Any

from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
    L4Match,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)
from tcpmesh.xds import proxyconfig
from tcpmesh.xds.translate import (
    CLUSTER_TYPE,
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    translate,
)

ORIGIN = RouteOrigin("VirtualService", "default", "tcp-echo", 0)

V1 = "outbound|9000|v1|tcp-echo.default.svc.cluster.local"
V2 = "outbound|9000|v2|tcp-echo.default.svc.cluster.local"


def sample() -> Snapshot:
    routes = (
        TcpRoute((WeightedCluster(V1, 100),), ORIGIN, "p", match=L4Match(("10.0.0.0/8",))),
        TcpRoute((WeightedCluster(V1, 80), WeightedCluster(V2, 20)), ORIGIN, "p"),
    )
    clusters = (
        Cluster(
            V1,
            "tcp-echo.default.svc.cluster.local",
            9000,
            "v1",
            endpoints=(Endpoint("127.1.0.1", 9000), Endpoint("127.1.0.3", 9000, ready=False)),
        ),
        Cluster(V2, "tcp-echo.default.svc.cluster.local", 9000, "v2"),
        Cluster(
            "outbound|15021||gw.istio-system.svc.cluster.local",
            "gw.istio-system.svc.cluster.local",
            15021,
        ),
    )
    return Snapshot.build((Listener("0.0.0.0_31400", "127.0.0.1", 31400, routes),), clusters)


def config_dump(snapshot: Snapshot) -> dict[str, Any]:
    """What Envoy's /config_dump shows once it accepted the translated snapshot."""
    config = translate(snapshot)
    return {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "dynamic_listeners": [
                    {"name": name, "active_state": {"listener": listener}}
                    for name, listener in config.of(LISTENER_TYPE).items()
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "static_clusters": [{"cluster": {"name": "tcpmesh-xds", "type": "STATIC"}}],
                "dynamic_active_clusters": [
                    {"cluster": c} for c in config.of(CLUSTER_TYPE).values()
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump",
                "ecds_filters": [
                    {"ecds_filter": f} for f in config.of(EXTENSION_CONFIG_TYPE).values()
                ],
            },
        ]
    }


def clusters_json() -> dict[str, Any]:
    """Envoy's /clusters?format=json for the sample (only ready endpoints were sent)."""

    def host(address: str, **health: Any) -> dict[str, Any]:
        return {
            "address": {"socket_address": {"address": address, "port_value": 9000}},
            "health_status": {"eds_health_status": "HEALTHY", **health},
        }

    return {
        "cluster_statuses": [
            {"name": "tcpmesh-xds", "host_statuses": [host("127.0.0.1")]},
            {"name": V1, "added_via_api": True, "host_statuses": [host("127.1.0.1")]},
            {"name": V2, "added_via_api": True},
            {
                "name": "outbound|15021||gw.istio-system.svc.cluster.local",
                "added_via_api": True,
            },
        ]
    }


def test_listener_rows() -> None:
    headers, rows = proxyconfig.snapshot_listeners(sample())
    assert headers == ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    assert rows == [
        ["127.0.0.1", "31400", "Addr: 10.0.0.0/8", f"Cluster: {V1}"],
        ["127.0.0.1", "31400", "ALL", f"WeightedClusters: {V1} (80), {V2} (20); pick smooth"],
    ]
    # The same listeners and routes on Envoy; its pick is the one tcp_proxy has (random).
    assert proxyconfig.envoy_listeners(config_dump(sample())) == (
        headers,
        [
            rows[0],
            ["127.0.0.1", "31400", "ALL", f"WeightedClusters: {V1} (80), {V2} (20); pick random"],
        ],
    )


def test_cluster_rows_sort_ports_as_numbers() -> None:
    headers, rows = proxyconfig.snapshot_clusters(sample())
    assert rows == [
        ["gw.istio-system.svc.cluster.local", "15021", "-", "outbound", "EDS"],
        ["tcp-echo.default.svc.cluster.local", "9000", "v1", "outbound", "EDS"],
        ["tcp-echo.default.svc.cluster.local", "9000", "v2", "outbound", "EDS"],
    ]
    assert proxyconfig.envoy_clusters(config_dump(sample())) == (headers, rows)


def test_endpoint_rows_list_ready_endpoints() -> None:
    headers, rows = proxyconfig.snapshot_endpoints(sample())
    assert headers == ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]
    assert rows == [["127.1.0.1:9000", "HEALTHY", "OK", V1]]
    assert proxyconfig.envoy_endpoints(clusters_json()) == (headers, rows)


def test_envoy_outlier_ejection_shows() -> None:
    data = clusters_json()
    data["cluster_statuses"][1]["host_statuses"][0]["health_status"]["failed_outlier_check"] = True
    _, rows = proxyconfig.envoy_endpoints(data)
    assert rows == [["127.1.0.1:9000", "HEALTHY", "FAILED", V1]]


def test_envoy_listener_json_inlines_the_running_tcp_proxy() -> None:
    (listener,) = proxyconfig.envoy_listeners_json(config_dump(sample()))
    flt = listener["filter_chains"][1]["filters"][0]
    assert flt["typed_config"]["weighted_clusters"]["clusters"][1] == {"name": V2, "weight": 20}


def test_snapshot_json_parts() -> None:
    snap = sample()
    assert [c["name"] for c in proxyconfig.snapshot_json(snap, "clusters")] == [
        c.name for c in snap.clusters
    ]
    assert "endpoints" not in proxyconfig.snapshot_json(snap, "clusters")[0]
    assert proxyconfig.snapshot_json(snap, "endpoints")[0]["cluster"] == V1
    assert proxyconfig.snapshot_json(snap, "listeners")[0]["name"] == "0.0.0.0_31400"


def test_status_lines_show_nacks_on_one_line() -> None:
    xds = {
        "address": "127.0.0.1:5000",
        "nodes": [
            {
                "node": "istio-system/gw",
                "connected": True,
                "appliedSnapshot": "aaa",
                "pendingSnapshot": "bbb",
                "nacks": [
                    {
                        "type": "CDS",
                        "version": "v9",
                        "snapshot": "bbb",
                        "error": "Invalid duration:\nseconds: -1\n",
                    }
                ],
            }
        ],
    }
    assert proxyconfig.status_lines(xds) == [
        "xDS server: 127.0.0.1:5000 (1 Envoy node)",
        "  istio-system/gw: connected, snapshot aaa, pushing bbb",
        "  NACK from istio-system/gw: CDS version v9 (snapshot bbb) rejected: "
        "Invalid duration: seconds: -1",
    ]
    assert proxyconfig.status_lines(None) == []
