from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tcpmesh.apiserver import create_app
from tcpmesh.apiserver.client import ApiClient, ApiError, Unreachable
from tcpmesh.apiserver.credentials import (
    read_credentials,
    remove_credentials,
    write_credentials,
)
from tcpmesh.control import Listener, Snapshot
from tcpmesh.store import Store

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
TOKEN = "s3cret-token"
WAIT = 10.0


API = "networking.istio.io/v1beta1"


def vs(name: str, ns: str = "default", weight: int = 100, **labels: str) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"hosts": ["tcp-echo"], "tcp": [{"route": [{"weight": weight}]}]},
    }


def pod(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "istio/tcp-echo-server:1.3"}]},
    }


def admit(objects: list[Obj]) -> tuple[list[str], list[str]]:
    """Refuses names starting with "bad", warns about names starting with "warn"."""
    errors: list[str] = []
    warnings: list[str] = []
    for obj in objects:
        name = obj["metadata"]["name"]
        if name.startswith("bad"):
            errors.append(f'{obj["kind"]} "{name}" is invalid: spec.tcp[0].route[0].weight: -5 < 0')
            errors.append(f'{obj["kind"]} "{name}" is invalid: spec.hosts: empty')
        if name.startswith("warn"):
            warnings.append(f'{obj["kind"]} "{name}": total weight 90 "is not" 100')
    return errors, warnings


class FakeSnapshots:
    """Snapshots published from the test thread to watchers on the server's loop."""

    def __init__(self) -> None:
        self.snapshots: dict[str, Snapshot] = {}
        self.watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Snapshot]]] = []
        self.active = 0

    def current(self, node: str) -> Snapshot | None:
        return self.snapshots.get(node)

    async def watch(self, node: str) -> AsyncIterator[Snapshot]:
        queue: asyncio.Queue[Snapshot] = asyncio.Queue()
        watcher = (asyncio.get_running_loop(), queue)
        self.watchers.append(watcher)
        self.active += 1
        try:
            if node in self.snapshots:
                yield self.snapshots[node]
            while True:
                yield await queue.get()
        finally:
            self.active -= 1
            self.watchers.remove(watcher)

    def publish(self, node: str, snapshot: Snapshot) -> None:
        self.snapshots[node] = snapshot
        for loop, queue in list(self.watchers):
            loop.call_soon_threadsafe(queue.put_nowait, snapshot)


@dataclass
class Mesh:
    url: str
    store: Store
    snapshots: FakeSnapshots
    client: ApiClient
    logs: Path
    stop: Any


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    store = Store(tmp_path / "state.db")
    snapshots = FakeSnapshots()
    logs = tmp_path / "pods"
    logs.mkdir()

    def pod_log(namespace: str, name: str) -> Path | None:
        return logs / f"{namespace}.{name}.log"

    app = create_app(
        store,
        TOKEN,
        admit=admit,
        snapshots=snapshots,
        status=lambda: {"ready": True, "pods": 3},
        pod_log=pod_log,
    )
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, shutdown_timeout=5)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(WAIT)

    try:
        url = asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT)
        yield Mesh(url, store, snapshots, ApiClient(url, TOKEN, timeout=WAIT), logs, stop)
    finally:
        try:
            stop()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()
            store.close()


def raw(mesh: Mesh, method: str, path: str, body: Obj | None = None) -> tuple[int, Any, Any]:
    """(status, headers, JSON body) of a request the client has no method for."""
    request = urllib.request.Request(
        mesh.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=WAIT) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, json.loads(exc.read())


def test_healthz_is_open_and_everything_else_needs_the_token(mesh: Mesh) -> None:
    intruder = ApiClient(mesh.url, "not-the-token", timeout=WAIT)
    assert intruder.healthz()
    with pytest.raises(ApiError) as info:
        intruder.list("VirtualService")
    assert (info.value.status, info.value.reason) == (401, "Unauthorized")
    with pytest.raises(ApiError) as info:
        ApiClient(mesh.url, "", timeout=WAIT).status()
    assert info.value.status == 401
    assert mesh.client.status() == {"ready": True, "pods": 3}


def test_unreachable_is_not_an_api_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unreachable):
        ApiClient(f"http://127.0.0.1:{port}", TOKEN, timeout=WAIT).list("vs")
    with pytest.raises(Unreachable, match="tcpmesh up"):
        ApiClient.from_state_dir(tmp_path / "nothing-here")


