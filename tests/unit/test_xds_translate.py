"""Snapshot → Envoy resources: names, tcp_proxy fields, cluster policies, endpoints."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
    L4Match,
    Listener,
    OutlierDetection,
    RouteOrigin,
    SlowStart,
    Snapshot,
    TcpKeepalive,
    TcpRoute,
    WeightedCluster,
    WeightedPick,
)
from tcpmesh.xds.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    TCP_PROXY_TYPE,
    cluster_resource,
    duration,
    envoy_differences,
    translate,
)

ORIGIN = RouteOrigin("VirtualService", "default", "tcp-echo", 0)

V1 = "outbound|9000|v1|tcp-echo.default.svc.cluster.local"
V2 = "outbound|9000|v2|tcp-echo.default.svc.cluster.local"
V3 = "outbound|9000|v3|tcp-echo.default.svc.cluster.local"


def route(*weights: tuple[str, int], **kwargs: Any) -> TcpRoute:
    return TcpRoute(
        destinations=tuple(WeightedCluster(n, w) for n, w in weights),
        origin=ORIGIN,
        stat_prefix=kwargs.pop("stat_prefix", "tcp-echo.default"),
        **kwargs,
    )


def snapshot(*routes: TcpRoute, clusters: tuple[Cluster, ...] = ()) -> Snapshot:
    listener = Listener("0.0.0.0_31400", "127.0.0.1", 31400, routes, "default/gw")
    return Snapshot.build((listener,), clusters)


def echo_cluster(name: str = V1, **kwargs: Any) -> Cluster:
    endpoints = kwargs.pop(
        "endpoints",
        (Endpoint("127.1.0.1", 9000, workload="default/v1-a"),),
    )
    return Cluster(
        name, "tcp-echo.default.svc.cluster.local", 9000, "v1", endpoints=endpoints, **kwargs
    )


def without_empty_lists(value: Any) -> Any:
    """protobuf's JSON leaves out empty repeated fields."""
    if isinstance(value, dict):
        return {k: without_empty_lists(v) for k, v in value.items() if v != []}
    if isinstance(value, list):
        return [without_empty_lists(v) for v in value]
    return value


def tcp_proxy(snap: Snapshot, index: int = 0) -> dict[str, Any]:
    config = translate(snap).of(EXTENSION_CONFIG_TYPE)[f"0.0.0.0_31400~{index}"]
    assert config["@type"] == EXTENSION_CONFIG_TYPE
    typed: dict[str, Any] = config["typed_config"]
    assert typed["@type"] == TCP_PROXY_TYPE
    return typed


def test_durations_use_protobuf_json() -> None:
    assert [duration(x) for x in (10.0, 0.25, 3600.0, 0.0, 1.5)] == [
        "10s",
        "0.25s",
        "3600s",
        "0s",
        "1.5s",
    ]


