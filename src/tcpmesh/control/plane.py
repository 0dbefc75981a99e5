"""The control plane loop: follow the store, rebuild snapshots, hand them to proxies.

It keeps an in-memory copy of the kinds the builder reads, typed once per write and
updated from the store's watch, and serves each proxy the snapshot built for it.
Snapshots are content-addressed, so a change that does not alter a proxy's table is
never pushed to it.

It follows the store the way Kubernetes' reflector does: list, watch from the list's
revision, and list again when the watch is ``Expired`` (the history it needs is gone).
It is level-triggered: the watch only updates the copy and marks it dirty; a separate
loop rebuilds from the whole copy when it is dirty, so a burst of events that arrive
together (one apply writes many objects; the watch hands over what is ready without
waiting) becomes one rebuild, not one per event.

DNS ServiceEntries name hosts rather than addresses. Looking them up is I/O, so it happens
here, not in the builder: the names the entries need are resolved when they appear and
every ``dns_refresh`` seconds after, and the answers reach the builder as
``MeshResources.dns``. Like Envoy's DNS clusters, a failed lookup keeps the previous
answer, and a name that does not exist has no addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tcpmesh.api import from_dict, models
from tcpmesh.control.build import build_snapshot
from tcpmesh.control.buildcache import BuildCache
from tcpmesh.control.reach import StoreReach
from tcpmesh.control.resources import MeshResources, ProxyNode
from tcpmesh.control.serviceentries import dns_names
from tcpmesh.control.snapshot import Snapshot, SnapshotError
from tcpmesh.join import RENEW_TIME
from tcpmesh.store import Expired, StoreBackend, object_kind_key

log = logging.getLogger(__name__)

WATCHED_KINDS = (
    "Service",
    "Endpoints",
    "Pod",
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "WorkloadEntry",
    "Secret",
    "Gateway.gateway.networking.k8s.io",
    "TCPRoute.gateway.networking.k8s.io",
    "TLSRoute.gateway.networking.k8s.io",
    "ReferenceGrant.gateway.networking.k8s.io",
    "GatewayClass.gateway.networking.k8s.io",
    "Namespace",
)
# The copy's size (objects) from which the heap is frozen once it doubled (see _freeze).
FREEZE_AT = 1000
FREEZE_DELAY = 1.0
# After a failed watch (not Expired, which relists at once), wait this long before the next.
WATCH_RETRY_DELAY = 1.0
DNS_REFRESH = 30.0
DNS_TIMEOUT = 5.0
# getaddrinfo's "no such name" answers: the name has no addresses, which is not a failure.
_NO_SUCH_NAME = {
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
}

ObjectKey = tuple[str, str, str]
Resolver = Callable[[str], Awaitable[tuple[str, ...]]]


async def resolve_ipv4(name: str) -> tuple[str, ...]:
    """The IPv4 addresses of ``name`` in the resolver's order.

    IPv4 only, as Istio's DNS clusters look up on a proxy without IPv6 addresses (V4_ONLY).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


