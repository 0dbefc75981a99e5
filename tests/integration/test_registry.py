"""Cluster IPs and node ports allocated atomically with the Service write, on both stores.

"Several control-plane replicas" are several etcd clients on one cluster, each behind its
own ServiceRegistry, writing at once; SQLite has one owner per file (the state directory's
lock), so there the writers are threads sharing that one store.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.registry import ServiceRegistry, ServiceRejected
from tcpmesh.store import StoreBackend, open_store
from tests.etcd_cluster import Cluster, etcd_cluster

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
WRITERS = 4
PER_WRITER = 6


def service(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "tcp", "port": 9000}], **spec},
    }


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "etcd"])
def spec(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    cluster: Cluster = request.getfixturevalue("etcd")
    return cluster.url(f"/r{uuid.uuid4().hex[:12]}")


def _open(spec: str | None, tmp_path: Path) -> StoreBackend:
    return open_store(spec, tmp_path)


def test_concurrent_writers_never_share_an_address(spec: str | None, tmp_path: Path) -> None:
    first = _open(spec, tmp_path)
    stores = [first] + [_open(spec, tmp_path) if spec else first for _ in range(WRITERS - 1)]
    failures: list[BaseException] = []

    def write(n: int) -> None:
        registry = ServiceRegistry(stores[n])
        try:
            for i in range(PER_WRITER):
                registry.create(service(f"s{n}-{i}", type="NodePort"))
        except BaseException as exc:  # reported below, with the thread's own error
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert failures == []
        services = stores[0].list("Service")
        assert len(services) == WRITERS * PER_WRITER
        ips = [s["spec"]["clusterIP"] for s in services]
        node_ports = [s["spec"]["ports"][0]["nodePort"] for s in services]
        assert len(set(ips)) == len(ips)
        assert len(set(node_ports)) == len(node_ports)
        assert all(ip.startswith("127.240.") for ip in ips)
    finally:
        for store in {id(s): s for s in stores}.values():
            store.close()


def test_a_rejected_write_stores_nothing(spec: str | None, tmp_path: Path) -> None:
    store = _open(spec, tmp_path)
    try:
        registry = ServiceRegistry(store)
        registry.create(service("a", clusterIP="127.240.0.5"))
        revision = store.revision
        with pytest.raises(ServiceRejected) as caught:
            registry.apply(
                [service("b"), service("c", clusterIP="127.240.0.5")]  # c takes a's IP
            )
        assert caught.value.messages == [
            'Service "c" is invalid: spec.clusterIPs: Invalid value: []string{"127.240.0.5"}: '
            "failed to allocate IP 127.240.0.5: provided IP is already allocated"
        ]
        assert store.revision == revision
        assert [s["metadata"]["name"] for s in store.list("Service")] == ["a"]
    finally:
        store.close()


def test_allocations_survive_reopening_the_store(spec: str | None, tmp_path: Path) -> None:
    store = _open(spec, tmp_path)
    registry = ServiceRegistry(store)
    made = registry.create(service("lb", type="LoadBalancer"))
    store.close()
    again = ServiceRegistry(_open(spec, tmp_path))
    try:
        # Resubmitting the manifest (no clusterIP, no nodePort) keeps what was allocated.
        (result,) = again.apply([service("lb", type="LoadBalancer")])
        assert result.action == "unchanged"
        assert result.object["spec"]["clusterIP"] == made["spec"]["clusterIP"]
        assert result.object["spec"]["ports"] == made["spec"]["ports"]
    finally:
        again.close()


def test_a_deleted_service_frees_its_address(spec: str | None, tmp_path: Path) -> None:
    store = _open(spec, tmp_path)
    try:
        registry = ServiceRegistry(store)
        registry.create(service("a", clusterIP="127.240.0.9"))
        registry.delete("Service", "default", "a")
        assert registry.create(service("b", clusterIP="127.240.0.9"))["spec"]["clusterIP"] == (
            "127.240.0.9"
        )
    finally:
        store.close()
