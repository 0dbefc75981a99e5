"""The mesh's CA: made once, reused, private; its certificates verify with Python's TLS."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

from tcpmesh.apiserver.credentials import client_ssl_context
from tcpmesh.apiserver.pki import ensure_ca, server_ssl_context


def test_the_ca_is_made_once_and_reused(tmp_path: Path) -> None:
    first = ensure_ca(tmp_path)
    second = ensure_ca(tmp_path)
    assert first.cert_pem == second.cert_pem
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    assert ensure_ca(tmp_path / "other").cert_pem != first.cert_pem


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """One TLS handshake over a real socket pair on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        errors: list[BaseException] = []

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname=name) as tls,
            ):
                tls.sendall(b"x")
        finally:
            thread.join(5)


def test_the_serving_certificate_verifies_against_the_ca_only(tmp_path: Path) -> None:
    server = server_ssl_context(tmp_path, ["127.0.0.1", "localhost"])
    trusting = client_ssl_context(tmp_path / "pki" / "ca.crt")
    handshake(server, trusting, "127.0.0.1")
    handshake(server, trusting, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, trusting, "127.0.0.2")  # not a name the certificate carries
    ensure_ca(tmp_path / "other")
    stranger = client_ssl_context(tmp_path / "other" / "pki" / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, stranger, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client_ssl_context(None), "127.0.0.1")
