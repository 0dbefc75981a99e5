"""TLS through a real mesh, on both data planes: SNI passthrough with weights, termination.

The gateway's port 15443 carries three kinds of traffic at once, as an Istio gateway can:

- SNI ``a.example.com``: passed through (never decrypted) to two TLS backends split
  80/20; ``b.example.com`` to a third. The backends are Python ``ssl`` servers with
  their own self-signed certificates, and the client trusts exactly those, so a verified
  handshake proves the bytes went through untouched.
- SNI ``echo.example.com``: terminated by the gateway with the certificate of the Secret
  ``istio-system/echo-cert`` (``tls.mode: SIMPLE``, ``credentialName``); the plaintext
  goes to tcp-echo (tcpmesh's own, run here as a process). ``openssl s_client`` checks
  the certificate as users do.
- Anything else: closed, logged with response flag ``NR``.

No pods are started (backends are the test's own processes behind ServiceEntries), and
everything binds 127.0.13.0/24, so this runs beside the other suites' meshes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from scipy.stats import binomtest

from tests.integration.harness import MeshHarness
from tests.integration.tls_helpers import (
    Certificate,
    client_context,
    make_certificate,
    serve_tls_echo,
    tls_exchange,
)

pytestmark = pytest.mark.integration

ALPHA = 1e-6  # false-failure rate of every statistical assertion here
ADDRESS = "127.0.13.1"
PORT = 15443
HOSTS = {"v1": "127.0.13.2", "v2": "127.0.13.3", "b": "127.0.13.4", "echo": "127.0.13.5"}
ECHO_PORT = 9000


class Backends:
    """The TLS echo backends on an event loop in a thread, and tcp-echo as a process."""

    def __init__(self, certs: dict[str, Certificate]) -> None:
        self.certs = certs
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[asyncio.AbstractServer] = []
        self.ports: dict[str, int] = {}
        self.echo: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.thread.start()
        for word in ("v1", "v2", "b"):
            future = asyncio.run_coroutine_threadsafe(
                serve_tls_echo(HOSTS[word], word, self.certs[word]), self.loop
            )
            server, self.ports[word] = future.result(timeout=10)
            self.servers.append(server)
        self.echo = subprocess.Popen(
            [sys.executable, "-m", "tcpmesh.runtime.tcpecho", str(ECHO_PORT), "one"],
            env={**os.environ, "POD_IP": HOSTS["echo"]},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.echo is not None:
            self.echo.kill()
            self.echo.wait(10)

        async def close() -> None:
            for server in self.servers:
                server.close()

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        self.loop.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def mtls_secret(cert: Certificate, client_ca: Certificate) -> dict[str, Any]:
    """A MUTUAL server's credential: its certificate and the CA its clients must chain to."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mtls-cert", "namespace": "istio-system"},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": b64(cert.cert_pem),
            "tls.key": b64(cert.key_pem),
            "ca.crt": b64(client_ca.cert_pem),
        },
    }


def echo_secret(cert: Certificate) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "echo-cert", "namespace": "istio-system"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(cert.cert_pem), "tls.key": b64(cert.key_pem)},
    }


def entry(name: str, port: int, protocol: str, *endpoints: tuple[str, int, str]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name},
        "spec": {
            "hosts": [f"{name}.example.internal"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": protocol.lower(), "protocol": protocol}],
            "endpoints": [
                {"address": a, "ports": {protocol.lower(): p}, "labels": {"version": v}}
                for a, p, v in endpoints
            ],
        },
    }


def tls_routes(v1: int, v2: int) -> dict[str, Any]:
    host = "tls-backends.example.internal"
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "tls-routes"},
        "spec": {
            "hosts": ["*.example.com"],
            "gateways": ["tls-gateway"],
            "tls": [
                {
                    "match": [{"port": PORT, "sniHosts": ["a.example.com"]}],
                    "route": [
                        {"destination": {"host": host, "subset": "v1"}, "weight": v1},
                        {"destination": {"host": host, "subset": "v2"}, "weight": v2},
                    ],
                },
                {
                    "match": [{"port": PORT, "sniHosts": ["b.example.com"]}],
                    "route": [{"destination": {"host": "b-backend.example.internal"}}],
                },
            ],
        },
    }


