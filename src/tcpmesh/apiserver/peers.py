"""Remote gateways and workload agents: bootstrap, certificates, registration, authorization.

A peer presents a bootstrap token once (``POST /tcpmesh/v1/join`` with a CSR) and gets a
short-lived client certificate from the mesh's CA naming its identity and address; from
then on it authenticates with that certificate (mTLS) and renews it the same way before
it expires. With it the peer may do exactly three things: follow its own node's Snapshot
stream (a gateway), register or renew its own Pod or WorkloadEntry
(``PUT /tcpmesh/v1/peers/self``, a heartbeat that carries its readiness), and remove it
(``DELETE``). Everything else is refused (403). Deleting the bootstrap token revokes every
certificate issued against it at the peer's next request. See docs/multihost.md for the
threat model.
"""

from __future__ import annotations

import datetime
import json
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tcpmesh.apiserver.pki import CertificateAuthority, read_csr, sign_client_csr
from tcpmesh.join import (
    DEFAULT_LEASE_SECONDS,
    TOKEN_NAMESPACE,
    TOKEN_UNIT_PREFIX,
    BootstrapToken,
    IdentityError,
    PeerIdentity,
    TokenError,
    VerifiedPeer,
    check_token,
    gateway_pod,
    is_joined,
    peer_from_certificate,
    peer_from_pem,
    secret_name,
    workload_entry,
)
from tcpmesh.store import StoreBackend

JOIN_PATH = "/tcpmesh/v1/join"
CA_PATH = "/tcpmesh/v1/ca"
SELF_PATH = "/tcpmesh/v1/peers/self"
SNAPSHOT_PREFIX = "/tcpmesh/v1/snapshots/"
DEFAULT_CERT_TTL = datetime.timedelta(hours=1)
MAX_CSR_BYTES = 16 * 1024

Obj = dict[str, Any]


class PeerRefused(Exception):
    """A peer request that fails: the HTTP code, the Kubernetes reason and one line."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def response(self) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        return web.json_response(body, status=self.code)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def verified_certificate(request: web.Request) -> dict[str, Any] | None:
    """The client certificate the TLS layer verified against the mesh's CA, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    cert = ssl_object.getpeercert()
    return cert or None


