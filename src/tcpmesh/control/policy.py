"""DestinationRules: which rule applies to a host, and its traffic policy as cluster and
route settings.

References (istio/istio): pilot/pkg/model/destination_rule.go, networking/core/
cluster_traffic_policy.go (applyConnectionPool, applyOutlierDetection, applyLoadBalancer),
networking/util (MergeTrafficPolicy).
"""

from __future__ import annotations

from collections.abc import Iterator

from tcpmesh.api import (
    models,
    parse_duration,
)
from tcpmesh.control.resources import (
    MeshResources,
    creation_order_key,
    resolve_host,
)
from tcpmesh.control.snapshot import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    Cluster,
    Endpoint,
    LbPolicy,
    OutlierDetection,
    TcpKeepalive,
    cluster_name,
)


def route_policy(
    resources: MeshResources, destination: models.Destination | None, namespace: str
) -> tuple[models.TCPSettings | None, bool]:
    """Listener-level settings come from the DR of route[0]'s host, top level only."""
    if destination is None:
        return None, False
    fqdn = resolve_host(destination.host, namespace)
    rule = destination_rule_for(resources, fqdn, namespace)
    if rule is None or rule.spec.traffic_policy is None:
        return None, False
    policy = rule.spec.traffic_policy
    tcp = policy.connection_pool.tcp if policy.connection_pool else None
    by_source_ip = _uses_source_ip_hash(policy.load_balancer)
    for subset in rule.spec.subsets:
        if subset is not None and subset.name == destination.subset and subset.traffic_policy:
            by_source_ip = by_source_ip or _uses_source_ip_hash(subset.traffic_policy.load_balancer)
    return tcp, by_source_ip


def _uses_source_ip_hash(lb: models.LoadBalancerSettings | None) -> bool:
    return bool(lb and lb.consistent_hash and lb.consistent_hash.use_source_ip)


def idle_timeout(tcp: models.TCPSettings | None) -> float | None:
    if tcp is None or tcp.idle_timeout is None:
        return DEFAULT_IDLE_TIMEOUT
    seconds = parse_duration(tcp.idle_timeout)
    return None if seconds == 0 else seconds


def optional_duration(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


def destination_rule_for(
    resources: MeshResources, fqdn: str, preferred_namespace: str
) -> models.DestinationRule | None:
    """The DR for a host: an exact host beats a wildcard; the client's namespace first."""
    candidates = [dr for dr in resources.destination_rules if _dr_applies(dr, fqdn)]
    if not candidates:
        return None

    def rank(dr: models.DestinationRule) -> tuple[int, int, tuple[str, str, str]]:
        wildcard = int(resolve_host(dr.spec.host, dr.namespace) != fqdn)
        foreign = int(dr.namespace != preferred_namespace)
        return wildcard, foreign, creation_order_key(dr)

    return min(candidates, key=rank)


def unique_subsets(rule: models.DestinationRule) -> Iterator[models.Subset]:
    """The subsets of a rule; a subset defined twice keeps its first definition."""
    seen: set[str] = set()
    for subset in rule.spec.subsets:
        if subset is not None and subset.name not in seen:
            seen.add(subset.name)
            yield subset


def _dr_applies(rule: models.DestinationRule, fqdn: str) -> bool:
    host = resolve_host(rule.spec.host, rule.namespace)
    return host == fqdn or (host.startswith("*") and fqdn.endswith(host[1:]))


PolicyParts = tuple[
    models.LoadBalancerSettings | None,
    models.ConnectionPoolSettings | None,
    models.OutlierDetection | None,
]


def merged_policies(
    rule: models.DestinationRule | None, subset: models.Subset | None, port: int
) -> PolicyParts:
    """Merge order of Istio's MergeTrafficPolicy: DR, DR port level, subset, subset port level."""
    lb: models.LoadBalancerSettings | None = None
    pool: models.ConnectionPoolSettings | None = None
    outlier: models.OutlierDetection | None = None
    layers: list[models.TrafficPolicy | models.PortTrafficPolicy] = []
    for policy in (
        rule.spec.traffic_policy if rule else None,
        subset.traffic_policy if subset else None,
    ):
        if policy is None:
            continue
        layers.append(policy)
        layers.extend(
            p for p in policy.port_level_settings if p.port is not None and p.port.number == port
        )
    for layer in layers:
        lb = layer.load_balancer or lb
        pool = layer.connection_pool or pool
        outlier = layer.outlier_detection or outlier
    return lb, pool, outlier


def _lb_policy(lb: models.LoadBalancerSettings | None) -> LbPolicy:
    """Istio's load balancer settings as the policy every data plane applies.

    PASSTHROUGH is Istio's ORIGINAL_DST: connect to the address the client dialled. On a
    gateway that address is the gateway itself, so it would loop; both data planes
    balance over the subset's endpoints by least request instead (decided here, once).
    """
    if lb is None:
        return "LEAST_REQUEST"
    if lb.consistent_hash is not None:
        return "RING_HASH"
    if lb.simple == "ROUND_ROBIN" or lb.simple == "RANDOM":
        return lb.simple
    # UNSPECIFIED, LEAST_REQUEST, the deprecated LEAST_CONN, and PASSTHROUGH (above).
    return "LEAST_REQUEST"


def _outlier(od: models.OutlierDetection | None) -> OutlierDetection | None:
    if od is None:
        return None
    defaults = OutlierDetection()
    # For TCP, Envoy counts connect failures as 5xx unless local-origin errors are split.
    if od.split_external_local_origin_errors:
        consecutive = od.consecutive_local_origin_failures
    else:
        consecutive = od.consecutive_5xx_errors or od.consecutive_errors
    return OutlierDetection(
        consecutive_errors=consecutive if consecutive is not None else defaults.consecutive_errors,
        interval=parse_duration(od.interval) if od.interval else defaults.interval,
        base_ejection_time=(
            parse_duration(od.base_ejection_time)
            if od.base_ejection_time
            else defaults.base_ejection_time
        ),
        max_ejection_percent=(
            od.max_ejection_percent
            if od.max_ejection_percent is not None
            else defaults.max_ejection_percent
        ),
        min_health_percent=(
            od.min_health_percent
            if od.min_health_percent is not None
            else defaults.min_health_percent
        ),
    )


def _keepalive(ka: models.TcpKeepalive | None) -> TcpKeepalive | None:
    if ka is None:
        return None
    return TcpKeepalive(
        probes=ka.probes,
        time=parse_duration(ka.time) if ka.time else None,
        interval=parse_duration(ka.interval) if ka.interval else None,
    )


def make_cluster(
    fqdn: str, port: int, subset: str, endpoints: tuple[Endpoint, ...], policies: PolicyParts
) -> Cluster:
    lb, pool, outlier = policies
    tcp = pool.tcp if pool else None
    return Cluster(
        name=cluster_name(port, subset, fqdn),
        service=fqdn,
        port=port,
        subset=subset,
        lb_policy=_lb_policy(lb),
        connect_timeout=(
            parse_duration(tcp.connect_timeout)
            if tcp and tcp.connect_timeout
            else DEFAULT_CONNECT_TIMEOUT
        ),
        max_connections=tcp.max_connections if tcp else None,
        outlier_detection=_outlier(outlier),
        tcp_keepalive=_keepalive(tcp.tcp_keepalive if tcp else None),
        endpoints=endpoints,
    )
