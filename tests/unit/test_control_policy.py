"""DestinationRule selection and policy merging, each case read from Istio's source."""

from __future__ import annotations

from typing import Any

from tcpmesh.api import models
from tcpmesh.control import SlowStart
from tcpmesh.control.policy import (
    ClusterSettings,
    DestinationRuleIndex,
    cluster_policy,
    cluster_settings,
    merge_subset_policy,
    port_level_policy,
    uses_source_ip_hash,
)

HOST = "tcp-echo.shop.svc.cluster.local"


def dr(
    name: str,
    namespace: str = "shop",
    *,
    host: str = "tcp-echo",
    created: str = "2026-01-01T00:00:00Z",
    **spec: Any,
) -> models.DestinationRule:
    return models.DestinationRule.model_validate(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"host": host, **spec},
        }
    )


def policy(**fields: Any) -> models.TrafficPolicy:
    return models.TrafficPolicy.model_validate(fields)


RR = {"simple": "ROUND_ROBIN"}
POOL = {"tcp": {"maxConnections": 5}}
OUTLIER = {"consecutive5xxErrors": 3}


def test_port_level_settings_replace_the_policy() -> None:
    """GetPortLevelTrafficPolicy (networking/util/util.go): "port level policies do not
    inherit and instead to defaults if not provided" - the top level's load balancer and
    pool are not carried into the port's policy."""
    top = policy(
        loadBalancer=RR,
        connectionPool=POOL,
        portLevelSettings=[{"port": {"number": 9000}, "outlierDetection": OUTLIER}],
    )
    parts, found = port_level_policy(top, 9000)
    assert found and parts is not None
    assert parts.load_balancer is None and parts.connection_pool is None
    assert parts.outlier_detection is not None
    other, found = port_level_policy(top, 9001)
    assert not found and other is not None and other.connection_pool is not None


def test_subset_fields_override_one_by_one() -> None:
    """MergeTrafficPolicy (model/destination_rule.go) without port level: non-nil subset
    fields win, the others stay the rule's."""
    merged = merge_subset_policy(
        policy(loadBalancer=RR, connectionPool=POOL), policy(outlierDetection=OUTLIER), 9000
    )
    assert merged is not None
    assert merged.load_balancer is not None and merged.load_balancer.simple == "ROUND_ROBIN"
    assert merged.connection_pool is not None and merged.outlier_detection is not None


def test_a_subset_port_level_policy_replaces_everything() -> None:
    """MergeTrafficPolicy(hasPortLevel=true) takes all four fields from the subset's
    port-level policy, nil or not."""
    subset = policy(portLevelSettings=[{"port": {"number": 9000}, "outlierDetection": OUTLIER}])
    merged = merge_subset_policy(policy(loadBalancer=RR, connectionPool=POOL), subset, 9000)
    assert merged is not None
    assert merged.load_balancer is None and merged.connection_pool is None
    assert merged.outlier_detection is not None


def test_cluster_policy_uses_the_named_subset() -> None:
    rule = dr(
        "r",
        trafficPolicy={"connectionPool": POOL},
        subsets=[{"name": "v1", "labels": {"v": "1"}, "trafficPolicy": {"loadBalancer": RR}}],
    )
    v1 = cluster_policy(rule, "v1", 9000)
    assert v1.load_balancer is not None and v1.connection_pool is not None
    plain = cluster_policy(rule, "", 9000)
    assert plain.load_balancer is None and plain.connection_pool is not None


def test_two_rules_for_one_host_merge_their_subsets() -> None:
    """mergeDestinationRule (model/destination_rule.go): subsets are appended, a repeated
    subset name keeps its first definition, the first top-level policy wins (rules sorted
    by creation time in setDestinationRules)."""
    first = dr(
        "team-a",
        created="2026-01-01T00:00:00Z",
        trafficPolicy={"loadBalancer": RR},
        subsets=[{"name": "v1", "labels": {"version": "v1"}}],
    )
    second = dr(
        "team-b",
        created="2026-01-02T00:00:00Z",
        trafficPolicy={"connectionPool": POOL},
        subsets=[
            {"name": "v2", "labels": {"version": "v2"}},
            {"name": "v1", "labels": {"version": "other"}},
        ],
    )
    selected = DestinationRuleIndex([second, first]).lookup(HOST, "shop", "shop", {})
    assert selected is not None
    assert [s.name for s in selected.rule.spec.subsets if s] == ["v1", "v2"]
    assert selected.rule.spec.subsets[0] is not None
    assert selected.rule.spec.subsets[0].labels == {"version": "v1"}
    tp = selected.rule.spec.traffic_policy
    assert tp is not None and tp.load_balancer is not None and tp.connection_pool is None
    assert selected.sources == ("shop/team-a", "shop/team-b")


