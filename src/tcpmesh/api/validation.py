"""Semantic validation of typed resources, with Istio's and Kubernetes' own messages.

Shape and types are the models' business (:mod:`tcpmesh.api.models`); this module checks
what a webhook or the Kubernetes API server would reject or warn about once the shape is
right. Messages are verbatim from ``istio/istio`` ``pkg/config/validation`` (Istio 1.15+
weight rules) and from Kubernetes' field errors (``Invalid value: ...``, ``Required
value``). Every finding carries the field path it is about, in Kubernetes style
(``spec.tcp[0].route[1].weight``).

tcpmesh adds one warning of its own: a multi-destination route whose weights do not add
up to 100 is accepted (as Istio does since 1.15) but the effective split is spelled out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from tcpmesh.api import gatewayapi, models, names, tls, volumes
from tcpmesh.api.durations import parse_duration_ns
from tcpmesh.api.findings import Finding, error, warning
from tcpmesh.api.labels import selector_matches
from tcpmesh.api.names import quote
from tcpmesh.api.rebalance import rebalance_problems
from tcpmesh.api.rollouts import Analysis, Rollout, RouteSelector, Step, rollout_problems

MESH_GATEWAY = "mesh"
# tcpmesh's own setting, on a VirtualService: how a gateway splits the new connections of
# its tcp routes between their weighted destinations. "smooth" (the default): every
# sum(weights) consecutive connections of a worker split exactly by weight (nginx's smooth
# weighted round robin); "random": each connection draws, as Envoy's tcp_proxy does.
WEIGHTED_PICK_ANNOTATION = "tcpmesh.io/weighted-pick"
WEIGHTED_PICKS = ("smooth", "random")
# Sticky versions: the route's weighted pick by a consistent hash of the client address.
VERSION_AFFINITY_ANNOTATION = "traffic.tcpmesh.io/version-affinity"
VERSION_AFFINITIES = ("source-ip",)
# Connect failover: Envoy's tcp_proxy max_connect_attempts, which Istio never sets (so 1,
# Envoy's default, and no failover). The VirtualService's tcp/tls routes make up to this
# many connect attempts, each to another endpoint of the picked cluster while one remains.
MAX_CONNECT_ATTEMPTS_ANNOTATION = "traffic.tcpmesh.io/max-connect-attempts"
MAX_CONNECT_ATTEMPTS_LIMIT = 10
# Alibaba Cloud's SLB bandwidth cap of a LoadBalancer Service, in Mbit/s: the current
# prefix first, which wins over the legacy one when both are set (as in Alibaba Cloud's
# cloud-controller-manager); 5000 is the largest a pay-by-bandwidth SLB allows.
BANDWIDTH_ANNOTATIONS = (
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-bandwidth",
    "service.beta.kubernetes.io/alicloud-loadbalancer-bandwidth",
)
MAX_BANDWIDTH_MBPS = 5000
_MS = 1_000_000
_TLS_PROTOCOLS = {"https", "tls"}
_HTTP_PROTOCOLS = {"http", "http2", "http_proxy", "grpc", "grpc-web"}
_PROTOCOLS = {"tcp", "udp", "mongo", "redis", "mysql"} | _TLS_PROTOCOLS | _HTTP_PROTOCOLS


_error = error
_warning = warning


def validate(resource: models.Resource) -> list[Finding]:
    """Every error and warning about one resource, in a stable order, without repeats.

    A number outside its field's type range is reported alone: Kubernetes fails to
    decode such an object, and the schema of a CRD rejects it, before any semantic check.
    """
    out_of_range = list(numeric_ranges(resource))
    if out_of_range:
        return out_of_range
    findings = list(_metadata(resource))
    if isinstance(resource, models.VirtualService):
        findings += _virtual_service(resource.spec)
        findings += _export_to(resource.namespace, resource.spec.export_to, service_entry=False)
        findings += _weighted_pick(resource)
        findings += _max_connect_attempts(resource)
        findings += rebalance_problems(resource.metadata.annotations)
    elif isinstance(resource, models.DestinationRule):
        findings += _destination_rule(resource.namespace, resource.spec)
    elif isinstance(resource, models.Gateway):
        findings += _gateway(resource)
    elif isinstance(resource, models.Deployment):
        findings += _deployment(resource.spec)
    elif isinstance(resource, models.Service):
        findings += _service(resource.spec)
        findings += _bandwidth(resource.metadata.annotations)
    elif isinstance(resource, models.ServiceEntry):
        findings += _service_entry(resource)
    elif isinstance(resource, models.Secret):
        findings += tls.secret(resource)
    elif isinstance(resource, models.ConfigMap):
        findings += tls.config_map(resource)
    elif isinstance(resource, models.WorkloadEntry):
        findings += _workload_entry("spec", resource.spec, None, allow_fqdn=True)
    elif isinstance(resource, models.WorkloadGroup):
        findings += _workload_group(resource.spec)
    elif isinstance(resource, Rollout):
        findings += (_error(path, message) for path, message in rollout_problems(resource.spec))
    else:
        findings += gatewayapi.problems(resource)
    return list(dict.fromkeys(findings))


# ---------------------------------------------------------------- numeric ranges


@dataclass(frozen=True)
class IntType:
    """An integer type of the upstream API (Go for Kubernetes, protobuf for Istio)."""

    name: str
    low: int
    high: int


INT32 = IntType("int32", -(2**31), 2**31 - 1)
INT64 = IntType("int64", -(2**63), 2**63 - 1)
UINT32 = IntType("uint32", 0, 2**32 - 1)
UINT64 = IntType("uint64", 0, 2**64 - 1)
# outlierDetectionHttpErrorCodes items: the CRD schema's minimum and maximum.
HTTP_STATUS = IntType("http status code", 100, 599)

# Every integer field of every served kind, with its upstream type: Kubernetes' Go
# structs (k8s.io/api core/v1, apps/v1, meta/v1) and Istio's protos (networking v1),
# whose CRD schemas carry these as format int32, or minimum/maximum for unsigned types.
# A test walks the models and fails for an integer field missing here.
NUMERIC_FIELDS: dict[tuple[type[models.Model], str], IntType] = {
    (models.ObjectMeta, "generation"): INT64,
    (models.ObjectMeta, "deletion_grace_period_seconds"): INT64,
    (models.ContainerPort, "container_port"): INT32,
    (models.KeyToPath, "mode"): INT32,
    (models.SecretVolumeSource, "default_mode"): INT32,
    (models.ConfigMapVolumeSource, "default_mode"): INT32,
    (models.ReadinessProbe, "initial_delay_seconds"): INT32,
    (models.ReadinessProbe, "timeout_seconds"): INT32,
    (models.ReadinessProbe, "period_seconds"): INT32,
    (models.ReadinessProbe, "success_threshold"): INT32,
    (models.ReadinessProbe, "failure_threshold"): INT32,
    (models.TcpHealthCheck, "port"): UINT32,
    (models.HttpHealthCheck, "port"): UINT32,
    (models.ContainerPort, "host_port"): INT32,
    (models.PodSpec, "termination_grace_period_seconds"): INT64,
    (models.DeploymentSpec, "replicas"): INT32,
    (models.DeploymentSpec, "min_ready_seconds"): INT32,
    (models.DeploymentSpec, "revision_history_limit"): INT32,
    (models.DeploymentSpec, "progress_deadline_seconds"): INT32,
    (models.ServicePort, "port"): INT32,
    (models.ServicePort, "target_port"): INT32,
    (models.ServicePort, "node_port"): INT32,
    (models.EndpointPort, "port"): INT32,
    (models.PortSelector, "number"): UINT32,
    (models.RouteDestination, "weight"): INT32,
    (models.L4MatchAttributes, "port"): UINT32,
    (models.TLSMatchAttributes, "port"): UINT32,
    (models.GatewayPort, "number"): UINT32,
    (models.GatewayPort, "target_port"): UINT32,
    (models.ConsistentHashLB, "minimum_ring_size"): UINT64,
    (models.RingHash, "minimum_ring_size"): UINT64,
    (models.MagLev, "table_size"): UINT64,
    (models.BackendUtilization, "error_utilization_penalty_percent"): UINT32,
    (models.TcpKeepalive, "probes"): UINT32,
    (models.TCPSettings, "max_connections"): INT32,
    (models.OutlierDetection, "consecutive_local_origin_failures"): UINT32,
    (models.OutlierDetection, "consecutive_gateway_errors"): UINT32,
    (models.OutlierDetection, "consecutive_5xx_errors"): UINT32,
    (models.OutlierDetection, "consecutive_errors"): INT32,
    (models.OutlierDetection, "max_ejection_percent"): INT32,
    (models.OutlierDetection, "min_health_percent"): INT32,
    (models.ServiceEntryPort, "number"): UINT32,
    (models.ServiceEntryPort, "target_port"): UINT32,
    (models.WorkloadEntrySpec, "ports"): UINT32,
    (models.WorkloadEntrySpec, "weight"): UINT32,
    (models.Event, "count"): INT32,
    # tcpmesh's own CRD: int32 as its OpenAPI schema states (format: int32).
    (RouteSelector, "route"): INT32,
    (RouteSelector, "port"): INT32,
    (Step, "set_weight"): INT32,
    (Analysis, "min_samples"): INT32,
    (Analysis, "failure_limit"): INT32,
    (Analysis, "consecutive_success_limit"): INT32,
    # Gateway API CRDs: int32 (PortNumber, weight), as their OpenAPI schemas state.
    (gatewayapi.ParentReference, "port"): INT32,
    (gatewayapi.BackendRef, "port"): INT32,
    (gatewayapi.BackendRef, "weight"): INT32,
    (gatewayapi.Listener, "port"): INT32,
}
# The Go structs among the models: their numbers fail in Kubernetes' JSON decoder.
_GO_STRUCTS = (
    models.ObjectMeta,
    models.ContainerPort,
    models.PodSpec,
    models.DeploymentSpec,
    models.ServicePort,
    models.EndpointPort,
    models.Event,
)


def numeric_ranges(resource: models.Resource) -> Iterator[Finding]:
    """Numbers outside their field's upstream type, with the upstream message."""
    yield from _numbers_of(resource, "")


