"""``tcpmesh top``'s pure parts: routes from a Snapshot, the view between two readings."""

from __future__ import annotations

from tcpmesh.control import (
    Cluster,
    Endpoint,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)
from tcpmesh.telemetry import Reading, Totals, routes_of, totals_by_destination, view

SERVICE = "tcp-echo.default.svc.cluster.local"


def snapshot() -> Snapshot:
    def cluster(subset: str) -> Cluster:
        ep = Endpoint("127.1.0.1", 9000, (("version", subset),), workload="default/p")
        return Cluster(f"outbound|9000|{subset}|{SERVICE}", SERVICE, 9000, subset, endpoints=(ep,))

    v1, v2 = cluster("v1"), cluster("v2")
    route = TcpRoute(
        (WeightedCluster(v1.name, 3), WeightedCluster(v2.name, 1)),
        RouteOrigin("VirtualService", "default", "tcp-echo", 0),
        "tcp-echo.default",
    )
    other = TcpRoute(
        (WeightedCluster(v1.name, 1),), RouteOrigin("VirtualService", "other", "x", 0), "x.other"
    )
    listeners = (
        Listener("0.0.0.0_31400", "0.0.0.0", 31400, (route,)),
        Listener("0.0.0.0_31401", "0.0.0.0", 31401, (other,)),
    )
    return Snapshot("1", listeners, (v1, v2))


def test_routes_of_one_virtual_service() -> None:
    (route,) = routes_of(snapshot(), "tcp-echo", "default")
    assert [(d.subset, d.weight, d.versions) for d in route.destinations] == [
        ("v1", 3, frozenset({"v1"})),
        ("v2", 1, frozenset({"v2"})),
    ]
    assert routes_of(snapshot(), "tcp-echo", "other") == []
    assert len(routes_of(snapshot(), None, "other")) == 1


def test_view_shares_rates_and_failures_between_two_readings() -> None:
    def labels(version: str, flags: str = "-") -> dict[str, str]:
        return {
            "destination_service": SERVICE,
            "destination_version": version,
            "response_flags": flags,
        }

    first = Reading(10.0, {(SERVICE, "v1"): Totals(opened=100, received=1000)})
    later = totals_by_destination(
        [
            ("istio_tcp_connections_opened_total", labels("v1"), 130),
            ("istio_tcp_connections_opened_total", labels("v2"), 10),
            ("istio_tcp_received_bytes_total", labels("v1"), 1600),
            ("tcpmesh_tcp_connections_active", labels("v2"), 2),
            ("istio_tcp_connections_closed_total", labels("v2", "UF"), 1),
            ("istio_tcp_connections_closed_total", labels("v2"), 7),
        ]
    )
    (route,) = routes_of(snapshot(), "tcp-echo", "default")
    doc = view([route], first, Reading(12.0, later))
    assert doc["windowSeconds"] == 2.0
    (out,) = doc["routes"]
    v1, v2 = out["destinations"]
    assert out["opened"] == 40
    assert (v1["opened"], v1["share"], v1["weightPercent"]) == (30, 0.75, 75.0)
    assert (v2["opened"], v2["share"], v2["active"]) == (10, 0.25, 2)
    assert v1["openedPerSecond"] == 15.0 and v1["receivedBytesPerSecond"] == 300.0
    assert v2["failures"] == {"UF": 1} and v1["failures"] == {}
