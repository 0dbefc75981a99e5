"""TLSRoute through a Gateway API Gateway on both data planes: weighted passthrough with
the backends' own certificates (exact binomial test), termination with a Secret, and a
route flip that resets no open TLS session."""

from __future__ import annotations

import json
import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scipy.stats import binomtest

from tcpmesh.apiserver.client import ApiClient
from tests.integration.harness import MeshHarness
from tests.integration.test_gatewayapi_conformance import eventually
from tests.integration.tls_helpers import Certificate, client_context, make_certificate

pytestmark = pytest.mark.integration

ADDRESS = "127.0.33.1"
ALPHA = 1e-6
G = "gateway.networking.k8s.io"
HANDSHAKES = 300
Obj = dict[str, Any]


def echo_basic(name: str, cert: Certificate | None) -> list[Obj]:
    env = [
        {"name": "TCP_ECHO_SERVER", "value": "1"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    port = 3000
    if cert is not None:
        port = 8443
        env += [
            {"name": "TLS_SERVER_CERT", "value": str(cert.cert_path)},
            {"name": "TLS_SERVER_PRIV_KEY", "value": str(cert.key_path)},
        ]
    labels = {"app": name}
    container = {
        "name": "echo",
        "image": "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0",
        "env": env,
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "selector": labels,
                "ports": [{"name": "tcp", "port": port, "targetPort": port}],
            },
        },
    ]


def tls_route(name: str, hostname: str, section: str, backends: list[tuple[str, int, int]]) -> Obj:
    return {
        "apiVersion": f"{G}/v1",
        "kind": "TLSRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "tls-gateway", "sectionName": section}],
            "hostnames": [hostname],
            "rules": [
                {"backendRefs": [{"name": n, "port": p, "weight": w} for n, p, w in backends]}
            ],
        },
    }


def objects(certs: dict[str, Certificate], v1_weight: int = 80) -> list[Obj]:
    gateway = {
        "apiVersion": f"{G}/v1",
        "kind": "Gateway",
        "metadata": {"name": "tls-gateway"},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {
                    "name": "passthrough",
                    "protocol": "TLS",
                    "port": 8443,
                    "hostname": "*.example.com",
                    "tls": {"mode": "Passthrough"},
                },
                {
                    "name": "terminate",
                    "protocol": "TLS",
                    "port": 8444,
                    "tls": {"mode": "Terminate", "certificateRefs": [{"name": "gw-cert"}]},
                },
            ],
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gw-cert"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": certs["gw"].cert_pem, "tls.key": certs["gw"].key_pem},
    }
    return [
        *echo_basic("tls-v1", certs["v1"]),
        *echo_basic("tls-v2", certs["v2"]),
        *echo_basic("plain", None),
        secret,
        gateway,
        tls_route(
            "a",
            "a.example.com",
            "passthrough",
            [("tls-v1", 8443, v1_weight), ("tls-v2", 8443, 100 - v1_weight)],
        ),
        tls_route("echo", "echo.example.com", "terminate", [("plain", 3000, 1)]),
    ]


