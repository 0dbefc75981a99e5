"""Leader election through an etcd lease, and the fence on a leader's writes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.replica import CampaignThread
from tcpmesh.store import NotLeader, StoreBackend, leader_election, open_store
from tests.etcd_cluster import Cluster, etcd_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def service(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": {}}


async def _wait(event: asyncio.Event, timeout: float) -> float:
    start = time.monotonic()
    await asyncio.wait_for(event.wait(), timeout)
    return time.monotonic() - start


def test_one_leader_at_a_time_and_a_deposed_leader_cannot_write(
    etcd: Cluster, tmp_path: Path
) -> None:
    stores = [open_store(etcd.url("/election1"), tmp_path) for _ in range(2)]
    try:
        elected = [leader_election(s, "runtime", f"replica-{i}") for i, s in enumerate(stores)]
        assert None not in elected
        (first, first_store), (second, second_store) = elected  # type: ignore[misc]

        async def main() -> None:
            tasks = [asyncio.create_task(first.run())]
            await _wait(first.elected, 10)
            tasks.append(asyncio.create_task(second.run()))
            await asyncio.sleep(1.0)
            assert first.is_leader and not second.is_leader
            assert first.holder() == "replica-0"
            first_store.create(service("by-the-leader"))
            with pytest.raises(NotLeader):
                second_store.create(service("by-a-follower"))
            # etcd takes the lease away (as when the leader's host is cut off): the key goes,
            # the fence refuses the old leader's write, and the other replica takes over.
            assert first.lease_id is not None
            etcd.etcdctl("lease", "revoke", format(first.lease_id, "x"))
            with pytest.raises(NotLeader):
                first_store.create(service("after-the-revoke"))
            took_over = await _wait(second.elected, 5)
            assert second.holder() == "replica-1" and took_over < 5
            await _wait(first.deposed, 5)
            assert not first.is_leader
            second_store.create(service("by-the-new-leader"))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())
        names = [s["metadata"]["name"] for s in stores[0].list("Service")]
        assert names == ["by-the-leader", "by-the-new-leader"]
    finally:
        for store in stores:
            store.close()


def test_a_leader_that_cannot_renew_its_lease_steps_down_on_its_own(
    etcd: Cluster, tmp_path: Path
) -> None:
    store = open_store(etcd.url("/election2"), tmp_path)
    try:
        elected = leader_election(store, "runtime", "lonely")
        assert elected is not None
        election, fenced = elected

        async def main() -> float:
            task = asyncio.create_task(election.run())
            try:
                await _wait(election.elected, 10)
                fenced.create(service("while-leading"))
                # etcd stops answering (SIGSTOP: a partition, as the leader sees it): no word
                # from etcd is needed for the leader to know its lease may be gone.
                process = etcd.members[0].process
                assert process is not None
                os.kill(process.pid, signal.SIGSTOP)
                try:
                    lost_after = await _wait(election.deposed, 5)
                    with pytest.raises(NotLeader):
                        fenced.create(service("after-the-lease"))
                finally:
                    os.kill(process.pid, signal.SIGCONT)
                return lost_after
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        lost_after = asyncio.run(main())
        assert lost_after <= election.ttl
        assert [s["metadata"]["name"] for s in store.list("Service")] == ["while-leading"]
    finally:
        store.close()


def test_sqlite_has_no_election(tmp_path: Path) -> None:
    store: StoreBackend = open_store(None, tmp_path)
    try:
        assert leader_election(store, "runtime", "me") is None
    finally:
        store.close()


def _move_raft_leadership_off(cluster: Cluster, endpoint: str) -> None:
    """Make sure the member at ``endpoint`` is not etcd's own (raft) leader."""
    statuses = json.loads(cluster.etcdctl("endpoint", "status", "--cluster", "-w", "json"))
    by_endpoint = {s["Endpoint"].split("//", 1)[1]: s["Status"] for s in statuses}
    status = by_endpoint[endpoint]
    if status["header"]["member_id"] != status["leader"]:
        return
    target = next(s for e, s in by_endpoint.items() if e != endpoint)["header"]["member_id"]
    cluster.etcdctl("move-leader", format(target, "x"), "--endpoints", f"http://{endpoint}")


def test_a_hung_member_and_a_blocked_loop_do_not_cost_the_leader_its_lease(
    tmp_path: Path,
) -> None:
    """As in the mesh: the campaign on its own thread, the store's calls blocking the loop."""
    with etcd_cluster(tmp_path, count=3) as cluster:
        store = open_store(cluster.url("/hung"), tmp_path)
        try:
            elected = leader_election(store, "runtime", "steady")
            assert elected is not None
            election, fenced = elected
            campaign = CampaignThread(election, lambda: None)
            campaign.start()
            try:
                deadline = time.monotonic() + 10
                while not election.is_leader and time.monotonic() < deadline:
                    time.sleep(0.02)
                endpoint = election.endpoint
                _move_raft_leadership_off(cluster, endpoint)
                [member] = [m for m in cluster.members if m.endpoint == endpoint]
                assert member.process is not None
                # The member it talks to stops answering but keeps its connections open.
                os.kill(member.process.pid, signal.SIGSTOP)
                try:
                    samples = []
                    for _ in range(60):  # 3 s: one and a half TTLs
                        samples.append(election.is_leader)
                        time.sleep(0.05)
                    # A write may wait on the hung member for the store's whole call timeout.
                    fenced.create(service("still-leading"))
                    samples.append(election.is_leader)
                finally:
                    os.kill(member.process.pid, signal.SIGCONT)
            finally:
                campaign.stop()
            assert all(samples), f"lost the lead {samples.count(False)} times of {len(samples)}"
            assert [s["metadata"]["name"] for s in store.list("Service")] == ["still-leading"]
        finally:
            store.close()
