"""``tcpmesh rebalance vs/NAME [--max-share P] [--over DURATION]``.

The request is state: the command writes a new request id (and the settings given)
into the VirtualService's annotations (``api.rebalance``); the control plane turns them
into its routes' ``rebalance`` and the built-in data plane acts on the new id once.
The write carries the resourceVersion it read and is retried after a conflict.
"""

from __future__ import annotations

from tcpmesh.api import new_request_id, parse_over, parse_share, with_request
from tcpmesh.apiserver.client import ApiClient, ApiError

ATTEMPTS = 20
_KINDS = ("vs/", "virtualservice/", "virtualservices/", "virtualservice.networking.istio.io/")


class RebalanceError(ValueError):
    """Input that names no VirtualService or a bad setting (one line for the user)."""


def vs_name(target: str) -> str:
    """``vs/NAME`` (or the kind's other names) -> NAME."""
    for prefix in _KINDS:
        if target.startswith(prefix) and len(target) > len(prefix):
            return target[len(prefix) :]
    raise RebalanceError(f'error: rebalance takes a VirtualService as vs/NAME, not "{target}"')


def check_settings(over: str | None, max_share: str | None) -> None:
    for flag, value, parse in (
        ("--over", over, parse_over),
        ("--max-share", max_share, parse_share),
    ):
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                raise RebalanceError(f"error: {flag}: {exc}") from exc


def request(
    client: ApiClient, namespace: str, name: str, over: str | None, max_share: str | None
) -> str:
    """Write a new rebalance request on VirtualService ``name``; the line to print."""
    request_id = new_request_id()
    for _ in range(ATTEMPTS):
        vs = client.get("VirtualService", namespace, name)
        try:
            client.replace(with_request(vs, request_id, over=over, max_share=max_share))
        except ApiError as exc:
            if exc.status == 409:
                continue
            raise
        return f"virtualservice.networking.istio.io/{name} rebalance requested ({request_id})"
    raise RuntimeError(f"virtualservice {name}: kept conflicting with other writers; try again")
