"""DestinationRule (and VirtualService/ServiceEntry) validation as Istio's webhook and CRD do it.

Each expectation is read from istio/istio ``pkg/config/validation/validation.go``
(``ValidateDestinationRule``, ``validateTrafficPolicy``, ``validateLoadBalancer``,
``validateOutlierDetection``, ``validateExportTo``, ``validateWorkloadSelector``,
``ValidateServiceEntry``), ``pkg/config/validation/agent/validation.go`` (``ValidateTLS``,
``ValidateLocalityLbSetting``) and the CRD schema ``manifests/charts/base/files/crd-all.gen.yaml``
(the ``oneOf`` of ``loadBalancer`` and ``consistentHash``, enums, item bounds).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tcpmesh.api import validate_object
from tcpmesh.api.validation import is_prime

Obj = dict[str, Any]
LABEL = 'DestinationRule "shop/tcp-echo"'


def rule(policy: Obj | None = None, **spec: Any) -> Obj:
    body: Obj = {"host": "tcp-echo", **spec}
    if policy is not None:
        body["trafficPolicy"] = policy
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "tcp-echo", "namespace": "shop"},
        "spec": body,
    }


def errors(obj: Obj) -> list[str]:
    return validate_object(copy.deepcopy(obj))[0]


def warnings(obj: Obj) -> list[str]:
    return validate_object(copy.deepcopy(obj))[1]


def err(path: str, message: str) -> str:
    return f"{LABEL} is invalid: {path}: {message}"


LB = "spec.trafficPolicy.loadBalancer"
ONE_OF = f'Invalid value: "object": {LB} in body must validate one and only one schema (oneOf)'


# ---------------------------------------------------------------- accepted: current CRD fields


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(
            {"outlierDetection": {"outlierDetectionHttpErrorCodes": [502, 503]}}, id="codes"
        ),
        pytest.param({"loadBalancer": {"zoneAwareLbSetting": {"enabled": True}}}, id="zone-aware"),
        pytest.param(
            {"loadBalancer": {"backendUtilization": {"errorUtilizationPenaltyPercent": 10}}},
            id="backend-utilization",
        ),
        pytest.param(
            {
                "loadBalancer": {
                    "consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 65537}}
                }
            },
            id="maglev",
        ),
        pytest.param(
            {
                "loadBalancer": {
                    "consistentHash": {"useSourceIp": True, "ringHash": {"minimumRingSize": 64}}
                }
            },
            id="ring-hash",
        ),
        pytest.param(
            {"loadBalancer": {"simple": "ROUND_ROBIN", "warmup": {"duration": "30s"}}},
            id="warmup",
        ),
        pytest.param({"tls": {"mode": "ISTIO_MUTUAL"}}, id="tls-istio-mutual"),
        pytest.param(
            {"tls": {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem"}},
            id="tls-mutual-files",
        ),
        pytest.param({"tls": {"mode": "SIMPLE", "credentialName": "x"}}, id="tls-credential"),
    ],
)
def test_current_crd_fields_are_accepted(policy: Obj) -> None:
    """Fields of istio/api destination_rule.proto (b8f8791d) and the generated CRD."""
    assert validate_object(rule(policy)) == ([], [])


def test_dynamic_dns_service_entry_is_accepted() -> None:
    """ServiceEntry resolution DYNAMIC_DNS: wildcard hosts, HTTP/TLS ports."""
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "wild", "namespace": "shop"},
        "spec": {
            "hosts": ["*.example.com"],
            "resolution": "DYNAMIC_DNS",
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
        },
    }
    assert validate_object(entry) == ([], [])


def test_dynamic_dns_service_entry_keeps_istio_rules() -> None:
    """The DYNAMIC_DNS branch of ValidateServiceEntry, messages verbatim (typos included)."""
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "wild", "namespace": "shop"},
        "spec": {
            "hosts": ["api.example.com"],
            "addresses": ["10.1.0.1"],
            "resolution": "DYNAMIC_DNS",
            "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP"}],
        },
    }
    label = 'ServiceEntry "shop/wild" is invalid'
    assert errors(entry) == [
        f"{label}: spec.hosts[0]: host must be wildcarded for resolution mode DYNAMIC_DNS",
        f"{label}: spec.addresses: addresses cannot be set for resolution type DYNAMIC_DNS. "
        "HTTP route domains will only be generatedfrom the hosts field values",
        f"{label}: spec.ports[0].protocol: only HTTP, TLS, GRPC, and HTTP2 protocols are "
        "supported for resolution type DYNAMIC_DNS",
    ]


# ---------------------------------------------------------------- rejected as Istio rejects


def test_simple_and_consistent_hash_together_fail_the_schema_one_of() -> None:
    """loadBalancer is a proto oneof (simple | consistentHash | backendUtilization)."""
    policy = {"loadBalancer": {"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}}
    assert errors(rule(policy)) == [err(LB, ONE_OF)]


def test_two_hash_keys_fail_the_consistent_hash_one_of() -> None:
    policy = {"loadBalancer": {"consistentHash": {"useSourceIp": True, "httpHeaderName": "x"}}}
    where = f"{LB}.consistentHash"
    message = (
        f'Invalid value: "object": {where} in body must validate one and only one schema (oneOf)'
    )
    assert errors(rule(policy)) == [err(where, message)]


@pytest.mark.parametrize(
    ("size", "messages"),
    [
        (0, ["tableSize must be set for maglev", "tableSize must be a prime number for maglev"]),
        (65536, ["tableSize must be a prime number for maglev"]),
        (5000011, ["tableSize must be less than 5000011 for maglev"]),
        (
            5000012,
            [
                "tableSize must be less than 5000011 for maglev",
                "tableSize must be a prime number for maglev",
            ],
        ),
    ],
)
def test_maglev_table_size(size: int, messages: list[str]) -> None:
    """validateLoadBalancer: set, < 5000011, prime by Envoy's isPrime (5000011 is prime)."""
    policy = {
        "loadBalancer": {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": size}}}
    }
    where = f"{LB}.consistentHash.maglev.tableSize"
    assert errors(rule(policy)) == [err(where, m) for m in messages]


def test_is_prime_matches_envoys_definition() -> None:
    """Envoy's Primes::isPrime (copied by Istio): 1, 2, 3 are prime; 0 and evens are not."""
    assert [n for n in range(0, 20) if is_prime(n)] == [1, 2, 3, 5, 7, 11, 13, 17, 19]
    assert is_prime(65537) and is_prime(5000011) and not is_prime(65535)


def test_deprecated_minimum_ring_size_warns_and_excludes_ring_hash() -> None:
    ch = {"useSourceIp": True, "minimumRingSize": 8, "ringHash": {"minimumRingSize": 8}}
    obj = rule({"loadBalancer": {"consistentHash": ch}})
    assert errors(obj) == [
        err(
            f"{LB}.consistentHash",
            "only one of MinimumRingSize or Maglev/Ringhash can be specified",
        )
    ]
    assert warnings(obj) == [
        f"{LABEL}: {LB}.consistentHash.minimumRingSize: consistent hash MinimumRingSize is "
        "deprecated, use ConsistentHashLB's RingHash configuration instead"
    ]


def test_negative_keepalive_probes_fail_the_uint32_schema() -> None:
    """TcpKeepalive.probes is uint32: the CRD has minimum 0."""
    obj = rule({"connectionPool": {"tcp": {"tcpKeepalive": {"probes": -1}}}})
    where = "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes"
    assert errors(obj) == [
        err(where, f"Invalid value: -1: {where} in body should be greater than or equal to 0")
    ]


def test_unknown_client_tls_mode_is_an_unsupported_value() -> None:
    obj = rule({"tls": {"mode": "PERMISSIVE"}})
    (error,) = errors(obj)
    assert error.startswith(err("spec.trafficPolicy.tls.mode", 'Unsupported value: "PERMISSIVE"'))
    assert '"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"' in error


@pytest.mark.parametrize(
    ("tls", "messages"),
    [
        (
            {"mode": "MUTUAL"},
            ["client certificate required for mutual tls", "private key required for mutual tls"],
        ),
        (
            {"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/ca.pem"},
            [
                "cannot specify client certificates or CA certificate or CA CRL If "
                "credentialName is set"
            ],
        ),
        (
            {"mode": "SIMPLE", "insecureSkipVerify": True, "caCertificates": "/ca.pem"},
            [
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                "InsecureSkipVerify is set true"
            ],
        ),
    ],
)
def test_client_tls_rules(tls: Obj, messages: list[str]) -> None:
    """agent.ValidateTLS."""
    assert errors(rule({"tls": tls})) == [err("spec.trafficPolicy.tls", m) for m in messages]


def test_port_level_load_balancer_and_tls_are_validated_too() -> None:
    """validatePortTrafficPolicies runs validateLoadBalancer and ValidateTLS per port."""
    port = {
        "port": {"number": 9000},
        "loadBalancer": {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 10}}},
        "tls": {"mode": "MUTUAL", "clientCertificate": "/c", "privateKey": "/k"},
    }
    where = "spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.maglev.tableSize"
    assert errors(rule({"portLevelSettings": [port]})) == [
        err(where, "tableSize must be a prime number for maglev")
    ]


