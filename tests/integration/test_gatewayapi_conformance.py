"""The Gateway API conformance cases TCPRoute*, TLSRoute* (status) and GatewayClass* against
tcpmesh, on both data planes, and the base manifests' Selector Gateway with a TCP listener.

Each test is named for its upstream ShortName (kubernetes-sigs/gateway-api
``conformance/tests/tcproute-*.go``) and makes that case's assertions: the route and
Gateway conditions with the spec's reasons, listener statuses, and traffic checked with
the echo-basic protocol (welcome line, PING/PONG, IS_TLS, the TEST payload naming the
namespace and the backend's pods). Manifests: ``gatewayapi_conformance.CASES``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.apiserver.client import ApiClient, ApiError
from tests.integration.gatewayapi_conformance import (
    APP,
    CASES,
    FOREIGN_CLASS,
    INFRA,
    INTERSECTIONS,
    NEWER_ROUTE,
    SECRET_GRANT,
    SELECTOR_GATEWAY,
    SIGNED_SECRETS,
    TLS_TRAFFIC_CASES,
    USER_CLASS,
    WEB,
    G,
    certificate_ref_cases,
    class_cases,
    namespace,
    tls_base,
    tls_cases,
)
from tests.integration.harness import MeshHarness
from tests.integration.tls_helpers import (
    Certificate,
    make_certificate,
    make_signed_certificate,
)

pytestmark = pytest.mark.integration

ADDRESS = "127.0.32.1"
CONTROLLER = "tcpmesh.io/gateway-controller"
GATEWAY = f"Gateway.{G}"
GATEWAY_CLASS = f"GatewayClass.{G}"
TCP_ROUTE = f"TCPRoute.{G}"
TLS_ROUTE = f"TLSRoute.{G}"
WELCOME = "Gateway API Test TCP Server\n"
Obj = dict[str, Any]


def eventually(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Poll until ``check`` returns something truthy (as the suite's PollUntilContextTimeout)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (ApiError, OSError, ValueError, AssertionError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Suite:
    def __init__(self, harness: MeshHarness, manifests: Path) -> None:
        self.harness = harness
        self.manifests = manifests
        self.client = ApiClient.from_state_dir(harness.state_dir)
        self.ca_pem = ""
        self.web_cert: Certificate | None = None
        self.signed: dict[str, Certificate] = {}
        # Cases applied by their own test, and deleted after it (Suite.case).
        self.own_cases: dict[str, str] = {}

    def own_case(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.case(name, self.own_cases[name])

    def apply(self, name: str, text: str) -> None:
        path = self.manifests / f"{name}.yaml"
        path.write_text(text)
        self.harness.apply(path)

    @contextlib.contextmanager
    def case(self, name: str, text: str) -> Iterator[None]:
        """The suite's MustApplyWithCleanup: the case's manifests exist only while it runs
        (fewer gateway pods at once; and upstream cases reuse names, such as the route
        gateway-conformance-infra-test of TLSRouteSimpleSameNamespace)."""
        self.apply(name, text)
        try:
            yield
        finally:
            self.harness.tcpmesh("delete", "-f", str(self.manifests / f"{name}.yaml"), check=False)

    def get(self, key: str, name: str, namespace: str = INFRA) -> Obj:
        return self.client.get(key, namespace, name)

    def route_condition(
        self,
        route: str,
        gateway: str,
        type_: str,
        status: str,
        reason: str,
        key: str = TCP_ROUTE,
        namespace: str = INFRA,
    ) -> None:
        """TCPRouteMustHaveCondition (TLSRouteMustHaveCondition with ``key=TLS_ROUTE``)."""

        def found() -> bool:
            parents = (self.get(key, route, namespace).get("status") or {}).get("parents") or []
            return any(
                p["parentRef"]["name"] == gateway
                and p["controllerName"] == CONTROLLER
                and any(
                    (c["type"], c["status"], c["reason"]) == (type_, status, reason)
                    for c in p["conditions"]
                )
                for p in parents
            )

        eventually(f"{route} {type_}={status} {reason}", found)

    def address(self, gateway: str, listener: str | None = None) -> tuple[str, int]:
        """WaitForGatewayAddress: the status address and the named listener's port."""

        def ready() -> tuple[str, int] | None:
            gw = self.get(GATEWAY, gateway)
            listeners = gw["spec"]["listeners"]
            chosen = next((li for li in listeners if li["name"] == listener), listeners[0])
            addresses = [
                a for a in (gw.get("status") or {}).get("addresses") or [] if a.get("type")
            ]
            return (addresses[0]["value"], chosen["port"]) if addresses else None

        result: tuple[str, int] = eventually(f"an address of {gateway}", ready)
        return result

    def accepted(self, gateway: str, listener: str | None, *routes: str) -> tuple[str, int]:
        """GatewayAndTCPRoutesMustBeAccepted."""
        address = self.address(gateway, listener)
        for route in routes:
            self.route_condition(route, gateway, "Accepted", "True", "Accepted")
        return address

    def listeners(self, gateway: str) -> list[Obj]:
        return list((self.get(GATEWAY, gateway).get("status") or {}).get("listeners") or [])


