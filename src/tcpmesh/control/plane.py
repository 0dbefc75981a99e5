"""The control plane loop: follow the store, rebuild snapshots, hand them to proxies.

It keeps an in-memory copy of the kinds the builder reads, updated from the store's watch,
and serves each proxy the snapshot built for it. Snapshots are content-addressed, so a
change that does not alter a proxy's table is never pushed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from tcpmesh.control.build import build_snapshot
from tcpmesh.control.resources import MeshResources, ProxyNode
from tcpmesh.control.snapshot import Snapshot
from tcpmesh.store import Store

log = logging.getLogger(__name__)

WATCHED_KINDS = ("Service", "Endpoints", "Pod", "Gateway", "VirtualService", "DestinationRule")

ObjectKey = tuple[str, str, str]


class ControlPlane:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._resources = MeshResources()
        self._generation = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._cache: dict[str, tuple[int, Snapshot | None]] = {}

    async def start(self) -> None:
        revision = self._store.revision
        for kind in WATCHED_KINDS:
            for obj in self._store.list(kind):
                self._objects[_key(obj)] = obj
        await self._publish()
        self._task = asyncio.create_task(self._follow(revision), name="control-plane")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, revision: int) -> None:
        async for event in self._store.watch(WATCHED_KINDS, since=revision):
            if event.type == "DELETED":
                self._objects.pop(_key(event.object), None)
            else:
                self._objects[_key(event.object)] = event.object
            # Coalesce a burst (one apply writes many objects) into one rebuild.
            await asyncio.sleep(0)
            await self._publish()

    async def _publish(self) -> None:
        try:
            resources = MeshResources.from_objects(self._objects.values())
        except Exception:
            log.exception("stored objects could not be read; keeping the previous routes")
            return
        async with self._changed:
            self._resources = resources
            self._generation += 1
            self._changed.notify_all()

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
        snapshot = build_snapshot(self._resources, node) if node is not None else None
        self._cache[node_id] = (self._generation, snapshot)
        return snapshot

    def current(self, node_id: str) -> str | None:
        snapshot = self.snapshot(node_id)
        return snapshot.to_json() if snapshot is not None else None

    async def watch(self, node_id: str) -> AsyncIterator[str]:
        """Every distinct snapshot for the node, the current one first."""
        last_version: str | None = None
        while True:
            async with self._changed:
                generation = self._generation
                snapshot = self.snapshot(node_id)
            if snapshot is not None and snapshot.version != last_version:
                last_version = snapshot.version
                yield snapshot.to_json()
            async with self._changed:
                while self._generation == generation:
                    await self._changed.wait()


def _key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", "default"), meta["name"]
