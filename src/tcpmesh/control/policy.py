"""DestinationRules, once: which rule a proxy uses for a host, and its traffic policy as the
cluster and route settings every data plane applies.

Selection follows istio/istio ``pilot/pkg/model/push_context.go``: ``setDestinationRules``
sorts the rules (workloadSelector first, then creation time, name, namespace), resolves
short hosts in the rule's namespace and indexes each rule into its namespace's local
pool and, unless it is private, its namespace's exported pool; ``mergeDestinationRule``
folds rules for the same host (same exportTo, same selector) into one: subsets are
appended (a repeated subset name keeps its first definition), the first top-level
traffic policy wins. ``destinationRule`` looks a host up in the proxy's namespace, then
the service's namespace (exported rules), then the root namespace, each time taking the
most specific host (``MostSpecificHostMatch``: an exact host, else the longest matching
wildcard). Finally ``SidecarScope.DestinationRule`` prefers a rule of the proxy's own
namespace whose workloadSelector matches the proxy, else the rule without selector.

Merging follows ``GetPortLevelTrafficPolicy`` and ``MergeSubsetTrafficPolicy``
(``pilot/pkg/networking/util/util.go``) and ``MergeTrafficPolicy``
(``pilot/pkg/model/destination_rule.go``): a port-level policy *replaces* the policy it
sits in (omitted fields take defaults, not the outer level's); a subset's fields override
the rule's one by one, except that a subset with a port-level policy for the port
replaces load balancer, connection pool, outlier detection and TLS all together.

Cluster settings follow ``applyConnectionPool``, ``applyOutlierDetection`` and
``applyLoadBalancer`` (``pilot/pkg/networking/core/cluster_traffic_policy.go``); the
tcp_proxy settings of a route (idle timeout, maximum duration, source-IP hash) follow
``buildOutboundNetworkFilters`` and ``maybeSetHashPolicy`` (``networkfilter.go``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tcpmesh.api import models, parse_duration
from tcpmesh.control.resources import creation_order_key, resolve_host
from tcpmesh.control.snapshot import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    Cluster,
    Endpoint,
    LbPolicy,
    OutlierDetection,
    SlowStart,
    TcpKeepalive,
    cluster_name,
)

# meshConfig.rootNamespace's default (istiod's own namespace).
ROOT_NAMESPACE = "istio-system"
PUBLIC = "*"
PRIVATE = "."


@dataclass(frozen=True)
class PolicyParts:
    """The parts of a TrafficPolicy a cluster is built from."""

    load_balancer: models.LoadBalancerSettings | None = None
    connection_pool: models.ConnectionPoolSettings | None = None
    outlier_detection: models.OutlierDetection | None = None
    tls: models.ClientTLSSettings | None = None


def _parts(policy: models.TrafficPolicy | models.PortTrafficPolicy) -> PolicyParts:
    return PolicyParts(
        policy.load_balancer, policy.connection_pool, policy.outlier_detection, policy.tls
    )


def port_level_policy(
    policy: models.TrafficPolicy | None, port: int
) -> tuple[PolicyParts | None, bool]:
    """GetPortLevelTrafficPolicy: the port's settings replace the policy when present."""
    if policy is None:
        return None, False
    for settings in policy.port_level_settings:
        if settings.port is not None and settings.port.number == port:
            return _parts(settings), True
    return _parts(policy), False


def merge_subset_policy(
    original: models.TrafficPolicy | None, subset: models.TrafficPolicy | None, port: int
) -> PolicyParts | None:
    """MergeSubsetTrafficPolicy for one destination port."""
    merged, _ = port_level_policy(original, port)
    if subset is None:
        return merged
    override, port_level = port_level_policy(subset, port)
    if merged is None or override is None:
        return override
    if port_level:
        return override
    return PolicyParts(
        override.load_balancer or merged.load_balancer,
        override.connection_pool or merged.connection_pool,
        override.outlier_detection or merged.outlier_detection,
        override.tls or merged.tls,
    )


def subset_of(rule: models.DestinationRule | None, name: str) -> models.Subset | None:
    """The subset a cluster is built for (the first definition of the name)."""
    if rule is None or not name:
        return None
    return next((s for s in rule.spec.subsets if s is not None and s.name == name), None)