def test_warmup_rules() -> None:
    warm = {"minimumPercent": 120, "aggression": 0}
    where = f"{LB}.warmup"
    assert errors(rule({"loadBalancer": {"warmup": warm}})) == [
        err(f"{where}.duration", "duration is required"),
        err(f"{where}.minimumPercent", "minimumPercent value should be less than or equal to 100"),
        err(f"{where}.aggression", "aggression should be greater than 0"),
    ]
    both = {"warmupDurationSecs": "10s", "warmup": {"duration": "10s"}}
    assert errors(rule({"loadBalancer": both})) == [
        err(LB, "only one of warmupDurationSecs or warmup can be set")
    ]


def test_locality_and_zone_aware_exclude_each_other() -> None:
    lb = {"localityLbSetting": {"enabled": True}, "zoneAwareLbSetting": {"enabled": True}}
    assert errors(rule({"loadBalancer": lb})) == [
        err(LB, "only one of localityLbSetting and zoneAwareLbSetting can be set")
    ]


def test_http_error_codes_outside_100_599_fail_the_schema() -> None:
    obj = rule({"outlierDetection": {"outlierDetectionHttpErrorCodes": [500, 99, 600]}})
    base = "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes"
    assert errors(obj) == [
        err(
            f"{base}[1]",
            f"Invalid value: 99: {base}[1] in body should be greater than or equal to 100",
        ),
        err(
            f"{base}[2]",
            f"Invalid value: 600: {base}[2] in body should be less than or equal to 599",
        ),
    ]


