"""The namespace controller: a Terminating Namespace's objects are deleted, then it is.

As Kubernetes' namespace controller (pkg/controller/namespace/deletion): the API server only
marks a deleted Namespace (``deletionTimestamp``, phase Terminating); this controller deletes
every object of every namespaced kind in it, and the Namespace itself once a pass finds
nothing left. Objects that make others go first (Rollouts, Deployments, Gateways), so the
runtime and the Gateway API controller stop re-creating Pods and Services while it works.

Bounded: one pass deletes at most ``BATCH`` objects; a namespace not yet empty is passed
over again after ``RETRY`` seconds (a Pod the runtime wrote meanwhile), so a namespace of
any size empties in passes that each take a bounded time, and other namespaces are not
starved by one large one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tcpmesh.api import kinds, namespaces
from tcpmesh.controllers.reconciler import WATCH_RETRY, Reconciler
from tcpmesh.store import CLUSTER_SCOPE, NotFound, StoreBackend, StoreError

log = logging.getLogger("tcpmesh.controllers.namespaces")

BATCH = 500
RETRY = 0.2
# Owners before what they own: nothing re-creates what is deleted after its owner.
_FIRST = (
    "Rollout",
    "Deployment",
    "Gateway.gateway.networking.k8s.io",
    "Service",
)


def content_kinds() -> list[str]:
    """The namespaced kind keys, in the order a namespace's objects are deleted."""
    keys = [info.key for info in kinds.KINDS if info.namespaced]
    return [k for k in _FIRST if k in keys] + [k for k in keys if k not in _FIRST]


class NamespaceController(Reconciler):
    """Empties and then deletes every Terminating Namespace (see the module doc)."""

    name = "namespaces"

    def __init__(self, store: StoreBackend) -> None:
        super().__init__(store, [namespaces.NAMESPACE_KEY])
        self._store = store

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                pending = self.sync()
            except StoreError:
                log.exception("namespace sync failed")
                await asyncio.sleep(WATCH_RETRY)
                pending = True
            if pending:
                await asyncio.sleep(RETRY)
                self._dirty.set()

    def sync(self) -> bool:
        """One pass over the Terminating namespaces; whether one still has objects."""
        self.syncs += 1
        pending = False
        for ns in self._store.list(namespaces.NAMESPACE_KEY):
            if namespaces.is_terminating(ns):
                pending = not self._finish(ns["metadata"]["name"]) or pending
        return pending

    def _finish(self, name: str) -> bool:
        """Delete up to BATCH of the namespace's objects; the Namespace too once none is
        left. Whether it is gone."""
        budget = BATCH
        for key in content_kinds():
            for obj in self._store.list(key, name):
                if budget == 0:
                    return False
                with contextlib.suppress(NotFound):
                    self._store.delete(key, name, obj["metadata"]["name"])
                budget -= 1
        if budget < BATCH:
            return False  # the next pass checks that nothing came back meanwhile
        with contextlib.suppress(NotFound):
            self._store.delete(namespaces.NAMESPACE_KEY, CLUSTER_SCOPE, name)
            log.info("namespace %s deleted", name)
        return True