def cluster_policy(rule: models.DestinationRule | None, subset: str, port: int) -> PolicyParts:
    """The policy of ``outbound|port|subset|host`` (no subset: the rule's own)."""
    if rule is None:
        return PolicyParts()
    found = subset_of(rule, subset)
    merged = merge_subset_policy(
        rule.spec.traffic_policy, found.traffic_policy if found else None, port
    )
    return merged or PolicyParts()


def uses_source_ip_hash(rule: models.DestinationRule | None, subset: str) -> bool:
    """maybeSetHashPolicy (networkfilter.go): tcp_proxy's ``hash_policy: source_ip``.

    The rule's top-level ``consistentHash.useSourceIp`` counts unless the named subset has
    a load balancer of its own: then only that subset's ``useSourceIp`` does (a subset
    ``simple`` turns it off). Port-level settings play no part; weighted routes pass no
    subset, so only the top level counts for them."""
    if rule is None:
        return False
    top = rule.spec.traffic_policy
    lb = top.load_balancer if top else None
    use = bool(lb and lb.consistent_hash and lb.consistent_hash.use_source_ip)
    found = subset_of(rule, subset) if subset else None
    if found is not None and found.traffic_policy and found.traffic_policy.load_balancer:
        ch = found.traffic_policy.load_balancer.consistent_hash
        use = bool(ch and ch.use_source_ip)
    return use


# ---------------------------------------------------------------- selection


@dataclass
class _Merged:
    rule: models.DestinationRule
    export_to: frozenset[str]
    sources: list[str] = field(default_factory=list)


@dataclass
class _Pool:
    """consolidatedDestRules: merged rules per exact host and per wildcard host."""

    specific: dict[str, list[_Merged]] = field(default_factory=dict)
    wildcard: dict[str, list[_Merged]] = field(default_factory=dict)

    def add(self, rule: models.DestinationRule, host: str, export_to: frozenset[str]) -> None:
        table = self.wildcard if host.startswith("*") else self.specific
        existing = table.get(host)
        if existing is None:
            table[host] = [_Merged(rule, export_to, [_source(rule)])]
            return
        separate = True
        for merged in existing:
            if export_to == merged.export_to:
                separate = False
            elif merged.export_to and export_to > merged.export_to:
                separate = True  # merged into the narrower entry and kept on its own too
            else:
                separate = True
                continue
            if not _selectors_compatible(merged.rule, rule):
                separate = True
                continue
            if (_selector(rule) is None) == (_selector(merged.rule) is None):
                separate = False
            merged.rule = _fold(merged.rule, rule)
            merged.sources.append(_source(rule))
        if separate:
            existing.append(_Merged(rule, export_to, [_source(rule)]))

    def most_specific(self, fqdn: str) -> list[_Merged] | None:
        """MostSpecificHostMatch: the exact host, else the longest wildcard that matches."""
        if fqdn in self.specific:
            return self.specific[fqdn]
        best: str | None = None
        for host in self.wildcard:
            if fqdn.endswith(host[1:]) and (best is None or _more_specific(host, best)):
                best = host
        return self.wildcard[best] if best is not None else None


def _more_specific(a: str, b: str) -> bool:
    """host.MoreSpecific for two wildcards: the longer one."""
    return len(a) > len(b)


def _source(rule: models.DestinationRule) -> str:
    return f"{rule.namespace}/{rule.name}"


def _selector(rule: models.DestinationRule) -> dict[str, str] | None:
    selector = rule.spec.workload_selector
    return None if selector is None else dict(selector.match_labels)


def _selectors_compatible(a: models.DestinationRule, b: models.DestinationRule) -> bool:
    """Two rules with selectors merge only when the selectors are equal."""
    sa, sb = _selector(a), _selector(b)
    return sa is None or sb is None or sa == sb


def _fold(into: models.DestinationRule, rule: models.DestinationRule) -> models.DestinationRule:
    """Append the new subsets; keep the first top-level traffic policy."""
    names = {s.name for s in into.spec.subsets if s is not None}
    subsets = list(into.spec.subsets)
    subsets += [s for s in rule.spec.subsets if s is not None and s.name not in names]
    policy = into.spec.traffic_policy or rule.spec.traffic_policy
    spec = into.spec.model_copy(update={"subsets": subsets, "traffic_policy": policy})
    return into.model_copy(update={"spec": spec})


