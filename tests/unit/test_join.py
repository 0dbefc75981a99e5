"""Peers on other hosts, the pure parts: tokens, identities, CSRs, registered objects,
leases, the load balancer's hosts and the workload's probe."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tcpmesh.apiserver.pki import (
    ca_public_key_hash,
    ensure_ca,
    make_csr,
    read_csr,
    sign_client_csr,
)
from tcpmesh.join import (
    BootstrapToken,
    IdentityError,
    PeerIdentity,
    TokenError,
    TokenScope,
    check_scope,
    check_token,
    expired,
    gateway_pod,
    is_joined,
    peer_from_certificate,
    peer_from_pem,
    scope_of,
    token_object,
    workload_entry,
)
from tcpmesh.join.workload import ProbeState
from tcpmesh.runtime import assign_load_balancers

NOW = datetime.datetime(2026, 12, 2, 1, 0, tzinfo=datetime.UTC)
GATEWAY = PeerIdentity("gateway", "istio-system", "edge", "h1")
WORKLOAD = PeerIdentity("workload", "default", "tcp-echo-v1", "vm1")


# ---------------------------------------------------------------- tokens


def test_a_token_round_trips_and_a_malformed_one_is_refused() -> None:
    token = BootstrapToken.generate()
    assert BootstrapToken.parse(str(token)) == token
    with pytest.raises(TokenError, match=r"\[a-z0-9\]\{6\}"):
        BootstrapToken.parse("ABCDEF.0123456789abcdef")


def test_the_stored_token_holds_a_digest_never_the_secret() -> None:
    token = BootstrapToken("abcdef", "0123456789abcdef")
    stored = token_object(token, datetime.timedelta(hours=1), NOW, "edge hosts")
    assert stored["metadata"]["name"] == "bootstrap-token-abcdef"
    decoded = [base64.b64decode(v).decode() for v in stored["data"].values()]
    assert all(token.secret not in value for value in decoded)
    check_token(stored, token, NOW)  # valid: no exception


def test_a_wrong_unknown_or_expired_token_is_refused() -> None:
    token = BootstrapToken("abcdef", "0123456789abcdef")
    stored = token_object(token, datetime.timedelta(hours=1), NOW, "")
    with pytest.raises(TokenError, match="unknown or wrong"):
        check_token(stored, BootstrapToken("abcdef", "0123456789abcdeX".lower()), NOW)
    with pytest.raises(TokenError, match="unknown or wrong"):
        check_token(None, token, NOW)
    with pytest.raises(TokenError, match="expired at 2026-12-02T02:00:00Z"):
        check_token(stored, token, NOW + datetime.timedelta(hours=2))
    forever = token_object(token, None, NOW, "")
    check_token(forever, token, NOW + datetime.timedelta(days=3650))


# ---------------------------------------------------------------- identities and CSRs


def test_a_scoped_token_stands_only_for_peers_of_its_gateway_or_group() -> None:
    token = BootstrapToken.generate()
    scope = TokenScope.parse("gateway", "istio-system/edge")
    stored = token_object(token, None, NOW, "", scope)
    assert scope_of(stored) == scope and str(scope) == "gateway/istio-system/edge"
    check_scope(stored, token.token_id, GATEWAY)
    other = PeerIdentity("gateway", "istio-system", "edge-b", "h1")
    with pytest.raises(TokenError, match="is for gateway/istio-system/edge only"):
        check_scope(stored, token.token_id, other)
    with pytest.raises(TokenError):  # same names, other role
        check_scope(stored, token.token_id, PeerIdentity("workload", "istio-system", "edge", "h1"))
    unscoped = token_object(token, None, NOW, "")
    assert scope_of(unscoped) is None
    check_scope(unscoped, token.token_id, other)


def test_a_malformed_scope_is_refused_with_the_reason() -> None:
    with pytest.raises(TokenError, match="expected NAMESPACE/NAME"):
        TokenScope.parse("workload", "tcp-echo-v1")
    with pytest.raises(TokenError, match="DNS-1123"):
        TokenScope.parse("workload", "default/Tcp_Echo")
    with pytest.raises(TokenError, match="expected gateway/NS/NAME"):
        TokenScope.from_text("node/default/x")


def test_an_identity_round_trips_through_its_uri_and_names_its_object() -> None:
    assert PeerIdentity.from_uri(GATEWAY.uri) == GATEWAY
    assert GATEWAY.uri == "tcpmesh://gateway/istio-system/edge/h1"
    assert GATEWAY.node_id == "istio-system/edge-h1"
    with pytest.raises(IdentityError, match="node: 'H_1' is not a DNS-1123 label"):
        PeerIdentity("gateway", "istio-system", "edge", "H_1")
    with pytest.raises(IdentityError, match="expected tcpmesh://ROLE"):
        PeerIdentity.from_uri("tcpmesh://admin/istio-system/edge")


def test_the_ca_signs_the_names_it_decided_and_the_peer_is_read_back(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    _, csr_pem = make_csr(WORKLOAD.uri, "10.0.0.7")
    request = read_csr(csr_pem)
    assert request.uris == (WORKLOAD.uri,) and request.addresses == ("10.0.0.7",)
    pem = sign_client_csr(
        ca,
        request,
        uri=WORKLOAD.uri,
        address="10.0.0.7",
        unit="token:abcdef",
        ttl=datetime.timedelta(minutes=10),
    )
    cert = x509.load_pem_x509_certificate(pem)
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=9) < lifetime <= datetime.timedelta(minutes=10)
    # What ssl.getpeercert() makes of such a certificate:
    peer = peer_from_certificate(
        {
            "subject": (
                (("commonName", WORKLOAD.uri.removeprefix("tcpmesh://")),),
                (("organizationalUnitName", "token:abcdef"),),
            ),
            "subjectAltName": (("URI", WORKLOAD.uri), ("IP Address", "10.0.0.7")),
        }
    )
    assert peer is not None
    assert (peer.identity, peer.addresses, peer.token_id) == (WORKLOAD, ("10.0.0.7",), "abcdef")
    # What a gRPC server's auth context hands over (the PEM), read the same way.
    from_pem = peer_from_pem(pem)
    assert from_pem is not None
    assert (from_pem.identity, from_pem.addresses, from_pem.token_id) == (
        WORKLOAD,
        ("10.0.0.7",),
        "abcdef",
    )
    assert from_pem.not_after == cert.not_valid_after_utc
    assert peer_from_pem(ca.cert_pem) is None  # the CA names no peer


def test_a_certificate_without_a_token_unit_is_no_peer() -> None:
    cert = {"subject": ((("commonName", "x"),),), "subjectAltName": (("URI", GATEWAY.uri),)}
    assert peer_from_certificate(cert) is None


def test_an_unreadable_csr_is_refused() -> None:
    with pytest.raises(ValueError):
        read_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")


def test_the_ca_pin_is_the_sha256_of_its_public_key(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    pin = ca_public_key_hash(ca.cert)
    assert pin.startswith("sha256:") and len(pin) == len("sha256:") + 64
    assert pin != ca_public_key_hash(ensure_ca(tmp_path / "other").cert)


# ---------------------------------------------------------------- registered objects


def _deployment() -> dict[str, Any]:
    return {
        "metadata": {"name": "edge", "namespace": "istio-system"},
        "spec": {
            "template": {
                "metadata": {"labels": {"istio": "ingressgateway", "app": "edge"}},
                "spec": {"containers": [{"name": "istio-proxy", "image": "istio/proxyv2"}]},
            }
        },
    }


def _group(probe: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "metadata": {"labels": {"app": "tcp-echo", "version": "v1"}},
        "template": {"ports": {"tcp": 9000}, "serviceAccount": "echo"},
    }
    if probe is not None:
        spec["probe"] = probe
    return {"metadata": {"name": "tcp-echo-v1", "uid": "u-1"}, "spec": spec}


def test_a_gateway_host_becomes_a_host_network_pod_of_its_deployment() -> None:
    pod, status = gateway_pod(_deployment(), GATEWAY, "10.0.0.1", ready=True, now=NOW)
    assert pod["metadata"]["name"] == "edge-h1"
    assert pod["metadata"]["labels"] == {"istio": "ingressgateway", "app": "edge"}
    assert pod["spec"]["hostNetwork"] is True and pod["spec"]["nodeName"] == "h1"
    assert status["podIP"] == "10.0.0.1"
    assert status["conditions"] == [{"type": "Ready", "status": "True"}]
    assert is_joined(pod)


def test_a_workload_host_becomes_an_auto_registered_entry_of_its_group() -> None:
    entry, status = workload_entry(
        _group({"tcpSocket": {"port": 9000}}), WORKLOAD, "10.0.0.7", healthy=False, now=NOW
    )
    assert entry["metadata"]["labels"] == {"app": "tcp-echo", "version": "v1"}
    assert entry["spec"] == {
        "ports": {"tcp": 9000},
        "serviceAccount": "echo",
        "address": "10.0.0.7",
    }
    annotations = entry["metadata"]["annotations"]
    assert annotations["istio.io/autoRegistrationGroup"] == "tcp-echo-v1"
    assert annotations["proxy.istio.io/health-checks-enabled"] == "true"
    assert status == {"conditions": [{"type": "Healthy", "status": "False"}]}
    unprobed, _ = workload_entry(_group(None), WORKLOAD, "10.0.0.7", healthy=True, now=NOW)
    assert "proxy.istio.io/health-checks-enabled" not in unprobed["metadata"]["annotations"]


def test_a_lease_expires_only_after_its_duration() -> None:
    pod, _ = gateway_pod(_deployment(), GATEWAY, "10.0.0.1", ready=True, now=NOW, lease_seconds=15)
    assert not expired(pod, NOW + datetime.timedelta(seconds=15))
    assert expired(pod, NOW + datetime.timedelta(seconds=16))
    assert not expired({"metadata": {"annotations": {}}}, NOW + datetime.timedelta(days=1))
    broken = {"metadata": {"annotations": {"tcpmesh.io/joined-node": "h1"}}}
    assert expired(broken, NOW)


def _lb_service() -> dict[str, Any]:
    return {
        "metadata": {"name": "edge", "namespace": "istio-system"},
        "spec": {"type": "LoadBalancer", "selector": {"istio": "ingressgateway"}},
    }


def _joined(host: str, address: str, ready: bool) -> dict[str, Any]:
    identity = PeerIdentity("gateway", "istio-system", "edge", host)
    pod, status = gateway_pod(_deployment(), identity, address, ready=ready, now=NOW)
    return {**pod, "status": status}


def _ingress(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    outcome = assign_load_balancers([_lb_service()], "127.0.0.1", pods)["istio-system", "edge"]
    ingress: list[dict[str, Any]] = outcome.load_balancer().get("ingress", [])
    return ingress


def test_the_load_balancer_lists_every_ready_joined_host() -> None:
    pods = [_joined("h2", "10.0.0.2", True), _joined("h1", "10.0.0.1", True)]
    pods.append(_joined("h3", "10.0.0.3", False))
    assert _ingress(pods) == [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]
    local = {
        "metadata": {
            "name": "edge-abc",
            "namespace": "istio-system",
            "labels": {"istio": "ingressgateway"},
        },
        "status": {"podIP": "127.0.0.1"},
    }
    # This machine first (with the ports it holds here), then the joined hosts.
    assert [i["ip"] for i in _ingress([local, *pods])] == ["127.0.0.1", "10.0.0.1", "10.0.0.2"]
    assert _ingress([local]) == [{"ip": "127.0.0.1", "ports": []}]


# ---------------------------------------------------------------- the workload's probe


def test_the_probe_needs_its_thresholds_in_a_row() -> None:
    state = ProbeState({"successThreshold": 2, "failureThreshold": 2}, "10.0.0.7")
    state.record(True)
    assert not state.healthy
    state.record(True)
    assert state.healthy
    state.record(False)
    assert state.healthy
    state.record(True)
    state.record(False)
    state.record(False)
    assert not state.healthy
