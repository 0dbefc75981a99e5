"""Peers on other hosts: bootstrap tokens, peer identities, the objects they register,
and the agents of ``tcpmesh gateway join`` and ``tcpmesh workload join``.

The server's half (issuing certificates, registration, authorization) is
``tcpmesh.apiserver.peers``; the expiry of leases is the runtime's (``runtime.joined``).
The agents (aiohttp, processes) are imported lazily: the pure parts serve the API
server, the runtime and ``tcpmesh token`` without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcpmesh.join.identity import (
    TOKEN_UNIT_PREFIX,
    IdentityError,
    PeerIdentity,
    VerifiedPeer,
    peer_from_certificate,
    peer_from_pem,
)
from tcpmesh.join.registration import (
    DEFAULT_LEASE_SECONDS,
    RENEW_TIME,
    expired,
    gateway_pod,
    is_joined,
    workload_entry,
)
from tcpmesh.join.tokens import (
    TOKEN_NAMESPACE,
    TOKEN_PREFIX,
    TOKEN_TYPE,
    BootstrapToken,
    TokenError,
    TokenScope,
    check_scope,
    check_token,
    description,
    expiration,
    scope_of,
    secret_name,
    token_object,
)

if TYPE_CHECKING:
    from tcpmesh.join.agent import JoinError, PeerAgent
    from tcpmesh.join.gateway import GatewayOptions, run_gateway
    from tcpmesh.join.workload import run_workload

_LAZY = {
    "JoinError": "tcpmesh.join.agent",
    "PeerAgent": "tcpmesh.join.agent",
    "GatewayOptions": "tcpmesh.join.gateway",
    "run_gateway": "tcpmesh.join.gateway",
    "run_workload": "tcpmesh.join.workload",
}

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "RENEW_TIME",
    "TOKEN_NAMESPACE",
    "TOKEN_PREFIX",
    "TOKEN_TYPE",
    "TOKEN_UNIT_PREFIX",
    "BootstrapToken",
    "GatewayOptions",
    "IdentityError",
    "JoinError",
    "PeerAgent",
    "PeerIdentity",
    "TokenError",
    "TokenScope",
    "VerifiedPeer",
    "check_scope",
    "check_token",
    "description",
    "expiration",
    "expired",
    "gateway_pod",
    "is_joined",
    "peer_from_certificate",
    "peer_from_pem",
    "run_gateway",
    "run_workload",
    "scope_of",
    "secret_name",
    "token_object",
    "workload_entry",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
