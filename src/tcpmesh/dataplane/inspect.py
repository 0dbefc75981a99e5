"""The I/O around the ClientHello peek, and the TLS contexts of terminating routes.

Envoy's ``tls_inspector`` reads the ClientHello with ``MSG_PEEK``: nothing leaves the
kernel's receive buffer, so after the route is chosen the same bytes are read again,
either by the relay (passthrough: relayed unchanged, the backend completes the
handshake) or by the TLS layer of a terminating route. :func:`peek_client_hello` does
that on an accepted socket before any transport owns it, bounded by the reader's size
limit and by a timeout (Envoy's listener filter timeout, 15 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import tempfile

from tcpmesh.control import DownstreamTls
from tcpmesh.dataplane.clienthello import DEFAULT_LIMIT, Outcome, Peek, read_server_name

log = logging.getLogger("tcpmesh.dataplane")

# Envoy: listener_filters_timeout defaults to 15 s; the connection is then closed.
PEEK_TIMEOUT = 15.0

_VERSIONS = {
    "TLSv1_0": ssl.TLSVersion.TLSv1,
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


async def peek_client_hello(
    sock: socket.socket, *, limit: int = DEFAULT_LIMIT, timeout: float = PEEK_TIMEOUT
) -> Peek:
    """What the connection's first bytes say, read without consuming them.

    The socket must be non-blocking and not yet owned by a transport. A peer that closes
    first is ``NOT_TLS``; when ``timeout`` seconds pass without a complete ClientHello
    the answer stays ``NEED_MORE`` (with the reason), and the caller closes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = -1
    while True:
        try:
            data = sock.recv(limit, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError as exc:
            return Peek(Outcome.NOT_TLS, reason=f"peek failed: {exc}")
        if data is not None:
            if not data:
                return Peek(Outcome.NOT_TLS, reason="closed before a ClientHello")
            if len(data) != seen:
                seen = len(data)
                peek = read_server_name(data, limit)
                if peek.done:
                    return peek
        remaining = deadline - loop.time()
        if remaining <= 0 or not await _readable(loop, sock, remaining):
            return Peek(Outcome.NEED_MORE, reason=f"no ClientHello within {timeout:g}s")


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket, wait: float) -> bool:
    """Whether more bytes arrived within ``wait`` seconds (a peek leaves the old ones)."""
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, wait)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
    # The same bytes stay readable after a peek: yield once so a slow client's next
    # segment can arrive instead of spinning on what is already there.
    await asyncio.sleep(0.001)
    return True


class TlsContexts:
    """Server ``SSLContext`` objects of terminating routes, one per distinct certificate.

    Keyed by the route's ``DownstreamTls`` (its certificate material is part of it), so a
    replaced Secret makes a new context for new handshakes while sessions already open
    keep the one they were made with. Contexts no Snapshot uses any more are dropped by
    :meth:`retain`.
    """

    def __init__(self) -> None:
        self._contexts: dict[DownstreamTls, ssl.SSLContext | None] = {}

    def get(self, tls: DownstreamTls) -> ssl.SSLContext | None:
        """The context, or None when the material cannot be loaded (logged once)."""
        if tls not in self._contexts:
            try:
                self._contexts[tls] = server_context(tls)
            except (ssl.SSLError, ValueError, OSError) as exc:
                log.error("cannot use the certificate of Secret %s: %s", tls.secret, exc)
                self._contexts[tls] = None
        return self._contexts[tls]

    def retain(self, wanted: set[DownstreamTls]) -> None:
        self._contexts = {k: v for k, v in self._contexts.items() if k in wanted}


def server_context(tls: DownstreamTls) -> ssl.SSLContext:
    """An ``SSLContext`` as Envoy's DownstreamTlsContext would be: TLS 1.2+ by default."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS.get(tls.min_protocol_version, ssl.TLSVersion.TLSv1_2)
    if tls.max_protocol_version:
        context.maximum_version = _VERSIONS[tls.max_protocol_version]
    if tls.cipher_suites:
        context.set_ciphers(":".join(tls.cipher_suites))
    _load_chain(context, tls.certificate_chain, tls.private_key)
    if tls.ca_certificates:
        context.load_verify_locations(cadata=tls.ca_certificates)
        context.verify_mode = ssl.CERT_OPTIONAL if tls.client_optional else ssl.CERT_REQUIRED
    return context


def _load_chain(context: ssl.SSLContext, chain: str, key: str) -> None:
    """``load_cert_chain`` reads files only: a private temporary file, removed at once."""
    fd, path = tempfile.mkstemp(prefix="tcpmesh-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(chain.rstrip("\n") + "\n" + key)
        context.load_cert_chain(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
