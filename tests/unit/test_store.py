from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.store import (
    AlreadyExists,
    Conflict,
    Expired,
    NotFound,
    Store,
    StoreError,
    WatchEvent,
)

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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    try:
        yield s
    finally:
        s.close()


def test_create_fills_metadata_and_get_returns_it(store: Store) -> None:
    created = store.create(vs("a"))
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert meta["resourceVersion"] == "1" == str(store.revision)
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert store.get("VirtualService", "default", "a") == created
    assert store.get("VirtualService", "other", "a") is None
    assert store.get("DestinationRule", "default", "a") is None


def test_create_twice_is_already_exists(store: Store) -> None:
    store.create(vs("a"))
    with pytest.raises(AlreadyExists):
        store.create(vs("a"))
    assert store.revision == 1


def test_list_sorts_and_filters_by_namespace_and_labels(store: Store) -> None:
    store.create(vs("b", "ns2", app="x"))
    store.create(vs("b", "ns1", app="y"))
    store.create(vs("a", "ns2", app="x", version="v1"))
    store.create(endpoints("a", "127.0.0.2"))

    def names(objs: list[Obj]) -> list[str]:
        return [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objs]

    assert names(store.list("VirtualService")) == ["ns1/b", "ns2/a", "ns2/b"]
    assert names(store.list("VirtualService", "ns2")) == ["ns2/a", "ns2/b"]
    assert names(store.list("VirtualService", None, {"app": "x"})) == ["ns2/a", "ns2/b"]
    assert names(store.list("VirtualService", None, {"app": "x", "version": "v1"})) == ["ns2/a"]
    assert store.list("VirtualService", "ns1", {"app": "x"}) == []
    items, revision = store.list_with_revision("Endpoints")
    assert names(items) == ["default/a"] and revision == 4


def test_objects_without_kind_name_or_namespace_are_refused(store: Store) -> None:
    no_ns = vs("a")
    del no_ns["metadata"]["namespace"]
    for bad in ({"metadata": {"name": "a", "namespace": "d"}}, {"kind": "X"}, no_ns):
        with pytest.raises(StoreError):
            store.apply([bad])
    assert store.revision == 0


def test_apply_created_configured_unchanged(store: Store) -> None:
    [result] = store.apply([vs("a")])
    assert result.action == "created"
    assert result.object["metadata"]["generation"] == 1

    # A client's copy of the server-filled fields does not count as a change.
    [again] = store.apply([result.object])
    assert again.action == "unchanged"
    assert store.revision == 1

    [relabelled] = store.apply([vs("a", app="x")])
    assert relabelled.action == "configured"
    assert relabelled.object["metadata"]["generation"] == 1
    assert relabelled.object["metadata"]["resourceVersion"] == "2"

    [reweighted] = store.apply([vs("a", weight=50, app="x")])
    assert reweighted.action == "configured"
    meta = reweighted.object["metadata"]
    assert meta["generation"] == 2
    assert meta["uid"] == result.object["metadata"]["uid"]
    assert meta["creationTimestamp"] == result.object["metadata"]["creationTimestamp"]
    assert store.get("VirtualService", "default", "a") == reweighted.object


def test_apply_keeps_status_and_compares_subsets(store: Store) -> None:
    store.apply([endpoints("ep", "127.0.0.2")])
    store.update_status("Endpoints", "default", "ep", {"ready": True})
    [same] = store.apply([endpoints("ep", "127.0.0.2")])
    assert same.action == "unchanged"
    [moved] = store.apply([endpoints("ep", "127.0.0.3")])
    assert moved.action == "configured"
    assert moved.object["metadata"]["generation"] == 2
    assert moved.object["status"] == {"ready": True}


def test_apply_is_all_or_nothing(store: Store) -> None:
    store.create(vs("a"))
    stale = vs("a", weight=10)
    stale["metadata"]["resourceVersion"] = "999"
    with pytest.raises(Conflict):
        store.apply([vs("b"), vs("c"), stale])
    assert store.get("VirtualService", "default", "b") is None
    assert store.list("VirtualService") == [store.get("VirtualService", "default", "a")]
    assert store.revision == 1
    with pytest.raises(StoreError):
        store.apply([vs("d"), {"kind": "VirtualService", "metadata": {"name": "e"}}])
    assert store.get("VirtualService", "default", "d") is None
    assert store.revision == 1


def test_dry_run_writes_nothing(store: Store) -> None:
    store.create(vs("a"))
    results = store.apply([vs("a", weight=1), vs("b")], dry_run=True)
    assert [r.action for r in results] == ["configured", "created"]
    assert store.revision == 1
    assert store.get("VirtualService", "default", "b") is None
    assert store.get("VirtualService", "default", "a") == store.list("VirtualService")[0]
    assert store.list("VirtualService")[0]["spec"]["tcp"][0]["route"][0]["weight"] == 100


def test_replace_checks_resource_version(store: Store) -> None:
    created = store.create(vs("a"))
    with pytest.raises(NotFound):
        store.replace(vs("zzz"))
    with pytest.raises(Conflict):
        store.replace(vs("a", weight=5), expected_resource_version="7")
    replaced = store.replace(vs("a", weight=5), expected_resource_version="1")
    assert replaced["metadata"]["generation"] == 2
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    assert store.replace(vs("a", weight=5)) == replaced  # no change, no new revision
    assert store.revision == 2