def _export_set(rule: models.DestinationRule) -> frozenset[str]:
    if rule.spec.workload_selector is not None:
        return frozenset({PRIVATE})  # rules with a selector are never exported
    return frozenset(rule.spec.export_to)


@dataclass(frozen=True)
class SelectedRule:
    """The DestinationRule a proxy uses for a host, merged from ``sources``."""

    rule: models.DestinationRule
    sources: tuple[str, ...]


class DestinationRuleIndex:
    """setDestinationRules once; ``lookup`` per (proxy, host) as destinationRule does."""

    def __init__(
        self, rules: Iterable[models.DestinationRule], root_namespace: str = ROOT_NAMESPACE
    ) -> None:
        self.root_namespace = root_namespace
        self._local: dict[str, _Pool] = {}
        self._exported: dict[str, _Pool] = {}
        self._root_local = _Pool()
        ordered = sorted(
            rules, key=lambda r: (r.spec.workload_selector is None, *creation_order_key(r))
        )
        for rule in ordered:
            self._index(rule)

    def _index(self, rule: models.DestinationRule) -> None:
        ns = rule.namespace
        host = resolve_host(rule.spec.host, ns)
        export_to = _export_set(rule)
        if not export_to or export_to & {PUBLIC, PRIVATE, ns}:
            self._local.setdefault(ns, _Pool()).add(rule, host, export_to)
        private_only = len(export_to) == 1 and bool(export_to & {PRIVATE, ns})
        if not private_only:
            self._exported.setdefault(ns, _Pool()).add(rule, host, export_to)
        elif ns == self.root_namespace:
            self._root_local.add(rule, host, export_to)

    def lookup(
        self,
        fqdn: str,
        service_namespace: str,
        proxy_namespace: str,
        proxy_labels: Mapping[str, str],
    ) -> SelectedRule | None:
        """The rule for ``fqdn`` as seen by a proxy (namespace and labels)."""
        found = self._candidates(fqdn, service_namespace, proxy_namespace)
        if not found:
            return None
        catch_all: _Merged | None = None
        for merged in found:
            selector = _selector(merged.rule)
            if selector is None:
                catch_all = merged
            elif merged.rule.namespace == proxy_namespace and all(
                proxy_labels.get(k) == v for k, v in selector.items()
            ):
                return SelectedRule(merged.rule, tuple(merged.sources))
        if catch_all is None:
            return None
        return SelectedRule(catch_all.rule, tuple(catch_all.sources))

    def _candidates(
        self, fqdn: str, service_namespace: str, proxy_namespace: str
    ) -> Sequence[_Merged] | None:
        if proxy_namespace != self.root_namespace:
            pool = self._local.get(proxy_namespace)
            found = pool.most_specific(fqdn) if pool else None
        else:
            found = self._root_local.most_specific(fqdn)
        if found:
            return found
        for owner in (service_namespace, self.root_namespace):
            if not owner:
                continue
            exported = self._exported_to(owner, fqdn, proxy_namespace)
            if exported:
                return exported
        return None

    def _exported_to(self, owner: str, fqdn: str, client: str) -> list[_Merged]:
        pool = self._exported.get(owner)
        found = pool.most_specific(fqdn) if pool else None
        if not found:
            return []
        return [m for m in found if not m.export_to or m.export_to & {PUBLIC, client}]


# ---------------------------------------------------------------- cluster settings

# Envoy's defaults where Istio leaves a field unset.
ENVOY_CONSECUTIVE_ERRORS = 5  # consecutive_5xx, consecutive_gateway_failure, local origin
ENVOY_MAX_EJECTION_PERCENT = 10
# ApplyRingHashLoadBalancer: Istio's ring size when neither ringHash nor maglev is given.
ISTIO_DEFAULT_RING_SIZE = 1024


@dataclass(frozen=True)
class ClusterSettings:
    """What a Snapshot Cluster takes from its merged policy (Istio's cluster_traffic_policy.go)."""

    lb_policy: LbPolicy = "LEAST_REQUEST"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_connections: int | None = None
    outlier_detection: OutlierDetection | None = None
    tcp_keepalive: TcpKeepalive | None = None
    ring_hash_minimum_size: int | None = None
    maglev_table_size: int | None = None
    slow_start: SlowStart | None = None