class ControlPlane:
    def __init__(
        self,
        store: StoreBackend,
        *,
        resolver: Resolver = resolve_ipv4,
        dns_refresh: float = DNS_REFRESH,
        probe_reach: bool = False,
    ) -> None:
        """``probe_reach`` (a shared store): stop vouching for the copy while the store is
        unreachable, and list it afresh when it answers again (see control.reach)."""
        self._store = store
        # Typed once per write, so a rebuild does not parse every stored object again.
        self._objects: dict[ObjectKey, models.Resource] = {}
        self._resources = MeshResources()
        # The builder's step results, kept from one generation to the next, so that a
        # rebuild after an event recomputes only what reads the objects it changed.
        self._build_cache = BuildCache()
        self._frozen_at = 0
        self._generation = 0
        self._changed = asyncio.Condition()
        self._dirty = asyncio.Event()
        # Times the resources were re-collected for building (for status and tests).
        self.rebuilds = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._cache: dict[str, tuple[int, Snapshot | None]] = {}
        self._resolver = resolver
        self._dns_refresh = dns_refresh
        self._dns: dict[str, tuple[str, ...]] = {}
        self._dns_tried: set[str] = set()
        self._dns_due = asyncio.Event()
        self._reach = StoreReach(store, self._lost_store, self._catch_up) if probe_reach else None
        self._unreachable = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        revision = self._relist()
        await self._publish()
        self._watch = asyncio.create_task(self._follow(revision), name="control-plane watch")
        self._tasks = [
            asyncio.create_task(self._rebuild_when_dirty(), name="control-plane rebuild"),
            asyncio.create_task(self._follow_dns(), name="control-plane dns"),
        ]
        if self._reach is not None:
            self._reach.start()

    @property
    def store_current(self) -> bool:
        """Whether this copy can be vouched for: always on a store of one host; on a shared
        one, unless the last probe of the store went unanswered (see control.reach)."""
        reach = self._reach
        return not self._unreachable.is_set() and (reach is None or reach.reachable)

    async def store_lost(self) -> None:
        """Returns once the copy can no longer be vouched for (at once if it cannot now)."""
        await self._unreachable.wait()

    def _lost_store(self) -> None:
        self._unreachable.set()

    async def _catch_up(self) -> None:
        """The store answers again: list it afresh, restart the watch, then vouch again.

        The old watch may sit on a stream that a cut link left half-open; a new list and a
        new watch do not depend on it."""
        revision, objects = await asyncio.to_thread(self._read_all)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        self._replace(objects)
        self._watch = asyncio.create_task(self._follow(revision), name="control-plane watch")
        await self._publish()
        self._unreachable.clear()

    async def stop(self) -> None:
        if self._reach is not None:
            await asyncio.to_thread(self._reach.stop)
        if self._watch is not None:
            self._tasks.append(self._watch)
            self._watch = None
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _relist(self) -> int:
        """Replace the copy with what the store holds; the revision to watch from.

        The revision is read before listing: events between the two are replayed by the
        watch, which is harmless, as applying an event is idempotent."""
        revision, objects = self._read_all()
        self._replace(objects)
        return revision

    def _read_all(self) -> tuple[int, list[dict[str, Any]]]:
        """The revision, then every object of the watched kinds (safe off the loop)."""
        revision = self._store.revision
        return revision, [obj for kind in WATCHED_KINDS for obj in self._store.list(kind)]

    def _replace(self, objects: list[dict[str, Any]]) -> None:
        previous, self._objects = self._objects, {}
        for obj in objects:
            key = _key(obj)
            if key in previous and _same_version(previous[key], obj):
                self._objects[key] = previous[key]  # unchanged: keep its typed form
            else:
                self._remember(obj)

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for event in self._store.watch(WATCHED_KINDS, since=revision):
                    revision = event.revision
                    if event.type == "DELETED":
                        self._objects.pop(_key(event.object), None)
                    elif not self._remember(event.object):
                        continue  # only a joined peer's lease moved: nothing to rebuild
                    self._dirty.set()
                return  # the store was closed
            except Expired as exc:
                log.warning("control plane: %s; listing again", exc)
            except Exception:
                log.exception("control plane: the store watch failed; listing again")
                await asyncio.sleep(WATCH_RETRY_DELAY)
            revision = self._relist()
            self._dirty.set()

    async def _rebuild_when_dirty(self) -> None:
        while True:
            await self._dirty.wait()
            # Everything the watch had ready is in the copy now (it hands events over
            # without waiting between them): one rebuild covers the whole burst.
            self._dirty.clear()
            await self._publish()

    def _remember(self, obj: dict[str, Any]) -> bool:
        """Keep the typed form; whether it changed in a way a rebuild could see.

        A joined peer renews its lease every few seconds by rewriting one annotation of
        its Pod or WorkloadEntry; rebuilding every node's snapshot for that would cost
        N peers x N nodes builds (the reason Kubernetes moved node heartbeats into Lease
        objects)."""
        key = _key(obj)
        try:
            typed = from_dict(obj)
        except Exception:
            log.exception("stored %s could not be read; keeping its previous version", key)
            return False
        previous = self._objects.get(key)
        self._objects[key] = typed
        return previous is None or _without_lease(previous) != _without_lease(typed)

    async def _publish(self) -> None:
        self.rebuilds += 1
        self._freeze()
        self._build_cache.advance()
        resources = MeshResources.from_resources(
            self._objects.values(), self._dns, self._build_cache
        )
        if dns_names(resources) - self._dns_tried:
            self._dns_due.set()  # a new name: look it up now rather than at the next refresh
        async with self._changed:
            self._resources = resources
            self._generation += 1
            self._changed.notify_all()

    def _freeze(self) -> None:
        """Move the heap out of the collector's sight (``gc.freeze``) a second after the
        copy doubled in size (by then the Snapshots built from it exist too).

        Thousands of typed objects and Snapshot parts live as long as the process; every
        full collection walked all of them again, 0.1 s at a thousand VirtualServices, the
        largest part of an apply's tail. Collecting first leaves no garbage cycle in the
        frozen heap, and doubling bounds how often this runs: log2 of the copy's size."""
        if len(self._objects) < max(FREEZE_AT, 2 * self._frozen_at):
            return
        self._frozen_at = len(self._objects)
        asyncio.get_running_loop().call_later(FREEZE_DELAY, _freeze_heap)

    async def _follow_dns(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dns_due.wait(), self._dns_refresh)
            self._dns_due.clear()
            try:
                await self.refresh_dns()
            except Exception:
                # A resolver failing in an unforeseen way must not stop later refreshes.
                log.exception("refreshing DNS ServiceEntry addresses failed")

    async def refresh_dns(self) -> bool:
        """Look up every name the DNS entries need now, and republish if any answer changed."""
        names = sorted(dns_names(self._resources))
        answers = await asyncio.gather(*(self._lookup(name) for name in names))
        updated: dict[str, tuple[str, ...]] = {}
        for name, addresses in zip(names, answers, strict=True):
            if addresses is None:
                addresses = self._dns.get(name, ())
            if addresses:
                updated[name] = addresses
        self._dns_tried = set(names)
        changed = updated != self._dns
        self._dns = updated
        if changed:
            await self._publish()
        return changed

    async def _lookup(self, name: str) -> tuple[str, ...] | None:
        """The addresses of ``name``; ``None`` when the lookup failed and should be retried."""
        try:
            return await asyncio.wait_for(self._resolver(name), DNS_TIMEOUT)
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                return ()
            log.warning("looking up %s failed: %s; keeping its previous addresses", name, exc)
        except (OSError, TimeoutError, UnicodeError) as exc:
            log.warning("looking up %s failed: %r; keeping its previous addresses", name, exc)
        return None

    def node_for(self, node_id: str) -> ProxyNode | None:
        namespace, _, name = node_id.partition("/")
        pod = next(
            (p for p in self._resources.pods if p.namespace == namespace and p.name == name),
            None,
        )
        return ProxyNode.from_pod(pod) if pod is not None else None

    def snapshot(self, node_id: str) -> Snapshot | None:
        cached = self._cache.get(node_id)
        if cached is not None and cached[0] == self._generation:
            return cached[1]
        node = self.node_for(node_id)
        try:
            snapshot = build_snapshot(self._resources, node) if node is not None else None
        except SnapshotError:
            # A builder bug, never the user's input: the node keeps its last good table.
            log.exception("the snapshot for %s broke its invariants; keeping the last", node_id)
            snapshot = cached[1] if cached is not None else None
        self._cache[node_id] = (self._generation, snapshot)
        return snapshot

    def current(self, node_id: str) -> Snapshot | None:
        return self.snapshot(node_id)

    async def watch(self, node_id: str) -> AsyncIterator[Snapshot]:
        """Every distinct snapshot for the node, the current one first."""
        last_version: str | None = None
        while True:
            async with self._changed:
                generation = self._generation
                snapshot = self.snapshot(node_id)
            if snapshot is not None and snapshot.version != last_version:
                last_version = snapshot.version
                yield snapshot
            async with self._changed:
                while self._generation == generation:
                    await self._changed.wait()


def _freeze_heap() -> None:
    gc.collect()
    gc.freeze()


def _without_lease(resource: models.Resource) -> models.Resource:
    """The resource as the builder sees it: no resourceVersion, no lease renewal time."""
    meta = resource.metadata
    annotations = {k: v for k, v in meta.annotations.items() if k != RENEW_TIME}
    bare = meta.model_copy(update={"resource_version": None, "annotations": annotations})
    return resource.model_copy(update={"metadata": bare})


def _same_version(typed: models.Resource, obj: dict[str, Any]) -> bool:
    version = obj["metadata"].get("resourceVersion")
    return version is not None and typed.metadata.resource_version == version


def _key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj["metadata"]
    return object_kind_key(obj), meta.get("namespace", "default"), meta["name"]
