"""TLS gateway servers in the Snapshot (Istio's rules), SNI route choice, and Envoy's shape."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest

from tcpmesh.analysis import analyze
from tcpmesh.control import (
    DownstreamTls,
    L4Match,
    MeshResources,
    ProxyNode,
    Snapshot,
    SnapshotError,
    build_snapshot,
)
from tcpmesh.dataplane.routing import match_route
from tcpmesh.xds import proxyconfig
from tcpmesh.xds.translate import SECRET_TYPE, translate

NODE = ProxyNode(
    namespace="istio-system",
    name="istio-ingressgateway-abc",
    labels=(("istio", "ingressgateway"),),
    address="127.0.0.1",
)
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
A = "outbound|8443|v1|a.default.svc.cluster.local"
A2 = "outbound|8443|v2|a.default.svc.cluster.local"
B = "outbound|8443||b.default.svc.cluster.local"
ECHO = "outbound|9000||tcp-echo.default.svc.cluster.local"


def meta(name: str, namespace: str = "default", created: str = "2026-01-01T00:00:00Z") -> dict:
    return {"name": name, "namespace": namespace, "creationTimestamp": created}


def service(name: str, port: int, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, namespace),
        "spec": {"ports": [{"name": "p", "port": port}], **spec},
    }


def gateway(*servers: dict[str, Any], name: str = "gw") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": meta(name),
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": list(servers)},
    }


def server(tls: dict[str, Any], hosts: list[str], port: int = 443, name: str = "tls") -> dict:
    return {
        "port": {"number": port, "name": name, "protocol": "TLS"},
        "hosts": hosts,
        "tls": tls,
    }


def tls_vs(name: str, *rules: tuple[list[str], list[tuple[str, str, int]]], **extra: Any) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta(name, created=extra.pop("created", "2026-01-01T00:00:00Z")),
        "spec": {
            "hosts": extra.pop("hosts", ["*.example.com"]),
            "gateways": ["gw"],
            "tls": [
                {
                    "match": [{"sniHosts": sni, **extra}],
                    "route": [
                        {
                            "destination": {
                                "host": host,
                                "port": {"number": 8443},
                                **({"subset": subset} if subset else {}),
                            },
                            "weight": weight,
                        }
                        for host, subset, weight in dests
                    ],
                }
                for sni, dests in rules
            ],
        },
    }


def tcp_vs(name: str, hosts: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta(name),
        "spec": {
            "hosts": hosts,
            "gateways": ["gw"],
            "tcp": [{"route": [{"destination": {"host": "tcp-echo", "port": {"number": 9000}}}]}],
        },
    }


def secret(name: str = "cert", namespace: str = "istio-system", **data: str) -> dict[str, Any]:
    values = data or {"tls.crt": CERT, "tls.key": KEY}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(name, namespace),
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def build(*objects: dict[str, Any]) -> Snapshot:
    gateway_svc = service(
        "istio-ingressgateway", 443, "istio-system", selector={"istio": "ingressgateway"}
    )
    return build_snapshot(MeshResources.from_objects([gateway_svc, *objects]), NODE)


PASSTHROUGH = {"mode": "PASSTHROUGH"}


def test_passthrough_routes_by_sni_with_weights() -> None:
    snap = build(
        gateway(server(PASSTHROUGH, ["*.example.com"])),
        tls_vs(
            "routes",
            (["a.example.com"], [("a", "v1", 80), ("a", "v2", 20)]),
            (["b.example.com", "B2.example.com"], [("b", "", 1)]),
        ),
    )
    (listener,) = snap.listeners
    assert (listener.name, listener.port, listener.reads_client_hello) == ("0.0.0.0_443", 443, True)
    first, second = listener.routes
    assert first.match == L4Match(server_names=("a.example.com",))
    assert [(d.cluster_name, d.weight) for d in first.destinations] == [(A, 80), (A2, 20)]
    assert str(first.origin) == "VirtualService default/routes tls[0]"
    assert second.match.server_names == ("b.example.com", "b2.example.com")
    assert [d.cluster_name for d in second.destinations] == [B]
    assert first.tls is None


def test_a_star_sni_host_matches_every_connection() -> None:
    snap = build(
        gateway(server(PASSTHROUGH, ["*"])),
        tls_vs("routes", (["*"], [("a", "v1", 1)]), hosts=["*"]),
    )
    assert snap.listeners[0].routes[0].match.server_names == ()


def test_duplicate_sni_hosts_keep_the_first_claim() -> None:
    snap = build(
        gateway(server(PASSTHROUGH, ["*.example.com"])),
        tls_vs("old", (["a.example.com"], [("a", "v1", 1)]), created="2026-01-01T00:00:00Z"),
        tls_vs("new", (["a.example.com"], [("b", "", 1)]), created="2026-01-02T00:00:00Z"),
    )
    (route,) = snap.listeners[0].routes
    assert route.origin.name == "old"


def test_port_and_gateway_matches_are_checked() -> None:
    snap = build(
        gateway(server(PASSTHROUGH, ["*.example.com"])),
        tls_vs("other-port", (["a.example.com"], [("a", "v1", 1)]), port=8443),
    )
    assert snap.listeners == ()  # no tls match fits: nothing listens on 443


def test_vs_hosts_must_match_the_server_hosts() -> None:
    snap = build(
        gateway(server(PASSTHROUGH, ["*.other.org"])),
        tls_vs("routes", (["a.example.com"], [("a", "v1", 1)])),
    )
    assert snap.listeners == ()


def test_simple_termination_takes_the_secret_and_the_tcp_rules() -> None:
    tls = {"mode": "SIMPLE", "credentialName": "cert", "minProtocolVersion": "TLSV1_3"}
    snap = build(
        gateway(server(tls, ["echo.example.com"])),
        tcp_vs("echo", ["echo.example.com"]),
        secret(),
    )
    (route,) = snap.listeners[0].routes
    assert route.match.server_names == ("echo.example.com",)
    assert [d.cluster_name for d in route.destinations] == [ECHO]
    assert route.tls == DownstreamTls(
        secret="istio-system/cert",
        certificate_chain=CERT,
        private_key=KEY,
        min_protocol_version="TLSv1_3",
    )
    assert "PRIVATE KEY" not in repr(route.tls)  # never in logs
    assert Snapshot.from_json(snap.to_json()) == snap


def test_a_missing_or_unusable_secret_serves_nothing() -> None:
    tls = {"mode": "SIMPLE", "credentialName": "cert"}
    objects = [gateway(server(tls, ["echo.example.com"])), tcp_vs("echo", ["echo.example.com"])]
    assert build(*objects).listeners == ()
    assert build(*objects, secret(namespace="default")).listeners == ()  # wrong namespace
    assert build(*objects, secret(**{"tls.crt": "junk", "tls.key": KEY})).listeners == ()


def test_mutual_needs_a_client_ca() -> None:
    tls = {"mode": "MUTUAL", "credentialName": "cert"}
    objects = [gateway(server(tls, ["echo.example.com"])), tcp_vs("echo", ["echo.example.com"])]
    assert build(*objects, secret()).listeners == ()
    ca = secret("cert-cacert", **{"ca.crt": CERT})
    (route,) = build(*objects, secret(), ca).listeners[0].routes
    assert route.tls is not None and route.tls.ca_certificates == CERT


def test_passthrough_and_termination_share_a_port() -> None:
    terminate = server(
        {"mode": "SIMPLE", "credentialName": "cert"}, ["echo.example.com"], name="tls-echo"
    )
    snap = build(
        gateway(server(PASSTHROUGH, ["*.example.com"]), terminate),
        tls_vs("routes", (["a.example.com"], [("a", "v1", 1)])),
        tcp_vs("echo", ["echo.example.com"]),
        secret(),
    )
    (listener,) = snap.listeners
    assert [r.match.server_names for r in listener.routes] == [
        ("a.example.com",),
        ("echo.example.com",),
    ]
    assert [r.tls is not None for r in listener.routes] == [False, True]


def test_a_tcp_server_keeps_its_port_from_a_later_tls_server() -> None:
    plain = {"port": {"number": 443, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
    snap = build(
        gateway(plain, server(PASSTHROUGH, ["*.example.com"])),
        tcp_vs("echo", ["*"]),
        tls_vs("routes", (["a.example.com"], [("a", "v1", 1)])),
    )
    (listener,) = snap.listeners
    assert not listener.reads_client_hello
    assert [r.origin.section for r in listener.routes] == ["tcp"]


def test_https_termination_and_auto_passthrough_get_no_listener() -> None:
    https = {
        "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
        "hosts": ["*"],
        "tls": {"mode": "SIMPLE", "credentialName": "cert"},
    }
    auto = server({"mode": "AUTO_PASSTHROUGH"}, ["*.example.com"])
    assert build(gateway(https), tcp_vs("echo", ["*"]), secret()).listeners == ()
    assert build(gateway(auto), tls_vs("r", (["a.example.com"], [("a", "v1", 1)]))).listeners == ()


def test_check_rejects_duplicate_matchers_and_bad_names() -> None:
    snap = build(
        gateway(server(PASSTHROUGH, ["*.example.com"])),
        tls_vs("routes", (["a.example.com"], [("a", "v1", 1)])),
    )
    listener = snap.listeners[0]
    twice = dataclasses.replace(listener, routes=listener.routes * 2)
    with pytest.raises(SnapshotError, match="has the same match as route 0"):
        Snapshot.build((twice,), snap.clusters).check()
    bad = dataclasses.replace(listener.routes[0], match=L4Match(server_names=("A.example.com",)))
    with pytest.raises(SnapshotError, match="not a lowercase"):
        Snapshot.build((dataclasses.replace(listener, routes=(bad,)),), snap.clusters).check()


# ---------------------------------------------------------------- route choice


def routes_for(*names: tuple[str, ...]) -> Any:
    snap = build(
        gateway(server(PASSTHROUGH, ["*"])),
        tls_vs("r", *[(list(n) or ["*"], [("a", "v1", 1)]) for n in names], hosts=["*"]),
    )
    return snap.listeners[0]


@pytest.mark.parametrize(
    ("sni", "expected"),
    [
        ("a.example.com", 0),  # exact beats every wildcard
        ("x.a.example.com", 1),  # longest wildcard suffix
        ("y.example.com", 2),
        ("other.org", 3),  # the catch-all
        (None, 3),  # no SNI: only the catch-all
    ],
)
def test_sni_choice_is_envoys(sni: str | None, expected: int) -> None:
    listener = routes_for(("*.example.com",), ("a.example.com",), ("*.a.example.com",), ())
    # Listener order: *.example.com, a.example.com, *.a.example.com, catch-all.
    order = {0: 1, 1: 2, 2: 0, 3: 3}
    route = match_route(listener, "127.0.0.1", sni)
    assert route is listener.routes[order[expected]]


def test_no_catch_all_means_no_route_without_sni() -> None:
    listener = routes_for(("a.example.com",))
    assert match_route(listener, "127.0.0.1", None) is None
    assert match_route(listener, "127.0.0.1", "b.example.com") is None


# ---------------------------------------------------------------- Envoy


def test_envoy_gets_tls_inspector_server_names_and_sds() -> None:
    terminate = server(
        {"mode": "SIMPLE", "credentialName": "cert"}, ["echo.example.com"], name="tls-echo"
    )
    snap = build(
        gateway(server(PASSTHROUGH, ["*.example.com"]), terminate),
        tls_vs("routes", (["a.example.com"], [("a", "v1", 1)])),
        tcp_vs("echo", ["echo.example.com"]),
        secret(),
    )
    config = translate(snap)
    (listener,) = config.of("type.googleapis.com/envoy.config.listener.v3.Listener").values()
    assert [f["name"] for f in listener["listener_filters"]] == [
        "envoy.filters.listener.tls_inspector"
    ]
    passthrough, terminated = listener["filter_chains"]
    assert passthrough["filter_chain_match"] == {"server_names": ["a.example.com"]}
    assert "transport_socket" not in passthrough
    context = terminated["transport_socket"]["typed_config"]["common_tls_context"]
    assert context["tls_certificate_sds_secret_configs"] == [
        {
            "name": "kubernetes://istio-system/cert",
            "sds_config": {"ads": {}, "resource_api_version": "V3"},
        }
    ]
    assert context["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_2"}
    # The certificate itself is only in the SDS resource, so a new one changes no listener.
    assert CERT not in str(listener)
    (sds,) = config.of(SECRET_TYPE).values()
    assert sds["tls_certificate"]["certificate_chain"] == {"inline_string": CERT}
    assert listener["access_log"]  # NR for unknown SNI is logged by the listener


def test_a_new_certificate_changes_the_secret_not_the_listener() -> None:
    tls = {"mode": "SIMPLE", "credentialName": "cert"}
    objects = [gateway(server(tls, ["echo.example.com"])), tcp_vs("echo", ["echo.example.com"])]
    other = CERT.replace("MIIB", "MIIC")
    before = translate(build(*objects, secret()))
    after = translate(build(*objects, secret(**{"tls.crt": other, "tls.key": KEY})))
    listeners = "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert before.of(listeners) == after.of(listeners)
    assert before.of(SECRET_TYPE) != after.of(SECRET_TYPE)


# ---------------------------------------------------------------- analyze


def gateway_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **meta("istio-ingressgateway-x", "istio-system"),
            "labels": {"istio": "ingressgateway"},
        },
        "spec": {"containers": [{"name": "istio-proxy", "image": "istio/proxyv2"}]},
    }


def analysis_codes(*objects: dict[str, Any]) -> list[tuple[str, str]]:
    gateway_svc = service(
        "istio-ingressgateway", 443, "istio-system", selector={"istio": "ingressgateway"}
    )
    messages = analyze([gateway_svc, gateway_pod(), *objects])
    return [(m.code, m.text) for m in messages]


def test_a_missing_credential_is_ist0161() -> None:
    tls = {"mode": "SIMPLE", "credentialName": "cert"}
    objects = [
        gateway(server(tls, ["echo.example.com"])),
        tcp_vs("echo", ["echo.example.com"]),
        service("tcp-echo", 9000),
    ]
    text = (
        "The credential referenced by the Gateway gw in namespace default is invalid, which "
        "can cause the traffic not to work as expected."
    )
    assert ("IST0161", text) in analysis_codes(*objects)
    assert ("IST0161", text) in analysis_codes(*objects, secret(namespace="default"))
    assert [c for c, _ in analysis_codes(*objects, secret())] == []


def test_tls_route_destinations_are_checked_like_tcp_ones() -> None:
    messages = analysis_codes(
        gateway(server(PASSTHROUGH, ["*.example.com"])),
        tls_vs("routes", (["a.example.com"], [("nope", "", 1)])),
    )
    assert ("IST0101", 'Referenced host not found: "nope"') in messages


def test_proxy_config_shows_the_sni_match_on_both_data_planes() -> None:
    from tests.unit.test_xds_proxyconfig import config_dump

    snap = build(
        gateway(server(PASSTHROUGH, ["*.example.com"])),
        tls_vs("routes", (["a.example.com", "*.a.example.com"], [("a", "v1", 1)])),
    )
    headers, rows = proxyconfig.snapshot_listeners(snap)
    assert rows == [["127.0.0.1", "443", "SNI: a.example.com,*.a.example.com", f"Cluster: {A}"]]
    assert proxyconfig.envoy_listeners(config_dump(snap)) == (headers, rows)


def test_optional_mutual_checks_a_client_certificate_only_when_sent() -> None:
    tls = {"mode": "OPTIONAL_MUTUAL", "credentialName": "cert"}
    objects = [gateway(server(tls, ["echo.example.com"])), tcp_vs("echo", ["echo.example.com"])]
    ca = secret("cert-cacert", **{"ca.crt": CERT})
    snap = build(*objects, secret(), ca)
    (route,) = snap.listeners[0].routes
    assert route.tls is not None and route.tls.client_optional
    (listener,) = (
        translate(snap).of("type.googleapis.com/envoy.config.listener.v3.Listener").values()
    )
    context = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert "require_client_certificate" not in context
    assert context["common_tls_context"]["validation_context_sds_secret_config"]["name"] == (
        "kubernetes://istio-system/cert-cacert"
    )