def echo_test(address: tuple[str, int]) -> Obj:
    """One connection through the echo-basic protocol; the TEST payload."""
    with socket.create_connection(address, timeout=5) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().decode() == WELCOME
        stream.write(b"PING\n")
        stream.flush()
        assert stream.readline() == b"PONG\n"
        stream.write(b"IS_TLS\n")
        stream.flush()
        assert stream.readline() == b"false\n"
        stream.write(b"TEST\n")
        stream.flush()
        payload: Obj = json.loads(stream.readline())
        return payload


def send_once(address: tuple[str, int]) -> str:
    """EchoSendOnce: welcome, TEST, the pod's name."""
    with socket.create_connection(address, timeout=5) as sock:
        stream = sock.makefile("rwb")
        if stream.readline().decode() != WELCOME:
            raise OSError("no welcome")
        stream.write(b"TEST\n")
        stream.flush()
        return str(json.loads(stream.readline())["pod"])


def expect_backend(address: tuple[str, int], backend: str, namespace: str = INFRA) -> None:
    """MakeTCPRequestAndExpectEventuallyValidResponse."""

    def valid() -> bool:
        payload = echo_test(address)
        return payload["namespace"] == namespace and payload["pod"].startswith(f"{backend}-")

    eventually(f"{backend} answering at {address}", valid)


@pytest.fixture(scope="module", params=["python", "envoy"])
def suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Suite]:
    harness = MeshHarness(
        tmp_path_factory.mktemp("state"), ADDRESS, workers=1, dataplane=request.param
    )
    try:
        harness.up()
        suite = Suite(harness, tmp_path_factory.mktemp("manifests"))
        certs = tmp_path_factory.mktemp("certs")
        cert = make_certificate(certs, "base", "terminate.example.com")
        ca = make_certificate(certs, "ca", "gateway-api-conformance-ca")
        signed = {
            name: make_signed_certificate(certs, name, ca, *hosts)
            for name, hosts in SIGNED_SECRETS.items()
        }
        suite.ca_pem = ca.cert_pem
        suite.signed = signed
        suite.web_cert = make_signed_certificate(certs, "certificate", ca, "tls.example.com")
        base = tls_base(ca.cert_pem, {n: (c.cert_pem, c.key_pem) for n, c in signed.items()})
        cases = {
            "base": base,
            **class_cases(CONTROLLER),
            **CASES,
            **tls_cases(cert.cert_pem, cert.key_pem),
        }
        suite.own_cases = {
            **TLS_TRAFFIC_CASES,
            **certificate_ref_cases(suite.web_cert.cert_pem, suite.web_cert.key_pem),
        }
        for name, text in cases.items():
            suite.apply(name, text)
        yield suite
    finally:
        harness.down()


def test_TCPRouteInvalidBackendRefNonexistent(suite: Suite) -> None:
    suite.route_condition(
        "tcp-route-invalid-backend-ref-nonexistent",
        "tcp-gateway-invalid-backend",
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    )