class Session:
    """One TLS connection speaking echo-basic: welcome read, then TEST/PING on demand."""

    def __init__(self, address: tuple[str, int], name: str, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(address, timeout=10)
        self.tls = context.wrap_socket(raw, server_hostname=name)
        self.stream = self.tls.makefile("rwb")
        assert self.stream.readline() == b"Gateway API Test TCP Server\n"

    def ask(self, line: bytes) -> bytes:
        self.stream.write(line + b"\n")
        self.stream.flush()
        return bytes(self.stream.readline())

    def test(self) -> Obj:
        payload: Obj = json.loads(self.ask(b"TEST"))
        return payload

    def close(self) -> None:
        self.stream.close()
        self.tls.close()


def pod_of(address: tuple[str, int], name: str, context: ssl.SSLContext) -> str:
    session = Session(address, name, context)
    try:
        return str(session.test()["pod"])
    finally:
        session.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    directory = tmp_path_factory.mktemp("certs")
    return {
        "v1": make_certificate(directory, "v1", "a.example.com"),
        "v2": make_certificate(directory, "v2", "a.example.com"),
        "gw": make_certificate(directory, "gw", "echo.example.com"),
    }


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    certs: dict[str, Certificate],
) -> Iterator[tuple[MeshHarness, str]]:
    harness = MeshHarness(
        tmp_path_factory.mktemp("state"), ADDRESS, workers=1, dataplane=request.param
    )
    manifests: Path = tmp_path_factory.mktemp("manifests")
    harness.manifests = manifests  # type: ignore[attr-defined]
    try:
        harness.up()
        (manifests / "all.yaml").write_text(yaml.safe_dump_all(objects(certs)))
        harness.apply(manifests / "all.yaml")
        client = ApiClient.from_state_dir(harness.state_dir)

        def address() -> str:
            status = client.get(f"Gateway.{G}", "default", "tls-gateway").get("status") or {}
            programmed = [c for c in status.get("conditions", []) if c["type"] == "Programmed"]
            ready = programmed and programmed[0]["status"] == "True" and status.get("addresses")
            return str(status["addresses"][0]["value"]) if ready else ""

        gw = eventually("the Gateway programmed", address)
        trust = client_context(certs["v1"], certs["v2"])
        eventually("passthrough", lambda: pod_of((gw, 8443), "a.example.com", trust))
        yield harness, gw
    finally:
        harness.down()


def test_weighted_passthrough_presents_each_backends_own_certificate(
    mesh: tuple[MeshHarness, str], certs: dict[str, Certificate]
) -> None:
    _, gw = mesh
    trust = client_context(certs["v1"], certs["v2"])
    by_cert: Counter[str] = Counter()
    for _ in range(HANDSHAKES):
        session = Session((gw, 8443), "a.example.com", trust)
        try:
            peer = session.tls.getpeercert(binary_form=True)
            owner = next(n for n in ("v1", "v2") if certs[n].der == peer)
            payload = session.test()
        finally:
            session.close()
        assert payload["isTLS"] is True and payload["tls"]["serverName"] == "a.example.com"
        assert payload["pod"].startswith(f"tls-{owner}-")  # that backend's own certificate
        by_cert[owner] += 1
    assert binomtest(by_cert["v1"], HANDSHAKES, 0.8).pvalue >= ALPHA, by_cert


def test_an_unknown_name_gets_no_backend(
    mesh: tuple[MeshHarness, str], certs: dict[str, Certificate]
) -> None:
    _, gw = mesh
    with pytest.raises((OSError, ssl.SSLError)):
        Session((gw, 8443), "c.example.com", client_context(certs["v1"]))


def test_termination_serves_the_secrets_certificate_and_plaintext_behind(
    mesh: tuple[MeshHarness, str], certs: dict[str, Certificate]
) -> None:
    _, gw = mesh
    session = eventually(
        "the terminating listener",
        lambda: Session((gw, 8444), "echo.example.com", client_context(certs["gw"])),
    )
    try:
        assert session.tls.getpeercert(binary_form=True) == certs["gw"].der
        assert session.ask(b"IS_TLS") == b"false\n"  # the backend sees plaintext
        assert session.test()["pod"].startswith("plain-")
    finally:
        session.close()


def test_a_route_flip_resets_no_open_tls_session(
    mesh: tuple[MeshHarness, str], certs: dict[str, Certificate]
) -> None:
    harness, gw = mesh
    trust = client_context(certs["v1"], certs["v2"])
    held = [Session((gw, 8443), "a.example.com", trust) for _ in range(10)]
    manifests: Path = harness.manifests  # type: ignore[attr-defined]
    try:
        before = [s.test()["pod"] for s in held]
        (manifests / "flip.yaml").write_text(yaml.safe_dump_all(objects(certs, v1_weight=0)))
        harness.apply(manifests / "flip.yaml")
        eventually(
            "new handshakes all on v2",
            lambda: all(
                pod_of((gw, 8443), "a.example.com", trust).startswith("tls-v2-") for _ in range(20)
            ),
        )
        # Every session opened before the flip still talks to the pod it had.
        assert [s.test()["pod"] for s in held] == before
        assert all(s.ask(b"PING") == b"PONG\n" for s in held)
    finally:
        for session in held:
            session.close()
        (manifests / "back.yaml").write_text(yaml.safe_dump_all(objects(certs)))
        harness.apply(manifests / "back.yaml")
