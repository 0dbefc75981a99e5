"""Remote gateways and workload agents: bootstrap, certificates, registration, authorization.

A peer presents a bootstrap token once (``POST /tcpmesh/v1/join`` with a CSR) and gets a
short-lived client certificate from the mesh's CA naming its identity and address; from
then on it authenticates with that certificate (mTLS) and renews it the same way before
it expires. With it the peer may do exactly three things: follow its own node's Snapshot
stream (a gateway), register or renew its own Pod or WorkloadEntry
(``PUT /tcpmesh/v1/peers/self``, a heartbeat that carries its readiness), and remove it
(``DELETE``). Everything else is refused (403). Deleting the bootstrap token revokes every
certificate issued against it: its next request is refused, and a snapshot stream it has
open ends within REVOCATION_CHECK_SECONDS (``until_revoked``). A token scoped to one
gateway Deployment or WorkloadGroup bootstraps and honours peers of that one only. See
docs/multihost.md for the threat model.
"""

from __future__ import annotations

import asyncio
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
    check_scope,
    check_token,
    gateway_pod,
    is_joined,
    peer_from_certificate,
    peer_from_pem,
    secret_name,
    workload_entry,
)
from tcpmesh.store import StoreBackend, StoreError

JOIN_PATH = "/tcpmesh/v1/join"
CA_PATH = "/tcpmesh/v1/ca"
SELF_PATH = "/tcpmesh/v1/peers/self"
SNAPSHOT_PREFIX = "/tcpmesh/v1/snapshots/"
DEFAULT_CERT_TTL = datetime.timedelta(hours=1)
MAX_CSR_BYTES = 16 * 1024
# How often an open stream of a peer checks that its token still stands (the longest a
# deleted token's peer goes on receiving snapshots).
REVOCATION_CHECK_SECONDS = 1.0

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

    def revoked(self, peer: VerifiedPeer, now: datetime.datetime | None = None) -> str | None:
        """Why ``peer``'s certificate is no longer honoured (None: it is): its bootstrap
        token was deleted, no longer names the peer's owner, or the certificate ran out.
        Reads the store (blocking): call it off the event loop."""
        if peer.not_after is not None and peer.not_after <= (now or _now()):
            return "certificate expired"
        stored = self.store.get("Secret", TOKEN_NAMESPACE, secret_name(peer.token_id))
        if stored is None:
            return "certificate revoked: its bootstrap token was deleted"
        try:
            check_scope(stored, peer.token_id, peer.identity)
        except TokenError as exc:
            return f"certificate revoked: {exc}"
        return None

    async def until_revoked(self, peer: VerifiedPeer) -> str:
        """Returns, with the reason, once ``peer`` is revoked (see ``revoked``); checked
        every REVOCATION_CHECK_SECONDS, so a stream it opened ends that soon after. A store
        that does not answer revokes nothing (the replica's own reach check handles it).
        For every server that streams to peers: the API's snapshot feed, and xDS."""
        while True:
            try:
                reason = await asyncio.to_thread(self.revoked, peer)
            except StoreError:
                reason = None
            if reason is not None:
                return reason
            await asyncio.sleep(REVOCATION_CHECK_SECONDS)

    def check_revoked(self, peer: VerifiedPeer) -> None:
        """Refuse a certificate that is no longer honoured (see ``revoked``): the API and
        xDS both. Blocking: call it off the event loop."""
        reason = self.revoked(peer)
        if reason is not None:
            raise PeerRefused(401, "Unauthorized", reason)

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

    def check(self, method: str, path: str, peer: VerifiedPeer) -> None:
        """Refuse a revoked certificate, and any request a peer may not make (blocking)."""
        self.check_revoked(peer)
        if path in (SELF_PATH, JOIN_PATH):
            return
        identity = peer.identity
        own_snapshot = SNAPSHOT_PREFIX + identity.node_id
        if identity.role == "gateway" and method == "GET" and path == own_snapshot:
            return
        raise PeerRefused(403, "Forbidden", f"{identity.uri} may not {method} {path}")

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
        scheme, _, text = request.headers.get("Authorization", "").partition(" ")
        bearer = text if scheme.lower() == "bearer" else None
        unit = await asyncio.to_thread(
            self._authenticate_join, self.peer(request), bearer, request.remote, identity, address
        )
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

    def _authenticate_join(
        self,
        current: VerifiedPeer | None,
        bearer: str | None,
        remote: str | None,
        identity: PeerIdentity,
        address: str,
    ) -> str:
        """The token unit for the new certificate: from a valid bootstrap token whose scope
        covers ``identity``, or (a renewal) from the peer's ``current`` certificate, which
        must name the same peer. Reads the store: runs off the event loop."""
        if current is not None:
            self.check("POST", JOIN_PATH, current)
            if current.identity != identity or address not in current.addresses:
                raise PeerRefused(
                    403, "Forbidden", f"{current.identity.uri} may not renew as {identity.uri}"
                )
            return TOKEN_UNIT_PREFIX + current.token_id
        if bearer is None:
            raise PeerRefused(401, "Unauthorized", "a bootstrap token is required")
        try:
            token = BootstrapToken.parse(bearer)
            stored = self.store.get("Secret", TOKEN_NAMESPACE, secret_name(token.token_id))
            check_token(stored, token, _now())
        except TokenError as exc:
            raise PeerRefused(401, "Unauthorized", str(exc)) from None
        assert stored is not None  # check_token refuses a missing one
        try:
            check_scope(stored, token.token_id, identity)
        except TokenError as exc:
            raise PeerRefused(403, "Forbidden", str(exc)) from None
        if remote != address:
            # The certificate binds the address the token was presented from.
            raise PeerRefused(
                403, "Forbidden", f"csr: address {address} is not this request's ({remote})"
            )
        return TOKEN_UNIT_PREFIX + token.token_id

    async def register(self, request: web.Request) -> web.Response:
        peer = self._checked_peer(request)
        try:
            body = await _json(request, 4096)
            obj, extra = await asyncio.to_thread(self._register, peer, body.get("ready") is True)
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
            # With its status in the same write: a Pod without its IP for a moment would
            # give its gateway a snapshot listening on loopback in between.
            self.store.create({**obj, "status": status})
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
        await asyncio.to_thread(self._deregister, self._checked_peer(request).identity)
        return web.json_response({"kind": "Status", "status": "Success"})

    def _deregister(self, identity: PeerIdentity) -> None:
        kind = "Pod" if identity.role == "gateway" else "WorkloadEntry"
        existing = self.store.get(kind, identity.namespace, identity.object_name)
        if existing is not None and is_joined(existing):
            self.store.delete(kind, identity.namespace, identity.object_name)


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
