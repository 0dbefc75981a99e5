"""The Gateway API binding: which listeners a route attaches to, its status, its routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tcpmesh.control import (
    NODE_PROXY_LABELS,
    NODE_PROXY_NAMESPACE,
    MeshResources,
    ProxyNode,
    build_snapshot,
)
from tcpmesh.control.gatewayapi import (
    REFUSED_HOST,
    Binding,
    bind_resources,
    builtin_gateway_classes,
    workload_labels,
)

Obj = dict[str, Any]
G = "gateway.networking.k8s.io"
INFRA = "infra"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def meta(name: str, namespace: str = INFRA, created: str = "2026-01-01T00:00:00Z") -> Obj:
    return {"name": name, "namespace": namespace, "creationTimestamp": created}


def service(name: str, namespace: str = INFRA, port: int = 3000) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, namespace),
        "spec": {"selector": {"app": name}, "ports": [{"name": "tcp", "port": port}]},
    }


def gateway(*listeners: Obj, name: str = "gw", cls: str = "tcpmesh") -> Obj:
    return {
        "apiVersion": f"{G}/v1",
        "kind": "Gateway",
        "metadata": meta(name),
        "spec": {"gatewayClassName": cls, "listeners": list(listeners)},
    }


def tcp(name: str, port: int, **extra: Any) -> Obj:
    return {"name": name, "protocol": "TCP", "port": port, **extra}


def tls(name: str, port: int, mode: str = "Passthrough", **extra: Any) -> Obj:
    return {"name": name, "protocol": "TLS", "port": port, "tls": {"mode": mode}, **extra}


def route(
    name: str,
    backends: list[Obj],
    parent: Obj | None = None,
    kind: str = "TCPRoute",
    created: str = "2026-01-01T00:00:00Z",
    **spec: Any,
) -> Obj:
    return {
        "apiVersion": f"{G}/v1alpha2",
        "kind": kind,
        "metadata": meta(name, created=created),
        "spec": {
            "parentRefs": [parent or {"name": "gw"}],
            "rules": [{"backendRefs": backends}],
            **spec,
        },
    }


def backend(name: str, weight: int | None = None, **extra: Any) -> Obj:
    ref: Obj = {"name": name, "port": 3000, **extra}
    if weight is not None:
        ref["weight"] = weight
    return ref


def bound(*objects: Obj, classes: bool = True) -> Binding:
    # The classes `up` creates, as on a running mesh.
    given = [*objects, *(builtin_gateway_classes() if classes else [])]
    return bind_resources(MeshResources.from_objects(given))


def conditions(binding: Binding, route_name: str) -> dict[str, tuple[str, str]]:
    result = next(r for r in binding.routes if r.route.name == route_name)
    (parent,) = result.parents
    return {c.type: (c.status, c.reason) for c in parent.conditions}


def listener(binding: Binding, name: str) -> Any:
    (gw,) = binding.gateways
    return next(li for li in gw.listeners if li.name == name)


def test_weighted_tcp_route_becomes_weighted_destinations_without_the_zero() -> None:
    objects = [
        gateway(tcp("tcp", 9300)),
        *(service(f"v{i}") for i in (1, 2, 3)),
        route("r", [backend("v1", 70), backend("v2", 30), backend("v3", 0)]),
    ]
    binding = bound(*objects)
    (vs,) = binding.virtual_services
    weights = [(d.destination.host, d.weight) for d in vs.spec.tcp[0].route if d and d.destination]
    assert weights == [(f"v1.{INFRA}.svc.cluster.local", 70), (f"v2.{INFRA}.svc.cluster.local", 30)]
    assert conditions(binding, "r") == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    assert listener(binding, "tcp").attached_routes == 1


def test_backend_problems_have_the_spec_reasons_and_keep_their_share() -> None:
    cases = {
        "BackendNotFound": backend("missing"),
        "InvalidKind": backend("v1", kind="ConfigMap"),
        "RefNotPermitted": backend("other", namespace="web"),
    }
    for reason, ref in cases.items():
        binding = bound(
            gateway(tcp("tcp", 9300)),
            service("v1"),
            service("other", "web"),
            route("r", [ref, backend("v1", 20)])
            if reason == "BackendNotFound"
            else route("r", [ref]),
        )
        assert conditions(binding, "r")["ResolvedRefs"] == ("False", reason)
        assert conditions(binding, "r")["Accepted"] == ("True", "Accepted")
        hosts = [
            d.destination.host
            for d in binding.virtual_services[0].spec.tcp[0].route
            if d and d.destination
        ]
        if reason == "BackendNotFound":
            assert hosts == [f"missing.{INFRA}.svc.cluster.local", f"v1.{INFRA}.svc.cluster.local"]
        else:
            assert hosts == [REFUSED_HOST]


def test_a_reference_grant_permits_the_cross_namespace_backend() -> None:
    grant = {
        "apiVersion": f"{G}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": meta("g", "web"),
        "spec": {
            "from": [{"group": G, "kind": "TCPRoute", "namespace": INFRA}],
            "to": [{"group": "", "kind": "Service", "name": "other"}],
        },
    }
    objects = [gateway(tcp("tcp", 9300)), service("other", "web"), grant]
    binding = bound(*objects, route("r", [backend("other", namespace="web")]))
    assert conditions(binding, "r")["ResolvedRefs"] == ("True", "ResolvedRefs")


def test_parent_refs_by_section_name_port_or_neither() -> None:
    gw = gateway(tcp("one", 9300), tcp("two", 9301), tcp("three", 9302))
    objects = [gw, service("v1")]
    by_port = bound(*objects, route("r", [backend("v1")], {"name": "gw", "port": 9300}))
    assert [(li.name, li.attached_routes) for li in by_port.gateways[0].listeners] == [
        ("one", 1),
        ("two", 0),
        ("three", 0),
    ]
    both = bound(
        *objects, route("r", [backend("v1")], {"name": "gw", "sectionName": "three", "port": 9302})
    )
    assert listener(both, "three").attached_routes == 1
    every = bound(*objects, route("r", [backend("v1")]))
    assert [li.attached_routes for li in every.gateways[0].listeners] == [1, 1, 1]
    wrong = bound(
        *objects, route("r", [backend("v1")], {"name": "gw", "sectionName": "two", "port": 9300})
    )
    assert conditions(wrong, "r")["Accepted"] == ("False", "NoMatchingParent")


def test_a_tcp_route_on_a_non_tcp_listener_is_not_allowed() -> None:
    http = {"name": "web", "protocol": "HTTP", "port": 5300}
    binding = bound(
        gateway(http),
        service("v1"),
        route("r", [backend("v1")], {"name": "gw", "sectionName": "web"}),
    )
    assert conditions(binding, "r")["Accepted"] == ("False", "NotAllowedByListeners")
    assert listener(binding, "web").attached_routes == 0
    assert binding.virtual_services == ()


def test_two_routes_on_one_listener_are_both_accepted_and_counted_and_the_oldest_serves() -> None:
    objects = [
        gateway(tcp("tcp", 9300)),
        service("old"),
        service("new"),
        route("newer", [backend("new")], created="2026-01-01T00:00:05Z"),
        route("older", [backend("old")], created="2026-01-01T00:00:01Z"),
    ]
    binding = bound(*objects)
    assert conditions(binding, "newer")["Accepted"] == ("True", "Accepted")
    assert listener(binding, "tcp").attached_routes == 2
    node = ProxyNode(
        "infra",
        "gw-abc",
        tuple(sorted(workload_labels(binding.gateways[0].gateway).items())),
        "127.0.0.9",
    )
    lb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("gw-tcpmesh"),
        "spec": {
            "type": "LoadBalancer",
            "selector": workload_labels(binding.gateways[0].gateway),
            "ports": [{"name": "tcp", "port": 9300}],
        },
    }
    snapshot = build_snapshot(
        MeshResources.from_objects([*objects, lb, *builtin_gateway_classes()]), node
    )
    (built,) = snapshot.listeners
    (served,) = built.routes
    assert (served.origin.kind, served.origin.name) == ("TCPRoute", "older")


def test_tls_route_hostnames_intersect_the_listener() -> None:
    gw = gateway(tls("tls", 443, hostname="*.example.com"))
    matching = route(
        "r", [backend("v1")], kind="TLSRoute", hostnames=["a.example.com", "b.other.org"]
    )
    binding = bound(gw, service("v1"), matching)
    assert conditions(binding, "r")["Accepted"] == ("True", "Accepted")
    (vs,) = binding.virtual_services
    assert vs.spec.tls[0] is not None and vs.spec.tls[0].match[0] is not None
    assert vs.spec.tls[0].match[0].sni_hosts == ["a.example.com"]
    none = route("r", [backend("v1")], kind="TLSRoute", hostnames=["a.other.org"])
    assert conditions(bound(gw, service("v1"), none), "r")["Accepted"] == (
        "False",
        "NoMatchingListenerHostname",
    )


def test_listener_conditions_protocol_conflict_and_invalid_route_kinds() -> None:
    conflict = bound(gateway(tls("a", 443, hostname="a.example.com"), tcp("b", 443)))
    for name in ("a", "b"):
        accepted = next(c for c in listener(conflict, name).conditions if c.type == "Accepted")
        assert (accepted.status, accepted.reason) == ("False", "ProtocolConflict")
    kinds = {"allowedRoutes": {"kinds": [{"kind": "TCPRoute"}, {"kind": "TLSRoute"}]}}
    mixed = bound(gateway(tls("p", 443, **kinds)))
    result = listener(mixed, "p")
    assert result.supported_kinds == ("TLSRoute",)
    resolved = next(c for c in result.conditions if c.type == "ResolvedRefs")
    assert (resolved.status, resolved.reason) == ("False", "InvalidRouteKinds")


def test_gateways_of_other_classes_are_left_alone() -> None:
    binding = bound(
        gateway(tcp("tcp", 9300), cls="someone-else"), service("v1"), route("r", [backend("v1")])
    )
    assert binding == Binding(classes=binding.classes)


# ---------------------------------------------------------------- certificateRefs


def pem_pair() -> tuple[str, str]:
    """A real self-signed certificate and key (the binding parses them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls.example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


CERT_PEM, KEY_PEM = pem_pair()


def tls_secret(
    name: str, namespace: str = INFRA, kind: str = "kubernetes.io/tls", cert: str = CERT_PEM
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(name, namespace),
        "type": kind,
        "stringData": {"tls.crt": cert, "tls.key": KEY_PEM},
    }


def terminate(*refs: Obj) -> Obj:
    return {
        "name": "t",
        "protocol": "TLS",
        "port": 8443,
        "hostname": "tls.example.com",
        "tls": {"mode": "Terminate", "certificateRefs": list(refs)},
    }


def secret_grant(namespace: str, name: str | None = None, from_ns: str = INFRA) -> Obj:
    to: Obj = {"group": "", "kind": "Secret", **({"name": name} if name else {})}
    return {
        "apiVersion": f"{G}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": meta("allow", namespace),
        "spec": {"from": [{"group": G, "kind": "Gateway", "namespace": from_ns}], "to": [to]},
    }


def listener_conditions(binding: Binding) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in listener(binding, "t").conditions}