def test_destination_rule_export_to_is_validated() -> None:
    """validateExportTo(isServiceEntry=false): ~ and bad names are rejected."""
    obj = rule(exportTo=["~", "Bad_NS", "shop", "."])
    assert errors(obj) == [
        err("spec.exportTo[0]", "exportTo ~ (none) is not allowed for Istio configuration objects"),
        err("spec.exportTo[1]", "only .,*, or a valid DNS 1123 label is allowed as exportTo entry"),
        err("spec.exportTo[3]", "duplicate entries in exportTo: . and current namespace shop"),
    ]


def test_virtual_service_export_to_is_validated() -> None:
    """ValidateVirtualService ends with validateExportTo(namespace, exportTo, false, false)."""
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "v", "namespace": "shop"},
        "spec": {
            "hosts": ["tcp-echo"],
            "exportTo": ["*", "."],
            "tcp": [{"route": [{"destination": {"host": "tcp-echo"}}]}],
        },
    }
    assert errors(vs) == [
        'VirtualService "shop/v" is invalid: spec.exportTo: cannot have both public (*) and '
        "non-public exportTo values for a resource"
    ]


def test_workload_selector_rule_may_only_export_to_its_namespace() -> None:
    selector = {"matchLabels": {"app": "client"}}
    beyond = rule(workloadSelector=selector, exportTo=["other"])
    several = rule(workloadSelector=selector, exportTo=[".", "other"])
    assert errors(beyond) == [
        err(
            "spec.exportTo",
            "destination rule with workload selector cannot have exportTo beyond current namespace",
        )
    ]
    assert errors(several) == [
        err(
            "spec.exportTo",
            "destination rule with workload selector cannot have multiple entries in exportTo",
        )
    ]
    assert errors(rule(workloadSelector=selector, exportTo=["."])) == []


def test_workload_selector_labels() -> None:
    """validateWorkloadSelector: no wildcards, warning when empty."""
    wild = rule(workloadSelector={"matchLabels": {"app": "cl*"}})
    assert errors(wild) == [
        err("spec.workloadSelector.matchLabels", 'wildcard is not supported in selector: "app=cl*"')
    ]
    empty = rule(workloadSelector={"matchLabels": {}})
    assert warnings(empty) == [
        f"{LABEL}: spec.workloadSelector: workload selector specified without labels"
    ]