def cluster_settings(parts: PolicyParts) -> ClusterSettings:
    """applyConnectionPool, applyOutlierDetection and applyLoadBalancer for one cluster."""
    tcp = parts.connection_pool.tcp if parts.connection_pool else None
    lb_policy, ring, maglev = lb_algorithm(parts.load_balancer)
    return ClusterSettings(
        lb_policy=lb_policy,
        connect_timeout=(
            parse_duration(tcp.connect_timeout)
            if tcp and tcp.connect_timeout
            else DEFAULT_CONNECT_TIMEOUT
        ),
        # "if settings.Tcp.MaxConnections > 0": 0 leaves Istio's default, MaxUint32.
        max_connections=tcp.max_connections if tcp and tcp.max_connections else None,
        outlier_detection=outlier_detection(parts.outlier_detection),
        tcp_keepalive=keepalive(tcp.tcp_keepalive if tcp else None),
        ring_hash_minimum_size=ring,
        maglev_table_size=maglev,
        slow_start=slow_start(parts.load_balancer) if lb_policy in _SLOW_START_LBS else None,
    )


_SLOW_START_LBS = ("LEAST_REQUEST", "ROUND_ROBIN")


def lb_algorithm(
    lb: models.LoadBalancerSettings | None,
) -> tuple[LbPolicy, int | None, int | None]:
    """applyLoadBalancer then ApplyRingHashLoadBalancer: the policy and its table sizes.

    PASSTHROUGH is Istio's ORIGINAL_DST: connect to the address the client dialled. On a
    gateway that address is the gateway itself, so it would loop; both data planes
    balance over the subset's endpoints by least request instead (decided here, once).
    """
    policy: LbPolicy = "LEAST_REQUEST"
    if lb is not None and lb.simple in ("ROUND_ROBIN", "RANDOM"):
        policy = "ROUND_ROBIN" if lb.simple == "ROUND_ROBIN" else "RANDOM"
    ch = lb.consistent_hash if lb is not None else None
    if ch is None:
        return policy, None, None
    if ch.maglev is not None:
        return "MAGLEV", None, ch.maglev.table_size or None
    if ch.ring_hash is not None:
        return "RING_HASH", ch.ring_hash.minimum_ring_size or None, None
    return "RING_HASH", ch.minimum_ring_size or ISTIO_DEFAULT_RING_SIZE, None


def slow_start(lb: models.LoadBalancerSettings | None) -> SlowStart | None:
    """setWarmup (aggression 1, minimum 10% unless given) or the deprecated setSlowStartConfig."""
    if lb is None:
        return None
    if lb.warmup is not None and lb.warmup.duration is not None:
        return SlowStart(
            window=parse_duration(lb.warmup.duration),
            aggression=lb.warmup.aggression if lb.warmup.aggression is not None else 1.0,
            min_weight_percent=(
                lb.warmup.minimum_percent if lb.warmup.minimum_percent is not None else 10.0
            ),
        )
    if lb.warmup_duration_secs is not None:
        # Envoy's own defaults apply to the deprecated field: aggression 1, minimum 10%.
        return SlowStart(window=parse_duration(lb.warmup_duration_secs))
    return None


def outlier_detection(od: models.OutlierDetection | None) -> OutlierDetection | None:
    """applyOutlierDetection, reduced to what a TCP connect failure meets in Envoy.

    A failed connect is a local-origin failure. Without ``splitExternalLocalOriginErrors``
    Envoy files it as a 503, which counts toward ``consecutive_5xx`` (Istio sets it from
    consecutive5xxErrors and enforces it unless 0; unset: Envoy's 5, enforced) and toward
    ``consecutive_gateway_failure`` (Istio sets and enforces it only from
    consecutiveGatewayErrors > 0; unset: not enforced). With the split, only
    ``consecutive_local_origin_failure`` counts (consecutiveLocalOriginFailures, else
    Envoy's 5, enforced). The deprecated ``consecutiveErrors`` is not read by Istio. The
    threshold that ejects first is the one kept; 0 means nothing ejects.
    """
    if od is None:
        return None
    if od.split_external_local_origin_errors:
        local = od.consecutive_local_origin_failures
        thresholds = [local if local else ENVOY_CONSECUTIVE_ERRORS]
    else:
        thresholds = []
        five = od.consecutive_5xx_errors
        if five is None:
            thresholds.append(ENVOY_CONSECUTIVE_ERRORS)
        elif five > 0:
            thresholds.append(five)
        if od.consecutive_gateway_errors:
            thresholds.append(od.consecutive_gateway_errors)
    defaults = OutlierDetection()
    return OutlierDetection(
        consecutive_errors=min(thresholds) if thresholds else 0,
        interval=parse_duration(od.interval) if od.interval else defaults.interval,
        base_ejection_time=(
            parse_duration(od.base_ejection_time)
            if od.base_ejection_time
            else defaults.base_ejection_time
        ),
        # "if outlier.MaxEjectionPercent > 0": 0 keeps Envoy's 10%.
        max_ejection_percent=od.max_ejection_percent or ENVOY_MAX_EJECTION_PERCENT,
        min_health_percent=od.min_health_percent or 0,
    )