def credential(binding: Binding) -> str:
    (istio,) = binding.istio_gateways
    (server,) = istio.spec.servers
    assert server.tls is not None
    return server.tls.credential_name or ""


def test_a_usable_same_namespace_secret_resolves_and_serves() -> None:
    binding = bound(gateway(terminate({"name": "cert"})), tls_secret("cert"))
    got = listener_conditions(binding)
    assert got["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert got["Programmed"] == ("True", "Programmed")
    assert credential(binding) == "cert"


def test_certificate_refs_that_cannot_serve_are_invalid_certificate_refs() -> None:
    cases = {
        "missing": [],
        "wrong type": [tls_secret("cert", kind="Opaque")],
        "malformed": [tls_secret("cert", cert=CERT)],
    }
    for what, secrets in cases.items():
        binding = bound(gateway(terminate({"name": "cert"})), *secrets)
        got = listener_conditions(binding)
        assert got["ResolvedRefs"] == ("False", "InvalidCertificateRef"), what
        assert got["Programmed"] == ("False", "Invalid"), what
        assert got["Accepted"] == ("True", "Accepted"), what
        assert credential(binding) == "", what
    for ref in ({"name": "cert", "kind": "WrongKind"}, {"name": "cert", "group": "wrong.io"}):
        binding = bound(gateway(terminate(ref)), tls_secret("cert"))
        assert listener_conditions(binding)["ResolvedRefs"] == ("False", "InvalidCertificateRef")


def test_a_cross_namespace_secret_needs_a_grant_from_gateways_and_is_then_served() -> None:
    ref = {"name": "cert", "namespace": "certs"}
    objects = [gateway(terminate(ref)), tls_secret("cert", "certs")]
    refused = bound(*objects)
    assert listener_conditions(refused)["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert credential(refused) == ""
    for wrong in (secret_grant("certs", "other"), secret_grant("certs", from_ns="elsewhere")):
        assert listener_conditions(bound(*objects, wrong))["ResolvedRefs"][1] == "RefNotPermitted"
    for grant in (secret_grant("certs"), secret_grant("certs", "cert")):
        binding = bound(*objects, grant)
        assert listener_conditions(binding)["ResolvedRefs"] == ("True", "ResolvedRefs")
        assert credential(binding) == "kubernetes-gateway://certs/cert"
    node = ProxyNode(
        INFRA,
        "gw-abc",
        tuple(sorted(workload_labels(refused.gateways[0].gateway).items())),
        "127.0.0.9",
    )
    lb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("gw-tcpmesh"),
        "spec": {"type": "LoadBalancer", "selector": dict(node.labels), "ports": [{"port": 8443}]},
    }
    tls_route_obj = route("r", [backend("v1")], kind="TLSRoute", hostnames=["tls.example.com"])
    served = [*objects, lb, service("v1"), tls_route_obj, *builtin_gateway_classes()]
    (chain,) = (
        build_snapshot(MeshResources.from_objects([*served, secret_grant("certs")]), node)
        .listeners[0]
        .routes
    )
    assert chain.tls is not None and chain.tls.secret == "certs/cert"
    # The builder checks the grant too: without it the credential serves nothing.
    assert build_snapshot(MeshResources.from_objects(served), node).listeners == ()


def test_terminate_and_passthrough_share_a_port_by_sni() -> None:
    passthrough = tls("p", 8443, hostname="abc.example.com")
    binding = bound(gateway(terminate({"name": "cert"}), passthrough), tls_secret("cert"))
    for name in ("t", "p"):
        accepted = next(c for c in listener(binding, name).conditions if c.type == "Accepted")
        assert (accepted.status, accepted.reason) == ("True", "Accepted")
    (istio,) = binding.istio_gateways
    assert [s.tls.mode for s in istio.spec.servers if s.tls] == ["SIMPLE", "PASSTHROUGH"]


def test_the_node_proxy_serves_a_gateway_api_gateways_load_balancer_address() -> None:
    """Its pods run on their pod IPs, unlike the host-network ingress gateway's."""
    gw = gateway(tcp("tcp", 9300))
    (result,) = bound(gw).gateways
    labels = workload_labels(result.gateway)
    lb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("gw-tcpmesh"),
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "127.240.9.9",
            "loadBalancerIP": "127.0.32.2",
            "selector": labels,
            "ports": [{"name": "tcp-9300", "port": 9300}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.32.2"}]}},
    }
    node = ProxyNode(
        NODE_PROXY_NAMESPACE,
        "tcpmesh-node-proxy-abc",
        tuple(sorted(NODE_PROXY_LABELS.items())),
        "127.0.32.1",
    )
    snapshot = build_snapshot(
        MeshResources.from_objects([gw, lb, *builtin_gateway_classes()]), node
    )
    (frontend,) = [li for li in snapshot.listeners if li.address == "127.0.32.2"]
    assert frontend.port == 9300
    (route_,) = frontend.routes
    assert [d.cluster_name for d in route_.destinations] == [
        f"outbound|9300||gw-tcpmesh.{INFRA}.svc.cluster.local"
    ]


def gateway_class(name: str, controller: str, **spec: Any) -> Obj:
    return {
        "apiVersion": f"{G}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name, "generation": 3},
        "spec": {"controllerName": controller, **spec},
    }


def namespace(name: str, **labels: str) -> Obj:
    all_labels = {"kubernetes.io/metadata.name": name, **labels}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": all_labels},
    }