def test_TCPRouteInvalidCrossNamespaceBackendRef(suite: Suite) -> None:
    route, gateway = (
        "tcp-invalid-cross-namespace-backend-ref",
        "tcp-invalid-cross-namespace-backend-ref-gateway",
    )
    suite.accepted(gateway, "tcp", route)
    suite.route_condition(route, gateway, "ResolvedRefs", "False", "RefNotPermitted")


def test_TCPRouteInvalidNonTCPListener(suite: Suite) -> None:
    gateway = "tcp-mixed-protocol-gateway"
    suite.route_condition("tcp-route", gateway, "Accepted", "False", "NotAllowedByListeners")
    eventually(
        "0 routes attached",
        lambda: (
            suite.listeners(gateway)
            and all(li["attachedRoutes"] == 0 for li in suite.listeners(gateway))
        ),
    )


def test_TCPRouteMultipleRoutesAttachment(suite: Suite) -> None:
    gateway = "tcp-multi-route-attach-gateway"
    address = suite.accepted(gateway, "tcp", "tcproute-attach-older")
    time.sleep(1)  # creation timestamps have second precision
    suite.apply("newer", NEWER_ROUTE)
    for route in ("tcproute-attach-older", "tcproute-attach-newer"):
        suite.route_condition(route, gateway, "Accepted", "True", "Accepted")

    def two_attached() -> bool:
        (listener,) = suite.listeners(gateway)
        accepted = [c for c in listener["conditions"] if c["type"] == "Accepted"]
        return (
            listener["name"] == "tcp"
            and listener["supportedKinds"] == [{"group": G, "kind": "TCPRoute"}]
            and [(c["status"], c["reason"]) for c in accepted] == [("True", "Accepted")]
            and listener["attachedRoutes"] == 2
        )

    eventually("the listener with 2 attached routes", two_attached)
    expect_backend(address, "tcp-attach-backend-1")
    for _ in range(100):
        pod = send_once(address)
        assert pod.startswith("tcp-attach-backend-1-"), pod


def test_TCPRouteParentRefAttachAll(suite: Suite) -> None:
    gateway = "tcp-attach-all-gateway"
    suite.accepted(gateway, None, "tcp-route-attach-all")
    parent = suite.get(TCP_ROUTE, "tcp-route-attach-all")["status"]["parents"][0]["parentRef"]
    assert parent == {"group": G, "kind": "Gateway", "name": gateway, "namespace": INFRA}
    for listener in ("one", "two", "three", "four"):
        expect_backend(suite.address(gateway, listener), "tcp-echo-attach-all")


def test_TCPRouteParentRefPortAndSectionName(suite: Suite) -> None:
    gateway = "tcp-multi-listener-gateway"
    for route, listener, backend in (
        ("tcp-route-by-port", "one", "tcp-echo-one"),
        ("tcp-route-by-section", "two", "tcp-echo-two"),
        ("tcp-route-by-section-and-port", "three", "tcp-echo-three"),
    ):
        suite.route_condition(route, gateway, "Accepted", "True", "Accepted")
        expect_backend(suite.address(gateway, listener), backend)


def test_TCPRouteReferenceGrant(suite: Suite) -> None:
    route, gateway = "tcp-reference-grant", "tcp-reference-grant-gateway"
    address = suite.accepted(gateway, "tcp", route)
    expect_backend(address, "tcp-reference-grant-backend", WEB)
    suite.client.delete(f"ReferenceGrant.{G}", WEB, "tcp-reference-grant")
    suite.route_condition(route, gateway, "ResolvedRefs", "False", "RefNotPermitted")


def test_TCPRouteWeightedRouting(suite: Suite) -> None:
    """weight.TestWeightedDistribution: 500 connections, each share within 5 points,
    the weight-0 backend none (the suite retries up to 10 times; one try here)."""
    address = suite.accepted("tcp-weighted-gateway", "tcp", "tcp-weighted-route")
    eventually("a TEST answer", lambda: send_once(address))
    seen = Counter("-".join(send_once(address).split("-")[:-2]) for _ in range(500))
    assert set(seen) == {"tcp-backend-v1", "tcp-backend-v2"}, seen
    for backend, share in (("tcp-backend-v1", 0.7), ("tcp-backend-v2", 0.3)):
        assert abs(seen[backend] / 500 - share) <= 0.05, seen


