"""Every numeric field of every served kind, just inside and just outside its type range.

The table of ranges (``NUMERIC_FIELDS``) is checked against the models themselves, so an
integer field added later without a range fails here rather than reaching the runtime.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from tcpmesh.api import gatewayapi, kinds, models, rollouts, validate_object
from tcpmesh.api.validation import NUMERIC_FIELDS, IntType, numeric_ranges

Obj = dict[str, Any]
Path = tuple[str | int, ...]

META: Obj = {"name": "x", "generation": 1, "deletionGracePeriodSeconds": 1}
POD_SPEC: Obj = {
    "terminationGracePeriodSeconds": 1,
    "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]}],
    "volumes": [
        {
            "name": "s",
            "secret": {
                "secretName": "s",
                "defaultMode": 1,
                "items": [{"key": "k", "path": "p", "mode": 1}],
            },
        },
        {"name": "c", "configMap": {"name": "c", "defaultMode": 1}},
    ],
}
DEPLOYMENT: Obj = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": META,
    "spec": {
        "replicas": 1,
        "minReadySeconds": 1,
        "revisionHistoryLimit": 1,
        "progressDeadlineSeconds": 1,
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "a"}}, "spec": POD_SPEC},
    },
}
SERVICE: Obj = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": META,
    "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 80, "nodePort": 30000}]},
}
POLICY: Obj = {
    "loadBalancer": {"consistentHash": {"useSourceIp": True, "minimumRingSize": 1}},
    "connectionPool": {"tcp": {"maxConnections": 1, "tcpKeepalive": {"probes": 1}}},
    "outlierDetection": {
        "splitExternalLocalOriginErrors": True,
        "consecutiveLocalOriginFailures": 1,
        "consecutiveGatewayErrors": 1,
        "consecutive5xxErrors": 1,
        "consecutiveErrors": 1,
        "maxEjectionPercent": 1,
        "minHealthPercent": 1,
    },
    "portLevelSettings": [
        {"port": {"number": 80}, "connectionPool": {"tcp": {"maxConnections": 1}}}
    ],
}
DESTINATION_RULE: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": META,
    "spec": {"host": "a", "trafficPolicy": POLICY},
}


def _lb_subset(name: str, lb: Obj) -> Obj:
    return {"name": name, "trafficPolicy": {"loadBalancer": lb}}


# One subset per load balancer shape, since ringHash, maglev and backendUtilization exclude
# each other within one loadBalancer.
LB_RULE: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": META,
    "spec": {
        "host": "a",
        "subsets": [
            _lb_subset(
                "r", {"consistentHash": {"useSourceIp": True, "ringHash": {"minimumRingSize": 1}}}
            ),
            _lb_subset(
                "m", {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 65537}}}
            ),
            _lb_subset("b", {"backendUtilization": {"errorUtilizationPenaltyPercent": 1}}),
        ],
    },
}
VIRTUAL_SERVICE: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": META,
    "spec": {
        "hosts": ["a"],
        "tcp": [
            {
                "match": [{"port": 80}],
                "route": [{"destination": {"host": "a", "port": {"number": 80}}, "weight": 1}],
            }
        ],
    },
}
TLS_VIRTUAL_SERVICE: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": META,
    "spec": {
        "hosts": ["a"],
        "tls": [
            {
                "match": [{"port": 80, "sniHosts": ["a"]}],
                "route": [{"destination": {"host": "a", "port": {"number": 80}}}],
            }
        ],
    },
}
GATEWAY: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": META,
    "spec": {
        "servers": [{"port": {"number": 80, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}]
    },
}
SERVICE_ENTRY: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "ServiceEntry",
    "metadata": META,
    "spec": {
        "hosts": ["a.example.com"],
        "addresses": ["10.0.0.1"],
        "resolution": "STATIC",
        "ports": [{"number": 80, "name": "tcp", "protocol": "TCP", "targetPort": 80}],
        "endpoints": [{"address": "10.0.0.2", "ports": {"tcp": 80}, "weight": 1}],
    },
}
WORKLOAD_ENTRY: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "WorkloadEntry",
    "metadata": META,
    "spec": {"address": "10.0.0.2", "ports": {"tcp": 80}, "weight": 1},
}

WORKLOAD_GROUP: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "WorkloadGroup",
    "metadata": META,
    "spec": {
        "template": {"ports": {"tcp": 80}},
        "probe": {
            "initialDelaySeconds": 1,
            "timeoutSeconds": 1,
            "periodSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 1,
            "tcpSocket": {"port": 80},
        },
    },
}
HTTP_WORKLOAD_GROUP: Obj = {
    **WORKLOAD_GROUP,
    "spec": {"template": {}, "probe": {"httpGet": {"port": 8080, "path": "/ready"}}},
}

EVENT: Obj = {
    "apiVersion": "v1",
    "kind": "Event",
    "metadata": META,
    "involvedObject": {"kind": "Pod", "name": "p"},
    "reason": "Started",
    "count": 1,
}

ROLLOUT_ANALYSIS: Obj = {
    "minSamples": 1,
    "failureLimit": 1,
    "consecutiveSuccessLimit": 1,
    "gates": {"connectFailureRate": {"max": 0.1}},
}


def rollout(selector: Obj) -> Obj:
    return {
        "apiVersion": "rollouts.tcpmesh.io/v1alpha1",
        "kind": "Rollout",
        "metadata": META,
        "spec": {
            "virtualService": {"name": "vs", **selector},
            "stable": {"host": "h", "subset": "v1"},
            "canary": {"host": "h", "subset": "v2"},
            "analysis": ROLLOUT_ANALYSIS,
            "steps": [{"setWeight": 10}],
        },
    }


K8S_GATEWAY: Obj = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": META,
    "spec": {
        "gatewayClassName": "tcpmesh",
        "listeners": [{"name": "tcp", "port": 9000, "protocol": "TCP"}],
    },
}
TCP_ROUTE: Obj = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "TCPRoute",
    "metadata": META,
    "spec": {
        "parentRefs": [{"name": "gw", "port": 9000}],
        "rules": [{"backendRefs": [{"name": "echo", "port": 9000, "weight": 1}]}],
    },
}

ROLLOUT_BY_INDEX = rollout({"route": 0})
ROLLOUT_BY_PORT = rollout({"port": 80})

TEMPLATE_SPEC = ("spec", "template", "spec")
CONTAINER_PORT = (*TEMPLATE_SPEC, "containers", 0, "ports", 0)
DR_POLICY = ("spec", "trafficPolicy")
OUTLIER = (*DR_POLICY, "outlierDetection")
VS_ROUTE = ("spec", "tcp", 0, "route", 0)

# (model, field) -> (a valid object with every numeric field set, the field's path in it)
CASES: dict[tuple[type[models.Model], str], tuple[Obj, Path]] = {
    (models.ObjectMeta, "generation"): (DEPLOYMENT, ("metadata", "generation")),
    (models.ObjectMeta, "deletion_grace_period_seconds"): (
        SERVICE,
        ("metadata", "deletionGracePeriodSeconds"),
    ),
    (models.ContainerPort, "container_port"): (DEPLOYMENT, (*CONTAINER_PORT, "containerPort")),
    (models.ContainerPort, "host_port"): (DEPLOYMENT, (*CONTAINER_PORT, "hostPort")),
    (models.SecretVolumeSource, "default_mode"): (
        DEPLOYMENT,
        (*TEMPLATE_SPEC, "volumes", 0, "secret", "defaultMode"),
    ),
    (models.KeyToPath, "mode"): (
        DEPLOYMENT,
        (*TEMPLATE_SPEC, "volumes", 0, "secret", "items", 0, "mode"),
    ),
    (models.ConfigMapVolumeSource, "default_mode"): (
        DEPLOYMENT,
        (*TEMPLATE_SPEC, "volumes", 1, "configMap", "defaultMode"),
    ),
    (models.PodSpec, "termination_grace_period_seconds"): (
        DEPLOYMENT,
        (*TEMPLATE_SPEC, "terminationGracePeriodSeconds"),
    ),
    (models.DeploymentSpec, "replicas"): (DEPLOYMENT, ("spec", "replicas")),
    (models.DeploymentSpec, "min_ready_seconds"): (DEPLOYMENT, ("spec", "minReadySeconds")),
    (models.DeploymentSpec, "revision_history_limit"): (
        DEPLOYMENT,
        ("spec", "revisionHistoryLimit"),
    ),
    (models.DeploymentSpec, "progress_deadline_seconds"): (
        DEPLOYMENT,
        ("spec", "progressDeadlineSeconds"),
    ),
    (models.ServicePort, "port"): (SERVICE, ("spec", "ports", 0, "port")),
    (models.ServicePort, "target_port"): (SERVICE, ("spec", "ports", 0, "targetPort")),
    (models.ServicePort, "node_port"): (SERVICE, ("spec", "ports", 0, "nodePort")),
    (models.PortSelector, "number"): (
        VIRTUAL_SERVICE,
        (*VS_ROUTE, "destination", "port", "number"),
    ),
    (models.RouteDestination, "weight"): (VIRTUAL_SERVICE, (*VS_ROUTE, "weight")),
    (models.L4MatchAttributes, "port"): (VIRTUAL_SERVICE, ("spec", "tcp", 0, "match", 0, "port")),
    (models.TLSMatchAttributes, "port"): (
        TLS_VIRTUAL_SERVICE,
        ("spec", "tls", 0, "match", 0, "port"),
    ),
    (models.GatewayPort, "number"): (GATEWAY, ("spec", "servers", 0, "port", "number")),
    (models.GatewayPort, "target_port"): (GATEWAY, ("spec", "servers", 0, "port", "targetPort")),
    (models.ConsistentHashLB, "minimum_ring_size"): (
        DESTINATION_RULE,
        (*DR_POLICY, "loadBalancer", "consistentHash", "minimumRingSize"),
    ),
    (models.RingHash, "minimum_ring_size"): (
        LB_RULE,
        (
            "spec",
            "subsets",
            0,
            "trafficPolicy",
            "loadBalancer",
            "consistentHash",
            "ringHash",
            "minimumRingSize",
        ),
    ),
    (models.MagLev, "table_size"): (
        LB_RULE,
        (
            "spec",
            "subsets",
            1,
            "trafficPolicy",
            "loadBalancer",
            "consistentHash",
            "maglev",
            "tableSize",
        ),
    ),
    (models.BackendUtilization, "error_utilization_penalty_percent"): (
        LB_RULE,
        (
            "spec",
            "subsets",
            2,
            "trafficPolicy",
            "loadBalancer",
            "backendUtilization",
            "errorUtilizationPenaltyPercent",
        ),
    ),
    (models.TcpKeepalive, "probes"): (
        DESTINATION_RULE,
        (*DR_POLICY, "connectionPool", "tcp", "tcpKeepalive", "probes"),
    ),
    (models.TCPSettings, "max_connections"): (
        DESTINATION_RULE,
        (*DR_POLICY, "portLevelSettings", 0, "connectionPool", "tcp", "maxConnections"),
    ),
    **{
        (models.OutlierDetection, field): (DESTINATION_RULE, (*OUTLIER, alias))
        for field, alias in (
            ("consecutive_local_origin_failures", "consecutiveLocalOriginFailures"),
            ("consecutive_gateway_errors", "consecutiveGatewayErrors"),
            ("consecutive_5xx_errors", "consecutive5xxErrors"),
            ("consecutive_errors", "consecutiveErrors"),
            ("max_ejection_percent", "maxEjectionPercent"),
            ("min_health_percent", "minHealthPercent"),
        )
    },
    (models.ServiceEntryPort, "number"): (SERVICE_ENTRY, ("spec", "ports", 0, "number")),
    (models.ServiceEntryPort, "target_port"): (SERVICE_ENTRY, ("spec", "ports", 0, "targetPort")),
    (models.WorkloadEntrySpec, "ports"): (WORKLOAD_ENTRY, ("spec", "ports", "[tcp]")),
    (models.WorkloadEntrySpec, "weight"): (SERVICE_ENTRY, ("spec", "endpoints", 0, "weight")),
    (models.Event, "count"): (EVENT, ("count",)),
    **{
        (models.ReadinessProbe, field): (WORKLOAD_GROUP, ("spec", "probe", alias))
        for field, alias in (
            ("initial_delay_seconds", "initialDelaySeconds"),
            ("timeout_seconds", "timeoutSeconds"),
            ("period_seconds", "periodSeconds"),
            ("success_threshold", "successThreshold"),
            ("failure_threshold", "failureThreshold"),
        )
    },
    (models.TcpHealthCheck, "port"): (WORKLOAD_GROUP, ("spec", "probe", "tcpSocket", "port")),
    (models.HttpHealthCheck, "port"): (HTTP_WORKLOAD_GROUP, ("spec", "probe", "httpGet", "port")),
    (rollouts.RouteSelector, "route"): (ROLLOUT_BY_INDEX, ("spec", "virtualService", "route")),
    (rollouts.RouteSelector, "port"): (ROLLOUT_BY_PORT, ("spec", "virtualService", "port")),
    (rollouts.Step, "set_weight"): (ROLLOUT_BY_INDEX, ("spec", "steps", 0, "setWeight")),
    (gatewayapi.Listener, "port"): (K8S_GATEWAY, ("spec", "listeners", 0, "port")),
    (gatewayapi.ParentReference, "port"): (TCP_ROUTE, ("spec", "parentRefs", 0, "port")),
    (gatewayapi.BackendRef, "port"): (TCP_ROUTE, ("spec", "rules", 0, "backendRefs", 0, "port")),
    (gatewayapi.BackendRef, "weight"): (
        TCP_ROUTE,
        ("spec", "rules", 0, "backendRefs", 0, "weight"),
    ),
    **{
        (rollouts.Analysis, field): (ROLLOUT_BY_INDEX, ("spec", "analysis", alias))
        for field, alias in (
            ("min_samples", "minSamples"),
            ("failure_limit", "failureLimit"),
            ("consecutive_success_limit", "consecutiveSuccessLimit"),
        )
    },
}
# The Endpoints kind is written by tcpmesh only; its port is range-checked all the same.
RUNTIME_ONLY = {(models.EndpointPort, "port")}


def _is_int(hint: Any) -> bool:
    if hint is int:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_int(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        return _is_int(typing.get_args(hint)[1])
    return False


def _integer_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[tuple[type, str]]:
    if model in seen:
        return set()
    seen.add(model)
    found: set[tuple[type, str]] = set()
    for name, field in model.model_fields.items():
        if _is_int(field.annotation):
            found.add((model, name))
        for nested in _models_in(field.annotation):
            found |= _integer_fields(nested, seen)
    return found


def _models_in(hint: Any) -> list[type[BaseModel]]:
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return [hint]
    return [m for arg in typing.get_args(hint) for m in _models_in(arg)]


def test_every_integer_field_of_every_served_kind_has_a_range() -> None:
    fields: set[tuple[type, str]] = set()
    for info in kinds.KINDS:
        fields |= _integer_fields(info.model, set())
    assert fields == set(NUMERIC_FIELDS)
    assert set(CASES) | RUNTIME_ONLY == fields


def _with(sample: Obj, path: Path, value: int) -> Obj:
    obj = copy.deepcopy(sample)
    target: Any = obj
    keys = [k.strip("[]") if isinstance(k, str) else k for k in path]
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return obj


def _field_path(path: Path) -> str:
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif key.startswith("["):  # a map key
            text += key
        else:
            text += f".{key}" if text else key
    return text


def _range_errors(obj: Obj, where: str) -> list[str]:
    errors, _ = validate_object(obj)
    return [e for e in errors if f" {where}: " in e]


PARAMS = [
    pytest.param(key, sample, path, id=f"{key[0].__name__}.{key[1]}")
    for key, (sample, path) in CASES.items()
]


@pytest.mark.parametrize(("key", "sample", "path"), PARAMS)
def test_just_inside_the_range_passes_the_range_check(
    key: tuple[type[models.Model], str], sample: Obj, path: Path
) -> None:
    assert validate_object(sample)[0] == []
    int_type = NUMERIC_FIELDS[key]
    where = _field_path(path)
    for value in (int_type.low, int_type.high):
        for error in _range_errors(_with(sample, path, value), where):
            assert "cannot unmarshal" not in error and "in body should be" not in error, error


@pytest.mark.parametrize(("key", "sample", "path"), PARAMS)
def test_just_outside_the_range_is_refused_with_the_upstream_message(
    key: tuple[type[models.Model], str], sample: Obj, path: Path
) -> None:
    int_type: IntType = NUMERIC_FIELDS[key]
    where = _field_path(path)
    for value in (int_type.low - 1, int_type.high + 1):
        errors, _ = validate_object(_with(sample, path, value))
        # Reported alone, as the upstream decoder or schema stops before other checks.
        assert len(errors) == 1, errors
        (error,) = errors
        assert f" is invalid: {where}: " in error
        if key[0] in (
            models.ObjectMeta,
            models.ContainerPort,
            models.PodSpec,
            models.DeploymentSpec,
            models.ServicePort,
            models.Event,
        ):
            assert f"json: cannot unmarshal number {value} into Go " in error
            assert error.endswith(f"of type {int_type.name}")
        else:
            bound = (
                f"greater than or equal to {int_type.low}"
                if value < int_type.low
                else f"less than or equal to {int_type.high}"
            )
            assert error.endswith(f"Invalid value: {value}: {where} in body should be {bound}")


@pytest.mark.parametrize("replicas", [2**31, 2**63, 10**30])
def test_huge_replica_counts_get_kubernetes_message(replicas: int) -> None:
    errors, _ = validate_object(_with(DEPLOYMENT, ("spec", "replicas"), replicas))
    assert errors == [
        f'Deployment "x" is invalid: spec.replicas: json: cannot unmarshal number {replicas} '
        "into Go struct field DeploymentSpec.spec.replicas of type int32"
    ]


def test_a_container_port_names_its_go_struct_and_the_path_without_indexes() -> None:
    errors, _ = validate_object(_with(DEPLOYMENT, (*CONTAINER_PORT, "containerPort"), 2**31))
    assert errors == [
        'Deployment "x" is invalid: spec.template.spec.containers[0].ports[0].containerPort: '
        "json: cannot unmarshal number 2147483648 into Go struct field "
        "ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
    ]


def test_endpoints_ports_are_range_checked_too() -> None:
    endpoints = models.Endpoints.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "x"},
            "subsets": [{"ports": [{"port": 2**31}]}],
        }
    )
    (finding,) = numeric_ranges(endpoints)
    assert finding.path == "subsets[0].ports[0].port"
    assert "Go struct field EndpointPort.subsets.ports.port of type int32" in finding.message
