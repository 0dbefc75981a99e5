"""TLS in the API: Istio ``tls:`` rules, Gateway server TLS settings, kubernetes.io/tls Secrets.

Each case is a manifest a user would write, broken in one place, and the lines Istio's
webhook or the Kubernetes API server would answer.
"""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tcpmesh.api import kinds, validate_object
from tcpmesh.api.objects import check_object
from tcpmesh.api.tls import host_subset_of, is_valid_cipher_suite
from tcpmesh.cli import printers

Obj = dict[str, Any]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tls_vs(*sni: str, hosts: list[str] | None = None, **match: Any) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "tls-routes"},
        "spec": {
            "hosts": hosts if hosts is not None else ["*.example.com"],
            "gateways": ["tls-gateway"],
            "tls": [
                {
                    "match": [{"port": 443, "sniHosts": list(sni), **match}],
                    "route": [
                        {"destination": {"host": "a-v1", "port": {"number": 8443}}, "weight": 80},
                        {"destination": {"host": "a-v2", "port": {"number": 8443}}, "weight": 20},
                    ],
                }
            ],
        },
    }


def tls_gateway(tls: Obj | None, protocol: str = "TLS") -> Obj:
    server: Obj = {"port": {"number": 443, "name": "tls", "protocol": protocol}, "hosts": ["*"]}
    if tls is not None:
        server["tls"] = tls
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "tls-gateway"},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": [server]},
    }


def tls_secret(**changes: Any) -> Obj:
    secret: Obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gateway-cert", "namespace": "istio-system"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64("-----BEGIN CERTIFICATE-----"), "tls.key": b64("key")},
    }
    secret.update(changes)
    return secret


# ---------------------------------------------------------------- VirtualService tls


def test_a_weighted_tls_rule_is_valid() -> None:
    assert validate_object(tls_vs("a.example.com", "*.b.example.com")) == ([], [])


def test_sni_host_outside_the_virtual_service_hosts() -> None:
    errors, _ = validate_object(tls_vs("a.example.com", "db.other.org"))
    assert errors == [
        'VirtualService "tls-routes" is invalid: spec.tls[0].match[0].sniHosts[1]: SNI host '
        '"db.other.org" is not a compatible subset of any of the virtual service hosts: '
        "[*.example.com]"
    ]


def test_a_wider_wildcard_is_not_a_subset() -> None:
    errors, _ = validate_object(tls_vs("*.com"))
    assert len(errors) == 1
    assert 'SNI host "*.com" is not a compatible subset' in errors[0]


def test_an_ip_sni_host_is_a_warning() -> None:
    errors, warnings = validate_object(tls_vs("10.0.0.1", hosts=["*"]))
    assert errors == []
    assert warnings == [
        'VirtualService "tls-routes": spec.tls[0].match[0].sniHosts[0]: using an IP address '
        '("10.0.0.1") goes against SNI spec and most clients do not support this'
    ]


def test_a_match_without_sni_hosts() -> None:
    errors, _ = validate_object(tls_vs())
    assert errors == [
        'VirtualService "tls-routes" is invalid: spec.tls[0].match[0].sniHosts: '
        "TLS match must have at least one SNI host"
    ]


def test_a_tls_rule_without_match_or_route() -> None:
    vs = tls_vs("a.example.com")
    vs["spec"]["tls"] = [{"match": [None], "route": []}]
    errors, _ = validate_object(vs)
    assert errors == [
        'VirtualService "tls-routes" is invalid: spec.tls[0].match[0]: TLS match may not be null',
        'VirtualService "tls-routes" is invalid: spec.tls[0].route: TLS route is required',
    ]


def test_tls_weights_follow_the_tcp_rules() -> None:
    vs = tls_vs("a.example.com")
    vs["spec"]["tls"][0]["route"][0]["weight"] = -5
    errors, _ = validate_object(vs)
    assert errors == [
        'VirtualService "tls-routes" is invalid: spec.tls[0].route[0].weight: weight -5 < 0'
    ]


def test_a_bad_sni_host_label() -> None:
    errors, _ = validate_object(tls_vs("a_b.example.com"))
    assert errors == [
        'VirtualService "tls-routes" is invalid: spec.tls[0].match[0].sniHosts[0]: '
        'domain name "a_b.example.com" invalid (label "a_b" invalid)'
    ]


def test_tls_match_port_subnets_and_gateways_are_checked() -> None:
    vs = tls_vs("a.example.com", destinationSubnets=["10.0.0.0/33"], gateways=["a/b/c"])
    vs["spec"]["tls"][0]["match"][0]["port"] = 70000
    errors, _ = validate_object(vs)
    paths = [e.split(": ")[1] for e in errors]
    assert paths == [
        "spec.tls[0].match[0].destinationSubnets[0]",
        "spec.tls[0].match[0].port",
        "spec.tls[0].match[0].gateways[0]",
    ]