# ---------------------------------------------------------------- TLSRoute* (statuses)


def no_accepted_parents(suite: Suite, route: str) -> bool:
    """TLSRouteMustHaveNoAcceptedParents."""
    parents = (suite.get(TLS_ROUTE, route).get("status") or {}).get("parents") or []
    return bool(parents) and not any(
        c["type"] == "Accepted" and c["status"] == "True" for p in parents for c in p["conditions"]
    )


def zero_routes(suite: Suite, gateway: str) -> bool:
    """GatewayMustHaveZeroRoutes."""
    listeners = suite.listeners(gateway)
    return bool(listeners) and all(li["attachedRoutes"] == 0 for li in listeners)


def listener_is(suite: Suite, gateway: str, expected: list[Obj]) -> Callable[[], bool]:
    """GatewayStatusMustHaveListeners: name, supportedKinds, the expected conditions, routes."""

    def check() -> bool:
        actual = {li["name"]: li for li in suite.listeners(gateway)}
        for want in expected:
            got = actual.get(want["name"])
            if got is None or got["attachedRoutes"] != want["attachedRoutes"]:
                return False
            if "supportedKinds" in want and got["supportedKinds"] != want["supportedKinds"]:
                return False
            have = {(c["type"], c["status"], c["reason"]) for c in got["conditions"]}
            if not set(want["conditions"]) <= have:
                return False
        return True

    return check


def test_TLSRouteInvalidBackendRefNonexistent(suite: Suite) -> None:
    gateway = "gateway-tlsroute-invalid-backend-ref-nonexistent"
    suite.accepted(gateway, None)
    suite.route_condition(
        "invalid-backend-ref-nonexistent", gateway, "Accepted", "True", "Accepted", TLS_ROUTE
    )
    suite.route_condition(
        "invalid-backend-ref-nonexistent",
        gateway,
        "ResolvedRefs",
        "False",
        "BackendNotFound",
        TLS_ROUTE,
    )


def test_TLSRouteInvalidBackendRefUnknownKind(suite: Suite) -> None:
    gateway = "gateway-tlsroute-invalid-backend-ref-unknown-kind"
    suite.accepted(gateway, None)
    suite.route_condition(
        "invalid-backend-ref-unknown-kind", gateway, "Accepted", "True", "Accepted", TLS_ROUTE
    )
    suite.route_condition(
        "invalid-backend-ref-unknown-kind",
        gateway,
        "ResolvedRefs",
        "False",
        "InvalidKind",
        TLS_ROUTE,
    )


def test_TLSRouteInvalidNoMatchingListenerHostname(suite: Suite) -> None:
    for route, gateway in (
        ("tlsroute-hostname-mismatch-1", "gateway-tls-exact-hostname"),
        ("tlsroute-hostname-mismatch-2", "gateway-tls-wildcard-hostname"),
    ):
        suite.route_condition(
            route, gateway, "Accepted", "False", "NoMatchingListenerHostname", TLS_ROUTE
        )
        eventually(
            f"{route} without accepted parents", lambda r=route: no_accepted_parents(suite, r)
        )
        eventually(f"{gateway} with 0 routes", lambda gw=gateway: zero_routes(suite, gw))


def test_TLSRouteInvalidNoMatchingListener(suite: Suite) -> None:
    for route, gateway, reason in (
        (
            "tlsroute-not-allowed-protocol-http",
            "gateway-tlsroute-http-only",
            "NotAllowedByListeners",
        ),
        (
            "tlsroute-not-allowed-protocol-https",
            "gateway-tlsroute-https-only",
            "NotAllowedByListeners",
        ),
        (
            "tlsroute-no-matching-section-name",
            "gateway-tlsroute-tls-passthrough-only",
            "NoMatchingParent",
        ),
    ):
        suite.route_condition(route, gateway, "Accepted", "False", reason, TLS_ROUTE)
        eventually(
            f"{route} without accepted parents", lambda r=route: no_accepted_parents(suite, r)
        )
    for gateway in ("gateway-tlsroute-http-only", "gateway-tlsroute-https-only"):
        eventually(f"{gateway} with 0 routes", lambda gw=gateway: zero_routes(suite, gw))


