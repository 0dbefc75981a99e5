"""Who a remote peer is: the identity its client certificate carries, and what it may do.

A peer is a gateway host of a gateway Deployment or a workload host of a WorkloadGroup.
The certificate names it in a URI SAN, ``tcpmesh://gateway/NAMESPACE/NAME/NODE`` (or
``workload``), and binds it to its address with an IP SAN; the organizational unit holds
the bootstrap token's id (``token:abcdef``), so deleting that token revokes the
certificate. The mesh's CA signs only what it checked, so reading these fields of a
verified certificate is enough; nothing else about the peer is trusted.
"""

from __future__ import annotations

import datetime
import re
import ssl
from dataclasses import dataclass
from typing import Any, Literal

SCHEME = "tcpmesh://"
ROLES = ("gateway", "workload")
Role = Literal["gateway", "workload"]
# A DNS-1123 label: the pieces end up in object names.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
TOKEN_UNIT_PREFIX = "token:"


class IdentityError(ValueError):
    pass


@dataclass(frozen=True)
class PeerIdentity:
    role: Role
    namespace: str
    name: str
    node: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise IdentityError(f"role: {self.role!r} is neither gateway nor workload")
        for field in ("namespace", "name", "node"):
            value = getattr(self, field)
            if not _LABEL.match(value):
                raise IdentityError(
                    f"{field}: {value!r} is not a DNS-1123 label (lowercase letters, digits, '-')"
                )

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.role}/{self.namespace}/{self.name}/{self.node}"

    @classmethod
    def from_uri(cls, uri: str) -> PeerIdentity:
        if not uri.startswith(SCHEME):
            raise IdentityError(f"{uri!r} is not a {SCHEME} identity")
        parts = uri[len(SCHEME) :].split("/")
        if len(parts) != 4 or parts[0] not in ROLES:
            raise IdentityError(f"{uri!r}: expected {SCHEME}ROLE/NAMESPACE/NAME/NODE")
        role: Role = "gateway" if parts[0] == "gateway" else "workload"
        return cls(role, parts[1], parts[2], parts[3])

    @property
    def object_name(self) -> str:
        """The name of the Pod (gateway) or WorkloadEntry (workload) this peer registers."""
        return f"{self.name}-{self.node}"

    @property
    def node_id(self) -> str:
        """Its proxy's node id, ``namespace/pod``, as the control plane names nodes."""
        return f"{self.namespace}/{self.object_name}"


@dataclass(frozen=True)
class VerifiedPeer:
    """What a verified client certificate says: the identity, its address, the token id,
    and when the certificate ends (a stream it opened must not outlive it)."""

    identity: PeerIdentity
    addresses: tuple[str, ...]
    token_id: str
    not_after: datetime.datetime | None = None


def _peer(uris: list[str], addresses: tuple[str, ...], units: list[str]) -> VerifiedPeer | None:
    units = [u for u in units if u.startswith(TOKEN_UNIT_PREFIX)]
    uris = [u for u in uris if u.startswith(SCHEME)]
    if len(uris) != 1 or len(units) != 1:
        return None
    try:
        identity = PeerIdentity.from_uri(uris[0])
    except IdentityError:
        return None
    return VerifiedPeer(identity, addresses, units[0][len(TOKEN_UNIT_PREFIX) :])


def peer_from_certificate(cert: dict[str, Any]) -> VerifiedPeer | None:
    """Read ``ssl.SSLSocket.getpeercert()``'s dict; None when it is not a peer certificate."""
    sans = cert.get("subjectAltName") or ()
    uris = [value for kind, value in sans if kind == "URI"]
    addresses = tuple(value.strip() for kind, value in sans if kind == "IP Address")
    units = [
        value
        for rdn in cert.get("subject") or ()
        for key, value in rdn
        if key == "organizationalUnitName"
    ]
    peer = _peer(uris, addresses, units)
    if peer is None or not cert.get("notAfter"):
        return peer
    seconds = ssl.cert_time_to_seconds(cert["notAfter"])
    return _with_end(peer, datetime.datetime.fromtimestamp(seconds, datetime.UTC))


def peer_from_pem(pem: bytes) -> VerifiedPeer | None:
    """The same from a PEM certificate that a TLS layer verified against the mesh's CA
    (gRPC's auth context hands the peer's certificate over this way)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = list(sans.get_values_for_type(x509.UniformResourceIdentifier))
    addresses = tuple(str(a) for a in sans.get_values_for_type(x509.IPAddress))
    units = [
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]
    peer = _peer(uris, addresses, units)
    return None if peer is None else _with_end(peer, cert.not_valid_after_utc)


def _with_end(peer: VerifiedPeer, not_after: datetime.datetime) -> VerifiedPeer:
    return VerifiedPeer(peer.identity, peer.addresses, peer.token_id, not_after)