@pytest.mark.parametrize(
    ("name", "of", "expected"),
    [
        ("a.example.com", "a.example.com", True),
        ("a.example.com", "*.example.com", True),
        ("a.example.com", "*", True),
        ("*.a.example.com", "*.example.com", True),
        ("*.example.com", "*.a.example.com", False),
        ("example.com", "*.example.com", False),
        ("a.example.com", "b.example.com", False),
    ],
)
def test_host_subset_of(name: str, of: str, expected: bool) -> None:
    assert host_subset_of(name, of) is expected


# ---------------------------------------------------------------- Gateway servers


def test_passthrough_and_credential_name_servers_are_valid() -> None:
    assert validate_object(tls_gateway({"mode": "PASSTHROUGH"})) == ([], [])
    simple = {"mode": "SIMPLE", "credentialName": "gateway-cert", "minProtocolVersion": "TLSV1_2"}
    assert validate_object(tls_gateway(simple)) == ([], [])
    mutual = {"mode": "MUTUAL", "credentialName": "gateway-cert"}
    assert validate_object(tls_gateway(mutual)) == ([], [])


def test_a_tls_server_needs_tls_settings() -> None:
    errors, _ = validate_object(tls_gateway(None))
    assert errors == [
        'Gateway "tls-gateway" is invalid: spec.servers[0].tls: '
        "server must have TLS settings for HTTPS/TLS protocols"
    ]


def test_simple_without_certificates() -> None:
    errors, _ = validate_object(tls_gateway({"mode": "SIMPLE"}))
    assert errors == [
        'Gateway "tls-gateway" is invalid: spec.servers[0].tls: SIMPLE TLS requires a server '
        "certificate",
        'Gateway "tls-gateway" is invalid: spec.servers[0].tls: SIMPLE TLS requires a private key',
    ]


def test_mutual_with_inline_certificates_needs_a_ca() -> None:
    tls = {"mode": "MUTUAL", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}
    errors, _ = validate_object(tls_gateway(tls))
    assert errors == [
        'Gateway "tls-gateway" is invalid: spec.servers[0].tls: MUTUAL TLS requires a client '
        "CA bundle"
    ]


def test_two_certificate_sources() -> None:
    tls = {
        "mode": "SIMPLE",
        "credentialName": "gateway-cert",
        "serverCertificate": "/c.pem",
        "privateKey": "/k.pem",
    }
    errors, _ = validate_object(tls_gateway(tls))
    assert errors == [
        'Gateway "tls-gateway" is invalid: spec.servers[0].tls: only one of credential_name, '
        "credential_names, server_certificate/private_key, tls_certificates should be specified"
    ]


def test_passthrough_with_certificates_warns() -> None:
    errors, warnings = validate_object(tls_gateway({"credentialName": "gateway-cert"}))
    assert errors == []
    assert warnings == [
        'Gateway "tls-gateway": spec.servers[0].tls: PASSTHROUGH mode does not use '
        "certificates, they will be ignored"
    ]


def test_istio_mutual_takes_no_certificates() -> None:
    errors, _ = validate_object(tls_gateway({"mode": "ISTIO_MUTUAL", "credentialName": "x"}))
    assert errors == [
        'Gateway "tls-gateway" is invalid: spec.servers[0].tls: ISTIO_MUTUAL TLS cannot have '
        "associated credentialName"
    ]


def test_cipher_suites_invalid_and_duplicate_are_warnings() -> None:
    tls = {
        "mode": "SIMPLE",
        "credentialName": "gateway-cert",
        "cipherSuites": [
            "ECDHE-RSA-AES128-GCM-SHA256",
            "NOT-A-CIPHER",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ],
    }
    errors, warnings = validate_object(tls_gateway(tls))
    assert errors == []
    assert warnings == [
        'Gateway "tls-gateway": spec.servers[0].tls.cipherSuites: ignoring invalid cipher '
        "suites: [NOT-A-CIPHER]",
        'Gateway "tls-gateway": spec.servers[0].tls.cipherSuites: ignoring duplicate cipher '
        "suites: [ECDHE-RSA-AES128-GCM-SHA256]",
    ]


def test_old_protocol_versions_without_ciphers_warn() -> None:
    tls = {"mode": "SIMPLE", "credentialName": "c", "minProtocolVersion": "TLSV1_0"}
    _, warnings = validate_object(tls_gateway(tls))
    assert warnings == [
        'Gateway "tls-gateway": spec.servers[0].tls.minProtocolVersion: TLS version below '
        "TLSV1_2 require setting compatible ciphers as by default they no longer include "
        "compatible ciphers."
    ]


