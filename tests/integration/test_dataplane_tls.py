"""The built-in proxy routing TLS by SNI (passthrough) and terminating it, in this process.

Backends are asyncio TLS servers with their own certificates (passthrough) or plain line
echo servers (termination); clients are Python's ssl module verifying what they are shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tcpmesh.control.snapshot import DownstreamTls, L4Match, Snapshot, TcpRoute
from tcpmesh.dataplane.accesslog import AccessLogRecord
from tcpmesh.dataplane.proxy import Proxy
from tcpmesh.dataplane.splice import splice_available
from tests.integration.dataplane_helpers import (
    PROXY_HOST,
    V1_HOST,
    V2_HOST,
    LineEcho,
    cluster,
    cluster_name,
    free_port,
    listener,
    read_until_eof,
    route,
    run,
    snapshot,
    spliced,
    start_backend,
)
from tests.integration.tls_helpers import (
    Certificate,
    client_context,
    make_certificate,
    serve_tls_echo,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["copy", "splice"])
def relay_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The relay paths a ClientHello listener can take: the Python relay's two, whichever
    engine runs (the C engine takes plain TCP listeners only), so on the default engine."""
    path = str(request.param)
    if path == "splice" and not splice_available():
        pytest.skip("splice(2) is not available here")
    monkeypatch.setenv("TCPMESH_RELAY", path)
    return path


ALPHA = 1e-6
LOOPS = ["asyncio", "uvloop"]
V3_HOST = "127.0.2.3"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    directory = tmp_path_factory.mktemp("certs")
    return {
        "v1": make_certificate(directory, "v1", "a.example.com"),
        "v2": make_certificate(directory, "v2", "a.example.com"),
        "b": make_certificate(directory, "b", "b.example.com"),
        "gw1": make_certificate(directory, "gw1", "echo.example.com"),
        "gw2": make_certificate(directory, "gw2", "echo.example.com"),
    }


def sni_route(names: tuple[str, ...], *dests: tuple[str, int]) -> TcpRoute:
    return dataclasses.replace(route(*dests), match=L4Match(server_names=names))


async def wait_records(records: list[AccessLogRecord], n: int) -> None:
    for _ in range(500):
        if len(records) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(records)} of {n} access log records")


async def started_proxy(
    snap: Snapshot, client_hello_timeout: float = 15.0
) -> tuple[Proxy, list[AccessLogRecord]]:
    records: list[AccessLogRecord] = []
    proxy = Proxy(access_log=records.append, client_hello_timeout=client_hello_timeout)
    proxy.apply(snap)
    await proxy.settled()
    return proxy, records


async def exchange(
    port: int, server_name: str | None, context: ssl.SSLContext, line: bytes = b"hi"
) -> tuple[bytes, bytes]:
    """One TLS connection through the proxy: the reply and the certificate presented."""
    reader, writer = await asyncio.open_connection(
        PROXY_HOST, port, ssl=context, server_hostname=server_name
    )
    try:
        peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(line + b"\n")
        return await asyncio.wait_for(reader.readline(), 10), peer
    finally:
        writer.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_passthrough_splits_by_weight_and_routes_by_sni(
    loop: str, certs: dict[str, Certificate], relay_path: str
) -> None:
    async def main() -> None:
        servers = [
            await serve_tls_echo(V1_HOST, "v1", certs["v1"]),
            await serve_tls_echo(V2_HOST, "v2", certs["v2"]),
            await serve_tls_echo(V3_HOST, "b", certs["b"]),
        ]
        port = free_port()
        snap = snapshot(
            [
                listener(
                    port,
                    sni_route(
                        ("a.example.com",), (cluster_name("v1"), 80), (cluster_name("v2"), 20)
                    ),
                    sni_route(("*.example.com",), (cluster_name("b"), 100)),
                )
            ],
            [
                cluster("v1", (V1_HOST, servers[0][1])),
                cluster("v2", (V2_HOST, servers[1][1])),
                cluster("b", (V3_HOST, servers[2][1])),
            ],
        )
        proxy, records = await started_proxy(snap)
        trust = client_context(certs["v1"], certs["v2"], certs["b"])
        try:
            words: Counter[str] = Counter()
            for _ in range(200):
                reply, peer = await exchange(port, "a.example.com", trust)
                word = reply.split()[0].decode()
                # Passthrough: the certificate is the backend's own, end to end.
                assert peer == certs[word].der
                words[word] += 1
            assert set(words) == {"v1", "v2"}
            assert binomtest(words["v2"], 200, 0.2).pvalue >= ALPHA
            # The wildcard route takes any other name under example.com.
            reply, peer = await exchange(port, "b.example.com", trust)
            assert reply == b"b hi\n" and peer == certs["b"].der
            assert all(r.flags == () for r in records)
            # Once routed, passthrough bytes are opaque: they may take the zero-copy path.
            await wait_records(records, 201)
            assert proxy.spliced_connections == (201 if spliced(relay_path) else 0)
        finally:
            await proxy.close()
            for server, _ in servers:
                server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_unknown_or_missing_sni_and_plaintext_close_with_nr(
    loop: str, certs: dict[str, Certificate]
) -> None:
    async def main() -> None:
        server, backend_port = await serve_tls_echo(V1_HOST, "v1", certs["v1"])
        port = free_port()
        snap = snapshot(
            [listener(port, sni_route(("a.example.com",), (cluster_name("v1"), 100)))],
            [cluster("v1", (V1_HOST, backend_port))],
        )
        proxy, records = await started_proxy(snap)
        trust = client_context(certs["v1"])
        trust.check_hostname = False
        try:
            for name in ("c.example.com", None):
                with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                    await exchange(port, name, trust)
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert await read_until_eof(reader, 10) == b""
            writer.close()
            for _ in range(100):
                if len(records) == 3:
                    break
                await asyncio.sleep(0.05)
            assert [r.flags for r in records] == [("NR",)] * 3
        finally:
            await proxy.close()
            server.close()

    run(main(), loop=loop)


