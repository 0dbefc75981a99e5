"""Small helpers over resources in their Kubernetes dict shape, shared by the controllers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tcpmesh.api import pod_ready

Obj = dict[str, Any]


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m: Mapping[str, Any] = obj.get("metadata") or {}
    return m


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "default")


def key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    return namespace_of(obj), name_of(obj)


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = meta(obj).get("labels") or {}
    return labels


def now_rfc3339() -> str:
    """Kubernetes' timestamp format: RFC 3339, UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    return pod_ready(pod.get("status"))


def condition(
    type_: str,
    status: bool,
    previous: list[Mapping[str, Any]] | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> Obj:
    """A status condition whose lastTransitionTime moves only when its status flips."""
    value = "True" if status else "False"
    before = next((c for c in previous or [] if c.get("type") == type_), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == value else None
    cond: Obj = {"type": type_, "status": value, "lastTransitionTime": since or now_rfc3339()}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond
