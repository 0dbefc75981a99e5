"""The store contract, run against both backends: SQLite (a file) and etcd (a real server).

Revisions are compared, never spelled out: SQLite gives each written object the next
revision, etcd gives one transaction one revision and counts its own bookkeeping too.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.store import (
    SQLITE_FILE,
    AlreadyExists,
    Conflict,
    Expired,
    NotFound,
    StoreBackend,
    StoreError,
    WatchEvent,
    open_store,
)
from tcpmesh.store.etcd import EtcdStore
from tests.etcd_cluster import Cluster, etcd_cluster

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


def vs(name: str, ns: str = "default", weight: int = 100, **labels: str) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"hosts": ["tcp-echo"], "tcp": [{"route": [{"weight": weight}]}]},
    }


def endpoints(name: str, ip: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 9000}]}],
    }


def rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


@dataclass
class Backend:
    """How a test opens (and reopens) one store, and trims its history."""

    name: str
    spec: str | None
    state_dir: Path
    trim: Callable[[StoreBackend, pytest.MonkeyPatch], None]

    def open(self) -> StoreBackend:
        return open_store(self.spec, self.state_dir)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def _trim_sqlite(store: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tcpmesh.store.sqlite.EVENT_HISTORY", 3)
    store.create(vs("trim-marker"))  # a write trims the history to the last three events


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", None, tmp_path, _trim_sqlite)
    cluster: Cluster = request.getfixturevalue("etcd")

    def trim(store: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        # Keep the last three revisions, as the SQLite variant keeps three events.
        cluster.etcdctl("compact", str(store.revision - 2))

    # Each test its own prefix: one etcd serves the whole module.
    return Backend("etcd", cluster.url(f"/t{uuid.uuid4().hex[:12]}"), tmp_path, trim)


@pytest.fixture
def store(backend: Backend) -> Iterator[StoreBackend]:
    s = backend.open()
    try:
        yield s
    finally:
        s.close()


def test_create_fills_metadata_and_get_returns_it(store: StoreBackend) -> None:
    before = store.revision
    created = store.create(vs("a"))
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert rv(created) > before and rv(created) == store.revision
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert store.get("VirtualService", "default", "a") == created
    assert store.get("VirtualService", "other", "a") is None
    assert store.get("DestinationRule", "default", "a") is None


def test_create_twice_is_already_exists(store: StoreBackend) -> None:
    store.create(vs("a"))
    revision = store.revision
    with pytest.raises(AlreadyExists):
        store.create(vs("a"))
    assert store.revision == revision


def test_list_sorts_and_filters_by_namespace_and_labels(store: StoreBackend) -> None:
    store.create(vs("b", "ns2", app="x"))
    store.create(vs("b", "ns1", app="y"))
    store.create(vs("a", "ns2", app="x", version="v1"))
    store.create(vs("c", "ns1-x"))  # "ns1-x" sorts after "ns1", whatever the key order
    store.create(endpoints("a", "127.0.0.2"))

    def names(objs: list[Obj]) -> list[str]:
        return [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objs]

    assert names(store.list("VirtualService")) == ["ns1/b", "ns1-x/c", "ns2/a", "ns2/b"]
    assert names(store.list("VirtualService", "ns2")) == ["ns2/a", "ns2/b"]
    assert names(store.list("VirtualService", "ns1")) == ["ns1/b"]
    assert names(store.list("VirtualService", None, {"app": "x"})) == ["ns2/a", "ns2/b"]
    assert names(store.list("VirtualService", None, {"app": "x", "version": "v1"})) == ["ns2/a"]
    assert store.list("VirtualService", "ns1", {"app": "x"}) == []
    items, revision = store.list_with_revision("Endpoints")
    assert names(items) == ["default/a"] and revision == store.revision == rv(items[0])


def test_objects_without_kind_name_or_namespace_are_refused(store: StoreBackend) -> None:
    revision = store.revision
    no_ns = vs("a")
    del no_ns["metadata"]["namespace"]
    for bad in ({"metadata": {"name": "a", "namespace": "d"}}, {"kind": "X"}, no_ns):
        with pytest.raises(StoreError):
            store.apply([bad])
    assert store.revision == revision


def test_apply_created_configured_unchanged(store: StoreBackend) -> None:
    [result] = store.apply([vs("a")])
    assert result.action == "created"
    assert result.object["metadata"]["generation"] == 1
    created_at = store.revision

    # A client's copy of the server-filled fields does not count as a change.
    [again] = store.apply([result.object])
    assert again.action == "unchanged"
    assert store.revision == created_at

    [relabelled] = store.apply([vs("a", app="x")])
    assert relabelled.action == "configured"
    assert relabelled.object["metadata"]["generation"] == 1
    assert rv(relabelled.object) > created_at

    [reweighted] = store.apply([vs("a", weight=50, app="x")])
    assert reweighted.action == "configured"
    meta = reweighted.object["metadata"]
    assert meta["generation"] == 2
    assert meta["uid"] == result.object["metadata"]["uid"]
    assert meta["creationTimestamp"] == result.object["metadata"]["creationTimestamp"]
    assert store.get("VirtualService", "default", "a") == reweighted.object


def test_apply_keeps_status_and_compares_subsets(store: StoreBackend) -> None:
    store.apply([endpoints("ep", "127.0.0.2")])
    store.update_status("Endpoints", "default", "ep", {"ready": True})
    [same] = store.apply([endpoints("ep", "127.0.0.2")])
    assert same.action == "unchanged"
    [moved] = store.apply([endpoints("ep", "127.0.0.3")])
    assert moved.action == "configured"
    assert moved.object["metadata"]["generation"] == 2
    assert moved.object["status"] == {"ready": True}


def test_apply_is_all_or_nothing(store: StoreBackend) -> None:
    store.create(vs("a"))
    revision = store.revision
    stale = vs("a", weight=10)
    stale["metadata"]["resourceVersion"] = "999999"
    with pytest.raises(Conflict):
        store.apply([vs("b"), vs("c"), stale])
    assert store.get("VirtualService", "default", "b") is None
    assert store.list("VirtualService") == [store.get("VirtualService", "default", "a")]
    assert store.revision == revision
    with pytest.raises(StoreError):
        store.apply([vs("d"), {"kind": "VirtualService", "metadata": {"name": "e"}}])
    assert store.get("VirtualService", "default", "d") is None
    assert store.revision == revision


def test_apply_returns_what_a_get_returns(store: StoreBackend) -> None:
    results = store.apply([vs("a"), vs("b"), endpoints("ep", "127.0.0.2")])
    for result in results:
        obj = result.object
        assert store.get(obj["kind"], "default", obj["metadata"]["name"]) == obj
    assert max(rv(r.object) for r in results) == store.revision


def test_dry_run_writes_nothing(store: StoreBackend) -> None:
    store.create(vs("a"))
    revision = store.revision
    results = store.apply([vs("a", weight=1), vs("b")], dry_run=True)
    assert [r.action for r in results] == ["configured", "created"]
    assert store.revision == revision
    assert store.get("VirtualService", "default", "b") is None
    assert store.get("VirtualService", "default", "a") == store.list("VirtualService")[0]
    assert store.list("VirtualService")[0]["spec"]["tcp"][0]["route"][0]["weight"] == 100


def test_replace_checks_resource_version(store: StoreBackend) -> None:
    created = store.create(vs("a"))
    with pytest.raises(NotFound):
        store.replace(vs("zzz"))
    with pytest.raises(Conflict):
        store.replace(vs("a", weight=5), expected_resource_version=str(rv(created) + 1000))
    replaced = store.replace(vs("a", weight=5), expected_resource_version=str(rv(created)))
    assert replaced["metadata"]["generation"] == 2
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    revision = store.revision
    assert store.replace(vs("a", weight=5)) == replaced  # no change, no new revision
    assert store.revision == revision == rv(replaced)


def test_update_status_does_not_bump_generation(store: StoreBackend) -> None:
    created = store.create(vs("a"))
    updated = store.update_status("VirtualService", "default", "a", {"phase": "ok"})
    assert updated["status"] == {"phase": "ok"}
    assert updated["metadata"]["generation"] == 1
    assert rv(updated) > rv(created)
    assert store.update_status("VirtualService", "default", "a", {"phase": "ok"}) == updated
    with pytest.raises(Conflict):
        store.update_status(
            "VirtualService", "default", "a", {}, expected_resource_version=str(rv(created))
        )
    with pytest.raises(NotFound):
        store.update_status("VirtualService", "default", "nope", {})
    # Spec updates keep the status the runtime wrote.
    assert store.replace(vs("a", weight=3))["status"] == {"phase": "ok"}


def test_delete(store: StoreBackend) -> None:
    created = store.create(vs("a"))
    deleted = store.delete("VirtualService", "default", "a")
    assert deleted["metadata"]["name"] == "a"
    assert rv(deleted) > rv(created) and rv(deleted) == store.revision
    assert store.get("VirtualService", "default", "a") is None
    with pytest.raises(NotFound):
        store.delete("VirtualService", "default", "a")
    # The name can be reused; the new object is a different one.
    assert store.create(vs("a"))["metadata"]["uid"] != deleted["metadata"]["uid"]


def test_concurrent_read_modify_write_loses_no_update(backend: Backend) -> None:
    """Two writers (on etcd: two clients) bump one counter with resourceVersion checks."""
    first, second = backend.open(), backend.open() if backend.name == "etcd" else None
    try:
        stores = [first, second or first]
        first.create(vs("counter"))
        conflicts = [0, 0]

        def bump(index: int) -> None:
            store = stores[index]
            for _ in range(15):
                while True:
                    current = store.get("VirtualService", "default", "counter")
                    assert current is not None
                    count = int(current["metadata"]["labels"].get("count", "0"))
                    new = {**current, "metadata": {**current["metadata"]}}
                    new["metadata"]["labels"] = {"count": str(count + 1)}
                    try:
                        store.replace(new, expected_resource_version=str(rv(current)))
                        break
                    except Conflict:
                        conflicts[index] += 1

        threads = [threading.Thread(target=bump, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        final = first.get("VirtualService", "default", "counter")
        assert final is not None and final["metadata"]["labels"] == {"count": "30"}
    finally:
        first.close()
        if second is not None:
            second.close()


def test_revision_survives_reopen(backend: Backend) -> None:
    first = backend.open()
    try:
        uid = first.create(vs("a"))["metadata"]["uid"]
        first.apply([vs("b"), vs("a", weight=9)])
        first.delete("VirtualService", "default", "b")
        revision = first.revision
    finally:
        first.close()
    second = backend.open()
    try:
        assert second.revision >= revision
        reopened = second.get("VirtualService", "default", "a")
        assert reopened is not None and reopened["metadata"]["uid"] == uid
        assert rv(second.create(vs("c"))) > revision
    finally:
        second.close()


def test_a_killed_writer_leaves_a_readable_store(backend: Backend) -> None:
    script = (
        "import os, sys, pathlib\n"
        "from tcpmesh.store import open_store\n"
        "s = open_store(sys.argv[1] or None, pathlib.Path(sys.argv[2]))\n"
        "for i in range(20):\n"
        "    s.create({'kind': 'Service', 'metadata': {'name': f's{i}', 'namespace': 'd'}})\n"
        "os._exit(9)\n"
    )
    argv = [sys.executable, "-c", script, backend.spec or "", str(backend.state_dir)]
    proc = subprocess.run(argv, timeout=60, check=False)
    assert proc.returncode == 9
    reopened = backend.open()
    try:
        assert len(reopened.list("Service")) == 20
    finally:
        reopened.close()


async def _take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    async def take() -> list[WatchEvent]:
        return [await anext(events) for _ in range(count)]

    return await asyncio.wait_for(take(), timeout=10)


def test_watch_replays_then_streams_live_events(store: StoreBackend) -> None:
    store.create(vs("a"))
    since = store.revision
    store.create(endpoints("ep", "127.0.0.2"))
    b = store.create(vs("b"))

    async def main() -> None:
        events = store.watch(["VirtualService"], since=since)
        try:
            replayed = await _take(events, 1)
            assert [(e.type, e.object["metadata"]["name"], e.revision) for e in replayed] == [
                ("ADDED", "b", rv(b))
            ]
            assert replayed[0].object == b
            # A write from the loop's own thread, then one from another thread.
            [a] = store.apply([vs("a", weight=7)])
            writer = threading.Thread(target=store.delete, args=("VirtualService", "default", "b"))
            writer.start()
            writer.join(timeout=10)
            deleted_at = store.revision
            store.create(endpoints("ep2", "127.0.0.3"))  # filtered out
            c = store.create(vs("c"))
            live = await _take(events, 3)
            assert [(e.type, e.object["metadata"]["name"]) for e in live] == [
                ("MODIFIED", "a"),
                ("DELETED", "b"),
                ("ADDED", "c"),
            ]
            assert [e.revision for e in live] == [rv(a.object), deleted_at, rv(c)]
            assert live[1].object["spec"] == b["spec"]  # a deletion carries the last state
        finally:
            await events.aclose()

    asyncio.run(main())


def test_watch_of_a_multi_object_apply_sees_every_object(store: StoreBackend) -> None:
    since = store.revision

    async def main() -> None:
        events = store.watch(["VirtualService"], since=since)
        try:
            results = store.apply([vs("x"), vs("y"), vs("z")])
            seen = await _take(events, 3)
            assert [e.object for e in seen] == [r.object for r in results]
        finally:
            await events.aclose()

    asyncio.run(main())


def test_watch_without_since_sees_only_future_events(store: StoreBackend) -> None:
    store.create(vs("old"))

    async def main() -> None:
        events = store.watch()
        try:
            pending = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.3)
            assert not pending.done()
            new = store.create(endpoints("new", "127.0.0.2"))
            event = await asyncio.wait_for(pending, timeout=10)
            assert (event.type, event.object["kind"], event.revision) == (
                "ADDED",
                "Endpoints",
                rv(new),
            )
        finally:
            await events.aclose()

    asyncio.run(main())


def test_watch_ends_when_the_store_closes(backend: Backend) -> None:
    store = backend.open()

    async def main() -> None:
        events = store.watch()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.3)
        threading.Thread(target=store.close).start()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, timeout=10)

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_watch_from_trimmed_history_is_expired(
    backend: Backend, store: StoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.revision
    created = [store.create(vs(f"v{i}")) for i in range(6)]
    backend.trim(store, monkeypatch)

    async def main() -> None:
        with pytest.raises(Expired):
            await _take(store.watch(since=first), 1)
        # The newest writes are still there.
        events = store.watch(["VirtualService"], since=rv(created[-2]))
        assert [e.revision for e in await _take(events, 1)] == [rv(created[-1])]
        await events.aclose()

    asyncio.run(main())


# ------------------------------------------------------------------ kind keys (group, kind)


def istio_gateway(name: str) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"istio": "ingressgateway"}},
    }


def k8s_gateway(name: str) -> Obj:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"gatewayClassName": "tcpmesh"},
    }


K8S_GATEWAY = "Gateway.gateway.networking.k8s.io"


def test_two_groups_kinds_of_one_name_are_two_kinds(store: StoreBackend) -> None:
    istio = store.create(istio_gateway("gw"))
    k8s = store.create(k8s_gateway("gw"))
    assert store.get("Gateway", "default", "gw") == istio
    assert store.get(K8S_GATEWAY, "default", "gw") == k8s
    assert [o["apiVersion"] for o in store.list(K8S_GATEWAY)] == ["gateway.networking.k8s.io/v1"]
    assert [o["apiVersion"] for o in store.list("Gateway")] == ["networking.istio.io/v1"]
    [result] = store.apply([{**k8s_gateway("gw"), "spec": {"gatewayClassName": "istio"}}])
    assert result.action == "configured"
    assert store.get("Gateway", "default", "gw") == istio  # the other kind is untouched
    store.delete(K8S_GATEWAY, "default", "gw")
    assert store.get(K8S_GATEWAY, "default", "gw") is None
    assert store.get("Gateway", "default", "gw") == istio


def test_watch_filters_by_kind_key(store: StoreBackend) -> None:
    since = store.revision

    async def main() -> None:
        events = store.watch([K8S_GATEWAY], since=since)
        try:
            store.create(istio_gateway("a"))
            k8s = store.create(k8s_gateway("b"))
            store.delete(K8S_GATEWAY, "default", "b")
            seen = await _take(events, 2)
            assert [(e.type, e.object["apiVersion"]) for e in seen] == [
                ("ADDED", k8s["apiVersion"]),
                ("DELETED", k8s["apiVersion"]),
            ]
        finally:
            await events.aclose()

    asyncio.run(main())


def _write_as_before_group_keys(backend: Backend, store: StoreBackend, obj: Obj) -> None:
    """Store ``obj`` the way tcpmesh did before groups joined the key (bare Kind)."""
    meta = obj["metadata"]
    stored = {**obj, "metadata": {**meta, "uid": "u-old", "generation": 1}}
    text = json.dumps(stored, separators=(",", ":"), sort_keys=True)
    if backend.name == "sqlite":
        db = sqlite3.connect(backend.state_dir / SQLITE_FILE)
        with db:
            db.execute(
                "INSERT INTO objects (kind, namespace, name, json) VALUES (?,?,?,?)",
                (obj["kind"], meta["namespace"], meta["name"], text),
            )
        db.close()
        return
    assert isinstance(store, EtcdStore)
    prefix = store.config.prefix.rstrip("/")
    key = f"{prefix}/o/{obj['kind']}/{meta['namespace']}/{meta['name']}"
    store.connection.run(lambda client: client.put(key, text))


def test_rows_stored_before_group_keys_stay_readable(backend: Backend) -> None:
    first = backend.open()
    try:
        _write_as_before_group_keys(backend, first, vs("old"))
        _write_as_before_group_keys(backend, first, istio_gateway("old-gw"))
    finally:
        first.close()
    store = backend.open()
    try:
        assert store.get("VirtualService", "default", "old") is not None
        assert [o["metadata"]["name"] for o in store.list("Gateway")] == ["old-gw"]
        [result] = store.apply([istio_gateway("old-gw")])
        assert result.action == "unchanged"  # the same row, not a second object
        store.delete("Gateway", "default", "old-gw")
        assert store.list("Gateway") == []
    finally:
        store.close()


def gateway_class(name: str, description: str = "") -> Obj:
    spec = {"controllerName": "tcpmesh.io/gateway-controller", "description": description}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": spec,
    }


GATEWAY_CLASS = "GatewayClass.gateway.networking.k8s.io"


def test_cluster_scoped_objects_are_keyed_without_a_namespace(store: StoreBackend) -> None:
    since = store.revision
    created = store.create(gateway_class("ours"))
    assert "namespace" not in created["metadata"]
    with pytest.raises(AlreadyExists, match=r'GatewayClass.gateway.networking.k8s.io "ours"'):
        store.create(gateway_class("ours"))
    # A namespace on a cluster-scoped kind is refused (none on a namespaced one: above).
    in_default = {**gateway_class("other"), "metadata": {"name": "other", "namespace": "default"}}
    with pytest.raises(StoreError, match=r"is cluster-scoped: it has no metadata\.namespace"):
        store.apply([in_default])
    store.create(gateway_class("second"))
    assert store.get(GATEWAY_CLASS, "", "ours") == created
    assert [o["metadata"]["name"] for o in store.list(GATEWAY_CLASS)] == ["ours", "second"]
    assert store.list(GATEWAY_CLASS, "default") == []
    [result] = store.apply([gateway_class("ours", "changed")])
    assert result.action == "configured"
    assert result.object["metadata"]["generation"] == 2
    deleted = store.delete(GATEWAY_CLASS, "", "ours")
    assert deleted["spec"]["description"] == "changed"
    with pytest.raises(NotFound, match=r'GatewayClass.gateway.networking.k8s.io "ours" not found'):
        store.delete(GATEWAY_CLASS, "", "ours")
    assert [o["metadata"]["name"] for o in store.list(GATEWAY_CLASS, "")] == ["second"]

    async def main() -> None:
        events = store.watch([GATEWAY_CLASS], since=since)
        try:
            seen = await _take(events, 4)
        finally:
            await events.aclose()
        assert [(e.type, e.object["metadata"]["name"]) for e in seen] == [
            ("ADDED", "ours"),
            ("ADDED", "second"),
            ("MODIFIED", "ours"),
            ("DELETED", "ours"),
        ]
        assert all("namespace" not in e.object["metadata"] for e in seen)

    asyncio.run(main())