def test_listener_binds_the_snapshot_address_and_leaves_routing_to_ecds() -> None:
    listener = translate(snapshot(route((V1, 100)))).of(LISTENER_TYPE)["0.0.0.0_31400"]
    assert listener["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 31400}}
    (chain,) = listener["filter_chains"]
    (flt,) = chain["filters"]
    assert flt["name"] == "0.0.0.0_31400~0"
    assert "typed_config" not in flt
    assert flt["config_discovery"]["type_urls"] == [TCP_PROXY_TYPE]
    assert flt["config_discovery"]["config_source"] == {"ads": {}, "resource_api_version": "V3"}


def test_weight_change_changes_only_the_extension_config() -> None:
    before = translate(snapshot(route((V1, 100))))
    after = translate(snapshot(route((V1, 80), (V2, 20))))
    assert before.of(LISTENER_TYPE) == after.of(LISTENER_TYPE)
    assert before.of(EXTENSION_CONFIG_TYPE) != after.of(EXTENSION_CONFIG_TYPE)


def test_single_destination_is_a_cluster_with_istio_stat_prefix() -> None:
    config = tcp_proxy(snapshot(route((V1, 100), stat_prefix=V1)))
    assert config["cluster"] == V1
    assert config["stat_prefix"] == V1
    assert "weighted_clusters" not in config
    assert config["idle_timeout"] == "3600s"
    assert "max_downstream_connection_duration" not in config
    assert "hash_policy" not in config


def test_several_destinations_are_weighted_clusters_in_order() -> None:
    config = tcp_proxy(snapshot(route((V1, 80), (V2, 20), (V3, 5))))
    assert config["weighted_clusters"] == {
        "clusters": [
            {"name": V1, "weight": 80},
            {"name": V2, "weight": 20},
            {"name": V3, "weight": 5},
        ]
    }
    assert "cluster" not in config


def test_timeouts_and_hash_policy() -> None:
    config = tcp_proxy(
        snapshot(
            route(
                (V1, 100), idle_timeout=None, max_connection_duration=90.0, hash_policy="source_ip"
            )
        )
    )
    assert config["idle_timeout"] == "0s"  # Envoy's spelling of "disabled"
    assert config["max_downstream_connection_duration"] == "90s"
    assert config["hash_policy"] == [{"source_ip": {}}]


def test_access_log_matches_the_builtin_proxy_format() -> None:
    (log,) = tcp_proxy(snapshot(route((V1, 100))))["access_log"]
    fmt = log["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    assert fmt.startswith('[%START_TIME%] "- - -" 0 %RESPONSE_FLAGS% ')
    assert fmt.endswith("%DOWNSTREAM_REMOTE_ADDRESS%\n")


def test_subnet_routes_get_filter_chain_matches() -> None:
    snap = snapshot(
        route((V1, 100), match=L4Match(("10.0.0.0/8", "192.168.1.1"))),
        route((V2, 100)),
    )
    chains = translate(snap).of(LISTENER_TYPE)["0.0.0.0_31400"]["filter_chains"]
    assert chains[0]["filter_chain_match"] == {
        "prefix_ranges": [
            {"address_prefix": "10.0.0.0", "prefix_len": 8},
            {"address_prefix": "192.168.1.1", "prefix_len": 32},
        ]
    }
    assert "filter_chain_match" not in chains[1]
    assert tcp_proxy(snap, 1)["cluster"] == V2


def test_default_cluster_is_eds_least_request_with_istio_thresholds() -> None:
    cluster = translate(snapshot(route((V1, 100)), clusters=(echo_cluster(),))).of(CLUSTER_TYPE)[V1]
    assert cluster["type"] == "EDS"
    assert cluster["eds_cluster_config"]["service_name"] == V1
    assert cluster["connect_timeout"] == "10s"
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    (thresholds,) = cluster["circuit_breakers"]["thresholds"]
    assert thresholds["max_connections"] == 4294967295
    assert "outlier_detection" not in cluster
    assert "upstream_connection_options" not in cluster


def test_cluster_policies() -> None:
    custom = echo_cluster(
        lb_policy="ROUND_ROBIN",
        connect_timeout=0.5,
        max_connections=7,
        outlier_detection=OutlierDetection(3, 5.0, 60.0, 50, 20),
        tcp_keepalive=TcpKeepalive(probes=4, time=30.0, interval=None),
    )
    cluster = translate(snapshot(route((V1, 100)), clusters=(custom,))).of(CLUSTER_TYPE)[V1]
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    assert cluster["connect_timeout"] == "0.5s"
    assert cluster["circuit_breakers"]["thresholds"][0]["max_connections"] == 7
    assert cluster["outlier_detection"] == {
        "consecutive_5xx": 3,
        "enforcing_consecutive_5xx": 100,
        "enforcing_consecutive_gateway_failure": 0,
        "enforcing_consecutive_local_origin_failure": 0,
        "interval": "5s",
        "base_ejection_time": "60s",
        "max_ejection_percent": 50,
        "enforcing_success_rate": 0,
    }
    assert cluster["common_lb_config"] == {"healthy_panic_threshold": {"value": 20.0}}
    assert cluster["upstream_connection_options"] == {
        "tcp_keepalive": {"keepalive_probes": 4, "keepalive_time": 30}
    }


def test_envoy_states_that_it_cannot_split_smoothly() -> None:
    smooth = route((V1, 80), (V2, 20))
    assert smooth.weighted_pick is WeightedPick.SMOOTH
    assert envoy_differences(smooth) == [
        "weighted pick smooth is not available on Envoy: its tcp_proxy draws each "
        "connection at random (random)"
    ]
    assert envoy_differences(route((V1, 80), (V2, 20), weighted_pick=WeightedPick.RANDOM)) == []
    # One destination takes everything: there is nothing to split.
    assert envoy_differences(route((V1, 100))) == []


def test_endpoints_are_the_ready_ones() -> None:
    cluster = echo_cluster(
        endpoints=(
            Endpoint("127.1.0.1", 9000, workload="default/a"),
            Endpoint("127.1.0.2", 9000, ready=False, workload="default/b"),
        )
    )
    cla = translate(snapshot(route((V1, 100)), clusters=(cluster,))).of(ENDPOINT_TYPE)[V1]
    assert cla["cluster_name"] == V1
    (locality,) = cla["endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in locality["lb_endpoints"]] == [
        {"address": "127.1.0.1", "port_value": 9000}
    ]
    assert locality["lb_endpoints"][0]["endpoint"]["hostname"] == "default/a"


def test_no_ready_endpoints_is_an_empty_assignment() -> None:
    cluster = echo_cluster(endpoints=(Endpoint("127.1.0.2", 9000, ready=False),))
    cla = translate(snapshot(route((V1, 100)), clusters=(cluster,))).of(ENDPOINT_TYPE)[V1]
    assert cla["endpoints"] == []


def test_missing_cluster_stays_named_so_envoy_closes_its_share_with_nc() -> None:
    config = translate(snapshot(route((V1, 50), (V3, 50)), clusters=(echo_cluster(),)))
    assert set(config.of(CLUSTER_TYPE)) == {V1}
    names = [
        c["name"]
        for c in tcp_proxy(snapshot(route((V1, 50), (V3, 50))))["weighted_clusters"]["clusters"]
    ]
    assert names == [V1, V3]


def test_snapshot_version_is_carried() -> None:
    snap = snapshot(route((V1, 100)))
    assert translate(snap).snapshot_version == snap.version


def test_every_resource_parses_as_its_envoy_message() -> None:
    json_format = pytest.importorskip("google.protobuf.json_format")
    pytest.importorskip("envoy.config.listener.v3.listener_pb2")
    from tcpmesh.xds.server import to_any

    snap = snapshot(
        route(
            (V1, 80),
            (V2, 20),
            idle_timeout=None,
            max_connection_duration=5.0,
            hash_policy="source_ip",
        ),
        clusters=(
            echo_cluster(
                V1,
                outlier_detection=OutlierDetection(min_health_percent=10),
                tcp_keepalive=TcpKeepalive(3, 10.0, 5.0),
            ),
            echo_cluster(V2, endpoints=()),
        ),
    )
    config = translate(snap)
    for type_url, resources in config.resources.items():
        for resource in resources.values():
            message = to_any(resource)
            assert message.type_url == type_url
            # Round trip: nothing was dropped or misspelt on the way in.
            back = json_format.MessageToDict(message, preserving_proto_field_name=True)
            assert back == without_empty_lists(resource)


def _cluster(**fields: Any) -> dict[str, Any]:
    base = Cluster(
        name="outbound|9000||a.ns.svc.cluster.local", service="a.ns.svc.cluster.local", port=9000
    )
    return cluster_resource(dataclasses.replace(base, **fields))


def test_lb_parameters_as_istio_sets_them() -> None:
    """ApplyRingHashLoadBalancer and setWarmup (istio cluster_traffic_policy.go)."""
    ring = _cluster(lb_policy="RING_HASH", ring_hash_minimum_size=1024)
    assert ring["lb_policy"] == "RING_HASH"
    assert ring["ring_hash_lb_config"] == {"minimum_ring_size": 1024}
    maglev = _cluster(lb_policy="MAGLEV", maglev_table_size=131)
    assert maglev["lb_policy"] == "MAGLEV" and maglev["maglev_lb_config"] == {"table_size": 131}
    warm = _cluster(lb_policy="ROUND_ROBIN", slow_start=SlowStart(30.0, 1.0, 10.0))
    assert warm["round_robin_lb_config"]["slow_start_config"]["slow_start_window"] == "30s"
    assert warm["round_robin_lb_config"]["slow_start_config"]["min_weight_percent"] == {
        "value": 10.0
    }


def test_unset_max_connections_is_istios_maxuint32() -> None:
    thresholds = _cluster()["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_connections"] == 4294967295


def test_a_zero_threshold_disables_ejection() -> None:
    """consecutive5xxErrors: 0 -> enforcing_consecutive_5xx 0 (applyOutlierDetection)."""
    od = _cluster(outlier_detection=OutlierDetection(consecutive_errors=0))["outlier_detection"]
    assert od["enforcing_consecutive_5xx"] == 0


def test_max_connect_attempts_reaches_tcp_proxy_only_when_raised() -> None:
    """Envoy's default is 1, which is what Istio leaves; tcpmesh sets more only when asked."""
    assert "max_connect_attempts" not in tcp_proxy(snapshot(route((V1, 100))))
    raised = tcp_proxy(snapshot(route((V1, 100), max_connect_attempts=3)))
    assert raised["max_connect_attempts"] == 3