def test_max_below_min_protocol_version() -> None:
    tls = {
        "mode": "SIMPLE",
        "credentialName": "c",
        "minProtocolVersion": "TLSV1_3",
        "maxProtocolVersion": "TLSV1_2",
    }
    errors, _ = validate_object(tls_gateway(tls))
    assert errors == [
        'Gateway "tls-gateway" is invalid: spec.servers[0].tls.maxProtocolVersion: '
        "maxProtocolVersion TLSV1_2 is lower than minProtocolVersion TLSV1_3"
    ]


def test_an_unknown_mode_is_a_shape_error() -> None:
    errors, _ = validate_object(tls_gateway({"mode": "TERMINATE"}))
    assert len(errors) == 1
    assert errors[0].startswith('Gateway "tls-gateway" is invalid: spec.servers[0].tls.mode:')
    assert "PASSTHROUGH" in errors[0]


def test_https_redirect_alone_is_allowed_on_http() -> None:
    assert validate_object(tls_gateway({"httpsRedirect": True}, protocol="HTTP")) == ([], [])


@pytest.mark.parametrize(
    ("suite", "valid"),
    [("AES128-SHA", True), ("ALL", True), ("-AES128-SHA", True), ("RC4-MD5", False)],
)
def test_cipher_suite_names(suite: str, valid: bool) -> None:
    assert is_valid_cipher_suite(suite) is valid


# ---------------------------------------------------------------- Secret


def test_a_tls_secret_is_valid_and_stored_as_given() -> None:
    checked = check_object(tls_secret())
    assert checked.errors == []
    assert checked.object is not None
    assert checked.object["data"] == tls_secret()["data"]
    assert checked.object["type"] == "kubernetes.io/tls"


def test_a_tls_secret_needs_both_keys() -> None:
    errors, _ = validate_object(tls_secret(data={"tls.crt": b64("c")}))
    assert errors == [
        'Secret "istio-system/gateway-cert" is invalid: data[tls.key]: Required value'
    ]


def test_string_data_is_merged_into_data_and_not_stored() -> None:
    secret = tls_secret(data={"tls.crt": b64("old")}, stringData={"tls.crt": "new", "tls.key": "k"})
    checked = check_object(secret)
    assert checked.errors == []
    assert checked.object is not None
    assert "stringData" not in checked.object
    assert checked.object["data"] == {"tls.crt": b64("new"), "tls.key": b64("k")}


def test_the_type_defaults_to_opaque() -> None:
    secret = tls_secret()
    del secret["type"]
    checked = check_object(secret)
    assert checked.object is not None
    assert checked.object["type"] == "Opaque"


def test_data_must_be_base64() -> None:
    errors, _ = validate_object(tls_secret(data={"tls.crt": "abc$", "tls.key": b64("k")}))
    assert errors == [
        'Secret "istio-system/gateway-cert" is invalid: data[tls.crt]: '
        "illegal base64 data at input byte 3"
    ]


def test_a_bad_key_name() -> None:
    data = {"tls.crt": b64("c"), "tls.key": b64("k"), "a key": b64("x")}
    errors, _ = validate_object(tls_secret(data=data))
    assert errors == [
        'Secret "istio-system/gateway-cert" is invalid: data[a key]: Invalid value: "a key": '
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
        "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
        "'[-._a-zA-Z0-9]+')"
    ]


def test_an_oversized_secret() -> None:
    big = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
    errors, _ = validate_object(tls_secret(data={"tls.crt": big, "tls.key": b64("k")}))
    assert errors == [
        'Secret "istio-system/gateway-cert" is invalid: data: Too long: must have at most '
        "1048576 bytes"
    ]


def test_secret_data_values_must_be_strings() -> None:
    secret = copy.deepcopy(tls_secret())
    secret["data"]["tls.key"] = 5
    errors, _ = validate_object(secret)
    assert errors == [
        'Secret "istio-system/gateway-cert" is invalid: data[tls.key]: must be a string, got 5'
    ]


# ---------------------------------------------------------------- get and describe


def test_get_secret_prints_type_and_key_count_never_the_data() -> None:
    secret = check_object(tls_secret()).object
    assert secret is not None
    secret["metadata"]["creationTimestamp"] = "2026-11-26T11:00:00Z"
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    out = printers.print_table(kinds.by_key("Secret"), [secret], now=now)
    assert out == (
        "NAME           TYPE                DATA   AGE\n"
        "gateway-cert   kubernetes.io/tls   2      60m\n"
    )
    assert secret["data"]["tls.key"] not in out
    assert secret["data"]["tls.key"] in printers.to_yaml(secret)
