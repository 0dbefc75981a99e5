"""Bootstrap tokens: what a remote gateway or workload agent presents once, to get a certificate.

The shape is kubeadm's (``abcdef.0123456789abcdef``: a public id, a secret): the id names
the stored object, the secret proves possession. Only a SHA-256 digest of the secret is
stored (the secret has 80 random bits from ``secrets``, so a plain digest cannot be
searched; a slow password hash would add nothing), in a Secret the API serves to the
mesh's administrators only. A token expires at its ``expiration``; deleting the Secret
revokes the token and every certificate issued against it.

A token may be scoped to one gateway Deployment or one WorkloadGroup (``scope``:
``gateway/NAMESPACE/NAME`` or ``workload/NAMESPACE/NAME``): it then bootstraps only peers
of that one, and the certificates it got are honoured only while the token still names
their owner. An unscoped token bootstraps any gateway or workload (kubeadm's tokens are
not bound to a node either); ``tcpmesh token create`` says which a token is.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from tcpmesh.join.identity import IdentityError, PeerIdentity, Role

TOKEN_NAMESPACE = "istio-system"
TOKEN_PREFIX = "bootstrap-token-"
TOKEN_TYPE = "bootstrap.tcpmesh.io/token"
_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")


class TokenError(ValueError):
    """A token that is malformed, unknown, expired or wrong; the message says which."""


@dataclass(frozen=True)
class BootstrapToken:
    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.token_id}.{self.secret}"

    @classmethod
    def parse(cls, text: str) -> BootstrapToken:
        match = _TOKEN.match(text.strip())
        if match is None:
            raise TokenError("token: expected the form [a-z0-9]{6}.[a-z0-9]{16}")
        return cls(match[1], match[2])

    @classmethod
    def generate(cls) -> BootstrapToken:
        def pick(n: int) -> str:
            return "".join(secrets.choice(_ALPHABET) for _ in range(n))

        return cls(pick(6), pick(16))


@dataclass(frozen=True)
class TokenScope:
    """The one gateway Deployment or WorkloadGroup a token may bootstrap peers of."""

    role: Role
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.role}/{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, role: Role, text: str) -> TokenScope:
        """``NAMESPACE/NAME`` for ``role``; TokenError names what is wrong."""
        namespace, slash, name = text.partition("/")
        if not slash:
            raise TokenError(f"{text!r}: expected NAMESPACE/NAME")
        try:
            PeerIdentity(role, namespace, name, "scope")  # the same rules as identities
        except IdentityError as exc:
            raise TokenError(f"{text!r}: {exc}") from None
        return cls(role, namespace, name)

    @classmethod
    def from_text(cls, text: str) -> TokenScope:
        role, _, rest = text.partition("/")
        if role not in ("gateway", "workload"):
            raise TokenError(f"scope {text!r}: expected gateway/NS/NAME or workload/NS/NAME")
        return cls.parse("gateway" if role == "gateway" else "workload", rest)

    def covers(self, identity: PeerIdentity) -> bool:
        return (identity.role, identity.namespace, identity.name) == (
            self.role,
            self.namespace,
            self.name,
        )


def secret_name(token_id: str) -> str:
    return TOKEN_PREFIX + token_id


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_object(
    token: BootstrapToken,
    ttl: datetime.timedelta | None,
    now: datetime.datetime,
    description: str,
    scope: TokenScope | None = None,
) -> dict[str, Any]:
    """The Secret that stores ``token`` (hashed); ``ttl`` None: it never expires."""
    data = {"token-id": _b64(token.token_id), "token-secret-sha256": _b64(_digest(token.secret))}
    if scope is not None:
        data["scope"] = _b64(str(scope))
    if ttl is not None:
        data["expiration"] = _b64(_rfc3339(now + ttl))
    if description:
        data["description"] = _b64(description)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": TOKEN_TYPE,
        "metadata": {"name": secret_name(token.token_id), "namespace": TOKEN_NAMESPACE},
        "data": data,
    }


def _field(obj: dict[str, Any], key: str) -> str:
    value = (obj.get("data") or {}).get(key)
    return base64.b64decode(value).decode() if value else ""


def expiration(obj: dict[str, Any]) -> datetime.datetime | None:
    text = _field(obj, "expiration")
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def description(obj: dict[str, Any]) -> str:
    return _field(obj, "description")


def scope_of(obj: dict[str, Any]) -> TokenScope | None:
    """The token's scope; None when it has none. A scope that no longer reads (edited by
    hand) raises TokenError: such a token bootstraps and honours nobody."""
    text = _field(obj, "scope")
    return TokenScope.from_text(text) if text else None


def check_scope(obj: dict[str, Any], token_id: str, identity: PeerIdentity) -> None:
    """Raise TokenError unless the token stored in ``obj`` may stand for ``identity``."""
    scope = scope_of(obj)
    if scope is not None and not scope.covers(identity):
        raise TokenError(f"token {token_id} is for {scope} only, not {identity.uri}")


def check_token(obj: dict[str, Any] | None, token: BootstrapToken, now: datetime.datetime) -> None:
    """Raise TokenError unless ``obj`` is the stored form of ``token`` and has not expired.

    One message for unknown and wrong secrets, so a caller learns nothing about which ids
    exist."""
    if obj is None or obj.get("type") != TOKEN_TYPE:
        raise TokenError("token: unknown or wrong")
    wanted = _field(obj, "token-secret-sha256")
    if not hmac.compare_digest(wanted.encode(), _digest(token.secret).encode()):
        raise TokenError("token: unknown or wrong")
    expires = expiration(obj)
    if expires is not None and expires <= now:
        raise TokenError(f"token: expired at {_rfc3339(expires)}")