def test_a_gateway_is_ours_only_through_a_stored_class_of_ours() -> None:
    world = (service("v1"), route("r", [backend("v1")]))
    # The built-in names mean nothing without their GatewayClass objects.
    assert bound(gateway(tcp("tcp", 9300)), *world, classes=False).gateways == ()
    foreign = gateway_class("theirs", "example.net/gateway-controller")
    binding = bound(gateway(tcp("tcp", 9300), cls="theirs"), foreign, *world, classes=False)
    assert binding == Binding()  # no status for their class, their Gateway or its routes
    mine = gateway_class("mine", "tcpmesh.io/gateway-controller")
    binding = bound(gateway(tcp("tcp", 9300), cls="mine"), mine, *world, classes=False)
    [result] = binding.gateways
    assert result.controller == "tcpmesh.io/gateway-controller"
    assert conditions(binding, "r")["Accepted"] == ("True", "Accepted")
    [cls] = binding.classes
    assert {c.type: (c.status, c.reason) for c in cls.conditions} == {
        "Accepted": ("True", "Accepted"),
        "SupportedVersion": ("True", "SupportedVersion"),
    }


def test_a_class_with_parameters_is_not_accepted_and_programs_nothing() -> None:
    ref = {"group": "", "kind": "ConfigMap", "name": "settings", "namespace": INFRA}
    with_params = gateway_class("tuned", "istio.io/gateway-controller", parametersRef=ref)
    binding = bound(gateway(tcp("tcp", 9300), cls="tuned"), with_params, classes=False)
    assert binding.gateways == ()
    [cls] = binding.classes
    accepted = next(c for c in cls.conditions if c.type == "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "InvalidParameters")


def test_allowed_routes_selector_matches_the_route_namespaces_labels() -> None:
    def labelled_route(name: str, ns: str) -> Obj:
        r = route(name, [backend("v1")], parent={"name": "gw", "namespace": INFRA})
        r["metadata"]["namespace"] = ns
        r["spec"]["rules"][0]["backendRefs"][0]["namespace"] = INFRA
        return r

    selector = {
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod"]},
        ]
    }
    listener = tcp(
        "tcp", 9300, allowedRoutes={"namespaces": {"from": "Selector", "selector": selector}}
    )
    grant = {
        "apiVersion": f"{G}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": meta("all"),
        "spec": {
            "from": [{"group": G, "kind": "TCPRoute", "namespace": ns} for ns in ("a", "b")],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    binding = bound(
        gateway(listener),
        service("v1"),
        grant,
        namespace("a", env="prod"),
        namespace("b", env="dev"),
        labelled_route("in-prod", "a"),
        labelled_route("in-dev", "b"),
    )
    assert conditions(binding, "in-prod")["Accepted"] == ("True", "Accepted")
    assert conditions(binding, "in-dev")["Accepted"] == ("False", "NotAllowedByListeners")
    [result] = binding.gateways
    assert [li.attached_routes for li in result.listeners] == [1]
    # A namespace with no Namespace object has the name label the API server would write.
    by_name = {"matchLabels": {"kubernetes.io/metadata.name": "c"}}
    listener["allowedRoutes"]["namespaces"]["selector"] = by_name
    binding = bound(gateway(listener), service("v1"), labelled_route("in-c", "c"))
    assert conditions(binding, "in-c")["Accepted"] == ("True", "Accepted")
