"""A joined peer's side of the protocol: get a certificate, keep its registration alive.

``bootstrap`` trusts the control plane's CA only after checking it against the pin the
administrator gave (``--ca-cert-hash``, kubeadm's scheme) or a CA file
(``--certificate-authority``), then exchanges the bootstrap token and a CSR for a
client certificate; the key is made here and never sent. A certificate still valid from
an earlier run is reused, so a restarted agent needs no token. ``heartbeat`` registers
or renews the peer's object with its readiness; ``renew_due`` says when to get the next
certificate (two thirds into the current one's life, as kubelet's certificate manager
does by default within its jitter). Every request tries the servers in turn, starting
with the last one that answered.
"""

from __future__ import annotations

import datetime
import json
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tcpmesh.apiserver.credentials import client_ssl_context, write_credentials, write_private
from tcpmesh.apiserver.pki import (
    CLOCK_SKEW,
    ca_public_key_hash,
    certificate_expiry,
    make_csr,
)
from tcpmesh.join.identity import PeerIdentity

log = logging.getLogger("tcpmesh.join")

PKI = "pki"
REQUEST_TIMEOUT = 5.0


class JoinError(RuntimeError):
    """The join cannot go on; the message is for the person who ran it."""


@dataclass
class PeerAgent:
    servers: tuple[str, ...]
    identity: PeerIdentity
    address: str
    state_dir: Path
    token: str = ""
    ca_cert_hash: str | None = None
    ca_file: Path | None = None
    lease_seconds: int = 15
    _preferred: int = 0
    _expires: datetime.datetime | None = field(default=None, repr=False)

    @property
    def cert_path(self) -> Path:
        return self.state_dir / PKI / "peer.crt"

    @property
    def key_path(self) -> Path:
        return self.state_dir / PKI / "peer.key"

    @property
    def ca_path(self) -> Path:
        return self.state_dir / PKI / "ca.crt"

    # ------------------------------------------------------------ certificates

    async def bootstrap(self) -> None:
        """A client certificate on disk (made now, or kept from a run before)."""
        if not self.ca_path.exists() or self.ca_file is not None:
            await self._trust_ca()
        if self._usable_certificate():
            log.info("reusing the certificate in %s", self.cert_path)
        else:
            if not self.token:
                raise JoinError("--token is required: no valid certificate from an earlier join")
            await self._request_certificate(renewal=False)
        self._write_credentials()

    def _usable_certificate(self) -> bool:
        try:
            pem = self.cert_path.read_bytes()
            expires = certificate_expiry(pem)
        except (OSError, ValueError):
            return False
        if not _names(pem, self.identity.uri, self.address):
            return False
        self._expires = expires
        return expires - datetime.datetime.now(datetime.UTC) > datetime.timedelta(minutes=1)

    async def _trust_ca(self) -> None:
        if self.ca_file is not None:
            try:
                pem = self.ca_file.read_bytes()
            except OSError as exc:
                raise JoinError(f"--certificate-authority {self.ca_file}: {exc.strerror}") from None
        elif self.ca_cert_hash is not None:
            pem = await self._pinned_ca(self.ca_cert_hash)
        else:
            raise JoinError("give --ca-cert-hash sha256:... or --certificate-authority FILE")
        write_private(self.ca_path, pem)

    async def _pinned_ca(self, pin: str) -> bytes:
        """The CA certificate from a server, accepted only if its public key has ``pin``."""
        from cryptography import x509

        # Unverified on purpose: nothing is trusted until the pin matches below.
        async def fetch(session: aiohttp.ClientSession, server: str) -> bytes:
            async with session.get(f"{server}/tcpmesh/v1/ca", ssl=False) as resp:
                resp.raise_for_status()
                body: bytes = await resp.read()
                return body

        pem: bytes = await self._each_server(fetch)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise JoinError("the server's CA certificate is unreadable") from None
        if ca_public_key_hash(cert) != pin.strip().lower():
            raise JoinError(
                f"--ca-cert-hash: the server's CA has {ca_public_key_hash(cert)}, not {pin}"
            )
        return pem

    async def _request_certificate(self, *, renewal: bool) -> None:
        key_pem, csr_pem = make_csr(self.identity.uri, self.address)
        headers = {} if renewal else {"Authorization": f"Bearer {self.token}"}
        answer = await self._call(
            "POST", "/tcpmesh/v1/join", {"csr": csr_pem.decode()}, headers, with_cert=renewal
        )
        cert = str(answer["certificate"]).encode()
        # The key first: a certificate on disk always has its key beside it.
        write_private(self.key_path, key_pem)
        write_private(self.cert_path, cert)
        self._expires = certificate_expiry(cert)
        self.lease_seconds = int(answer.get("leaseSeconds") or self.lease_seconds)
        log.info("certificate for %s valid until %s", self.identity.uri, self._expires)

    def renew_due(self, now: datetime.datetime) -> bool:
        if self._expires is None:
            return True
        # notBefore is back-dated by CLOCK_SKEW; the life counted is from the issue.
        issued = certificate_not_before(self.cert_path.read_bytes()) + CLOCK_SKEW
        return issued + (self._expires - issued) * 2 / 3 <= now

    async def renew(self) -> None:
        await self._request_certificate(renewal=True)

    def _write_credentials(self) -> None:
        """``apiserver.json`` for the data plane's workers: the servers and the certificate."""
        write_credentials(
            self.state_dir,
            self.servers[0],
            "",
            0,
            self.ca_path,
            servers=self.servers,
            client_cert=self.cert_path,
            client_key=self.key_path,
        )

    # ------------------------------------------------------------ registration

    async def heartbeat(self, ready: bool) -> dict[str, Any]:
        answer = await self._call("PUT", "/tcpmesh/v1/peers/self", {"ready": ready}, {})
        self.lease_seconds = int(answer.get("leaseSeconds") or self.lease_seconds)
        return answer

    async def leave(self) -> None:
        await self._call("DELETE", "/tcpmesh/v1/peers/self", None, {})

    # ------------------------------------------------------------ transport

    def ssl_context(self, with_cert: bool = True) -> ssl.SSLContext:
        """The agent's client TLS: the mesh's CA only, and its certificate."""
        context = client_ssl_context(self.ca_path)
        if with_cert:
            context.load_cert_chain(self.cert_path, self.key_path)
        return context

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        *,
        with_cert: bool = True,
    ) -> dict[str, Any]:
        context = self.ssl_context(with_cert)

        async def send(session: aiohttp.ClientSession, server: str) -> dict[str, Any]:
            data = json.dumps(body).encode() if body is not None else None
            async with session.request(
                method, server + path, data=data, headers=headers, ssl=context
            ) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise _Refused(resp.status, _message(text) or resp.reason or "")
                answer = json.loads(text or "{}")
                return answer if isinstance(answer, dict) else {}

        answer: dict[str, Any] = await self._each_server(send)
        return answer

    async def _each_server(self, call: Any) -> Any:
        """``call(session, server)`` on each server in turn until one answers.

        A refusal (an HTTP error status) is final: every replica would say the same; but
        503 means that replica cannot reach the store now, so the next one is asked."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        errors = []
        # From this host's address: the join binds the certificate to the address the
        # token came from, and a host with several addresses must not pick another.
        connector = aiohttp.TCPConnector(local_addr=(self.address, 0))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for step in range(len(self.servers)):
                index = (self._preferred + step) % len(self.servers)
                server = self.servers[index].rstrip("/")
                try:
                    result = await call(session, server)
                except _Refused as refused:
                    if refused.code != 503:
                        raise JoinError(f"{server}: {refused.code}: {refused.message}") from None
                    # That replica cannot reach the store now; another may.
                    errors.append(f"{server}: 503: {refused.message}")
                    continue
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    errors.append(f"{server}: {exc or type(exc).__name__}")
                    continue
                self._preferred = index
                return result
        raise ConnectionError("no API server answered: " + "; ".join(errors))


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def _names(pem: bytes, uri: str, address: str) -> bool:
    """Whether the certificate names this peer at this address (a reused one must)."""
    import ipaddress

    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    ips = sans.get_values_for_type(x509.IPAddress)
    return uri in sans.get_values_for_type(x509.UniformResourceIdentifier) and (
        ipaddress.ip_address(address) in ips
    )


def certificate_not_before(pem: bytes) -> datetime.datetime:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).not_valid_before_utc
