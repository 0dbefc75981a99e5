"""Namespaces as the API server keeps them: what it writes on a Namespace, and when a write
into a namespace is refused or creates it.

Kubernetes' NamespaceLifecycle admission answers NotFound for a write into a namespace that
has no Namespace object. tcpmesh creates the Namespace instead: before Namespaces were
served, any namespace could be written into, and the seed manifests and the walkthrough
(``kubectl apply -f`` of objects in ``demo``, ``-n team-a``...) rely on that; refusing them
now would break every existing state directory and script for no gain in a single-tenant
mesh. What Kubernetes does refuse is kept: new objects in a Terminating namespace, and
deleting ``default``, ``kube-system`` or ``kube-public``.

Deleting a Namespace marks it (``deletionTimestamp``, phase ``Terminating``) and leaves it
to ``controllers.NamespaceController`` to delete its objects and then the Namespace, as
Kubernetes' namespace controller does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from tcpmesh.api import kinds
from tcpmesh.store import CLUSTER_SCOPE, AlreadyExists, StoreBackend

Obj = dict[str, Any]
NAMESPACE_KEY = "Namespace"
# Kubernetes sets this label on every Namespace (NamespaceDefaultLabelName, 1.21+).
NAME_LABEL = "kubernetes.io/metadata.name"
# The namespaces `up` creates: Kubernetes' own two and Istio's.
SYSTEM_NAMESPACES = ("default", "kube-system", "istio-system")
# The ones Kubernetes refuses to delete ("this namespace may not be deleted").
UNDELETABLE = frozenset({"default", "kube-system", "kube-public"})


class NamespaceRefused(Exception):
    """A write Kubernetes refuses with 403 Forbidden; ``cause`` is its details cause."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


def namespace_object(name: str) -> Obj:
    """A new, Active Namespace called ``name``, as the API server stores it."""
    return as_stored({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def as_stored(namespace: Obj) -> Obj:
    """A Namespace with what the API server writes on it: the name label (always, as
    Kubernetes overwrites it) and, for a new one, ``status.phase: Active``."""
    out = copy.deepcopy(namespace)
    meta = out.setdefault("metadata", {})
    labels = meta.get("labels") or {}
    meta["labels"] = {**labels, NAME_LABEL: meta.get("name", "")}
    if not (out.get("status") or {}).get("phase"):
        out["status"] = {**(out.get("status") or {}), "phase": "Active"}
    return out


def is_terminating(namespace: Mapping[str, Any] | None) -> bool:
    if namespace is None:
        return False
    meta = namespace.get("metadata") or {}
    return (
        bool(meta.get("deletionTimestamp"))
        or (namespace.get("status") or {}).get("phase") == "Terminating"
    )


def terminating(namespace: Obj) -> tuple[Obj, Obj]:
    """The Namespace marked for deletion, and its Terminating status (two writes)."""
    marked = copy.deepcopy(namespace)
    meta = marked["metadata"]
    meta.setdefault("deletionTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return marked, {**(namespace.get("status") or {}), "phase": "Terminating"}


def check_deletable(name: str) -> None:
    if name in UNDELETABLE:
        raise NamespaceRefused(
            f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            "NamespaceUndeletable",
        )


def namespaces_of(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """The namespaces the namespaced objects among ``objects`` are written into, in order."""
    seen: dict[str, None] = {}
    for obj in objects:
        try:
            info = kinds.for_object(obj)
        except kinds.UnknownKind:
            continue
        namespace = (obj.get("metadata") or {}).get("namespace")
        if info.namespaced and isinstance(namespace, str) and namespace:
            seen.setdefault(namespace)
    return list(seen)


def refuse_new_content(namespace: str) -> NamespaceRefused:
    return NamespaceRefused(
        f"unable to create new content in namespace {namespace} because it is being terminated",
        "NamespaceTerminating",
    )


def namespaces_in_use(store: StoreBackend) -> list[str]:
    """Every namespace some stored object of a namespaced kind is in."""
    found: dict[str, None] = {}
    for info in kinds.KINDS:
        if info.namespaced:
            for obj in store.list(info.key):
                found.setdefault(str(obj["metadata"].get("namespace") or "default"))
    return list(found)


def ensure_namespaces(store: StoreBackend, names: Iterable[str]) -> list[str]:
    """Create the Namespaces of ``names`` that do not exist; the names created.

    ``up`` calls it with the system namespaces and every namespace in use, so a state
    directory written before Namespaces were served gets its Namespace objects."""
    created = []
    for name in dict.fromkeys(names):
        if store.get(NAMESPACE_KEY, CLUSTER_SCOPE, name) is None:
            with suppress(AlreadyExists):
                store.create(namespace_object(name))
                created.append(name)
    return created
