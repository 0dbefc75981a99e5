"""Two control-plane replicas on one etcd: kill -9 the leader's host, the other takes over."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.store import leader_election, open_store
from tests.etcd_cluster import Cluster, etcd_cluster, free_address
from tests.integration.harness import SAMPLES, MeshHarness, first_word

pytestmark = pytest.mark.integration

# The bound: a new leader within 5 s of the old one's death.
TAKEOVER_BOUND = 5.0


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def _word(address: str) -> str:
    try:
        return first_word(address, 31400)
    except OSError:
        return ""


def _leader(harness: MeshHarness) -> dict[str, Any]:
    status = json.loads(harness.tcpmesh("status", "-o", "json").stdout)
    leader: dict[str, Any] = status["leader"]
    return leader


def _service(name: str) -> str:
    return (
        "apiVersion: v1\nkind: Service\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec: {ports: [{name: tcp, port: 7000}]}\n"
    )


def test_kill_the_leader_a_new_one_within_5s_and_every_acknowledged_apply_kept(
    etcd: Cluster, tmp_path: Path
) -> None:
    url = etcd.url("/replicas")
    store = open_store(url, tmp_path)
    # Reads the leader key, in this process, without campaigning.
    observed = leader_election(store, "runtime", "observer")
    assert observed is not None
    observer = observed[0]
    first = MeshHarness(tmp_path / "a", free_address(), workers=1, store=url)
    second = MeshHarness(tmp_path / "b", free_address(), workers=1, store=url)
    try:
        first.up()
        second.up()
        assert _leader(first)["leading"] and not _leader(second)["leading"]
        assert _leader(second)["holder"] == _leader(first)["identity"]
        new_leader = _leader(second)["identity"]
        # Any replica takes applies; the leader's runtime runs the pods on its host.
        second.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
        first.apply(SAMPLES / "tcp-echo-all-v1.yaml")
        first.wait_for("routes to v1", lambda: _word(first.address) == "one", 60)
        acknowledged = []
        for i in range(10):
            (first if i % 2 else second).tcpmesh("apply", "-f", "-", stdin=_service(f"ack-{i}"))
            acknowledged.append(f"ack-{i}")

        # The leader's host dies: its mesh process and its pods, all at once.
        credentials = json.loads((first.state_dir / "apiserver.json").read_text())
        os.kill(credentials["pid"], signal.SIGKILL)
        first.kill_leftover_pods()
        died = time.monotonic()
        while observer.holder() != new_leader:
            assert time.monotonic() - died < 30, "no new leader"
            time.sleep(0.02)
        takeover = time.monotonic() - died
        print(f"new leader after {takeover:.2f} s")
        assert takeover < TAKEOVER_BOUND
        assert _leader(second)["leading"]

        names = {s["metadata"]["name"] for s in second.get_json("services")["items"]}
        assert set(acknowledged) <= names
        vs = second.get_json("virtualservice", "tcp-echo")
        assert vs["spec"]["tcp"][0]["route"][0]["destination"]["subset"] == "v1"
        # The new leader runs the pods on its own host, and its gateway serves the routes.
        second.wait_for("routes on the new leader", lambda: _word(second.address) == "one", 60)
        second.apply(SAMPLES / "tcp-echo-all-v2.yaml")
        second.wait_for("the route change", lambda: _word(second.address) == "two", 10)
    finally:
        second.down()
        first.down()
        store.close()
