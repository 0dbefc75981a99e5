"""The built-in echo-basic (the Gateway API conformance backend) speaks its TCP protocol."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.apiserver.pki import ensure_ca, issue_certificate
from tcpmesh.runtime.echobasic import serve

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
# Below the kernel's ephemeral range (32768-60999): a client socket of another test that
# happens to hold 127.0.0.1:<port> as its local end would make the server's bind fail.
TCP_PORT, TLS_PORT = 28300, 28443
Obj = dict[str, Any]


async def _talk(port: int, context: ssl.SSLContext | None, name: str | None) -> list[str]:
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=context, server_hostname=name if context else None
    )
    lines = [(await reader.readline()).decode()]
    for line in (b"PING\n", b"IS_TLS\n", b"nothing\n", b"TEST\n"):
        writer.write(line)
    for _ in range(3):
        lines.append((await reader.readline()).decode())
    writer.close()
    return lines


async def _listening(port: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until the server accepts: its start takes longer on a loaded machine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


def test_tcp_and_tls_answers(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    leaf = issue_certificate(ca, "backend", ["tls.example.com"])
    (tmp_path / "c.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "k.pem").write_bytes(leaf.key_pem)
    env = {
        "TCP_ECHO_SERVER": "1",
        "POD_IP": HOST,
        "TCP_PORT": str(TCP_PORT),
        "TLS_PORT": str(TLS_PORT),
        "TLS_SERVER_CERT": str(tmp_path / "c.pem"),
        "TLS_SERVER_PRIV_KEY": str(tmp_path / "k.pem"),
        "POD_NAME": "tcp-backend-v1-abc-xyz",
        "NAMESPACE": "infra",
        "SERVICE_NAME": "tcp-backend-v1",
    }

    async def main() -> tuple[list[str], list[str]]:
        server = asyncio.create_task(serve(env))
        try:
            await _listening(TCP_PORT)
            await _listening(TLS_PORT)
            plain = await _talk(TCP_PORT, None, None)
            trust = ssl.create_default_context(cadata=ca.cert_pem.decode())
            secure = await _talk(TLS_PORT, trust, "tls.example.com")
        finally:
            server.cancel()
        return plain, secure

    plain, secure = asyncio.run(main())
    assert plain[:3] == ["Gateway API Test TCP Server\n", "PONG\n", "false\n"]
    payload = json.loads(plain[3])
    assert payload == {
        "namespace": "infra",
        "ingress": "",
        "service": "tcp-backend-v1",
        "pod": "tcp-backend-v1-abc-xyz",
        "tcpport": str(TCP_PORT),
        "tlsport": str(TLS_PORT),
        "isTLS": False,
    }
    assert secure[:3] == ["Gateway API Test TCP Server\n", "PONG\n", "true\n"]
    tls = json.loads(secure[3])["tls"]
    assert tls["serverName"] == "tls.example.com" and tls["version"] == "TLS 1.3"


def test_without_tcp_echo_server_it_serves_http_and_https_echoes(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    leaf = issue_certificate(ca, "backend", ["abc.example.com"])
    (tmp_path / "c.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "k.pem").write_bytes(leaf.key_pem)
    env = {
        "POD_IP": HOST,
        "HTTP_PORT": str(TCP_PORT),
        "HTTPS_PORT": str(TLS_PORT),
        "TLS_SERVER_CERT": str(tmp_path / "c.pem"),
        "TLS_SERVER_PRIVKEY": str(tmp_path / "k.pem"),
        "POD_NAME": "tls-backend-abc-xyz",
        "NAMESPACE": "infra",
    }

    async def get(port: int, context: ssl.SSLContext | None) -> tuple[bytes, Obj]:
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=context, server_hostname="abc.example.com" if context else None
        )
        writer.write(b"GET /some/path HTTP/1.1\r\nHost: abc.example.com\r\nX-A: 1\r\n\r\n")
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = json.loads(await reader.readexactly(length))
        writer.close()
        return status, body

    async def main() -> tuple[tuple[bytes, Obj], tuple[bytes, Obj]]:
        server = asyncio.create_task(serve(env))
        try:
            await _listening(TCP_PORT)
            await _listening(TLS_PORT)
            plain = await get(TCP_PORT, None)
            secure = await get(TLS_PORT, ssl.create_default_context(cadata=ca.cert_pem.decode()))
        finally:
            server.cancel()
        return plain, secure

    (status, plain), (secure_status, secure) = asyncio.run(main())
    assert status.startswith(b"HTTP/1.1 200") and secure_status.startswith(b"HTTP/1.1 200")
    assert (plain["path"], plain["host"], plain["method"]) == (
        "/some/path",
        "abc.example.com",
        "GET",
    )
    assert plain["headers"]["X-A"] == ["1"] and "tls" not in plain
    assert (plain["namespace"], plain["pod"]) == ("infra", "tls-backend-abc-xyz")
    assert secure["tls"]["serverName"] == "abc.example.com"
    assert secure["tls"]["version"] == "TLS 1.3"


def test_modes_that_are_not_built_in_refuse_to_start() -> None:
    with pytest.raises(SystemExit, match="GRPC_ECHO_SERVER"):
        asyncio.run(serve({"GRPC_ECHO_SERVER": "1"}))
