"""What both store backends share: the errors, the result types and the pure rules of a write.

The rules decide, from the stored object and the one a client sent, what the store writes:
which metadata the server owns, when a write is a no-op, when the generation moves and when
a resourceVersion precondition fails. They live here once so SQLite and etcd cannot drift.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (kind key, namespace, name); see kind_key
# The namespace part of a cluster-scoped object's key: it has no metadata.namespace.
CLUSTER_SCOPE = ""
# The cluster-scoped kinds (kind keys), so that the store refuses a namespace on one of
# them and its absence on any other kind; api.kinds checks it agrees with its registry.
CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "GatewayClass.gateway.networking.k8s.io"})
Action = Literal["created", "configured", "unchanged"]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]

# Metadata the store owns; a client's copy of these never counts as a change.
SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp")
# Everything else at the top level besides these is the object's content (spec, subsets...).
_NOT_CONTENT = ("apiVersion", "kind", "metadata", "status")


class StoreError(Exception):
    """Base of the store's errors; a bare StoreError means a malformed object or a refused write."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    pass


class Expired(StoreError):
    """A watch asked for events older than the history the store keeps (HTTP 410)."""


class NotLeader(StoreError):
    """A fenced write from a replica that does not hold the leadership (any more)."""


class Unavailable(StoreError):
    """The backend cannot be reached (every etcd endpoint down, or the quorum lost)."""


@dataclass(frozen=True)
class ApplyResult:
    object: Obj
    action: Action


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: Obj
    revision: int


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The API groups whose objects were stored before the group joined the key: their rows are
# keyed by the bare Kind, which is unique among these groups (api.kinds checks it), so old
# state directories and etcd prefixes stay readable without a migration. Every other group's
# kinds are keyed "Kind.group" (Kubernetes' GroupKind.String()), so that Gateway API's
# Gateway and Istio's Gateway are two kinds.
UNQUALIFIED_GROUPS = frozenset({"", "apps", "networking.istio.io", "rollouts.tcpmesh.io"})


def group_of(api_version: object) -> str:
    """The API group of an ``apiVersion`` (``""`` for the core group, or when it is unset)."""
    if not isinstance(api_version, str) or "/" not in api_version:
        return ""
    return api_version.split("/", 1)[0]


def kind_key(group: str, kind: str) -> str:
    """The store's identity of the kind (group, kind): ``Kind`` or ``Kind.group``."""
    return kind if group in UNQUALIFIED_GROUPS else f"{kind}.{group}"


def split_kind_key(key: str) -> tuple[str, str]:
    """(group, kind) of a kind key; a bare Kind is one of the unqualified groups (``""``)."""
    kind, _, group = key.partition(".")
    return group, kind


def object_kind_key(obj: Mapping[str, Any]) -> str:
    """The kind key of an object from its ``apiVersion`` and ``kind``."""
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise StoreError("object has no kind")
    return kind_key(group_of(obj.get("apiVersion")), kind)


def key_of(obj: Mapping[str, Any]) -> Key:
    """(kind key, namespace, name) of an object, or StoreError saying which part is wrong.

    A cluster-scoped kind's namespace is ``CLUSTER_SCOPE`` (it has none); every other kind
    needs one."""
    kind = object_kind_key(obj)
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise StoreError(f"{kind} has no metadata")
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        raise StoreError(f"{kind} has no metadata.name")
    if kind in CLUSTER_SCOPED_KINDS:
        if namespace:
            raise StoreError(f'{kind} "{name}" is cluster-scoped: it has no metadata.namespace')
        return kind, CLUSTER_SCOPE, name
    if not isinstance(namespace, str) or not namespace:
        raise StoreError(f'{kind} "{name}" has no metadata.namespace')
    return kind, namespace, name


def describe(kind: str, namespace: str, name: str) -> str:
    return f'{kind} "{namespace}/{name}"' if namespace else f'{kind} "{name}"'


def _content(obj: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in obj.items() if k not in _NOT_CONTENT}


def _user_meta(obj: Mapping[str, Any]) -> Obj:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return {k: v for k, v in meta.items() if k not in SERVER_META and v not in (None, {}, [])}


def same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether writing ``a`` over ``b`` would change nothing a client controls."""
    return _content(a) == _content(b) and _user_meta(a) == _user_meta(b)


def check_version(current: Obj, expected: str | None, key: Key) -> None:
    if expected is not None and current["metadata"]["resourceVersion"] != expected:
        raise Conflict(
            f"Operation cannot be fulfilled on {describe(*key)}: the object has been "
            "modified; please apply your changes to the latest version and try again"
        )


def matches(obj: Obj, selector: Mapping[str, str] | None) -> bool:
    if not selector:
        return True
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def new_object(obj: Obj) -> Obj:
    """The object as first stored: a new uid, generation 1, the creation time."""
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    for field in SERVER_META:
        meta.pop(field, None)
    meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=now())
    return new


def updated_object(current: Obj, obj: Obj) -> Obj:
    """``obj`` over ``current``: the status and identity kept, the generation bumped on content."""
    new = copy.deepcopy(obj)
    new.pop("status", None)
    if "status" in current:
        new["status"] = current["status"]
    old_meta = current["metadata"]
    generation = old_meta["generation"]
    if _content(obj) != _content(current):
        generation += 1
    new["metadata"].update(
        uid=old_meta["uid"],
        generation=generation,
        creationTimestamp=old_meta["creationTimestamp"],
    )
    return new


def with_status(current: Obj, status: Obj) -> Obj:
    return {**current, "status": copy.deepcopy(status)}


def applied(current: Obj | None, obj: Obj) -> tuple[Obj, Action]:
    """What ``kubectl apply`` of ``obj`` writes over ``current`` (None: not stored yet).

    A resourceVersion in ``obj`` is a precondition (Conflict when it is stale).
    """
    if current is None:
        return new_object(obj), "created"
    key = key_of(obj)
    check_version(current, (obj["metadata"].get("resourceVersion") or None), key)
    if same(obj, current):
        return current, "unchanged"
    return updated_object(current, obj), "configured"