def test_export_to_limits_who_sees_a_rule() -> None:
    """getExportedDestinationRuleFromNamespace: a rule exported to "." is not seen from
    another namespace; one exported to that namespace is."""
    private = dr("private", exportTo=["."])
    assert DestinationRuleIndex([private]).lookup(HOST, "shop", "web", {}) is None
    assert DestinationRuleIndex([private]).lookup(HOST, "shop", "shop", {}) is not None
    to_web = dr("to-web", exportTo=["web"])
    assert DestinationRuleIndex([to_web]).lookup(HOST, "shop", "web", {}) is not None
    assert DestinationRuleIndex([to_web]).lookup(HOST, "shop", "other", {}) is None


def test_namespace_search_order_proxy_then_service_then_root() -> None:
    """PushContext.destinationRule: the proxy's namespace, the service's, the root's."""
    in_root = dr("root", "istio-system", host=HOST)
    in_service = dr("svc", "shop")
    in_proxy = dr("mine", "web", host=HOST)
    index = DestinationRuleIndex([in_root, in_service, in_proxy])
    assert _name(index, "web") == "mine"
    assert _name(index, "other") == "svc"
    assert _name(DestinationRuleIndex([in_root]), "other") == "root"


def _name(index: DestinationRuleIndex, proxy_namespace: str) -> str | None:
    selected = index.lookup(HOST, "shop", proxy_namespace, {})
    return selected.rule.name if selected else None


def test_the_most_specific_wildcard_wins() -> None:
    """MostSpecificHostMatch (model/config.go): exact host, else the longest wildcard."""
    broad = dr("broad", host="*.svc.cluster.local", created="2026-01-01T00:00:00Z")
    narrow = dr("narrow", host="*.shop.svc.cluster.local", created="2026-01-05T00:00:00Z")
    exact = dr("exact", created="2026-01-09T00:00:00Z")
    assert _name(DestinationRuleIndex([broad, narrow]), "shop") == "narrow"
    assert _name(DestinationRuleIndex([broad, narrow, exact]), "shop") == "exact"


def test_a_workload_selector_rule_applies_to_matching_proxies_of_its_namespace() -> None:
    """SidecarScope.DestinationRule (model/sidecar.go): a selector rule of the proxy's
    namespace that matches its labels, else the rule without selector."""
    general = dr("general", trafficPolicy={"connectionPool": POOL})
    special = dr("special", workloadSelector={"matchLabels": {"app": "client"}})
    index = DestinationRuleIndex([general, special])
    chosen = index.lookup(HOST, "shop", "shop", {"app": "client"})
    assert chosen is not None and chosen.rule.name == "special"
    other = index.lookup(HOST, "shop", "shop", {"app": "server"})
    assert other is not None and other.rule.name == "general"
    # A selector rule is never exported: a proxy elsewhere gets the general rule.
    remote = index.lookup(HOST, "shop", "web", {"app": "client"})
    assert remote is not None and remote.rule.name == "general"


