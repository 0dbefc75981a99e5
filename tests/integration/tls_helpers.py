"""Certificates made with the openssl command line, TLS echo backends and TLS clients."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate (its own trust anchor) and its key, as PEM text."""

    name: str
    cert_pem: str
    key_pem: str
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    @property
    def der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.cert_pem)


def make_certificate(directory: Path, name: str, *dns_names: str) -> Certificate:
    """An ECDSA P-256 certificate for ``dns_names``, made by ``openssl req -x509``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError("openssl is not installed (scripts/system-deps/tls.sh)")
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    san = ",".join(f"DNS:{n}" for n in dns_names)
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={dns_names[0]}",
            "-addext",
            f"subjectAltName={san}",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return Certificate(name, cert_path.read_text(), key_path.read_text(), cert_path, key_path)


def make_signed_certificate(
    directory: Path, name: str, ca: Certificate, *dns_names: str
) -> Certificate:
    """An ECDSA P-256 certificate for ``dns_names`` signed by ``ca`` (as the Gateway API
    conformance suite's MustCreateCASignedCertSecret makes them)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError("openssl is not installed (scripts/system-deps/tls.sh)")
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    request, extensions = directory / f"{name}.csr", directory / f"{name}.ext"
    extensions.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in dns_names) + "\n")
    make_key = ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sign = [
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(ca.cert_path),
        "-CAkey",
        str(ca.key_path),
    ]
    for argv in (
        [*make_key, "-subj", f"/CN={dns_names[0]}", "-keyout", str(key_path), "-out", str(request)],
        [
            *sign,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(extensions),
            "-out",
            str(cert_path),
        ],
    ):
        subprocess.run([openssl, *argv], check=True, capture_output=True, timeout=30)
    return Certificate(name, cert_path.read_text(), key_path.read_text(), cert_path, key_path)


def client_context(*trusted: Certificate) -> ssl.SSLContext:
    """A client that verifies the server against exactly these certificates."""
    context = ssl.create_default_context(cadata="".join(c.cert_pem for c in trusted))
    return context


async def serve_tls_echo(
    host: str, word: str, certificate: Certificate
) -> tuple[asyncio.AbstractServer, int]:
    """A TLS line echo server answering ``<word> <line>`` (tcp-echo over TLS)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await asyncio.wait_for(reader.readline(), 60):
                if not line.endswith(b"\n"):
                    break
                writer.write(word.encode() + b" " + line)
                await writer.drain()
        except (OSError, TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(
        handle, host, 0, ssl=certificate.server_context(), ssl_handshake_timeout=10
    )
    port: int = server.sockets[0].getsockname()[1]
    return server, port


def tls_exchange(
    address: str,
    port: int,
    server_name: str,
    context: ssl.SSLContext,
    line: str = "hello",
    timeout: float = 10.0,
) -> tuple[str, bytes]:
    """One TLS connection: the reply line and the DER certificate the server presented."""
    with (
        socket.create_connection((address, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        peer = tls.getpeercert(binary_form=True)
        assert peer is not None
        tls.sendall(line.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.decode(), peer