def test_TLSRouteInvalidReferenceGrant(suite: Suite) -> None:
    gateway, route = "gateway-tlsroute-referencegrant", "gateway-conformance-infra-test"
    suite.accepted(gateway, None)
    suite.route_condition(route, gateway, "Accepted", "True", "Accepted", TLS_ROUTE)
    suite.route_condition(route, gateway, "ResolvedRefs", "False", "RefNotPermitted", TLS_ROUTE)


def test_TLSRouteListenerPassthroughSupportedKinds(suite: Suite) -> None:
    expected = [
        {
            "name": "tls-passthrough",
            "supportedKinds": [{"group": G, "kind": "TLSRoute"}],
            "conditions": [("ResolvedRefs", "False", "InvalidRouteKinds")],
            "attachedRoutes": 0,
        }
    ]
    eventually(
        "TLSRoute supported, TCPRoute refused",
        listener_is(suite, "gateway-tlsroute-passthrough-supported-kind", expected),
    )


def test_TLSRouteListenerTerminateSupportedKinds(suite: Suite) -> None:
    expected = [
        {
            "name": "tls-terminate",
            "supportedKinds": [{"group": G, "kind": "TLSRoute"}],
            "conditions": [("Accepted", "True", "Accepted")],
            "attachedRoutes": 0,
        }
    ]
    eventually(
        "the terminating listener accepted",
        listener_is(suite, "gateway-tlsroute-terminate-supported", expected),
    )


# ---------------------------------------------------------------- TLSRoute* (traffic)