def test_credentials_file(mesh: Mesh, tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write_credentials(state, mesh.url, TOKEN, 4242)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = read_credentials(state)
    assert creds is not None and (creds.url, creds.token, creds.pid) == (mesh.url, TOKEN, 4242)
    assert ApiClient.from_state_dir(state).healthz()
    assert ApiClient.from_state_dir(state).list("vs") == []
    remove_credentials(state, 1)  # someone else's: kept
    assert path.exists()
    remove_credentials(state)  # not this process's either
    assert path.exists()
    remove_credentials(state, 4242)
    assert read_credentials(state) is None
    write_credentials(state, mesh.url, TOKEN, os.getpid())
    remove_credentials(state)
    assert not path.exists()


def test_crud(mesh: Mesh) -> None:
    client = mesh.client
    created = client.create(vs("echo"))
    assert created["metadata"]["generation"] == 1
    assert client.get("vs", "default", "echo") == created
    assert client.get("virtualservices.networking.istio.io", "default", "echo") == created

    with pytest.raises(ApiError) as info:
        client.create(vs("echo"))
    assert (info.value.status, info.value.reason) == (409, "AlreadyExists")

    changed = vs("echo", weight=20)
    changed["metadata"]["resourceVersion"] = "999"
    with pytest.raises(ApiError) as info:
        client.replace(changed)
    assert (info.value.status, info.value.reason) == (409, "Conflict")
    changed["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    replaced = client.replace(changed)
    assert replaced["metadata"]["generation"] == 2

    status = client.update_status({**replaced, "status": {"observed": 2}})
    assert status["status"] == {"observed": 2}
    assert status["metadata"]["generation"] == 2

    # Any of the kind's versions works in the path.
    code, _, body = raw(
        mesh, "GET", "/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices/echo"
    )
    assert code == 200 and body["status"] == {"observed": 2}

    deleted = client.delete("VirtualService", "default", "echo")
    assert deleted["metadata"]["uid"] == created["metadata"]["uid"]
    with pytest.raises(ApiError) as info:
        client.get("vs", "default", "echo")
    assert info.value.status == 404
    assert info.value.message == 'virtualservices.networking.istio.io "echo" not found'
    with pytest.raises(ApiError) as info:
        client.delete("svc", "default", "nope")
    assert info.value.message == 'services "nope" not found'
    assert mesh.store.list("VirtualService") == []


def test_unknown_paths_and_bad_bodies(mesh: Mesh) -> None:
    code, _, body = raw(mesh, "GET", "/apis/networking.istio.io/v2/virtualservices")
    assert (code, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    code, _, body = raw(mesh, "GET", "/api/v1/widgets")
    assert code == 404
    code, _, body = raw(mesh, "POST", "/api/v1/namespaces/default/services", vs("x"))
    assert (code, body["reason"]) == (400, "BadRequest")
    code, _, body = raw(mesh, "POST", "/api/v1/namespaces/other/pods", pod("p"))
    assert code == 400 and "namespace" in body["message"]
    assert mesh.store.revision == 0


def test_apply_and_warnings(mesh: Mesh) -> None:
    result = mesh.client.apply([vs("echo"), vs("warn-me")])
    assert result["results"] == [
        {
            "apiVersion": API,
            "kind": "VirtualService",
            "namespace": "default",
            "name": n,
            "action": "created",
        }
        for n in ("echo", "warn-me")
    ]
    assert result["warnings"] == ['VirtualService "warn-me": total weight 90 "is not" 100']
    again = mesh.client.apply([vs("echo", weight=50), vs("warn-me")])
    assert [r["action"] for r in again["results"]] == ["configured", "unchanged"]

    code, headers, body = raw(mesh, "POST", "/tcpmesh/v1/apply", {"objects": [vs("warn-2")]})
    assert code == 200 and body["warnings"] == [admit([vs("warn-2")])[1][0]]
    assert headers.get_all("Warning") == [
        '299 - "VirtualService \\"warn-2\\": total weight 90 \\"is not\\" 100"'
    ]

    revision = mesh.store.revision
    dry = mesh.client.apply([vs("new-one"), vs("echo", weight=1)], dry_run=True)
    assert [r["action"] for r in dry["results"]] == ["created", "configured"]
    assert mesh.store.revision == revision
    assert mesh.store.get("VirtualService", "default", "new-one") is None


def test_rejected_apply_writes_nothing(mesh: Mesh) -> None:
    mesh.client.apply([vs("echo")])
    before = (mesh.store.revision, mesh.store.list("VirtualService"))
    with pytest.raises(ApiError) as info:
        mesh.client.apply([vs("echo", weight=10), vs("other"), vs("bad-one")])
    assert (info.value.status, info.value.reason) == (422, "Invalid")
    assert info.value.message == (
        'VirtualService "bad-one" is invalid: spec.tcp[0].route[0].weight: -5 < 0\n'
        'VirtualService "bad-one" is invalid: spec.hosts: empty'
    )
    with pytest.raises(ApiError) as info:
        mesh.client.create(vs("bad-two"))
    assert info.value.status == 422
    assert (mesh.store.revision, mesh.store.list("VirtualService")) == before


def test_runtime_kinds_are_not_appliable_but_writable_over_rest(mesh: Mesh, tmp_path: Path) -> None:
    with pytest.raises(ApiError) as info:
        mesh.client.apply([vs("ok"), pod("p")])
    assert info.value.status == 422 and "cannot be applied" in info.value.message
    assert mesh.store.revision == 0
    with pytest.raises(ApiError) as info:
        mesh.client.apply([{**vs("ok"), "kind": "Widget"}])
    assert (
        info.value.message
        == 'no matches for kind "Widget" in version "networking.istio.io/v1beta1"'
    )

    created = mesh.client.create(pod("p"))
    assert created["kind"] == "Pod"
    (mesh.logs / "default.p.log").write_text("hello\nworld\n")
    assert mesh.client.pod_log("default", "p") == "hello\nworld\n"
    with pytest.raises(ApiError) as info:
        mesh.client.pod_log("default", "ghost")
    assert info.value.message == 'pods "ghost" not found'
    mesh.client.delete("po", "default", "p")
    assert mesh.store.get("Pod", "default", "p") is None


def test_delete_many(mesh: Mesh) -> None:
    mesh.client.apply([vs("a"), vs("b")])
    result = mesh.client.delete_many(
        [vs("a"), {"kind": "VirtualService", "namespace": "default", "name": "zz"}]
    )
    assert [(r["name"], r["action"]) for r in result["results"]] == [
        ("a", "deleted"),
        ("zz", "not found"),
    ]
    assert result["results"][1]["message"] == 'virtualservices.networking.istio.io "zz" not found'
    assert [o["metadata"]["name"] for o in mesh.client.list("vs")] == ["b"]


def test_list_with_label_selector(mesh: Mesh) -> None:
    mesh.client.apply(
        [vs("a", app="echo"), vs("b", "prod", app="echo", v="2"), vs("c", app="other")]
    )

    def names(items: list[Obj]) -> list[str]:
        return [o["metadata"]["name"] for o in items]

    assert names(mesh.client.list("vs")) == ["a", "c", "b"]  # by namespace, then name
    assert names(mesh.client.list("vs", "default")) == ["a", "c"]
    assert names(mesh.client.list("vs", None, {"app": "echo"})) == ["a", "b"]
    assert names(mesh.client.list("vs", None, {"app": "echo", "v": "2"})) == ["b"]
    code, _, body = raw(
        mesh, "GET", "/apis/networking.istio.io/v1/virtualservices?labelSelector=app%3Decho"
    )
    assert code == 200 and body["kind"] == "VirtualServiceList"
    assert body["apiVersion"] == "networking.istio.io/v1"
    # Three objects and the Namespaces "default" and "prod" they created (api.namespaces).
    assert body["metadata"]["resourceVersion"] == "5" and names(body["items"]) == ["a", "b"]


def test_watch_streams_events(mesh: Mesh) -> None:
    mesh.client.apply([vs("a"), vs("other-ns", "prod")])
    events = mesh.client.watch("vs", "default", timeout=WAIT)
    first = next(events)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
    # Writes from this thread, not the server's loop, must still reach the stream.
    mesh.store.apply([vs("a", weight=3), vs("ignored", "prod")])
    mesh.store.delete("VirtualService", "default", "a")
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in (next(events), next(events))]
    assert seen == [("MODIFIED", "a"), ("DELETED", "a")]
    events.close()

    # From a resourceVersion: the events after it are replayed.
    last = mesh.store.get("VirtualService", "prod", "other-ns")
    assert last is not None
    since = last["metadata"]["resourceVersion"]
    replay = mesh.client.watch("vs", None, resource_version=since, timeout=WAIT)
    assert [next(replay)["type"] for _ in range(3)] == ["MODIFIED", "ADDED", "DELETED"]
    replay.close()


def test_watch_ends_when_the_server_stops(mesh: Mesh) -> None:
    events = mesh.client.watch("vs", timeout=WAIT)
    mesh.store.create(vs("a"))
    assert next(events)["type"] == "ADDED"
    started = time.monotonic()
    mesh.stop()
    assert list(events) == []
    assert time.monotonic() - started < 5


def test_snapshots(mesh: Mesh) -> None:
    node = "istio-system/gw-1"
    assert mesh.client.snapshot(node) is None
    first = Snapshot.build((), ())
    mesh.snapshots.publish(node, first)
    # JSON only at the edge: the typed Snapshot goes out as its JSON text.
    assert mesh.client.snapshot(node) == json.loads(first.to_json())

    stream = mesh.client.watch_snapshots(node, timeout=WAIT)
    assert next(stream) == json.loads(first.to_json())
    wait_until(lambda: mesh.snapshots.active == 1, "the server to subscribe")
    second = Snapshot.build((Listener("0.0.0.0_31400", "127.0.0.1", 31400, ()),), ())
    mesh.snapshots.publish(node, second)
    assert next(stream) == json.loads(second.to_json())

    # A client that goes away releases the server's subscription.
    stream.close()
    wait_until(lambda: mesh.snapshots.active == 0, "the server to unsubscribe")
