"""The Gateway API conformance backend (``gateway-api/conformance/echo-basic``), TCP mode.

The conformance manifests run the image with ``TCP_ECHO_SERVER=1``; it then serves the
protocol of kubernetes-sigs/gateway-api-conformance-images ``echo-basic/tcpserver``: on
connect it writes ``Gateway API Test TCP Server\\n``; ``PING`` is answered ``PONG``,
``IS_TLS`` with ``true``/``false``, ``TEST`` with one JSON line naming the pod (namespace,
ingress, service, pod, ports, and the TLS parameters when the connection is TLS); other
lines get nothing. ``TCP_PORT`` (default 3000) is plain TCP; ``TLS_PORT`` (default 8443)
serves TLS when ``TLS_SERVER_CERT`` and ``TLS_SERVER_PRIV_KEY`` name PEM files;
``TCP_MODE=RESET`` resets every connection instead. Like every tcpmesh pod it binds
``$POD_IP``. Without ``TCP_ECHO_SERVER`` it is the image's HTTP echo
(:mod:`tcpmesh.runtime.echohttp`); its gRPC and UDP modes are not built in.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import struct
import sys
from typing import Any

from tcpmesh.runtime.echohttp import serve_http

WELCOME = b"Gateway API Test TCP Server\n"
# The Go names of TLS versions (crypto/tls VersionName), for the TEST payload.
_TLS_VERSIONS = {"TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}


def context_payload(env: dict[str, str], tcp_port: str, tls_port: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "namespace": env.get("NAMESPACE", ""),
        "ingress": env.get("INGRESS_NAME", ""),
        "service": env.get("SERVICE_NAME", ""),
        "pod": env.get("POD_NAME", ""),
        "tcpport": tcp_port,
    }
    if tls_port:
        payload["tlsport"] = tls_port
    return payload


def test_payload(base: dict[str, Any], tls: ssl.SSLObject | None, server_name: str = "") -> bytes:
    """The ``TEST`` answer: the pod's context, whether it is TLS, and the TLS parameters."""
    payload = {**base, "isTLS": tls is not None}
    if tls is not None:
        cipher = tls.cipher()
        details: dict[str, Any] = {
            "version": _TLS_VERSIONS.get(str(tls.version()), str(tls.version())),
            "serverName": server_name,
            "cipherSuite": cipher[0] if cipher else "",
        }
        if tls.selected_alpn_protocol():
            details["negotiatedProtocol"] = tls.selected_alpn_protocol()
        payload["tls"] = details
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def answer(line: bytes, payload: bytes, is_tls: bool) -> bytes | None:
    """The reply to one line (without its newline), or None: unknown lines get nothing."""
    text = line.rstrip(b"\r")
    if text == b"TEST":
        return payload
    if text == b"IS_TLS":
        return b"true\n" if is_tls else b"false\n"
    if text == b"PING":
        return b"PONG\n"
    return None


class _Server:
    def __init__(self, env: dict[str, str], base: dict[str, Any], reset: bool) -> None:
        self.env, self.base, self.reset = env, base, reset
        self.server_names: dict[int, str] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return
        tls = writer.get_extra_info("ssl_object")
        server_name = self.server_names.pop(id(tls), "") if tls is not None else ""
        payload = test_payload(self.base, tls, server_name)
        try:
            writer.write(WELCOME)
            while line := await reader.readline():
                if not line.endswith(b"\n"):
                    break
                reply = answer(line[:-1], payload, tls is not None)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def tls_context(self) -> ssl.SSLContext | None:
        cert, key = self.env.get("TLS_SERVER_CERT"), self.env.get("TLS_SERVER_PRIV_KEY")
        if not cert or not key:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)

        def remember(tls: Any, name: str | None, _: ssl.SSLContext) -> None:
            self.server_names[id(tls)] = name or ""

        context.sni_callback = remember
        return context


async def serve(env: dict[str, str]) -> None:
    for mode in ("GRPC_ECHO_SERVER", "UDP_ECHO_SERVER"):
        if env.get(mode):
            raise SystemExit(f"echo-basic: {mode} is not built into tcpmesh (TCP and HTTP are)")
    host = env.get("POD_IP") or "0.0.0.0"
    if not env.get("TCP_ECHO_SERVER"):
        runners = await serve_http(env, host)
        try:
            await asyncio.Event().wait()
        finally:
            for runner in runners:
                await runner.cleanup()
    tcp_port, tls_port = env.get("TCP_PORT") or "3000", env.get("TLS_PORT") or "8443"
    for name, value in (("TCP_PORT", tcp_port), ("TLS_PORT", tls_port)):
        if not value.isdigit():
            raise SystemExit(f"non-integer value in {name}: {value}")
    server = _Server(env, {}, env.get("TCP_MODE") == "RESET")
    context = server.tls_context()
    server.base = context_payload(env, tcp_port, tls_port if context else None)
    servers = [await asyncio.start_server(server.handle, host, int(tcp_port))]
    if context is not None:
        servers.append(await asyncio.start_server(server.handle, host, int(tls_port), ssl=context))
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    try:
        asyncio.run(serve(dict(os.environ)))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