def tls_echo_test(
    address: tuple[str, int], ca_pem: str, server_name: str, backend_is_tls: bool
) -> Obj:
    """One TLS connection through the echo-basic protocol (tcp.WaitForValidTCPResponse)."""
    context = ssl.create_default_context(cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(address, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as sock,
    ):
        stream = sock.makefile("rwb")
        assert stream.readline().decode() == WELCOME
        for line, reply in (
            (b"PING\n", b"PONG\n"),
            (b"IS_TLS\n", b"%s\n" % str(backend_is_tls).lower().encode()),
        ):
            stream.write(line)
            stream.flush()
            assert stream.readline() == reply
        stream.write(b"TEST\n")
        stream.flush()
        payload: Obj = json.loads(stream.readline())
        return payload


def expect_tls_backend(
    suite: Suite,
    address: tuple[str, int],
    server_name: str,
    *,
    backend_is_tls: bool,
    hostname: str,
    backend: str = "tcp-backend",
) -> None:
    """MakeTCPRequestAndExpectEventuallyValidResponse with TLS: the CA's trust, the SNI,
    IS_TLS as expected, the namespace, the pod's prefix and (when given) the SNI the
    backend saw."""

    def valid() -> bool:
        payload = tls_echo_test(address, suite.ca_pem, server_name, backend_is_tls)
        assert payload["namespace"] == INFRA, payload
        assert payload["pod"].startswith(f"{backend}-"), payload
        if hostname:
            assert payload["tls"]["serverName"] == hostname, payload
        else:
            assert "tls" not in payload, payload
        return True

    eventually(f"{backend} answering {server_name} at {address}", valid)


def tls_accepted(suite: Suite, gateway: str, listener: str, *routes: str) -> tuple[str, int]:
    """GatewayAndTLSRoutesMustBeAccepted."""
    address = suite.address(gateway, listener)
    for route in routes:
        suite.route_condition(route, gateway, "Accepted", "True", "Accepted", TLS_ROUTE)
    return address


def test_TLSRouteSimpleSameNamespace(suite: Suite) -> None:
    with suite.own_case("TLSRouteSimpleSameNamespace"):
        address = tls_accepted(suite, "gateway-tlsroute", "https", "gateway-conformance-infra-test")
        hostnames = suite.get(TLS_ROUTE, "gateway-conformance-infra-test")["spec"]["hostnames"]
        assert hostnames == ["abc.example.com"]
        expect_tls_backend(suite, address, hostnames[0], backend_is_tls=True, hostname=hostnames[0])
    # Its route shares its name with TLSRouteInvalidReferenceGrant's, which comes back.
    suite.harness.apply(suite.manifests / "TLSRouteInvalidReferenceGrant.yaml")


def test_TLSRouteTerminateSimpleSameNamespace(suite: Suite) -> None:
    with suite.own_case("TLSRouteTerminateSimpleSameNamespace"):
        gateway, route = "gateway-tlsroute-terminate", "tlsroute-terminated-test"
        address = tls_accepted(suite, gateway, "tlsterminate", route)
        (hostname,) = suite.get(TLS_ROUTE, route)["spec"]["hostnames"]
        expect_tls_backend(suite, address, hostname, backend_is_tls=False, hostname="")


def test_TLSRouteMixedTerminationSameNamespace(suite: Suite) -> None:
    """Claims SupportTLSRouteModeMixed (so TLSRouteListenerMixedTerminationNotSupported,
    which the suite skips for such implementations, is not run)."""
    with suite.own_case("TLSRouteMixedTerminationSameNamespace"):
        gateway = "gateway-tlsroute-mixed-termination"
        passthrough, terminate = (
            "gateway-conformance-mixed-passthroughroute",
            "gateway-conformance-mixed-terminateroute",
        )
        address = tls_accepted(suite, gateway, "tls-passthrough", passthrough)
        accepted = [("Accepted", "True", "Accepted")]
        kinds = [{"group": G, "kind": "TLSRoute"}]
        expected = [
            {"name": name, "supportedKinds": kinds, "conditions": accepted, "attachedRoutes": 1}
            for name in ("tls-terminate", "tls-passthrough")
        ]
        eventually("both listeners accepted", listener_is(suite, gateway, expected))
        tls_accepted(suite, gateway, "tls-terminate", terminate)
        expect_tls_backend(suite, address, "tls.example.com", backend_is_tls=False, hostname="")
        expect_tls_backend(
            suite, address, "abc.example.com", backend_is_tls=True, hostname="abc.example.com"
        )


# ---------------------------------------------------------------- certificateRefs


def listener_resolved(
    suite: Suite, gateway: str, reason: str, status: str = "False", attached: int = 0
) -> None:
    """GatewayStatusMustHaveListeners: the ``https`` listener's ResolvedRefs."""
    ok = status == "True"
    programmed = ("Programmed", "True", "Programmed") if ok else ("Programmed", "False", "Invalid")
    expected: list[Obj] = [
        {
            "name": "https",
            "conditions": [("ResolvedRefs", status, reason), programmed],
            "attachedRoutes": attached,
        }
    ]
    eventually(
        f"{gateway} https ResolvedRefs={status} {reason}", listener_is(suite, gateway, expected)
    )


def test_GatewayInvalidTLSConfiguration(suite: Suite) -> None:
    with suite.own_case("GatewayInvalidTLSConfiguration"):
        for gateway in (
            "gateway-certificate-nonexistent-secret",
            "gateway-certificate-unsupported-group",
            "gateway-certificate-unsupported-kind",
            "gateway-certificate-malformed-secret",
        ):
            listener_resolved(suite, gateway, "InvalidCertificateRef")


def test_GatewaySecretMissingReferenceGrant(suite: Suite) -> None:
    with suite.own_case("GatewaySecretMissingReferenceGrant"):
        listener_resolved(suite, "gateway-secret-missing-reference-grant", "RefNotPermitted")


def test_GatewaySecretReferenceGrantSpecific(suite: Suite) -> None:
    """The grant is applied here and removed after (the suite's apply-with-cleanup), so
    GatewaySecretMissingReferenceGrant sees no grant whatever the order."""
    with suite.own_case("GatewaySecretReferenceGrantSpecific"):
        gateway = "gateway-secret-reference-grant-specific"
        assert suite.web_cert is not None
        suite.apply("secret-grant", SECRET_GRANT)
        try:
            listener_resolved(suite, gateway, "ResolvedRefs", status="True", attached=1)
            address = tls_accepted(suite, gateway, "https", gateway)
            expect_tls_backend(suite, address, "tls.example.com", backend_is_tls=False, hostname="")
            context = ssl.create_default_context(cadata=suite.ca_pem)
            with (
                socket.create_connection(address, timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="tls.example.com") as sock,
            ):
                assert sock.getpeercert(binary_form=True) == suite.web_cert.der
        finally:
            suite.client.delete(f"ReferenceGrant.{G}", WEB, "reference-grant-specific")
        listener_resolved(suite, gateway, "RefNotPermitted", attached=1)


# ---------------------------------------------------------------- TLSRoute hostnames


def https_get(address: tuple[str, int], server_pem: str, host: str) -> tuple[int, Obj]:
    """One HTTPS request with SNI and Host ``host``, trusting the server's own certificate
    (as the suite's RoundTripper is given serverCertPem)."""
    context = ssl.create_default_context(cadata=server_pem)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    with (
        socket.create_connection(address, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def expect_https_backend(
    suite: Suite, address: tuple[str, int], host: str, backend: str, times: int = 3
) -> None:
    """MakeTLSRequestAndExpectEventuallyConsistentResponse: ``times`` answers in a row from
    ``backend`` echoing the request (the suite's default threshold is 3)."""

    def consistent() -> bool:
        for _ in range(times):
            status, echo = https_get(address, suite.signed["tls-checks-certificate"].cert_pem, host)
            assert status == 200, (status, echo)
            assert (echo["host"], echo["path"], echo["method"]) == (host, "/", "GET"), echo
            assert echo["namespace"] == INFRA and echo["pod"].startswith(f"{backend}-"), echo
        return True

    eventually(f"{backend} answering https://{host}/ at {address}", consistent)


def expect_rejected(address: tuple[str, int], host: str) -> None:
    """MakeTLSConnectionAndExpectEventuallyConnectionRejection: the handshake fails."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def rejected() -> bool:
        try:
            with (
                socket.create_connection(address, timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return False
        except (ssl.SSLError, ConnectionError):
            return True

    eventually(f"{host} rejected at {address}", rejected)


def test_TLSRouteHostnameIntersection(suite: Suite) -> None:
    with suite.own_case("TLSRouteHostnameIntersection"):
        for gateway, listener, _, routes in INTERSECTIONS:
            address = tls_accepted(suite, gateway, listener, *(r for r, _, _ in routes))
            for route, _, _ in routes:
                suite.route_condition(
                    route, gateway, "ResolvedRefs", "True", "ResolvedRefs", TLS_ROUTE
                )
            expect_https_backend(suite, address, "abc.example.com", "tls-backend")
            if len(routes) > 1:
                expect_https_backend(suite, address, "other.example.com", "tls-backend-2")
            unknown = "non.matching.org" if gateway.endswith("x-4") else "non.matching.com"
            expect_rejected(address, unknown)


# ---------------------------------------------------------------- GatewayClass, Namespaces


def class_conditions(suite: Suite, name: str) -> dict[str, Obj]:
    gwc = suite.client.get(GATEWAY_CLASS, "", name)
    return {c["type"]: c for c in (gwc.get("status") or {}).get("conditions") or []}


def class_accepted(suite: Suite, name: str) -> Obj:
    """GWCMustBeAccepted: Accepted=True with every condition at the latest generation."""

    def latest() -> Obj | None:
        gwc = suite.client.get(GATEWAY_CLASS, "", name)
        conditions = (gwc.get("status") or {}).get("conditions") or []
        accepted = any((c["type"], c["status"]) == ("Accepted", "True") for c in conditions)
        generation = gwc["metadata"]["generation"]
        current = all(c.get("observedGeneration") == generation for c in conditions)
        return gwc if accepted and current else None

    found: Obj = eventually(f"GatewayClass {name} accepted", latest)
    return found


def test_GatewayClassObservedGenerationBump(suite: Suite) -> None:
    name = "gatewayclass-observed-generation-bump"
    existing = class_accepted(suite, name)
    existing["spec"]["description"] = "new"
    suite.client.replace(existing)
    updated = class_accepted(suite, name)
    assert updated["metadata"]["generation"] != existing["metadata"]["generation"]
    before = {c["type"]: c["observedGeneration"] for c in existing["status"]["conditions"]}
    for condition in updated["status"]["conditions"]:
        assert condition["observedGeneration"] != before.get(condition["type"]), condition


def test_GatewayClassAdmissionValidation(suite: Suite) -> None:
    """controllerName is immutable. Upstream asserts 400 from the validating webhook the
    CRDs once had; with the CRDs' CEL rule an API server answers 422 Invalid, as here."""
    gwc = suite.client.get(GATEWAY_CLASS, "", "gatewayclass-observed-generation-bump")
    gwc["spec"]["controllerName"] = f"{gwc['spec']['controllerName']}-modified"
    with pytest.raises(ApiError) as refused:
        suite.client.replace(gwc)
    assert (refused.value.status, refused.value.reason) == (422, "Invalid")
    assert "spec.controllerName" in refused.value.message
    assert "Value is immutable" in refused.value.message


def test_GatewayClassSupportedVersionCondition(suite: Suite) -> None:
    """The built-in class, as the suite's class: Accepted and SupportedVersion True (the CRD
    bundle annotations the upstream case edits do not exist: tcpmesh serves the kinds)."""
    for name in ("tcpmesh", "istio"):
        class_accepted(suite, name)
        supported = class_conditions(suite, name)["SupportedVersion"]
        assert (supported["status"], supported["reason"]) == ("True", "SupportedVersion")


def test_allowed_routes_from_selector_matches_namespace_labels(suite: Suite) -> None:
    """The base manifests' backend-namespaces Gateway, with a TCP listener: a route from the
    namespace labelled gateway-conformance: backend attaches and carries traffic; one from
    web-backend is NotAllowedByListeners until its Namespace gets the label."""
    address = suite.accepted(SELECTOR_GATEWAY, "tcp")
    suite.route_condition(
        "tcp-selected", SELECTOR_GATEWAY, "Accepted", "True", "Accepted", namespace=APP
    )
    suite.route_condition(
        "tcp-not-selected",
        SELECTOR_GATEWAY,
        "Accepted",
        "False",
        "NotAllowedByListeners",
        namespace=WEB,
    )
    eventually(
        "one route attached",
        lambda: [li["attachedRoutes"] for li in suite.listeners(SELECTOR_GATEWAY)] == [1],
    )
    expect_backend(address, "tcp-selected-backend", APP)
    suite.apply("relabel-web", namespace(WEB, "backend"))
    try:
        suite.route_condition(
            "tcp-not-selected", SELECTOR_GATEWAY, "Accepted", "True", "Accepted", namespace=WEB
        )
        eventually(
            "two routes attached",
            lambda: [li["attachedRoutes"] for li in suite.listeners(SELECTOR_GATEWAY)] == [2],
        )
    finally:
        suite.apply("relabel-web-back", namespace(WEB, "web-backend"))


def test_a_users_class_of_ours_is_served_and_anothers_is_left_alone(suite: Suite) -> None:
    address = suite.accepted("tcp-user-class-gateway", "tcp", "tcp-user-class-route")
    expect_backend(address, "tcp-echo-attach-all")
    assert class_accepted(suite, USER_CLASS)["spec"]["controllerName"] == CONTROLLER
    # Another controller's class keeps the CRD default; its Gateway gets no status and no
    # workload from us (checked after ours were written: one sync covers every Gateway).
    accepted = class_conditions(suite, FOREIGN_CLASS)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("Unknown", "Pending")
    assert not suite.get(GATEWAY, "tcp-foreign-class-gateway").get("status")
    deployments = suite.client.list("Deployment", INFRA)
    names = {d["metadata"]["name"] for d in deployments}
    assert f"tcp-user-class-gateway-{USER_CLASS}" in names
    assert not any(n.startswith("tcp-foreign-class-gateway") for n in names)