def test_hash_policy_as_maybe_set_hash_policy_resolves_it() -> None:
    """maybeSetHashPolicy (networking/core/networkfilter.go)."""
    source_ip = {"consistentHash": {"useSourceIp": True}}
    rule = dr(
        "r",
        trafficPolicy={"loadBalancer": source_ip},
        subsets=[
            {"name": "simple", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
            {"name": "plain"},
        ],
    )
    assert uses_source_ip_hash(rule, "plain")
    assert not uses_source_ip_hash(rule, "simple")  # a subset `simple` turns it off
    assert uses_source_ip_hash(rule, "")  # weighted routes pass no subset
    only_subset = dr("s", subsets=[{"name": "v1", "trafficPolicy": {"loadBalancer": source_ip}}])
    assert uses_source_ip_hash(only_subset, "v1")  # single destination with that subset
    assert not uses_source_ip_hash(only_subset, "")  # weighted: subset settings unseen


# ---------------------------------------------------------------- cluster settings


def settings(**policy_fields: Any) -> ClusterSettings:
    return cluster_settings(cluster_policy(dr("r", trafficPolicy=policy_fields), "", 9000))


def test_max_connections_zero_leaves_the_limit_unset() -> None:
    """applyConnectionPool: ``if settings.Tcp.MaxConnections > 0`` - else MaxUint32."""
    assert settings(connectionPool={"tcp": {"maxConnections": 0}}).max_connections is None
    assert settings(connectionPool={"tcp": {"maxConnections": 1}}).max_connections == 1


def _threshold(**outlier: Any) -> int:
    od = settings(outlierDetection=outlier).outlier_detection
    assert od is not None
    return od.consecutive_errors


def test_outlier_thresholds_as_istio_and_envoy_apply_them() -> None:
    """applyOutlierDetection (cluster_traffic_policy.go) and Envoy's defaults: 5xx unset is
    Envoy's 5 (enforced), 5xx 0 disables; gateway errors count for a failed connect (503);
    the deprecated consecutiveErrors is never read; the split counts local origin only."""
    assert _threshold() == 5
    assert _threshold(consecutive5xxErrors=0) == 0
    assert _threshold(consecutive5xxErrors=7) == 7
    assert _threshold(consecutiveErrors=2) == 5
    assert _threshold(consecutive5xxErrors=0, consecutiveErrors=2) == 0
    assert _threshold(consecutiveGatewayErrors=3) == 3
    assert _threshold(consecutive5xxErrors=0, consecutiveGatewayErrors=4) == 4
    assert _threshold(splitExternalLocalOriginErrors=True) == 5
    split = {"splitExternalLocalOriginErrors": True, "consecutive5xxErrors": 1}
    assert _threshold(**split, consecutiveLocalOriginFailures=2) == 2
    assert _threshold(**split) == 5


def test_max_ejection_percent_zero_keeps_envoys_ten() -> None:
    """``if outlier.MaxEjectionPercent > 0`` - 0 leaves Envoy's default 10%."""
    od = settings(outlierDetection={"maxEjectionPercent": 0}).outlier_detection
    assert od is not None and od.max_ejection_percent == 10


def test_load_balancer_modes_and_their_sizes() -> None:
    """applyLoadBalancer and ApplyRingHashLoadBalancer."""
    maglev = settings(
        loadBalancer={"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 131}}}
    )
    assert (maglev.lb_policy, maglev.maglev_table_size) == ("MAGLEV", 131)
    ring = settings(
        loadBalancer={"consistentHash": {"useSourceIp": True, "ringHash": {"minimumRingSize": 64}}}
    )
    assert (ring.lb_policy, ring.ring_hash_minimum_size) == ("RING_HASH", 64)
    plain = settings(loadBalancer={"consistentHash": {"useSourceIp": True}})
    assert (plain.lb_policy, plain.ring_hash_minimum_size) == ("RING_HASH", 1024)
    assert settings(loadBalancer={"simple": "RANDOM"}).lb_policy == "RANDOM"
    assert settings(loadBalancer={"simple": "PASSTHROUGH"}).lb_policy == "LEAST_REQUEST"
    assert settings(loadBalancer={"simple": "LEAST_CONN"}).lb_policy == "LEAST_REQUEST"


def test_warmup_becomes_slow_start_with_istios_defaults() -> None:
    """setWarmup: aggression 1 and minimum 10% unless given."""
    warm = settings(loadBalancer={"simple": "ROUND_ROBIN", "warmup": {"duration": "30s"}})
    assert warm.slow_start == SlowStart(30.0, 1.0, 10.0)
    tuned = settings(
        loadBalancer={"warmup": {"duration": "1m", "aggression": 2, "minimumPercent": 5}}
    )
    assert tuned.slow_start == SlowStart(60.0, 2.0, 5.0)
    old = settings(loadBalancer={"warmupDurationSecs": "10s"})
    assert old.slow_start == SlowStart(10.0)