def _numbers_of(model: models.Model, path: str) -> Iterator[Finding]:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{path}.{field.alias or name}" if path else (field.alias or name)
        int_type = NUMERIC_FIELDS.get((type(model), name))
        if int_type is not None:
            yield from _number_findings(model, where, value, int_type)
        yield from _numbers_within(value, where)


def _numbers_within(value: object, path: str) -> Iterator[Finding]:
    if isinstance(value, models.Model):
        yield from _numbers_of(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers_within(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers_within(item, f"{path}[{key}]")


def _number_findings(
    model: models.Model, path: str, value: object, int_type: IntType
) -> Iterator[Finding]:
    values = value.items() if isinstance(value, dict) else [(None, value)]
    for key, number in values:
        if not isinstance(number, int) or isinstance(number, bool):
            continue
        if int_type.low <= number <= int_type.high:
            continue
        where = path if key is None else f"{path}[{key}]"
        if isinstance(model, _GO_STRUCTS):
            yield _error(where, _go_decode_message(model, path, number, int_type))
        else:
            yield _error(where, _schema_message(where, number, int_type))


def _go_decode_message(model: models.Model, path: str, number: int, int_type: IntType) -> str:
    """encoding/json's UnmarshalTypeError: the innermost struct and the path without indexes.

    IntOrString fields (``targetPort``) decode through their own UnmarshalJSON, which
    reports a bare Go value rather than a struct field.
    """
    if isinstance(model, models.ServicePort) and path.endswith(".targetPort"):
        return f"json: cannot unmarshal number {number} into Go value of type {int_type.name}"
    go_path = re.sub(r"\[[^\]]*\]", "", path)
    return (
        f"json: cannot unmarshal number {number} into Go struct field "
        f"{type(model).__name__}.{go_path} of type {int_type.name}"
    )


def _schema_message(path: str, number: int, int_type: IntType) -> str:
    """The API server's OpenAPI message for a CRD field (minimum/maximum, or format int32)."""
    if number < int_type.low:
        bound = f"greater than or equal to {int_type.low}"
    else:
        bound = f"less than or equal to {int_type.high}"
    return f"Invalid value: {number}: {path} in body should be {bound}"


# ---------------------------------------------------------------- metadata


def _metadata(resource: models.Resource) -> Iterator[Finding]:
    name = resource.metadata.name
    if not name:
        yield _error("metadata.name", "Required value: name is required")
    else:
        # Services become DNS names, hence the stricter rule Kubernetes applies to them.
        if isinstance(resource, models.Service):
            problems = names.k8s_dns1035_problems(name)
        elif isinstance(resource, models.Namespace):
            problems = names.k8s_label_problems(name)
        else:
            problems = names.k8s_subdomain_problems(name)
        for problem in problems:
            yield _error("metadata.name", f"Invalid value: {quote(name)}: {problem}")
    namespace = resource.metadata.namespace
    if namespace:
        for problem in names.k8s_label_problems(namespace):
            yield _error("metadata.namespace", f"Invalid value: {quote(namespace)}: {problem}")


# ---------------------------------------------------------------- VirtualService


def _weighted_pick(resource: models.Resource) -> Iterator[Finding]:
    for annotation, supported_values in (
        (WEIGHTED_PICK_ANNOTATION, WEIGHTED_PICKS),
        (VERSION_AFFINITY_ANNOTATION, VERSION_AFFINITIES),
    ):
        value = resource.metadata.annotations.get(annotation)
        if value is not None and value not in supported_values:
            supported = ", ".join(quote(v) for v in sorted(supported_values))
            yield _error(
                f"metadata.annotations[{annotation}]",
                f"Unsupported value: {quote(value)}: supported values: {supported}",
            )


def _max_connect_attempts(resource: models.Resource) -> Iterator[Finding]:
    """A decimal count in 1..MAX_CONNECT_ATTEMPTS_LIMIT (Envoy's rule is >= 1; the cap keeps
    a client's wait, attempts times the connect timeout, bounded)."""
    value = resource.metadata.annotations.get(MAX_CONNECT_ATTEMPTS_ANNOTATION)
    if value is None:
        return
    if (
        not (value.isascii() and value.isdigit())
        or not 1 <= int(value) <= MAX_CONNECT_ATTEMPTS_LIMIT
    ):
        yield _error(
            f"metadata.annotations[{MAX_CONNECT_ATTEMPTS_ANNOTATION}]",
            f"Invalid value: {quote(value)}: must be an integer from 1 to "
            f"{MAX_CONNECT_ATTEMPTS_LIMIT}",
        )


def _virtual_service(spec: models.VirtualServiceSpec) -> Iterator[Finding]:
    if not spec.hosts:
        # No hosts means a delegate, which only carries HTTP routes.
        if spec.gateways:
            yield _error(
                "spec.gateways", "delegate virtual service must have no gateways specified"
            )
        if spec.tls:
            yield _error("spec.tls", "delegate virtual service must have no tls route specified")
        if spec.tcp:
            yield _error("spec.tcp", "delegate virtual service must have no tcp route specified")
    applies_to_mesh = not spec.gateways or MESH_GATEWAY in spec.gateways
    for i, gateway in enumerate(spec.gateways):
        yield from _gateway_name(f"spec.gateways[{i}]", gateway)

    all_hosts_valid = True
    for i, host in enumerate(spec.hosts):
        problem = names.validate_wildcard_domain(host)
        if problem:
            if not names.is_ip(host):
                yield _error(f"spec.hosts[{i}]", problem)
                all_hosts_valid = False
        elif applies_to_mesh and host == "*":
            yield _error(
                f"spec.hosts[{i}]",
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            )
            all_hosts_valid = False
    if all_hosts_valid:
        for i, first in enumerate(spec.hosts):
            for j in range(i + 1, len(spec.hosts)):
                if names.hosts_overlap(first, spec.hosts[j]):
                    yield _error(
                        f"spec.hosts[{j}]",
                        f"duplicate hosts in virtual service: {first} & {spec.hosts[j]}",
                    )

    if not spec.http and not spec.tcp and not spec.tls:
        yield _error("spec", "http, tcp or tls must be provided in virtual service")
    for i, tls_route in enumerate(spec.tls):
        yield from _tls_route(f"spec.tls[{i}]", tls_route, spec)
    for i, route in enumerate(spec.tcp):
        yield from _tcp_route(f"spec.tcp[{i}]", route)
    yield from _unreachable_tcp_rules(spec.tcp)


def _gateway_name(path: str, name: str) -> Iterator[Finding]:
    namespace, slash, gateway = name.partition("/")
    if not slash:
        if "." in name:
            parts = name.split(".")
            yield _warning(
                path,
                f"using legacy gatewayName format {quote(name)}; prefer the "
                f"<namespace>/<name> format: {quote(parts[1] + '/' + parts[0])}",
            )
        problem = names.validate_fqdn(name)
        if problem:
            yield _error(path, problem)
        return
    if not namespace or not gateway:
        yield _error(path, "config namespace and gateway name cannot be empty")
    if not names.is_dns1123_label(namespace):
        yield _error(path, f"invalid value for namespace: {quote(namespace)}")
    if not names.is_dns1123_label(gateway):
        yield _error(path, f"invalid value for gateway name: {quote(gateway)}")


def _l4_match(
    where: str, match: models.L4MatchAttributes | models.TLSMatchAttributes
) -> Iterator[Finding]:
    """The match fields ``tcp:`` and ``tls:`` rules share (Istio's ``validateTCPMatch``)."""
    for j, subnet in enumerate(match.destination_subnets):
        problem = names.validate_ip_subnet(subnet)
        if problem:
            yield _error(f"{where}.destinationSubnets[{j}]", problem)
    if match.port != 0:
        problem = names.validate_port(match.port)
        if problem:
            yield _error(f"{where}.port", problem)
    for problem in names.validate_labels(match.source_labels):
        yield _error(f"{where}.sourceLabels", problem)
    for j, gateway in enumerate(match.gateways):
        yield from _gateway_name(f"{where}.gateways[{j}]", gateway)


def _route_body(
    path: str, protocol: str, destinations: list[models.RouteDestination | None]
) -> Iterator[Finding]:
    """A rule's weighted destinations, checked alike for ``tcp:`` and ``tls:``."""
    if not destinations:
        yield _error(f"{path}.route", f"{protocol} route is required")
    yield from _route_destinations(f"{path}.route", destinations)
    yield from _weight_split(f"{path}.route", destinations)


def _tcp_route(path: str, route: models.TCPRoute) -> Iterator[Finding]:
    for i, match in enumerate(route.match):
        where = f"{path}.match[{i}]"
        if match is None:
            yield _error(where, "tcp match may not be nil")
            continue
        yield from _l4_match(where, match)
    yield from _route_body(path, "TCP", route.route)


def _tls_route(
    path: str, route: models.TLSRoute | None, spec: models.VirtualServiceSpec
) -> Iterator[Finding]:
    """Istio's ``validateTLSRoute``: SNI hosts within the VirtualService's hosts."""
    if route is None:
        return
    if not route.match:
        yield _error(f"{path}.match", "TLS route must have at least one match condition")
    for i, match in enumerate(route.match):
        where = f"{path}.match[{i}]"
        if match is None:
            yield _error(where, "TLS match may not be null")
            continue
        if not match.sni_hosts:
            yield _error(f"{where}.sniHosts", "TLS match must have at least one SNI host")
        for j, sni in enumerate(match.sni_hosts):
            yield from tls.sni_host(f"{where}.sniHosts[{j}]", sni, spec.hosts)
        yield from _l4_match(where, match)
    yield from _route_body(path, "TLS", route.route)


def _route_destinations(
    path: str, routes: Sequence[models.RouteDestination | None]
) -> Iterator[Finding]:
    total = 0
    for i, route in enumerate(routes):
        where = f"{path}[{i}]"
        if route is None:
            yield _error(where, "weight may not be nil")
            continue
        if route.destination is None:
            yield _error(f"{where}.destination", "destination is required")
        else:
            yield from _destination(f"{where}.destination", route.destination)
        if route.weight < 0:
            yield _error(f"{where}.weight", f"weight {route.weight} < 0")
        total += route.weight
    if len(routes) > 1 and total == 0:
        yield _error(path, "total destination weight = 0")


def _destination(path: str, destination: models.Destination) -> Iterator[Finding]:
    if destination.host == "*":
        yield _error(f"{path}.host", "invalid destination host *")
    else:
        problem = names.validate_wildcard_domain(destination.host)
        if problem:
            yield _error(f"{path}.host", problem)
    if destination.subset and not names.is_dns1123_label(destination.subset):
        yield _error(f"{path}.subset", f"subset name is invalid: {destination.subset}")
    if destination.port is not None:
        problem = names.validate_port(destination.port.number)
        if problem:
            yield _error(f"{path}.port.number", problem)


def _weight_split(path: str, routes: Sequence[models.RouteDestination | None]) -> Iterator[Finding]:
    """Warn when relative weights do not read as percentages, and say what they mean."""
    if len(routes) < 2 or any(r is None or r.weight < 0 for r in routes):
        return
    total = sum(r.weight for r in routes if r is not None)
    if total in (0, 100):
        return
    shares = ", ".join(
        f"{_destination_label(r.destination)} {100 * r.weight / total:.1f}%"
        for r in routes
        if r is not None and r.weight > 0
    )
    yield _warning(path, f"total destination weight {total} != 100; effective split: {shares}")


def _destination_label(destination: models.Destination | None) -> str:
    if destination is None:
        return "<no destination>"
    label = destination.host
    if destination.subset:
        label += f"/{destination.subset}"
    if destination.port is not None:
        label += f":{destination.port.number}"
    return label


def _unreachable_tcp_rules(routes: Sequence[models.TCPRoute]) -> Iterator[Finding]:
    """Istio's ``analyzeUnreachableTCPRules``: rules and matches that can never fire."""
    first_rule_of: dict[str, int] = {}
    catch_all = -1
    for n, route in enumerate(routes):
        rule = f"spec.tcp[{n}]"
        if not route.match:
            if catch_all >= 0:
                yield _warning(
                    rule,
                    f"virtualService rule #{n} not used (only the last rule can have no matches)",
                )
            catch_all = n
            continue
        duplicates = 0
        for m, match in enumerate(route.match):
            if catch_all >= 0:
                yield _warning(
                    rule,
                    f"virtualService rule #{n} not used (route without matches defined before)",
                )
                continue
            key = json.dumps(
                match.model_dump(exclude_defaults=True) if match else None, sort_keys=True
            )
            if key in first_rule_of:
                yield _warning(
                    f"{rule}.match[{m}]",
                    f"virtualService rule #{n} match #{m} is not used "
                    f"(duplicate/overlapping match in rule #{first_rule_of[key]})",
                )
                duplicates += 1
            else:
                first_rule_of[key] = n
        if duplicates == len(route.match):
            yield _warning(
                rule, f"virtualService rule #{n} not used (all matches used by prior rules)"
            )


# ---------------------------------------------------------------- DestinationRule


def _destination_rule(namespace: str, spec: models.DestinationRuleSpec) -> Iterator[Finding]:
    """ValidateDestinationRule, in Istio's order."""
    problem = names.validate_wildcard_domain(spec.host)
    if problem:
        yield _error("spec.host", problem)
    yield from _traffic_policy("spec.trafficPolicy", spec.traffic_policy)
    seen: set[str] = set()
    for i, subset in enumerate(spec.subsets):
        path = f"spec.subsets[{i}]"
        if subset is None:
            yield _error(path, "subset may not be null")
            continue
        if subset.name in seen:
            yield _error(f"{path}.name", f"duplicate subset names: {subset.name}")
        seen.add(subset.name)
        if not subset.name:
            yield _error(f"{path}.name", "subset name cannot be empty")
        elif not names.is_dns1123_label(subset.name):
            yield _error(f"{path}.name", f"subset name is invalid: {subset.name}")
        for problem in names.validate_labels(subset.labels):
            yield _error(f"{path}.labels", problem)
        yield from _traffic_policy(f"{path}.trafficPolicy", subset.traffic_policy)
    selector = spec.workload_selector
    yield from _export_to(
        namespace, spec.export_to, service_entry=False, selector=selector is not None
    )
    if selector is not None:
        yield from _workload_selector("spec.workloadSelector", selector)


def _workload_selector(path: str, selector: models.WorkloadSelector) -> Iterator[Finding]:
    """validateWorkloadSelector (type.v1beta1.WorkloadSelector: ``matchLabels``)."""
    for key, value in selector.match_labels.items():
        if not key:
            yield _error(
                f"{path}.matchLabels",
                f"empty key is not supported in selector: {quote(f'{key}={value}')}",
            )
        if "*" in key or "*" in value:
            yield _error(
                f"{path}.matchLabels",
                f"wildcard is not supported in selector: {quote(f'{key}={value}')}",
            )
    if not selector.match_labels:
        yield _warning(path, "workload selector specified without labels")


def _traffic_policy(path: str, policy: models.TrafficPolicy | None) -> Iterator[Finding]:
    """validateTrafficPolicy."""
    if policy is None:
        return
    fields = (
        policy.outlier_detection,
        policy.connection_pool,
        policy.load_balancer,
        policy.tls,
        policy.port_level_settings or None,
        policy.tunnel,
        policy.proxy_protocol,
        policy.retry_budget,
    )
    if all(value is None for value in fields):
        yield _error(path, "traffic policy must have at least one field")
        return
    if policy.tunnel is not None and policy.proxy_protocol is not None:
        yield _error(path, "tunnel and proxyProtocol must not be set together")
        return
    yield from _outlier_detection(f"{path}.outlierDetection", policy.outlier_detection)
    yield from _connection_pool(f"{path}.connectionPool", policy.connection_pool)
    yield from _load_balancer(
        f"{path}.loadBalancer", policy.load_balancer, policy.outlier_detection
    )
    yield from _client_tls(f"{path}.tls", policy.tls)
    for i, port_policy in enumerate(policy.port_level_settings):
        where = f"{path}.portLevelSettings[{i}]"
        if port_policy.port is None:
            yield _error(f"{where}.port", "portTrafficPolicy must have valid port")
        parts = (
            port_policy.outlier_detection,
            port_policy.connection_pool,
            port_policy.load_balancer,
            port_policy.tls,
        )
        if all(value is None for value in parts):
            yield _error(where, "port traffic policy must have at least one field")
            continue
        yield from _outlier_detection(f"{where}.outlierDetection", port_policy.outlier_detection)
        yield from _connection_pool(f"{where}.connectionPool", port_policy.connection_pool)
        yield from _load_balancer(
            f"{where}.loadBalancer", port_policy.load_balancer, port_policy.outlier_detection
        )
        yield from _client_tls(f"{where}.tls", port_policy.tls)


# Envoy's bound on a Maglev table (and Istio's, in validateLoadBalancer).
MAGLEV_TABLE_SIZE_LIMIT = 5000011


def _load_balancer(
    path: str, lb: models.LoadBalancerSettings | None, outlier: models.OutlierDetection | None
) -> Iterator[Finding]:
    """The CRD schema's oneOf and CEL rules, then validateLoadBalancer."""
    if lb is None:
        return
    chosen = [lb.simple, lb.consistent_hash, lb.backend_utilization]
    if sum(value is not None for value in chosen) > 1:
        yield _one_of(path)
    if lb.warmup_duration_secs is not None and lb.warmup is not None:
        yield _error(path, "only one of warmupDurationSecs or warmup can be set")
    if lb.consistent_hash is not None:
        yield from _consistent_hash(f"{path}.consistentHash", lb.consistent_hash)
    if lb.locality_lb_setting is not None and lb.zone_aware_lb_setting is not None:
        yield _error(path, "only one of localityLbSetting and zoneAwareLbSetting can be set")
    for field, setting in (
        ("localityLbSetting", lb.locality_lb_setting),
        ("zoneAwareLbSetting", lb.zone_aware_lb_setting),
    ):
        failover = isinstance(setting, dict) and (
            setting.get("failover") or setting.get("failoverPriority")
        )
        if failover and outlier is None:
            yield _warning(
                f"{path}.{field}", "outlier detection policy must be provided for failover"
            )
    yield from _duration(f"{path}.warmupDurationSecs", lb.warmup_duration_secs)
    if lb.warmup is not None:
        yield from _warmup(f"{path}.warmup", lb.warmup)
    if lb.backend_utilization is not None:
        for field in ("weightExpirationPeriod", "weightStabilizationPeriod", "weightUpdatePeriod"):
            value = getattr(lb.backend_utilization, _snake(field))
            yield from _parsed_duration(f"{path}.backendUtilization.{field}", value)


def _consistent_hash(path: str, ch: models.ConsistentHashLB) -> Iterator[Finding]:
    keys = [ch.http_header_name, ch.http_cookie, ch.use_source_ip, ch.http_query_parameter_name]
    if sum(value is not None for value in keys) > 1:
        yield _one_of(path)
    if ch.ring_hash is not None and ch.maglev is not None:
        yield _one_of(path)
    cookie = ch.http_cookie
    if cookie is not None:
        if not cookie.name:
            yield _error(f"{path}.httpCookie", "name required for HttpCookie")
        names_seen: set[str] = set()
        for attribute in cookie.attributes:
            if not attribute.name:
                yield _error(f"{path}.httpCookie", "cookie attribute name cannot be empty")
            elif attribute.name in names_seen:
                yield _error(
                    f"{path}.httpCookie", f"duplicate cookie attribute name: {attribute.name}"
                )
            names_seen.add(attribute.name)
    if ch.minimum_ring_size:
        yield _warning(
            f"{path}.minimumRingSize",
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash "
            "configuration instead",
        )
        if ch.ring_hash is not None or ch.maglev is not None:
            yield _error(path, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
    if ch.maglev is not None:
        size = ch.maglev.table_size or 0
        where = f"{path}.maglev.tableSize"
        if size == 0:
            yield _error(where, "tableSize must be set for maglev")
        if size >= MAGLEV_TABLE_SIZE_LIMIT:
            yield _error(where, f"tableSize must be less than {MAGLEV_TABLE_SIZE_LIMIT} for maglev")
        if not is_prime(size):
            yield _error(where, "tableSize must be a prime number for maglev")


def is_prime(number: int) -> bool:
    """Envoy's Primes::isPrime, which Istio copies: 0 counts as not prime, 1 as prime."""
    if 0 < number < 4:
        return True
    if number % 2 == 0:
        return False
    return all(number % factor for factor in range(3, math.isqrt(number) + 1, 2))


def _warmup(path: str, warmup: models.WarmupConfiguration) -> Iterator[Finding]:
    if warmup.duration is None:
        yield _error(f"{path}.duration", "duration is required")
    else:
        yield from _duration(f"{path}.duration", warmup.duration)
    if warmup.minimum_percent is not None and warmup.minimum_percent > 100:
        yield _error(
            f"{path}.minimumPercent", "minimumPercent value should be less than or equal to 100"
        )
    if warmup.aggression is not None and warmup.aggression <= 0:
        yield _error(f"{path}.aggression", "aggression should be greater than 0")


def _client_tls(path: str, tls: models.ClientTLSSettings | None) -> Iterator[Finding]:
    """agent.ValidateTLS for a DestinationRule's upstream TLS."""
    if tls is None:
        return
    if tls.insecure_skip_verify:
        if tls.mode == "SIMPLE" and (
            tls.ca_certificates or tls.credential_name or tls.subject_alt_names is not None
        ):
            yield _error(
                path,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                "InsecureSkipVerify is set true",
            )
        if tls.mode == "MUTUAL" and (tls.ca_certificates or tls.subject_alt_names is not None):
            yield _error(
                path,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is "
                "set true",
            )
    if tls.mode in ("SIMPLE", "MUTUAL") and tls.credential_name:
        if tls.client_certificate or tls.ca_certificates or tls.private_key or tls.ca_crl:
            yield _error(
                path,
                "cannot specify client certificates or CA certificate or CA CRL If "
                "credentialName is set",
            )
        return
    if tls.mode == "MUTUAL":
        if not tls.client_certificate:
            yield _error(path, "client certificate required for mutual tls")
        if not tls.private_key:
            yield _error(path, "private key required for mutual tls")


def _one_of(path: str) -> Finding:
    """The API server's message when a CRD schema's oneOf alternatives both match."""
    message = f"{path} in body must validate one and only one schema (oneOf)"
    return _error(path, f'Invalid value: "object": {message}')


def _parsed_duration(path: str, value: str | None) -> Iterator[Finding]:
    """A google.protobuf.Duration that must parse, with no lower bound (backendUtilization)."""
    if value is None:
        return
    try:
        parse_duration_ns(value)
    except ValueError as exc:
        yield _error(path, str(exc))


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _connection_pool(path: str, pool: models.ConnectionPoolSettings | None) -> Iterator[Finding]:
    if pool is None:
        return
    if pool.http is None and pool.tcp is None:
        yield _error(path, "connection pool must have at least one field")
        return
    tcp = pool.tcp
    if tcp is None:
        return
    if tcp.max_connections is not None and tcp.max_connections < 0:
        yield _error(f"{path}.tcp.maxConnections", "max connections must be non-negative")
    yield from _duration(f"{path}.tcp.connectTimeout", tcp.connect_timeout)
    yield from _duration(f"{path}.tcp.maxConnectionDuration", tcp.max_connection_duration)
    # "0s" switches the idle timeout off, so it is the one duration allowed below 1ms.
    yield from _duration(f"{path}.tcp.idleTimeout", tcp.idle_timeout, zero_disables=True)
    if tcp.tcp_keepalive is not None:
        yield from _duration(f"{path}.tcp.tcpKeepalive.time", tcp.tcp_keepalive.time)
        yield from _duration(f"{path}.tcp.tcpKeepalive.interval", tcp.tcp_keepalive.interval)


def _outlier_detection(path: str, outlier: models.OutlierDetection | None) -> Iterator[Finding]:
    if outlier is None:
        return
    yield from _duration(f"{path}.baseEjectionTime", outlier.base_ejection_time)
    if outlier.consecutive_errors:
        yield _warning(
            f"{path}.consecutiveErrors",
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors "
            "or consecutive5xxErrors instead",
        )
    local_failures = outlier.consecutive_local_origin_failures or 0
    if not outlier.split_external_local_origin_errors and local_failures > 0:
        yield _error(
            f"{path}.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split "
            "external local origin errors is set to false",
        )
    yield from _duration(f"{path}.interval", outlier.interval)
    for field, value in (
        ("maxEjectionPercent", outlier.max_ejection_percent),
        ("minHealthPercent", outlier.min_health_percent),
    ):
        if value is not None and not 0 <= value <= 100:
            yield _error(f"{path}.{field}", f"percentage {value} is not in range 0..100")
    for i, code in enumerate(outlier.outlier_detection_http_error_codes):
        where = f"{path}.outlierDetectionHttpErrorCodes[{i}]"
        if not HTTP_STATUS.low <= code <= HTTP_STATUS.high:
            yield _error(where, _schema_message(where, code, HTTP_STATUS))


def _duration(path: str, value: str | None, *, zero_disables: bool = False) -> Iterator[Finding]:
    if value is None:
        return
    try:
        nanos = parse_duration_ns(value)
    except ValueError as exc:
        yield _error(path, str(exc))
        return
    if zero_disables and abs(nanos) < _MS:
        return
    if nanos < _MS:
        yield _error(path, "duration must be greater than 1ms")
    elif nanos % _MS:
        yield _error(path, "only durations to ms precision are supported")


# ---------------------------------------------------------------- Gateway


def _gateway(gateway: models.Gateway) -> Iterator[Finding]:
    name = gateway.metadata.name
    # Gateway names become parts of "<namespace>/<name>" references, so no dots.
    if name and not names.is_dns1123_label(name):
        yield _error("metadata.name", f"invalid gateway name: {quote(name)}")
    servers = gateway.spec.servers
    if not servers:
        yield _error("spec.servers", "gateway must have at least one server")
    port_names: set[str] = set()
    for i, server in enumerate(servers):
        path = f"spec.servers[{i}]"
        if server is None:
            yield _error(path, "server may not be nil")
            continue
        yield from _server(path, server)
        if server.port is not None and server.port.name:
            if server.port.name in port_names:
                yield _error(
                    f"{path}.port.name",
                    f"port names in servers must be unique: duplicate name {server.port.name}",
                )
            port_names.add(server.port.name)


def _server(path: str, server: models.Server) -> Iterator[Finding]:
    if not server.hosts:
        yield _error(f"{path}.hosts", "server config must contain at least one host")
    for i, host in enumerate(server.hosts):
        for problem in names.validate_gateway_host(host):
            yield _error(f"{path}.hosts[{i}]", problem)
    bind = server.bind or ""
    port_findings = list(_server_port(f"{path}.port", server.port, bind))
    yield from port_findings
    if bind and not bind.startswith("unix://") and not names.is_ip(bind):
        yield _error(f"{path}.bind", f"{bind} is not a valid IP")
    if server.tls is not None:
        yield from tls.server_tls(f"{path}.tls", server.tls)
    if port_findings or server.port is None:
        return  # Istio judges TLS settings only against a well-formed port
    protocol = server.port.protocol.lower()
    if protocol in _TLS_PROTOCOLS and server.tls is None:
        yield _error(f"{path}.tls", "server must have TLS settings for HTTPS/TLS protocols")
    elif protocol not in _TLS_PROTOCOLS and server.tls is not None:
        if protocol not in _HTTP_PROTOCOLS:
            yield _error(f"{path}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")
        elif not tls.is_passthrough(server.tls) or _has_inline_certificates(server.tls):
            yield _error(f"{path}.tls", "server cannot have TLS settings for plain text HTTP ports")


def _server_port(path: str, port: models.GatewayPort | None, bind: str) -> Iterator[Finding]:
    if port is None:
        yield _error(path, "port is required")
        return
    if port.protocol.lower() not in _PROTOCOLS:
        yield _error(
            f"{path}.protocol",
            f"invalid protocol {quote(port.protocol)}, supported protocols are HTTP, HTTP2, "
            "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
        )
    if port.number > 0 or not bind.startswith("unix://"):
        problem = names.validate_port(port.number)
        if problem:
            yield _error(f"{path}.number", problem)
    if port.target_port is not None and port.target_port > 0:
        yield _error(f"{path}.targetPort", "targetPort has no impact on Gateways")
    if not port.name:
        yield _error(f"{path}.name", f"port name must be set: {_port_text(port)}")


def _port_text(port: models.GatewayPort) -> str:
    """The protobuf text form Go prints for ``%v`` of a Port."""
    parts = []
    if port.number:
        parts.append(f"number:{port.number}")
    if port.protocol:
        parts.append(f"protocol:{quote(port.protocol)}")
    if port.name:
        parts.append(f"name:{quote(port.name)}")
    if port.target_port:
        parts.append(f"target_port:{port.target_port}")
    return " ".join(parts)


def _has_inline_certificates(settings: models.ServerTLSSettings) -> bool:
    return bool(settings.ca_certificates or settings.private_key or settings.server_certificate)


# ---------------------------------------------------------------- ServiceEntry, WorkloadEntry

UNIX_ADDRESS_PREFIX = "unix://"
AUTOALLOCATE_LABEL = "networking.istio.io/enable-autoallocate-ip"
# protocol.Instance.IsTCP: the protocols Envoy proxies as opaque TCP.
_TCP_FAMILY = {"tcp", "mongo", "redis", "mysql"} | _TLS_PROTOCOLS


def _service_entry(entry: models.ServiceEntry) -> Iterator[Finding]:
    """ValidateServiceEntry, in Istio's order."""
    spec = entry.spec
    selector = spec.workload_selector
    if selector is not None:
        problems = list(_entry_selector(selector))
        if problems:
            yield from problems
            return  # Istio reports a malformed selector alone
        if not selector.labels:
            yield _warning(
                "spec.workloadSelector",
                "service entry: workload selector specified without labels, will be applied to "
                "all services in namespace",
            )
        if spec.endpoints:
            yield _error(
                "spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry"
            )

    if not spec.hosts:
        yield _error("spec.hosts", "service entry must have at least one host")
    for i, host in enumerate(spec.hosts):
        if host == "*":
            yield _error(f"spec.hosts[{i}]", f"invalid host {host}")
            continue
        problem = names.validate_wildcard_domain(host)
        if problem:
            yield _error(f"spec.hosts[{i}]", problem)
        partial = "*" in host and len(host) != 1 and not host.startswith("*.")
        if partial and spec.resolution != "DYNAMIC_DNS":
            yield _warning(f"spec.hosts[{i}]", f"partial wildcard {quote(host)} not allowed")

    for i, address in enumerate(spec.addresses):
        problem = names.validate_ip_subnet(address)
        if problem:
            yield _error(f"spec.addresses[{i}]", problem)
    if any("/" in a for a in spec.addresses) and spec.resolution not in ("NONE", "STATIC"):
        yield _error(
            "spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types"
        )

    port_names = {p.name for p in spec.ports if p is not None}
    yield from _entry_ports(entry)

    if spec.resolution == "NONE":
        if spec.endpoints:
            yield _error(
                "spec.endpoints", "no endpoints should be provided for resolution type none"
            )
        if selector is not None:
            yield _warning(
                "spec.workloadSelector",
                "workloadSelector should not be set when resolution mode is NONE",
            )
    elif spec.resolution == "STATIC":
        for i, endpoint in enumerate(spec.endpoints):
            if endpoint is None:
                yield _error(f"spec.endpoints[{i}]", "endpoint cannot be nil")
            else:
                yield from _workload_entry(
                    f"spec.endpoints[{i}]", endpoint, port_names, allow_fqdn=False
                )
    elif spec.resolution == "DYNAMIC_DNS":
        yield from _dynamic_dns_entry(spec)
    else:
        yield from _dns_entry(spec, port_names)

    # Plain TCP carries no host name, so a proxy could not tell several hosts apart.
    if spec.resolution != "NONE" and len(spec.hosts) > 1:
        for i, port in enumerate(spec.ports):
            if port is None:
                yield _error(f"spec.ports[{i}]", "ports cannot be nil")
                continue
            protocol = port.protocol.lower()
            if protocol not in _HTTP_PROTOCOLS and protocol not in _TLS_PROTOCOLS:
                yield _error("spec.ports", "multiple hosts provided with non-HTTP, non-TLS ports")
                break

    yield from _export_to(entry.namespace, spec.export_to, service_entry=True)


def _entry_selector(selector: models.EntryWorkloadSelector) -> Iterator[Finding]:
    """ValidateAlphaWorkloadSelector."""
    for key in sorted(selector.labels):
        pair = quote(f"{key}={selector.labels[key]}")
        if not key:
            yield _error(
                "spec.workloadSelector.labels", f"empty key is not supported in selector: {pair}"
            )
        if "*" in key or "*" in selector.labels[key]:
            yield _error(
                "spec.workloadSelector.labels", f"wildcard is not supported in selector: {pair}"
            )


def _auto_allocates_address(entry: models.ServiceEntry) -> bool:
    """ShouldV2AutoAllocateIP with PILOT_ENABLE_IP_AUTOALLOCATE at its default (on)."""
    opted_out = entry.metadata.labels.get(AUTOALLOCATE_LABEL, "").lower() == "false"
    return entry.spec.resolution != "NONE" and not opted_out and not entry.spec.addresses


def _entry_ports(entry: models.ServiceEntry) -> Iterator[Finding]:
    spec = entry.spec
    auto_address = _auto_allocates_address(entry)
    seen_names: set[str] = set()
    seen_numbers: set[int] = set()
    for i, port in enumerate(spec.ports):
        path = f"spec.ports[{i}]"
        if port is None:
            yield _error(path, "service entry port may not be null")
            continue
        if port.name in seen_names:
            yield _error(
                f"{path}.name", f"service entry port name {quote(port.name)} already defined"
            )
        seen_names.add(port.name)
        if port.number in seen_numbers:
            yield _error(f"{path}.number", f"service entry port {port.number} already defined")
        seen_numbers.add(port.number)
        if port.target_port != 0:
            problem = names.validate_port(port.target_port)
            if problem:
                yield _error(f"{path}.targetPort", problem)
        if not spec.addresses and not auto_address and port.protocol in ("", "TCP"):
            yield _warning(
                path,
                "addresses are required for ports serving TCP (or unset) protocol when IP "
                "Autoallocation is not enabled",
            )
        if not names.is_dns1123_label(port.name):
            yield _error(f"{path}.name", f"invalid port name: {port.name}")
        if port.protocol and port.protocol.lower() not in _PROTOCOLS:
            yield _error(f"{path}.protocol", f"unsupported protocol: {port.protocol}")
        problem = names.validate_port(port.number)
        if problem:
            yield _error(f"{path}.number", problem)


# The protocols a dynamic forward proxy cluster serves (Istio's buildOutboundClusters).
_DYNAMIC_DNS_PROTOCOLS = {"http", "tls", "grpc", "http2"}


def _dynamic_dns_entry(spec: models.ServiceEntrySpec) -> Iterator[Finding]:
    """The DYNAMIC_DNS branch of ValidateServiceEntry: wildcard hosts, HTTP or TLS ports."""
    mode = spec.resolution
    if not spec.hosts:
        yield _error(
            "spec.hosts", f"at least one wildcard host must be provided for resolution type {mode}"
        )
    for i, host in enumerate(spec.hosts):
        if not host.startswith("*"):
            yield _error(f"spec.hosts[{i}]", f"host must be wildcarded for resolution mode {mode}")
    if spec.addresses:
        yield _error(
            "spec.addresses",
            f"addresses cannot be set for resolution type {mode}. HTTP route domains will only "
            "be generatedfrom the hosts field values",
        )
    if spec.endpoints:
        yield _error(
            "spec.endpoints",
            f"endpoints cannot be set for resolution type {mode}. Destination IP address "
            "determined from hostsfield values",
        )
    for i, port in enumerate(spec.ports):
        if port is None:
            yield _error(f"spec.ports[{i}]", "port cannot be nil")
        elif port.protocol.lower() not in _DYNAMIC_DNS_PROTOCOLS:
            yield _error(
                f"spec.ports[{i}].protocol",
                f"only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type "
                f"{mode}",
            )


def _dns_entry(spec: models.ServiceEntrySpec, port_names: set[str]) -> Iterator[Finding]:
    """The DNS and DNS_ROUND_ROBIN branch of ValidateServiceEntry."""
    mode = spec.resolution
    if not spec.endpoints:
        for i, host in enumerate(spec.hosts):
            problem = names.validate_fqdn(host)
            if problem:
                yield _error(
                    f"spec.hosts[{i}]",
                    "hosts must be FQDN or contain only prefix wildcards if no endpoints are "
                    f"provided for resolution mode {mode}, {problem}",
                )
                break
    if mode == "DNS_ROUND_ROBIN" and len(spec.endpoints) > 1:
        yield _error(
            "spec.endpoints", f"there must only be 0 or 1 endpoint for resolution mode {mode}"
        )
    for i, endpoint in enumerate(spec.endpoints):
        path = f"spec.endpoints[{i}]"
        if endpoint is None:
            yield _error(path, "endpoint cannot be nil")
            continue
        address = endpoint.address
        if not names.is_ip(address) and names.validate_fqdn(address):
            yield _error(
                f"{path}.address",
                f"endpoint address {quote(address)} is not a valid FQDN or an IP address",
            )
        for problem in names.validate_labels(endpoint.labels):
            yield _error(f"{path}.labels", problem)
        yield from _endpoint_ports(path, endpoint, port_names)
    if spec.addresses:
        for i, port in enumerate(spec.ports):
            if port is None:
                yield _error(f"spec.ports[{i}]", "ports cannot be nil")
                continue
            if port.protocol.lower() in _TCP_FAMILY:
                if len(spec.hosts) > 1:
                    yield _warning(
                        "spec.hosts",
                        "service entry can not have more than one host specified simultaneously "
                        "with address and tcp port",
                    )
                break


def _endpoint_ports(
    path: str, endpoint: models.WorkloadEntrySpec, service_ports: set[str] | None
) -> Iterator[Finding]:
    for name in sorted(endpoint.ports):
        port = endpoint.ports[name]
        where = f"{path}.ports[{name}]"
        if service_ports is not None and name not in service_ports:
            yield _error(where, f"endpoint port {port} is not defined by the service entry")
        if not names.is_dns1123_label(name):
            yield _error(where, f"invalid port name: {name}")
        problem = names.validate_port(port)
        if problem:
            yield _error(where, problem)


def _workload_entry(
    path: str,
    entry: models.WorkloadEntrySpec,
    service_ports: set[str] | None,
    *,
    allow_fqdn: bool,
) -> Iterator[Finding]:
    """validateWorkloadEntry: a WorkloadEntry's spec, or one of a STATIC entry's endpoints.

    Without a ServiceEntry around it the resolution is unknown, so a host name passes
    (``allow_fqdn``) as long as it is a valid FQDN.
    """
    address = entry.address
    if not address:
        if not entry.network:
            yield _error(f"{path}.address", "address is required")
            return
        yield _warning(f"{path}.address", f"address is unset with network {quote(entry.network)}")
    unix = address.startswith(UNIX_ADDRESS_PREFIX)
    if unix:
        problem = _unix_address_problem(address[len(UNIX_ADDRESS_PREFIX) :])
        if problem:
            yield _error(f"{path}.address", problem)
        if entry.ports:
            yield _error(f"{path}.ports", f"unix endpoint {address} must not include ports")
    elif address and not names.is_ip(address):
        if not allow_fqdn:
            yield _error(
                f"{path}.address", f"endpoint address {quote(address)} is not a valid IP address"
            )
        elif names.validate_fqdn(address):
            yield _error(
                f"{path}.address",
                f"endpoint address {quote(address)} is not a valid FQDN or an IP address",
            )
    yield from _endpoint_ports(path, entry, service_ports)
    for problem in names.validate_labels(entry.labels):
        yield _error(f"{path}.labels", problem)
    if unix and service_ports is not None and len(service_ports) != 1:
        yield _error(path, "exactly 1 service port required for unix endpoints")


def _workload_group(spec: models.WorkloadGroupSpec) -> Iterator[Finding]:
    """ValidateWorkloadGroup: the template is required but not validated as a WorkloadEntry
    (its address is filled in at registration), the metadata labels, the probe."""
    if spec.template is None:
        yield _error("spec.template", "template is required")
        return
    if spec.metadata is not None:
        for problem in names.validate_labels(spec.metadata.labels):
            yield _error("spec.metadata.labels", f"invalid labels: {problem}")
    if spec.probe is not None:
        yield from _readiness_probe("spec.probe", spec.probe)


_PROBE_TIMINGS = (
    ("period_seconds", "periodSeconds"),
    ("initial_delay_seconds", "initialDelaySeconds"),
    ("timeout_seconds", "timeoutSeconds"),
    ("success_threshold", "successThreshold"),
    ("failure_threshold", "failureThreshold"),
)


def _readiness_probe(path: str, probe: models.ReadinessProbe) -> Iterator[Finding]:
    """validateReadinessProbe: timings not negative, exactly one method, its port valid."""
    for field, json_name in _PROBE_TIMINGS:
        if getattr(probe, field) < 0:
            yield _error(f"{path}.{json_name}", f"{json_name} must be non-negative")
    methods = [
        name
        for name, value in (
            ("httpGet", probe.http_get),
            ("tcpSocket", probe.tcp_socket),
            ("exec", probe.exec),
        )
        if value is not None
    ]
    if not methods:
        yield _error(path, "unknown health check method <nil>")
    elif len(methods) > 1:
        yield _error(path, f"only one health check method may be set, not {', '.join(methods)}")
    if probe.http_get is not None:
        problem = names.validate_port(probe.http_get.port)
        if problem:
            yield _error(f"{path}.httpGet.port", problem)
        if probe.http_get.scheme not in ("", "HTTP", "HTTPS"):
            yield _error(f"{path}.httpGet.scheme", 'httpGet.scheme must be one of "HTTPS", "HTTP"')
        for i, header in enumerate(probe.http_get.http_headers):
            if header is None:
                yield _error(f"{path}.httpGet.httpHeaders[{i}]", "invalid nil header")
    if probe.tcp_socket is not None:
        problem = names.validate_port(probe.tcp_socket.port)
        if problem:
            yield _error(f"{path}.tcpSocket.port", problem)
    if probe.exec is not None and not probe.exec.command:
        yield _error(f"{path}.exec.command", "exec.command is required")


def _unix_address_problem(path: str) -> str | None:
    """ValidateUnixAddress (the part after ``unix://``)."""
    if not path:
        return "unix address must not be empty"
    if path.startswith("@"):
        return None  # an abstract socket
    if not path.startswith("/") or path.endswith("/"):
        return f"{path} is not an absolute path to a file"
    return None


def _export_to(
    namespace: str, export_to: Sequence[str], *, service_entry: bool, selector: bool = False
) -> Iterator[Finding]:
    """validateExportTo; ``~`` (visible to no one) is allowed for ServiceEntries only.

    A DestinationRule with a workloadSelector applies to workloads of its own namespace
    only, so it may be exported to that namespace and nowhere else.
    """
    seen: set[str] = set()
    for i, entry in enumerate(export_to):
        path = f"spec.exportTo[{i}]"
        key = namespace if entry == "." else entry
        if key in seen:
            if key != entry:
                yield _error(
                    path, f"duplicate entries in exportTo: . and current namespace {namespace}"
                )
            else:
                yield _error(path, f"duplicate entries in exportTo for entry {entry}")
        elif service_entry and entry == "~":
            seen.add(key)
        else:
            problem = _visibility_problem(key)
            if problem:
                yield _error(path, problem)
            else:
                seen.add(key)
    if selector and seen:
        if namespace not in seen:
            yield _error(
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current "
                "namespace",
            )
        elif len(seen) > 1:
            yield _error(
                "spec.exportTo",
                "destination rule with workload selector cannot have multiple entries in exportTo",
            )
    if "*" in seen and len(export_to) > 1:
        yield _error(
            "spec.exportTo",
            "cannot have both public (*) and non-public exportTo values for a resource",
        )
    if "~" in seen and len(export_to) > 1:
        yield _error("spec.exportTo", "cannot export service entry to no one (~) and someone")


def _visibility_problem(value: str) -> str | None:
    """visibility.Instance.Validate."""
    if value in (".", "*"):
        return None
    if value == "~":
        return "exportTo ~ (none) is not allowed for Istio configuration objects"
    if not names.is_dns1123_label(value):
        return "only .,*, or a valid DNS 1123 label is allowed as exportTo entry"
    return None


# ---------------------------------------------------------------- Deployment, Service

_EMPTY_SELECTOR = (
    "v1.LabelSelector{MatchLabels:map[string]string(nil), "
    "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
)


def _deployment(spec: models.DeploymentSpec) -> Iterator[Finding]:
    if spec.replicas < 0:
        yield _error(
            "spec.replicas", f"Invalid value: {spec.replicas}: must be greater than or equal to 0"
        )
    selector = spec.selector
    selector_problems = list(_selector_requirements(selector))
    yield from selector_problems
    labels = spec.template.metadata.labels
    if selector_problems:
        pass  # a malformed selector matches nothing; its own errors say why
    elif not selector.match_labels and not selector.match_expressions:
        yield _error(
            "spec.selector",
            f"Invalid value: {_EMPTY_SELECTOR}: empty selector is invalid for deployment",
        )
    elif not selector_matches(selector, labels):
        yield _error(
            "spec.template.metadata.labels",
            f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
        )
    restart = spec.template.spec.restart_policy
    if restart != "Always":
        yield _error(
            "spec.template.spec.restartPolicy",
            f'Unsupported value: {quote(restart)}: supported values: "Always"',
        )
    yield from _pod_spec("spec.template.spec", spec.template.spec)


def _selector_requirements(selector: models.LabelSelector) -> Iterator[Finding]:
    for i, requirement in enumerate(selector.match_expressions):
        path = f"spec.selector.matchExpressions[{i}].values"
        if requirement.operator in ("In", "NotIn") and not requirement.values:
            yield _error(
                path, "Required value: must be specified when `operator` is 'In' or 'NotIn'"
            )
        elif requirement.operator in ("Exists", "DoesNotExist") and requirement.values:
            yield _error(
                path,
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )


def _go_map(labels: dict[str, str]) -> str:
    if not labels:
        return "map[string]string(nil)"
    body = ", ".join(f"{quote(k)}:{quote(labels[k])}" for k in sorted(labels))
    return f"map[string]string{{{body}}}"


def _pod_spec(path: str, spec: models.PodSpec) -> Iterator[Finding]:
    if not spec.containers:
        yield _error(f"{path}.containers", "Required value")
    seen: set[str] = set()
    groups = (("initContainers", spec.init_containers), ("containers", spec.containers))
    for group, containers in groups:
        for i, container in enumerate(containers):
            where = f"{path}.{group}[{i}]"
            if not container.name:
                yield _error(f"{where}.name", "Required value")
            else:
                yield from _invalid(
                    f"{where}.name", container.name, names.k8s_label_problems(container.name)
                )
                if container.name in seen:
                    yield _error(f"{where}.name", f"Duplicate value: {quote(container.name)}")
                seen.add(container.name)
            yield from _container_ports(f"{where}.ports", container.ports)
    yield from volumes.pod_volumes(path, spec)


def _container_ports(path: str, ports: Iterable[models.ContainerPort]) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, port in enumerate(ports):
        where = f"{path}[{i}]"
        problem = names.k8s_port_number_problem(port.container_port)
        if problem:
            yield _error(
                f"{where}.containerPort", f"Invalid value: {port.container_port}: {problem}"
            )
        if port.host_port:
            problem = names.k8s_port_number_problem(port.host_port)
            if problem:
                yield _error(f"{where}.hostPort", f"Invalid value: {port.host_port}: {problem}")
        if port.name:
            yield from _invalid(f"{where}.name", port.name, names.k8s_port_name_problems(port.name))
            if port.name in seen:
                yield _error(f"{where}.name", f"Duplicate value: {quote(port.name)}")
            seen.add(port.name)


def load_balancer_bandwidth(annotations: Mapping[str, str]) -> int | None:
    """The bandwidth cap (Mbit/s) the annotations give a Service's load balancer, if any.

    The current prefix wins (BANDWIDTH_ANNOTATIONS is in precedence order). Validation
    rejects bad values at apply; one stored before that rule existed is no cap rather
    than a guess.
    """
    for annotation in BANDWIDTH_ANNOTATIONS:
        if annotation in annotations:
            text = str(annotations[annotation]).strip()
            if text.isdigit() and 1 <= int(text) <= MAX_BANDWIDTH_MBPS:
                return int(text)
            return None
    return None


def _bandwidth(annotations: dict[str, str]) -> Iterator[Finding]:
    given = [(a, annotations[a]) for a in BANDWIDTH_ANNOTATIONS if a in annotations]
    for annotation, value in given:
        if not re.fullmatch(r"[1-9][0-9]*", value) or int(value) > MAX_BANDWIDTH_MBPS:
            yield _error(
                f"metadata.annotations[{annotation}]",
                f"Invalid value: {quote(value)}: must be a whole number of Mbit/s from 1 to "
                f"{MAX_BANDWIDTH_MBPS} (the most an Alibaba Cloud SLB allows)",
            )
    if len(given) == 2 and given[0][1] != given[1][1]:
        yield _warning(
            f"metadata.annotations[{given[1][0]}]",
            f"ignored: metadata.annotations[{given[0][0]}] ({given[0][1]}) takes precedence",
        )


def _service(spec: models.ServiceSpec) -> Iterator[Finding]:
    yield from _cluster_ips(spec)
    yield from _node_ports(spec)
    headless = spec.cluster_ip == "None"
    if not spec.ports and spec.type != "ExternalName" and not headless:
        yield _error("spec.ports", "Required value")
    seen: set[str] = set()
    for i, port in enumerate(spec.ports):
        where = f"spec.ports[{i}]"
        if not port.name:
            # One port may stay anonymous; with several, names tell them apart.
            if len(spec.ports) > 1:
                yield _error(f"{where}.name", "Required value")
        else:
            yield from _invalid(f"{where}.name", port.name, names.k8s_label_problems(port.name))
            if port.name in seen:
                yield _error(f"{where}.name", f"Duplicate value: {quote(port.name)}")
            seen.add(port.name)
        problem = names.k8s_port_number_problem(port.port)
        if problem:
            yield _error(f"{where}.port", f"Invalid value: {port.port}: {problem}")
        target = port.target_port
        # 0 and "" mean "same as port", which is how Kubernetes defaults them.
        if isinstance(target, int) and target != 0:
            problem = names.k8s_port_number_problem(target)
            if problem:
                yield _error(f"{where}.targetPort", f"Invalid value: {target}: {problem}")
        elif isinstance(target, str) and target:
            yield from _invalid(f"{where}.targetPort", target, names.k8s_port_name_problems(target))


def _cluster_ips(spec: models.ServiceSpec) -> Iterator[Finding]:
    """ValidateServiceClusterIPsRelatedFields' IP checks, after clusterIP fills clusterIPs."""
    if spec.type == "ExternalName":
        return
    ips = spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else [])
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if spec.type in ("LoadBalancer", "NodePort"):
                yield _error(
                    "spec.clusterIPs[0]",
                    f"Invalid value: \"None\": may not be set to 'None' for {spec.type} services",
                )
            continue
        if not names.is_ip(ip):
            yield _error(
                f"spec.clusterIPs[{i}]",
                f"Invalid value: {quote(ip)}: must be a valid IP address, "
                "(e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
    if len(ips) > 2:
        listed = "[]string{" + ", ".join(quote(ip) for ip in ips) + "}"
        yield _error("spec.clusterIPs", f"Invalid value: {listed}: may only hold up to 2 values")


def _node_ports(spec: models.ServiceSpec) -> Iterator[Finding]:
    """Kubernetes' duplicate check: one (protocol, nodePort) per Service."""
    seen: set[tuple[str, int]] = set()
    for i, port in enumerate(spec.ports):
        if not port.node_port:
            continue
        key = (port.protocol, port.node_port)
        if key in seen:
            yield _error(f"spec.ports[{i}].nodePort", f"Duplicate value: {port.node_port}")
        seen.add(key)


def _invalid(path: str, value: str, problems: Iterable[str]) -> Iterator[Finding]:
    for problem in problems:
        yield _error(path, f"Invalid value: {quote(value)}: {problem}")
