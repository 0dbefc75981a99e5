"""The control plane follows the store like Kubernetes' reflector: list, watch, relist.

A real SQLite store in a temporary directory; no sockets.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.control import Snapshot, cluster_name
from tcpmesh.control.plane import ControlPlane
from tcpmesh.join import PeerIdentity
from tcpmesh.join import gateway_pod as joined_pod
from tcpmesh.store import Store
from tests.unit.test_build_snapshot_serviceentry import NODE, gateway_pod, wait_until

NODE_ID = f"{NODE.namespace}/{NODE.name}"


def service(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{index}", "namespace": "default"},
        "spec": {"selector": {"app": f"svc-{index}"}, "ports": [{"port": 9000}]},
    }


def has_service(plane: ControlPlane, index: int) -> bool:
    snapshot: Snapshot | None = plane.snapshot(NODE_ID)
    name = cluster_name(9000, "", f"svc-{index}.default.svc.cluster.local")
    return snapshot is not None and snapshot.cluster(name) is not None


def run(tmp_path: Path, scenario: Callable[[Store, ControlPlane], Awaitable[None]]) -> None:
    store = Store(tmp_path / "store.db")

    async def main() -> None:
        store.apply([gateway_pod()])
        plane = ControlPlane(store, dns_refresh=3600)
        await plane.start()
        try:
            await scenario(store, plane)
        finally:
            await plane.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        store.close()


def test_a_burst_of_200_applies_is_far_fewer_than_200_rebuilds(tmp_path: Path) -> None:
    async def scenario(store: Store, plane: ControlPlane) -> None:
        before = plane.rebuilds
        # 200 separate applies, all written before the watch gets to run: what a burst
        # of clients or one large apply looks like to the follower.
        for i in range(200):
            store.apply([service(i)])
        await wait_until(lambda: has_service(plane, 199))
        await asyncio.sleep(0.1)  # any rebuild still to come would come now
        assert all(has_service(plane, i) for i in range(200))
        # The store hands the watch 200 events; the follower rebuilt once for them.
        assert plane.rebuilds - before <= 2

    run(tmp_path, scenario)


def test_an_expired_watch_lists_again_and_keeps_following(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep only 10 events of history, so a watcher 50 writes behind finds its start gone.
    monkeypatch.setattr("tcpmesh.store.sqlite.EVENT_HISTORY", 10)

    async def scenario(store: Store, plane: ControlPlane) -> None:
        for i in range(50):
            store.apply([service(i)])
        # The watch raised Expired; the follower listed everything instead.
        await wait_until(lambda: all(has_service(plane, i) for i in range(50)))
        # And it watches again from the new list: later writes still arrive.
        store.apply([service(50)])
        await wait_until(lambda: has_service(plane, 50))
        store.delete("Service", "default", "svc-0")
        await wait_until(lambda: not has_service(plane, 0))

    run(tmp_path, scenario)


def test_a_joined_peers_lease_renewal_rebuilds_nothing_but_its_readiness_does(
    tmp_path: Path,
) -> None:
    template = {
        "metadata": {"labels": {"istio": "ingressgateway"}},
        "spec": {"containers": [{"name": "istio-proxy", "image": "istio/proxyv2"}]},
    }
    deployment = {"spec": {"template": template}}
    identity = PeerIdentity("gateway", "istio-system", "edge", "h1")
    start = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)

    def beat(store: Store, seconds: int, ready: bool) -> None:
        moment = start + datetime.timedelta(seconds=seconds)
        pod, status = joined_pod(deployment, identity, "10.0.0.1", ready=ready, now=moment)
        store.apply([pod])
        store.update_status("Pod", "istio-system", "edge-h1", status)

    async def scenario(store: Store, plane: ControlPlane) -> None:
        beat(store, 0, True)
        await wait_until(lambda: plane.node_for(identity.node_id) is not None)
        await asyncio.sleep(0.1)
        before = plane.rebuilds
        for second in range(1, 11):  # ten heartbeats: the renew time moves, nothing else
            beat(store, second, True)
        await asyncio.sleep(0.3)
        assert plane.rebuilds == before
        beat(store, 11, False)  # readiness changed: that is the builder's business
        await wait_until(lambda: plane.rebuilds > before)

    run(tmp_path, scenario)
