"""The runtime: kubelet + Deployment and Endpoints controllers, driven by the store's watch.

Reconciliation is level-triggered: any change to a Deployment, Pod, Service or
Endpoints (including the status the kubelet writes) marks the world dirty, and one pass
then looks at everything. Each pass writes only what differs, so it settles; a pass
also runs every few seconds in case a change was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from tcpmesh.registry import FIRST_POD_IP
from tcpmesh.runtime.cloudlb import sync_load_balancer
from tcpmesh.runtime.deployments import sync_deployments
from tcpmesh.runtime.endpoints import sync_services
from tcpmesh.runtime.events import EventRecorder
from tcpmesh.runtime.joined import expire_joined, local_pods
from tcpmesh.runtime.kubelet import Kubelet
from tcpmesh.runtime.podcap import DEFAULT_MAX_PODS
from tcpmesh.runtime.storeapi import StoreLike

log = logging.getLogger(__name__)

# Secrets and ConfigMaps: the pods' volumes follow them.
WATCHED_KINDS = ("Deployment", "Pod", "Service", "Endpoints", "Secret", "ConfigMap")
RESYNC_INTERVAL = 5.0
WATCH_RETRY_DELAY = 1.0


class Runtime:
    """Runs the pods of the store on this machine and keeps Endpoints up to date.

    ``stop()`` stops every pod process but keeps the Pod objects (marked as stopped), and
    a later ``start()`` runs the same pods again on the same IPs, like a node reboot.
    ``first_pod_ip`` moves the pod addresses, so two meshes on one machine do not meet;
    ``max_pods`` caps the pods Deployments get (:mod:`tcpmesh.runtime.podcap`).
    """

    def __init__(
        self,
        store: StoreLike,
        state_dir: Path,
        node_address: str,
        *,
        first_pod_ip: str = FIRST_POD_IP,
        max_pods: int = DEFAULT_MAX_PODS,
    ) -> None:
        self.store = store
        self.max_pods = max_pods
        self.state_dir = Path(state_dir).absolute()
        self.node_address = node_address
        self._dirty = asyncio.Event()
        self.kubelet = Kubelet(
            store, self.state_dir, node_address, self._dirty.set, first_pod_ip=first_pod_ip
        )
        self._deployment_events = EventRecorder(store, "deployment-controller")
        self._service_events = EventRecorder(store, "service-controller")
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    def pod_log_path(self, namespace: str, name: str) -> Path | None:
        """The file holding the output of a pod's processes, if it has any."""
        path = self.kubelet.log_path(namespace, name)
        return path if path.is_file() else None

    async def start(self) -> None:
        """Clean up after a crashed mesh, reconcile everything, then follow the store."""
        if self._started:
            return
        self._started = True
        since = self.store.revision
        try:
            await self.kubelet.clean_up(local_pods(self.store.list("Pod")))
        except Exception:
            # Best effort: a leftover that keeps its port only makes its pod crash-loop.
            log.exception("runtime: cleaning up after the previous run failed")
        self.reconcile()
        self._tasks = [
            asyncio.create_task(self._watch(since), name="runtime watch"),
            asyncio.create_task(self._reconcile_loop(), name="runtime reconcile"),
        ]

    async def stop(self) -> None:
        """Stop following the store, then every pod process (SIGTERM, then SIGKILL)."""
        if not self._started:
            return
        self._started = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.kubelet.shutdown()
        # Let Endpoints and Deployment status show that nothing serves any more.
        self.reconcile(run_pods=False)

    def reconcile(self, *, run_pods: bool = True) -> None:
        """One level-triggered pass over Deployments, Pods and Services."""
        self._step("load balancer", lambda: sync_load_balancer(self.store))
        self._step(
            "deployments",
            lambda: sync_deployments(self.store, self.max_pods, self._deployment_events),
        )
        self._step("leases", self._expire_leases)
        if run_pods:
            self._step("pods", lambda: self.kubelet.sync(local_pods(self.store.list("Pod"))))
        self._step(
            "services", lambda: sync_services(self.store, self.node_address, self._service_events)
        )

    def _expire_leases(self) -> None:
        expire_joined(self.store)

    @staticmethod
    def _step(name: str, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:
            log.exception("runtime: reconciling %s failed", name)

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), RESYNC_INTERVAL)
            self._dirty.clear()
            self.reconcile()

    async def _watch(self, since: int) -> None:
        while True:
            try:
                async for event in self.store.watch(WATCHED_KINDS, since=since):
                    since = event.revision
                    self._dirty.set()
                return  # the store was closed
            except Exception:
                log.exception("runtime: store watch failed; resuming")
            await asyncio.sleep(WATCH_RETRY_DELAY)
            # Missed events do not matter to a level-triggered loop: one full pass does.
            since = self.store.revision
            self._dirty.set()