def mesh_objects(backends: Backends) -> list[dict[str, Any]]:
    ports = backends.ports
    return [
        entry(
            "tls-backends",
            8443,
            "TLS",
            (HOSTS["v1"], ports["v1"], "v1"),
            (HOSTS["v2"], ports["v2"], "v2"),
        ),
        entry("b-backend", 8443, "TLS", (HOSTS["b"], ports["b"], "v1")),
        entry("echo", ECHO_PORT, "TCP", (HOSTS["echo"], ECHO_PORT, "v1")),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "tls-backends"},
            "spec": {
                "host": "tls-backends.example.internal",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
        echo_secret(backends.certs["gw1"]),
        mtls_secret(backends.certs["mtls"], backends.certs["client"]),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "tls-gateway"},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {
                        "port": {"number": PORT, "name": "tls", "protocol": "TLS"},
                        "hosts": ["*.example.com"],
                        "tls": {"mode": "PASSTHROUGH"},
                    },
                    {
                        "port": {"number": PORT, "name": "tls-mtls", "protocol": "TLS"},
                        "hosts": ["mtls.example.com"],
                        "tls": {"mode": "MUTUAL", "credentialName": "mtls-cert"},
                    },
                    {
                        "port": {"number": PORT, "name": "tls-echo", "protocol": "TLS"},
                        "hosts": ["echo.example.com"],
                        "tls": {
                            "mode": "SIMPLE",
                            "credentialName": "echo-cert",
                            "minProtocolVersion": "TLSV1_2",
                        },
                    },
                ],
            },
        },
        tls_routes(80, 20),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "echo"},
            "spec": {
                "hosts": ["echo.example.com", "mtls.example.com"],
                "gateways": ["tls-gateway"],
                "tcp": [{"route": [{"destination": {"host": "echo.example.internal"}}]}],
            },
        },
    ]


def apply(mesh: MeshHarness, directory: Path, name: str, *objects: dict[str, Any]) -> None:
    path = directory / name
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    mesh.apply(path)


def answers(name: str, context: ssl.SSLContext, line: str = "probe") -> tuple[str, bytes]:
    try:
        reply, peer = tls_exchange(ADDRESS, PORT, name, context, line)
    except (OSError, ssl.SSLError):
        return "", b""
    return reply, peer


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    directory = tmp_path_factory.mktemp("certs")
    return {
        "v1": make_certificate(directory, "v1", "a.example.com"),
        "v2": make_certificate(directory, "v2", "a.example.com"),
        "b": make_certificate(directory, "b", "b.example.com"),
        "gw1": make_certificate(directory, "gw1", "echo.example.com"),
        "gw2": make_certificate(directory, "gw2", "echo.example.com"),
        "mtls": make_certificate(directory, "mtls", "mtls.example.com"),
        "client": make_certificate(directory, "client", "client.example.com"),
        "stranger": make_certificate(directory, "stranger", "client.example.com"),
    }


@pytest.fixture(scope="module")
def backends(certs: dict[str, Certificate]) -> Iterator[Backends]:
    servers = Backends(certs)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    backends: Backends,
) -> Iterator[MeshHarness]:
    harness = MeshHarness(tmp_path_factory.mktemp("state"), ADDRESS, dataplane=request.param)
    manifests = tmp_path_factory.mktemp("manifests")
    harness.manifests = manifests  # type: ignore[attr-defined]
    try:
        harness.up()
        apply(harness, manifests, "tls.yaml", *mesh_objects(backends))
        trust_b = client_context(backends.certs["b"])
        trust_echo = client_context(backends.certs["gw1"], backends.certs["gw2"])
        harness.wait_for(
            "the TLS routes",
            lambda: (
                answers("b.example.com", trust_b)[0] == "b probe\n"
                and answers("echo.example.com", trust_echo)[0] == "one probe\n"
            ),
            60.0,
        )
        # Every worker of the gateway has the routes once a few dozen handshakes agree.
        harness.wait_for(
            "every worker",
            lambda: all(answers("b.example.com", trust_b)[0] == "b probe\n" for _ in range(20)),
        )
        yield harness
    finally:
        harness.down()


def gateway_log(mesh: MeshHarness) -> str:
    pods = [
        p["metadata"]["name"]
        for p in mesh.pods("istio-system")
        if p["metadata"].get("labels", {}).get("istio") == "ingressgateway"
    ]
    return "".join(mesh.tcpmesh("-n", "istio-system", "logs", pod).stdout for pod in pods)


def test_weighted_passthrough_80_20_over_2000_handshakes(
    mesh: MeshHarness, backends: Backends
) -> None:
    certs = backends.certs
    trust = client_context(certs["v1"], certs["v2"])

    def one(_: int) -> str:
        reply, peer = tls_exchange(ADDRESS, PORT, "a.example.com", trust)
        word = reply.split(" ", 1)[0]
        # The handshake was with the backend itself: its own certificate, verified.
        assert peer == certs[word].der, word
        return word

    with ThreadPoolExecutor(16) as pool:
        words = Counter(pool.map(one, range(2000)))
    assert set(words) == {"v1", "v2"}
    assert words["v1"] + words["v2"] == 2000
    assert binomtest(words["v2"], 2000, 0.2).pvalue >= ALPHA, words


def test_another_sni_goes_to_its_own_backend(mesh: MeshHarness, backends: Backends) -> None:
    trust = client_context(backends.certs["b"])
    for _ in range(20):
        reply, peer = tls_exchange(ADDRESS, PORT, "b.example.com", trust)
        assert reply == "b hello\n"
        assert peer == backends.certs["b"].der