@dataclass
class PeerAuthority:
    """Issues peer certificates and answers the peers' requests, for one API server."""

    store: StoreBackend
    ca: CertificateAuthority
    cert_ttl: datetime.timedelta = DEFAULT_CERT_TTL
    lease_seconds: int = DEFAULT_LEASE_SECONDS

    def routes(self, app: web.Application) -> None:
        app.router.add_get(CA_PATH, self.ca_certificate)
        app.router.add_post(JOIN_PATH, self.join)
        app.router.add_put(SELF_PATH, self.register)
        app.router.add_delete(SELF_PATH, self.deregister)

    # ------------------------------------------------------------ authentication

    def peer(self, request: web.Request) -> VerifiedPeer | None:
        cert = verified_certificate(request)
        return peer_from_certificate(cert) if cert is not None else None

    def check_revoked(self, peer: VerifiedPeer) -> None:
        """Refuse a certificate whose bootstrap token was deleted (the API and xDS both)."""
        if self.store.get("Secret", TOKEN_NAMESPACE, secret_name(peer.token_id)) is None:
            raise PeerRefused(
                401, "Unauthorized", "certificate revoked: its bootstrap token was deleted"
            )

    def authorize_xds(self, cert_pem: bytes, node_id: str) -> VerifiedPeer:
        """The peer behind an ADS stream, if it may follow ``node_id``: a gateway's own
        node only, as with its Snapshot stream (a workload has no proxy to configure)."""
        peer = peer_from_pem(cert_pem)
        if peer is None:
            raise PeerRefused(403, "Forbidden", "the client certificate names no tcpmesh peer")
        self.check_revoked(peer)
        identity = peer.identity
        if identity.role != "gateway" or identity.node_id != node_id:
            raise PeerRefused(403, "Forbidden", f"{identity.uri} may not follow node {node_id}")
        return peer

    def check(self, request: web.Request, peer: VerifiedPeer) -> None:
        """Refuse a revoked certificate, and any request a peer may not make."""
        self.check_revoked(peer)
        if request.path in (SELF_PATH, JOIN_PATH):
            return
        identity = peer.identity
        own_snapshot = SNAPSHOT_PREFIX + identity.node_id
        if identity.role == "gateway" and request.method == "GET" and request.path == own_snapshot:
            return
        raise PeerRefused(
            403, "Forbidden", f"{identity.uri} may not {request.method} {request.path}"
        )

    def _checked_peer(self, request: web.Request) -> VerifiedPeer:
        """The peer of a request the API's middleware let through (see ``check``)."""
        peer = self.peer(request)
        if peer is None:
            raise web.HTTPUnauthorized()
        return peer

    # ------------------------------------------------------------ handlers

    async def ca_certificate(self, request: web.Request) -> web.Response:
        """The CA certificate, for a joining peer that checks it against its pinned hash."""
        return web.Response(body=self.ca.cert_pem, content_type="application/x-pem-file")

    async def join(self, request: web.Request) -> web.Response:
        try:
            return await self._join(request)
        except PeerRefused as refused:
            return refused.response()

    async def _join(self, request: web.Request) -> web.Response:
        body = await _json(request, MAX_CSR_BYTES)
        csr_pem = body.get("csr")
        if not isinstance(csr_pem, str):
            raise PeerRefused(
                400, "BadRequest", "csr: a PEM certificate signing request is required"
            )
        try:
            csr = read_csr(csr_pem.encode())
        except ValueError as exc:
            raise PeerRefused(400, "BadRequest", str(exc)) from None
        identity, address = self._requested(csr.uris, csr.addresses)
        unit = self._authenticate_join(request, identity, address)
        cert = sign_client_csr(
            self.ca, csr, uri=identity.uri, address=address, unit=unit, ttl=self.cert_ttl
        )
        expires = _now() + self.cert_ttl
        return web.json_response(
            {
                "certificate": cert.decode(),
                "ca": self.ca.cert_pem.decode(),
                "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "leaseSeconds": self.lease_seconds,
            }
        )

    @staticmethod
    def _requested(uris: tuple[str, ...], addresses: tuple[str, ...]) -> tuple[PeerIdentity, str]:
        if len(uris) != 1 or len(addresses) != 1:
            raise PeerRefused(
                400, "BadRequest", "csr: expected exactly one tcpmesh:// URI and one IP address"
            )
        try:
            return PeerIdentity.from_uri(uris[0]), addresses[0]
        except IdentityError as exc:
            raise PeerRefused(400, "BadRequest", f"csr: {exc}") from None

    def _authenticate_join(self, request: web.Request, identity: PeerIdentity, address: str) -> str:
        """The token unit for the new certificate: from a valid bootstrap token, or (a
        renewal) from the peer's current certificate, which must name the same peer."""
        current = self.peer(request)
        if current is not None:
            self.check(request, current)
            if current.identity != identity or address not in current.addresses:
                raise PeerRefused(
                    403, "Forbidden", f"{current.identity.uri} may not renew as {identity.uri}"
                )
            return TOKEN_UNIT_PREFIX + current.token_id
        scheme, _, text = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            raise PeerRefused(401, "Unauthorized", "a bootstrap token is required")
        try:
            token = BootstrapToken.parse(text)
            stored = self.store.get("Secret", TOKEN_NAMESPACE, secret_name(token.token_id))
            check_token(stored, token, _now())
        except TokenError as exc:
            raise PeerRefused(401, "Unauthorized", str(exc)) from None
        if request.remote != address:
            # The certificate binds the address the token was presented from.
            raise PeerRefused(
                403, "Forbidden", f"csr: address {address} is not this request's ({request.remote})"
            )
        return TOKEN_UNIT_PREFIX + token.token_id

    async def register(self, request: web.Request) -> web.Response:
        peer = self._checked_peer(request)
        try:
            body = await _json(request, 4096)
            obj, extra = self._register(peer, body.get("ready") is True)
        except PeerRefused as refused:
            return refused.response()
        return web.json_response({"object": obj, "leaseSeconds": self.lease_seconds, **extra})

    def _register(self, peer: VerifiedPeer, ready: bool) -> tuple[Obj, Obj]:
        identity, address, now = peer.identity, peer.addresses[0], _now()
        if identity.role == "gateway":
            owner = self._owner("Deployment", identity)
            obj, status = gateway_pod(
                owner, identity, address, ready=ready, now=now, lease_seconds=self.lease_seconds
            )
            extra: Obj = {}
        else:
            owner = self._owner("WorkloadGroup", identity)
            obj, status = workload_entry(
                owner, identity, address, healthy=ready, now=now, lease_seconds=self.lease_seconds
            )
            extra = {"probe": (owner.get("spec") or {}).get("probe")}
        kind = obj["kind"]
        existing = self.store.get(kind, identity.namespace, identity.object_name)
        if existing is None:
            self.store.create(obj)
        elif not is_joined(existing):
            raise PeerRefused(
                409, "AlreadyExists", f'{kind} "{identity.node_id}" exists and is not a joined peer'
            )
        else:
            self.store.replace(obj)
        stored = self.store.get(kind, identity.namespace, identity.object_name)
        if stored is None or stored.get("status") != status:  # a beat that changes nothing
            stored = self.store.update_status(
                kind, identity.namespace, identity.object_name, status
            )
        return stored, extra

    def _owner(self, kind: str, identity: PeerIdentity) -> Obj:
        owner = self.store.get(kind, identity.namespace, identity.name)
        if owner is None:
            raise PeerRefused(
                404, "NotFound", f'{kind} "{identity.namespace}/{identity.name}" not found'
            )
        return owner

    async def deregister(self, request: web.Request) -> web.Response:
        identity = self._checked_peer(request).identity
        kind = "Pod" if identity.role == "gateway" else "WorkloadEntry"
        existing = self.store.get(kind, identity.namespace, identity.object_name)
        if existing is not None and is_joined(existing):
            self.store.delete(kind, identity.namespace, identity.object_name)
        return web.json_response({"kind": "Status", "status": "Success"})


async def _json(request: web.Request, max_bytes: int) -> Obj:
    data = await request.content.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PeerRefused(413, "RequestEntityTooLarge", f"the body is over {max_bytes} bytes")
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        raise PeerRefused(400, "BadRequest", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise PeerRefused(400, "BadRequest", "the body is not a JSON object")
    return body