def test_a_client_that_sends_nothing_is_closed_after_the_peek_timeout() -> None:
    async def main() -> None:
        port = free_port()
        snap = snapshot(
            [listener(port, sni_route(("a.example.com",), (cluster_name("v1"), 100)))],
            [cluster("v1", (V1_HOST, 9))],
        )
        proxy, records = await started_proxy(snap, client_hello_timeout=0.4)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"\x16\x03\x01")  # a ClientHello that never completes
            started = asyncio.get_running_loop().time()
            assert await read_until_eof(reader, 10) == b""
            waited = asyncio.get_running_loop().time() - started
            assert 0.3 <= waited < 5
            writer.close()
            assert [r.flags for r in records] == [("NR",)]
        finally:
            await proxy.close()

    run(main())


def terminating(cert: Certificate, port: int, backend_port: int) -> Snapshot:
    tls = DownstreamTls(
        secret="istio-system/echo-cert",
        certificate_chain=cert.cert_pem,
        private_key=cert.key_pem,
        min_protocol_version="TLSv1_2",
    )
    terminated = dataclasses.replace(
        route((cluster_name("v1"), 100)),
        match=L4Match(server_names=("echo.example.com",)),
        tls=tls,
    )
    return snapshot([listener(port, terminated)], [cluster("v1", (V1_HOST, backend_port))])


