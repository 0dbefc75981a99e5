"""``tcpmesh up --store etcd://...``: the seed scenario with its state in a real etcd
cluster of three members, one of which is killed on the way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd_cluster import Cluster, etcd_cluster, free_address
from tests.integration.harness import SAMPLES, MeshHarness, first_word

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd"), count=3) as cluster:
        yield cluster


def _word(address: str) -> str:
    try:
        return first_word(address, 31400)
    except OSError:
        return ""


def test_the_seed_scenario_runs_on_etcd_and_its_state_outlives_the_state_dir(
    etcd: Cluster, tmp_path: Path
) -> None:
    address = free_address()
    url = etcd.url("/seed")
    first = MeshHarness(tmp_path / "a", address, workers=1, store=url)
    try:
        first.up()
        first.apply(
            SAMPLES / "tcp-echo-deployments.yaml",
            SAMPLES / "tcp-echo-service.yaml",
            SAMPLES / "tcp-echo-all-v1.yaml",
        )
        first.wait_for("routes to v1", lambda: _word(address) == "one", 60)
        status = json.loads(first.tcpmesh("status", "-o", "json").stdout)
        assert status["store"] == url
        assert f"store: {url}" in first.tcpmesh("status").stdout
        # One etcd member dies (kill -9); the other two keep the quorum and the mesh goes on.
        etcd.members[0].kill()
        first.apply(SAMPLES / "tcp-echo-all-v2.yaml")
        first.wait_for("routes to v2", lambda: _word(address) == "two", 20)
        # The objects are in etcd, under the URL's prefix.
        assert "/seed/o/VirtualService/default/tcp-echo" in etcd.etcdctl(
            "get", "--prefix", "--keys-only", "/seed/o/VirtualService/"
        )
    finally:
        first.down()
    # Another state directory, the same etcd: the mesh comes back with the same routes.
    second = MeshHarness(tmp_path / "b", address, workers=1, store=url)
    try:
        second.up()
        vs = second.get_json("virtualservice", "tcp-echo")
        assert vs["spec"]["tcp"][0]["route"][0]["destination"]["subset"] == "v2"
        second.wait_for("routes after the restart", lambda: _word(address) == "two", 90)
    finally:
        second.down()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("mysql://db", "--store mysql://db: expected sqlite or etcd://HOST:PORT"),
        ("etcd://h1", "--store etcd://h1: 'h1' is not HOST:PORT"),
        ("etcd://h1:2379?cert=c.pem", "cert= and key= go together"),
        ("etcd://h1:2379?colour=red", "unknown option 'colour'"),
    ],
)
def test_a_bad_store_is_refused_in_one_line(tmp_path: Path, store: str, message: str) -> None:
    harness = MeshHarness(tmp_path, "127.0.0.1")
    result = harness.tcpmesh("up", "--detach", "--store", store, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not (tmp_path / "store.db").exists()