def test_an_unknown_sni_is_closed_with_nr(mesh: MeshHarness, backends: Backends) -> None:
    trust = client_context(backends.certs["v1"])
    trust.check_hostname = False
    before = gateway_log(mesh).count(" NR ")
    for _ in range(3):
        with pytest.raises((ssl.SSLError, OSError)):
            tls_exchange(ADDRESS, PORT, "c.example.com", trust)
    mesh.wait_for(
        "three NR lines in the gateway's access log",
        lambda: gateway_log(mesh).count(" NR ") >= before + 3,
        15.0,
    )


def s_client(server_name: str, ca_file: Path, line: str) -> tuple[str, str]:
    """``openssl s_client`` with verification on: (the reply line, its full output)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is not installed (scripts/system-deps/tls.sh)"
    process = subprocess.Popen(
        [
            openssl,
            "s_client",
            "-connect",
            f"{ADDRESS}:{PORT}",
            "-servername",
            server_name,
            "-CAfile",
            str(ca_file),
            "-verify_return_error",
            "-verify_hostname",
            server_name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdin is not None and process.stdout is not None
    output = b""
    try:
        process.stdin.write(line.encode() + b"\n")
        process.stdin.flush()
        deadline = time.monotonic() + 20
        while b"one " + line.encode() not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
    finally:
        process.kill()
        process.wait(10)
    text = output.decode(errors="replace")
    reply = next((x for x in text.splitlines() if x.startswith("one ")), "")
    return reply, text


def test_termination_with_openssl_s_client(mesh: MeshHarness, backends: Backends) -> None:
    reply, text = s_client("echo.example.com", backends.certs["gw1"].cert_path, "hello")
    assert reply == "one hello", text
    assert "Verify return code: 0 (ok)" in text
    assert "subject=CN = echo.example.com" in text


def test_replacing_the_secret_keeps_open_sessions_and_serves_the_new_certificate(
    mesh: MeshHarness, backends: Backends
) -> None:
    certs = backends.certs
    manifests: Path = mesh.manifests  # type: ignore[attr-defined]
    trust = client_context(certs["gw1"], certs["gw2"])
    raw = socket.create_connection((ADDRESS, PORT), timeout=10)
    session = trust.wrap_socket(raw, server_hostname="echo.example.com")
    try:
        assert session.getpeercert(binary_form=True) == certs["gw1"].der
        session.sendall(b"before\n")
        assert session.recv(100) == b"one before\n"
        apply(mesh, manifests, "secret-2.yaml", echo_secret(certs["gw2"]))
        mesh.wait_for(
            "new handshakes to get the new certificate",
            lambda: answers("echo.example.com", trust)[1] == certs["gw2"].der,
            30.0,
        )
        reply, text = s_client("echo.example.com", certs["gw2"].cert_path, "after")
        assert reply == "one after", text
        session.sendall(b"still open\n")
        assert session.recv(100) == b"one still open\n"
    finally:
        session.close()
        apply(mesh, manifests, "secret-1.yaml", echo_secret(certs["gw1"]))


def test_a_route_flip_resets_no_open_tls_session(mesh: MeshHarness, backends: Backends) -> None:
    """The seed's flip test over TLS: sessions opened before a weight change stay on their
    backend and keep working; new sessions follow the new weights."""
    certs = backends.certs
    manifests: Path = mesh.manifests  # type: ignore[attr-defined]
    trust = client_context(certs["v1"], certs["v2"])
    sessions: list[tuple[ssl.SSLSocket, str]] = []
    try:
        for _ in range(30):
            raw = socket.create_connection((ADDRESS, PORT), timeout=10)
            tls = trust.wrap_socket(raw, server_hostname="a.example.com")
            tls.sendall(b"first\n")
            word = tls.recv(100).decode().split(" ", 1)[0]
            sessions.append((tls, word))
        assert {w for _, w in sessions} == {"v1", "v2"}
        apply(mesh, manifests, "flip.yaml", tls_routes(0, 100))
        mesh.wait_for(
            "new sessions on v2 only",
            lambda: all(answers("a.example.com", trust)[0].startswith("v2 ") for _ in range(20)),
            30.0,
        )
        for tls, word in sessions:
            tls.sendall(b"after the flip\n")
            assert tls.recv(100).decode() == f"{word} after the flip\n"
    finally:
        for tls, _ in sessions:
            tls.close()
        apply(mesh, manifests, "unflip.yaml", tls_routes(80, 20))


def test_mutual_termination_needs_a_client_certificate_from_the_secrets_ca(
    mesh: MeshHarness, backends: Backends
) -> None:
    certs = backends.certs
    signed = client_context(certs["mtls"])
    signed.load_cert_chain(certs["client"].cert_path, certs["client"].key_path)
    reply, peer = tls_exchange(ADDRESS, PORT, "mtls.example.com", signed, "mutual")
    assert reply == "one mutual\n" and peer == certs["mtls"].der
    for who in (None, "stranger"):
        context = client_context(certs["mtls"])
        if who is not None:
            context.load_cert_chain(certs[who].cert_path, certs[who].key_path)
        # TLS 1.3 sends the refusal after the client's Finished: the first read fails.
        assert answers("mtls.example.com", context, "refused")[0] == ""
