"""Rebalancing of open connections: the VirtualService annotations that ask for it.

A TCP connection keeps the version it was routed to for its whole life, so a weight
change moves only new connections. Rebalancing closes the fewest open connections
needed to bring each version's share of a route's open connections to its weight
(their clients reconnect and are routed anew). It is opt-in, and asked for as state:

- ``traffic.tcpmesh.io/rebalance-request: <id>``: written by ``tcpmesh rebalance`` (and
  by a Rollout with ``rebalance: true``); a data plane acts once per new id.
- ``traffic.tcpmesh.io/rebalance: on-weight-change``: also act after every change of a
  route's weights (``off``, the default: only on a request).
- ``traffic.tcpmesh.io/rebalance-over: 10s``: spread the closes over this long
  (default 30s), with jitter, so clients do not reconnect in a storm.
- ``traffic.tcpmesh.io/rebalance-max-share: 25%``: never close more than this share of a
  route's open connections in one rebalance (default 100%: only what the weights need).

Parsed here once; ``control`` turns the result into ``TcpRoute.rebalance``.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tcpmesh.api.durations import parse_duration
from tcpmesh.api.findings import Finding, error
from tcpmesh.api.names import quote

REBALANCE_ANNOTATION = "traffic.tcpmesh.io/rebalance"
REBALANCE_REQUEST_ANNOTATION = "traffic.tcpmesh.io/rebalance-request"
REBALANCE_OVER_ANNOTATION = "traffic.tcpmesh.io/rebalance-over"
REBALANCE_MAX_SHARE_ANNOTATION = "traffic.tcpmesh.io/rebalance-max-share"
REBALANCE_MODES = ("off", "on-weight-change")
DEFAULT_OVER = 30.0
MAX_OVER = 3600.0
_REQUEST_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_SHARE = re.compile(r"(\d{1,3}(?:\.\d+)?)%?")


@dataclass(frozen=True)
class RebalanceSettings:
    """What a VirtualService's annotations ask for (None from ``rebalance_settings``: nothing)."""

    on_weight_change: bool
    request: str  # "" when no explicit request was made
    over: float  # seconds
    max_share: float  # a fraction in (0, 1]


def parse_share(text: str) -> float:
    """``25%`` or ``25`` -> 0.25; raises ValueError for anything outside (0, 100]."""
    found = _SHARE.fullmatch(text.strip())
    value = float(found.group(1)) if found else -1.0
    if not 0 < value <= 100:
        raise ValueError(f"invalid share {quote(text)}: expected a percentage in (0, 100]")
    return value / 100


def parse_over(text: str) -> float:
    """A duration in [0, 1h]; raises ValueError naming the value."""
    seconds = parse_duration(text)
    if not 0 <= seconds <= MAX_OVER:
        raise ValueError(f"invalid duration {quote(text)}: must be between 0s and 1h")
    return seconds


def rebalance_problems(annotations: Mapping[str, str]) -> Iterator[Finding]:
    """Apply-time errors for the rebalance annotations, each naming its field."""
    mode = annotations.get(REBALANCE_ANNOTATION)
    if mode is not None and mode not in REBALANCE_MODES:
        supported = ", ".join(quote(v) for v in REBALANCE_MODES)
        yield error(
            f"metadata.annotations[{REBALANCE_ANNOTATION}]",
            f"Unsupported value: {quote(mode)}: supported values: {supported}",
        )
    request = annotations.get(REBALANCE_REQUEST_ANNOTATION)
    if request is not None and not _REQUEST_ID.fullmatch(request):
        yield error(
            f"metadata.annotations[{REBALANCE_REQUEST_ANNOTATION}]",
            f"Invalid value: {quote(request)}: a request id is 1-63 letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit",
        )
    for annotation, parse in (
        (REBALANCE_OVER_ANNOTATION, parse_over),
        (REBALANCE_MAX_SHARE_ANNOTATION, parse_share),
    ):
        value = annotations.get(annotation)
        if value is None:
            continue
        try:
            parse(value)
        except ValueError as exc:
            yield error(f"metadata.annotations[{annotation}]", f"Invalid value: {exc}")


def rebalance_settings(annotations: Mapping[str, str]) -> RebalanceSettings | None:
    """The settings, or None when the VirtualService asks for no rebalancing.

    Values that fail validation (stored before a rule existed) count as their default.
    """
    auto = annotations.get(REBALANCE_ANNOTATION) == "on-weight-change"
    request = annotations.get(REBALANCE_REQUEST_ANNOTATION, "")
    if not _REQUEST_ID.fullmatch(request):
        request = ""
    if not auto and not request:
        return None
    return RebalanceSettings(
        on_weight_change=auto,
        request=request,
        over=_or_default(parse_over, annotations.get(REBALANCE_OVER_ANNOTATION), DEFAULT_OVER),
        max_share=_or_default(parse_share, annotations.get(REBALANCE_MAX_SHARE_ANNOTATION), 1.0),
    )


def _or_default(parse: Callable[[str], float], text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        return parse(text)
    except ValueError:
        return default


def new_request_id(prefix: str = "r") -> str:
    """A fresh request id: when (UTC, to the second) and 6 random hex digits."""
    stamp = time.strftime("%Y%m%dt%H%M%S", time.gmtime())
    return f"{prefix[:40]}-{stamp}-{secrets.token_hex(3)}"


def with_request(
    vs: Mapping[str, Any],
    request: str,
    *,
    over: str | None = None,
    max_share: str | None = None,
) -> dict[str, Any]:
    """A copy of the VirtualService ``vs`` (a dict) asking for rebalance ``request``;
    ``over`` and ``max_share`` (annotation texts), when given, become its settings."""
    new = copy.deepcopy(dict(vs))
    annotations = new.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[REBALANCE_REQUEST_ANNOTATION] = request
    if over is not None:
        annotations[REBALANCE_OVER_ANNOTATION] = over
    if max_share is not None:
        annotations[REBALANCE_MAX_SHARE_ANNOTATION] = max_share
    return new
