"""The store as the API server writes it: every Service write allocates, atomically.

`ServiceRegistry` wraps a `StoreBackend` and is one. Writes of other kinds pass through;
a write that contains Services (create, replace, a multi-document apply) runs
:func:`allocation.allocate` on each against the Services stored, then stores them in ONE
``apply`` together with a bump of the bookkeeping object ``RangeAllocation
kube-system/services`` at the resourceVersion it was read at. That apply is one SQLite
transaction or one etcd transaction, so:

- two writers that both picked 127.240.1.7 (two requests, or two control-plane replicas
  on one etcd) cannot both succeed: the second's bump is stale, its apply is a Conflict,
  and it reads again and picks anew (a bounded number of rounds);
- a rejected or failed write stores nothing, neither the Service nor an allocation;
- a deleted Service frees its addresses at once: what is taken is computed from the
  Services themselves, never kept apart from them (no leak, nothing to repair).

Kubernetes keeps a bitmap in a RangeAllocation object and allocates before it writes the
Service (rolling back on failure); here the object is only a version to compare against,
which is what makes allocation and write one transaction. No leader is needed.
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from typing import Any

from tcpmesh.registry.allocation import ServiceRejected, Taken, allocate, needs_cluster_ip
from tcpmesh.registry.ranges import SERVICE_CIDR, node_port_range_text
from tcpmesh.store import (
    AlreadyExists,
    ApplyResult,
    Conflict,
    NotFound,
    StoreBackend,
    WatchEvent,
    object_kind_key,
)

Obj = dict[str, Any]
Key = tuple[str, str, str]
LOCK_KIND = "RangeAllocation"
LOCK_NAMESPACE = "kube-system"
LOCK_NAME = "services"
# Rounds of read-allocate-write before a write that keeps losing races gives up.
ALLOCATION_ROUNDS = 20


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    kind = object_kind_key(obj)
    return kind, str(meta.get("namespace") or "default"), str(meta.get("name"))


def _is_service(obj: Mapping[str, Any]) -> bool:
    """A core/v1 Service (not a kind of another group that happens to be named so)."""
    return obj.get("kind") == "Service" and object_kind_key(obj) == "Service"


def _describe(key: Key) -> str:
    return f'{key[0]} "{key[1]}/{key[2]}"'


class ServiceRegistry:
    """A StoreBackend whose Service writes get cluster IPs and node ports (see module doc)."""

    def __init__(self, store: StoreBackend) -> None:
        self._store = store

    # ------------------------------------------------------------------ reads, passed on

    @property
    def revision(self) -> int:
        return self._store.revision

    def close(self) -> None:
        self._store.close()

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._store.get(kind, namespace, name)

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> builtins.list[Obj]:
        return self._store.list(kind, namespace, label_selector)

    def list_with_revision(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> tuple[builtins.list[Obj], int]:
        return self._store.list_with_revision(kind, namespace, label_selector)

    def watch(
        self, kinds: Collection[str] | None = None, since: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        return self._store.watch(kinds, since)

    def update_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: Obj,
        *,
        expected_resource_version: str | None = None,
    ) -> Obj:
        return self._store.update_status(
            kind, namespace, name, status, expected_resource_version=expected_resource_version
        )

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        return self._store.delete(kind, namespace, name)

    # ------------------------------------------------------------------ writes

    def create(self, obj: Obj) -> Obj:
        if not _is_service(obj):
            return self._store.create(obj)

        def refuse_existing(stored: Mapping[Key, Obj]) -> None:
            if _key(obj) in stored:
                raise AlreadyExists(f"{_describe(_key(obj))} already exists")

        return self._write([obj], dry_run=False, check=refuse_existing)[0].object

    def replace(self, obj: Obj, *, expected_resource_version: str | None = None) -> Obj:
        if not _is_service(obj):
            return self._store.replace(obj, expected_resource_version=expected_resource_version)
        pinned = copy.deepcopy(obj)
        pinned["metadata"]["resourceVersion"] = expected_resource_version or ""

        def require_existing(stored: Mapping[Key, Obj]) -> None:
            if _key(obj) not in stored:
                raise NotFound(f"{_describe(_key(obj))} not found")

        return self._write([pinned], dry_run=False, check=require_existing)[0].object

    def apply(self, objects: Sequence[Obj], *, dry_run: bool = False) -> builtins.list[ApplyResult]:
        if not any(_is_service(o) for o in objects):
            return self._store.apply(objects, dry_run=dry_run)
        return self._write(list(objects), dry_run=dry_run)

    def _write(
        self,
        objects: builtins.list[Obj],
        *,
        dry_run: bool,
        check: Callable[[Mapping[Key, Obj]], None] = lambda stored: None,
    ) -> builtins.list[ApplyResult]:
        """Read, allocate, write with the bump; again when another allocation came first."""
        for _ in range(ALLOCATION_ROUNDS):
            lock = self._lock()
            stored = {_key(s): s for s in self._store.list("Service")}
            check(stored)
            prepared = _prepared(objects, stored)
            if dry_run:
                return self._store.apply(prepared, dry_run=True)
            try:
                return self._store.apply([_bumped(lock), *prepared])[1:]
            except Conflict:
                if not self._moved(lock, prepared, stored):
                    raise  # a stale resourceVersion the client sent: its own conflict
        raise Conflict(
            f"the Service allocations kept changing under {ALLOCATION_ROUNDS} tries; try again"
        )

    def _moved(self, lock: Obj, prepared: builtins.list[Obj], stored: Mapping[Key, Obj]) -> bool:
        """Whether the Conflict came from a concurrent write (then another round is right)."""
        if self._store.get(LOCK_KIND, LOCK_NAMESPACE, LOCK_NAME) != lock:
            return True
        for obj in prepared:
            key = _key(obj)
            if key[0] == "Service" and self._store.get(*key) != stored.get(key):
                return True
        return False

    def repair(self) -> int:
        """Give every stored Service the addresses it lacks; how many were written."""
        missing = missing_allocations(self._store.list("Service"))
        for service in missing:
            self.replace(service)
        return len(missing)

    def _lock(self) -> Obj:
        """The bookkeeping object, created the first time (a lost race to create it is fine)."""
        lock = self._store.get(LOCK_KIND, LOCK_NAMESPACE, LOCK_NAME)
        if lock is not None:
            return lock
        initial = {
            "apiVersion": "v1",
            "kind": LOCK_KIND,
            "metadata": {"name": LOCK_NAME, "namespace": LOCK_NAMESPACE},
            "range": str(SERVICE_CIDR),
            "nodePortRange": node_port_range_text(),
            "writes": 0,
        }
        try:
            return self._store.create(initial)
        except AlreadyExists:
            created = self._store.get(LOCK_KIND, LOCK_NAMESPACE, LOCK_NAME)
            if created is None:
                raise Conflict("the Service allocation record vanished; try again") from None
            return created


def _bumped(lock: Obj) -> Obj:
    """The lock, one write later, pinned to the version that was read."""
    bumped = copy.deepcopy(lock)
    bumped["writes"] = int(bumped.get("writes") or 0) + 1
    return bumped


def _prepared(objects: builtins.list[Obj], stored: Mapping[Key, Obj]) -> builtins.list[Obj]:
    """Every Service of ``objects`` allocated, in order, against what is stored and before it.

    Each Service that exists is pinned to the resourceVersion its allocation started from,
    so a write in between makes the apply a Conflict rather than a lost update. A
    resourceVersion the client gave must be the stored one (Kubernetes' precondition).
    """
    services = dict(stored)
    prepared = []
    rejected: builtins.list[str] = []
    internal = False
    for obj in objects:
        if not _is_service(obj):
            prepared.append(obj)
            continue
        key = _key(obj)
        old = services.get(key)
        _check_precondition(obj, old, key)
        taken = Taken.of(s for k, s in services.items() if k != key)
        try:
            new = allocate(obj, old, taken)
        except ServiceRejected as exc:
            rejected += exc.messages
            internal = internal or exc.internal
            continue
        if old is not None:
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        services[key] = new
        prepared.append(new)
    if rejected:
        raise ServiceRejected(key[2], key[1], rejected, internal=internal)
    return prepared


def _check_precondition(obj: Obj, old: Obj | None, key: Key) -> None:
    expected = (obj.get("metadata") or {}).get("resourceVersion")
    if not expected or old is None:
        return
    if old["metadata"]["resourceVersion"] != expected:
        raise Conflict(
            f"Operation cannot be fulfilled on {_describe(key)}: the object has been modified; "
            "please apply your changes to the latest version and try again"
        )


def missing_allocations(services: builtins.list[Obj]) -> builtins.list[Obj]:
    """The stored Services that lack a cluster IP or node ports they should have.

    Services stored before tcpmesh allocated (an older state directory) get theirs at the
    next ``up``, as Kubernetes' repair controllers fill what the allocator missed.
    """
    missing = []
    for service in services:
        spec = service.get("spec") or {}
        lacks_ip = needs_cluster_ip(spec) and not spec.get("clusterIP")
        allocates_ports = spec.get("type") == "NodePort" or (
            spec.get("type") == "LoadBalancer"
            and spec.get("allocateLoadBalancerNodePorts") is not False
        )
        lacks_ports = allocates_ports and any(
            not p.get("nodePort") for p in spec.get("ports") or [] if isinstance(p, dict)
        )
        if lacks_ip or lacks_ports:
            missing.append(service)
    return missing