def keepalive(ka: models.TcpKeepalive | None) -> TcpKeepalive | None:
    if ka is None:
        return None
    return TcpKeepalive(
        probes=ka.probes,
        time=parse_duration(ka.time) if ka.time else None,
        interval=parse_duration(ka.interval) if ka.interval else None,
    )


# ---------------------------------------------------------------- the builder's entry points


def destination_rule(
    index: DestinationRuleIndex,
    fqdn: str,
    service_namespace: str,
    proxy_namespace: str,
    proxy_labels: Mapping[str, str],
) -> models.DestinationRule | None:
    """SidecarScope.DestinationRule: the merged rule the proxy uses for ``fqdn``."""
    selected = index.lookup(fqdn, service_namespace, proxy_namespace, proxy_labels)
    return selected.rule if selected is not None else None


def unique_subsets(rule: models.DestinationRule | None) -> Iterator[models.Subset]:
    """The subsets of a (merged) rule; a subset defined twice keeps its first definition."""
    if rule is None:
        return
    seen: set[str] = set()
    for subset in rule.spec.subsets:
        if subset is not None and subset.name not in seen:
            seen.add(subset.name)
            yield subset


def make_cluster(
    fqdn: str,
    port: int,
    subset: str,
    endpoints: tuple[Endpoint, ...],
    rule: models.DestinationRule | None,
) -> Cluster:
    """``outbound|port|subset|fqdn`` with the settings of the rule's merged policy."""
    settings = cluster_settings(cluster_policy(rule, subset, port))
    return Cluster(
        name=cluster_name(port, subset, fqdn),
        service=fqdn,
        port=port,
        subset=subset,
        lb_policy=settings.lb_policy,
        connect_timeout=settings.connect_timeout,
        max_connections=settings.max_connections,
        outlier_detection=settings.outlier_detection,
        tcp_keepalive=settings.tcp_keepalive,
        endpoints=endpoints,
        ring_hash_minimum_size=settings.ring_hash_minimum_size,
        maglev_table_size=settings.maglev_table_size,
        slow_start=settings.slow_start,
    )


@dataclass(frozen=True)
class RouteSettings:
    """What a tcp_proxy route takes from the DestinationRule of its first destination."""

    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    max_connection_duration: float | None = None
    hash_policy: Literal["source_ip"] | None = None


def route_settings(rule: models.DestinationRule | None, subset: str) -> RouteSettings:
    """buildOutboundNetworkFiltersWith{SingleDestination,WeightedClusters}.

    Only the rule's top-level ``connectionPool.tcp`` counts (``idleTimeout``: "0s"
    disables it, unset keeps Envoy's 1h; ``maxConnectionDuration``); port-level and
    subset policies play no part. ``subset`` is the single destination's subset, empty
    for a weighted route (maybeSetHashPolicy is then called with "")."""
    if rule is None:
        return RouteSettings()
    top = rule.spec.traffic_policy
    tcp = top.connection_pool.tcp if top and top.connection_pool else None
    idle: float | None = DEFAULT_IDLE_TIMEOUT
    if tcp is not None and tcp.idle_timeout is not None:
        idle = parse_duration(tcp.idle_timeout) or None
    duration = tcp.max_connection_duration if tcp is not None else None
    return RouteSettings(
        idle_timeout=idle,
        max_connection_duration=parse_duration(duration) if duration is not None else None,
        hash_policy="source_ip" if uses_source_ip_hash(rule, subset) else None,
    )