@pytest.mark.parametrize("loop", LOOPS)
def test_termination_serves_the_certificate_and_relays_plaintext_and_rotates(
    loop: str, certs: dict[str, Certificate], relay_path: str
) -> None:
    async def main() -> None:
        server, backend_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        proxy, records = await started_proxy(terminating(certs["gw1"], port, backend_port))
        trust = client_context(certs["gw1"], certs["gw2"])
        try:
            reply, peer = await exchange(port, "echo.example.com", trust, b"first")
            assert reply == b"one first\n" and peer == certs["gw1"].der
            # A session opened with the first certificate...
            reader, writer = await asyncio.open_connection(
                PROXY_HOST, port, ssl=trust, server_hostname="echo.example.com"
            )
            writer.write(b"before\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"one before\n"
            # ...the Secret is replaced: new handshakes get the new certificate,
            proxy.apply(terminating(certs["gw2"], port, backend_port))
            reply, peer = await exchange(port, "echo.example.com", trust, b"second")
            assert reply == b"one second\n" and peer == certs["gw2"].der
            # ...and the open session keeps working with the old one.
            old = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert old == certs["gw1"].der
            writer.write(b"after\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"one after\n"
            writer.close()
            assert all(r.flags == () for r in records)
            # The proxy reads the plaintext of a session it terminates: never spliced.
            await wait_records(records, 3)
            assert proxy.spliced_connections == 0
        finally:
            await proxy.close()
            server.close()

    run(main(), loop=loop)


def test_termination_needs_the_route_sni(certs: dict[str, Certificate]) -> None:
    async def main() -> None:
        server, backend_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        proxy, records = await started_proxy(terminating(certs["gw1"], port, backend_port))
        trust = client_context(certs["gw1"])
        trust.check_hostname = False
        try:
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                await exchange(port, "other.example.com", trust)
            for _ in range(100):
                if records:
                    break
                await asyncio.sleep(0.05)
            assert [r.flags for r in records] == [("NR",)]
        finally:
            await proxy.close()
            server.close()

    run(main())


def test_a_listener_switching_to_sni_keeps_its_port_and_open_connections(
    certs: dict[str, Certificate],
) -> None:
    async def main() -> None:
        server, backend_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        tls_server, tls_port = await serve_tls_echo(V2_HOST, "v2", certs["v2"])
        port = free_port()
        plain = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))],
            [cluster("v1", (V1_HOST, backend_port))],
        )
        proxy, _ = await started_proxy(plain)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"plain\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"one plain\n"
            proxy.apply(
                snapshot(
                    [listener(port, sni_route(("a.example.com",), (cluster_name("v2"), 100)))],
                    [cluster("v2", (V2_HOST, tls_port))],
                )
            )
            await proxy.settled()
            reply, _ = await exchange(port, "a.example.com", client_context(certs["v2"]))
            assert reply == b"v2 hi\n"
            writer.write(b"still\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"one still\n"
            writer.close()
        finally:
            await proxy.close()
            server.close()
            tls_server.close()

    run(main())


def test_mutual_termination_requires_a_client_certificate_from_the_ca(
    certs: dict[str, Certificate], tmp_path: Path
) -> None:
    client = make_certificate(tmp_path, "client", "client.example.com")
    stranger = make_certificate(tmp_path, "stranger", "client.example.com")

    async def main() -> None:
        server, backend_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        snap = terminating(certs["gw1"], port, backend_port)
        (lst,) = snap.listeners
        (only,) = lst.routes
        assert only.tls is not None
        mutual = dataclasses.replace(
            only, tls=dataclasses.replace(only.tls, ca_certificates=client.cert_pem)
        )
        snap = snapshot([dataclasses.replace(lst, routes=(mutual,))], list(snap.clusters))
        proxy, _ = await started_proxy(snap)
        try:
            trusted = client_context(certs["gw1"])
            trusted.load_cert_chain(client.cert_path, client.key_path)
            reply, _ = await exchange(port, "echo.example.com", trusted, b"signed")
            assert reply == b"one signed\n"
            for who in (None, stranger):
                context = client_context(certs["gw1"])
                if who is not None:
                    context.load_cert_chain(who.cert_path, who.key_path)
                # TLS 1.3: the server's refusal (an alert, then the close) arrives with the
                # first read, so the client sees an error or the end of the stream.
                try:
                    reply, _ = await exchange(port, "echo.example.com", context, b"refused")
                except (ssl.SSLError, ConnectionError, OSError):
                    reply = b""
                assert reply == b""
        finally:
            await proxy.close()
            server.close()

    run(main())


def test_optional_mutual_accepts_no_certificate_but_refuses_a_wrong_one(
    certs: dict[str, Certificate], tmp_path: Path
) -> None:
    client = make_certificate(tmp_path, "client", "client.example.com")
    stranger = make_certificate(tmp_path, "stranger", "client.example.com")

    async def main() -> None:
        server, backend_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        snap = terminating(certs["gw1"], port, backend_port)
        (lst,) = snap.listeners
        (only,) = lst.routes
        assert only.tls is not None
        optional = dataclasses.replace(
            only,
            tls=dataclasses.replace(
                only.tls, ca_certificates=client.cert_pem, client_optional=True
            ),
        )
        snap = snapshot([dataclasses.replace(lst, routes=(optional,))], list(snap.clusters))
        proxy, _ = await started_proxy(snap)
        try:
            anonymous = client_context(certs["gw1"])
            reply, _ = await exchange(port, "echo.example.com", anonymous, b"anonymous")
            assert reply == b"one anonymous\n"
            wrong = client_context(certs["gw1"])
            wrong.load_cert_chain(stranger.cert_path, stranger.key_path)
            try:
                reply, _ = await exchange(port, "echo.example.com", wrong, b"wrong")
            except (ssl.SSLError, ConnectionError, OSError):
                reply = b""
            assert reply == b""
        finally:
            await proxy.close()
            server.close()

    run(main())