def test_update_status_does_not_bump_generation(store: Store) -> None:
    store.create(vs("a"))
    updated = store.update_status("VirtualService", "default", "a", {"phase": "ok"})
    assert updated["status"] == {"phase": "ok"}
    assert updated["metadata"]["generation"] == 1
    assert updated["metadata"]["resourceVersion"] == "2"
    assert store.update_status("VirtualService", "default", "a", {"phase": "ok"}) == updated
    with pytest.raises(Conflict):
        store.update_status("VirtualService", "default", "a", {}, expected_resource_version="1")
    with pytest.raises(NotFound):
        store.update_status("VirtualService", "default", "nope", {})
    # Spec updates keep the status the runtime wrote.
    assert store.replace(vs("a", weight=3))["status"] == {"phase": "ok"}


def test_delete(store: Store) -> None:
    store.create(vs("a"))
    deleted = store.delete("VirtualService", "default", "a")
    assert deleted["metadata"]["name"] == "a"
    assert deleted["metadata"]["resourceVersion"] == "2"
    assert store.get("VirtualService", "default", "a") is None
    with pytest.raises(NotFound):
        store.delete("VirtualService", "default", "a")
    # The name can be reused; the new object is a different one.
    assert store.create(vs("a"))["metadata"]["uid"] != deleted["metadata"]["uid"]


def test_revision_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = Store(path)
    try:
        uid = first.create(vs("a"))["metadata"]["uid"]
        first.apply([vs("b"), vs("a", weight=9)])
        first.delete("VirtualService", "default", "b")
        assert first.revision == 4
    finally:
        first.close()
    second = Store(path)
    try:
        assert second.revision == 4
        reopened = second.get("VirtualService", "default", "a")
        assert reopened is not None and reopened["metadata"]["uid"] == uid
        assert second.create(vs("c"))["metadata"]["resourceVersion"] == "5"
    finally:
        second.close()


def test_a_killed_writer_leaves_a_readable_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    script = (
        "import os, sys, pathlib\n"
        "from tcpmesh.store import Store\n"
        "s = Store(pathlib.Path(sys.argv[1]))\n"
        "for i in range(20):\n"
        "    s.create({'kind': 'Service', 'metadata': {'name': f's{i}', 'namespace': 'd'}})\n"
        "os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], timeout=60, check=False)
    assert proc.returncode == 9
    reopened = Store(path)
    try:
        assert reopened.revision == 20
        assert len(reopened.list("Service")) == 20
    finally:
        reopened.close()


async def _take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    async def take() -> list[WatchEvent]:
        return [await anext(events) for _ in range(count)]

    return await asyncio.wait_for(take(), timeout=5)


def test_watch_replays_then_streams_live_events(store: Store) -> None:
    store.create(vs("a"))
    store.create(endpoints("ep", "127.0.0.2"))
    store.create(vs("b"))

    async def main() -> None:
        events = store.watch(["VirtualService"], since=1)
        try:
            replayed = await _take(events, 1)
            assert [(e.type, e.object["metadata"]["name"], e.revision) for e in replayed] == [
                ("ADDED", "b", 3)
            ]
            # A write from the loop's own thread, then one from another thread.
            store.apply([vs("a", weight=7)])
            writer = threading.Thread(target=store.delete, args=("VirtualService", "default", "b"))
            writer.start()
            writer.join(timeout=5)
            store.create(endpoints("ep2", "127.0.0.3"))  # filtered out
            store.create(vs("c"))
            live = await _take(events, 3)
            assert [(e.type, e.object["metadata"]["name"]) for e in live] == [
                ("MODIFIED", "a"),
                ("DELETED", "b"),
                ("ADDED", "c"),
            ]
            assert [e.revision for e in live] == [4, 5, 7]
        finally:
            await events.aclose()

    asyncio.run(main())


def test_watch_without_since_sees_only_future_events(store: Store) -> None:
    store.create(vs("old"))

    async def main() -> None:
        events = store.watch()
        try:
            pending = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.05)
            assert not pending.done()
            store.create(endpoints("new", "127.0.0.2"))
            event = await asyncio.wait_for(pending, timeout=5)
            assert (event.type, event.object["kind"], event.revision) == ("ADDED", "Endpoints", 2)
        finally:
            await events.aclose()

    asyncio.run(main())


def test_watch_ends_when_the_store_closes(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")

    async def main() -> None:
        events = store.watch()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.05)
        threading.Thread(target=store.close).start()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, timeout=5)

    asyncio.run(main())


def test_watch_from_trimmed_history_is_expired(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tcpmesh.store.sqlite.EVENT_HISTORY", 3)
    for i in range(6):
        store.create(vs(f"v{i}"))

    async def main() -> None:
        with pytest.raises(Expired):
            await _take(store.watch(since=1), 1)
        # The last three events are still there.
        events = store.watch(since=3)
        assert [e.revision for e in await _take(events, 3)] == [4, 5, 6]
        await events.aclose()

    asyncio.run(main())
