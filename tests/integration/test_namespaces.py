"""Cluster-scoped kinds and Namespaces over the real REST API, with the real admission.

Kubernetes' paths (/api/v1/namespaces/NAME, /apis/gateway.networking.k8s.io/v1/gatewayclasses/
NAME), a namespace sent on a cluster-scoped object dropped, the other scope's path a 404;
a write into a namespace without a Namespace creates it (tcpmesh's rule, api.namespaces);
deleting a Namespace turns it Terminating, refuses new objects in it, and the namespace
controller deletes its objects and then it, in bounded passes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tcpmesh.api import validate_object
from tcpmesh.apiserver import create_app
from tcpmesh.apiserver.client import ApiClient, ApiError
from tcpmesh.controllers import NamespaceController
from tcpmesh.controllers import namespaces as namespace_controller
from tcpmesh.store import Store
from tests.integration.test_apiserver import TOKEN, WAIT, FakeSnapshots, Mesh, raw

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
GC_PATH = "/apis/gateway.networking.k8s.io/v1/gatewayclasses"
VS_PATH = "/apis/networking.istio.io/v1/namespaces/{}/virtualservices"


def admit(objects: list[Obj]) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    for obj in objects:
        e, w = validate_object(obj)
        errors += e
        warnings += w
    return errors, warnings


def vs(name: str, ns: str) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": ["tcp-echo"], "tcp": [{"route": [{"destination": {"host": "a"}}]}]},
    }


def gateway_class(
    name: str, controller: str = "example.net/gateway-controller", **meta: Any
) -> Obj:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name, **meta},
        "spec": {"controllerName": controller},
    }


@contextmanager
def serving(store: Store, *, controller: bool) -> Iterator[Mesh]:
    """The API server (and the namespace controller) on one loop, over ``store``."""
    app = create_app(
        store,
        TOKEN,
        admit=admit,
        snapshots=FakeSnapshots(),
        status=lambda: {},
        pod_log=lambda namespace, name: None,
    )
    namespaces = NamespaceController(store)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, shutdown_timeout=5)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        if controller:
            await namespaces.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def stop() -> None:
        await namespaces.stop()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT)
        client = ApiClient(url, TOKEN, timeout=WAIT)
        yield Mesh(url, store, FakeSnapshots(), client, Path(), None)
    finally:
        try:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(WAIT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    store = Store(tmp_path / "state.db")
    try:
        with serving(store, controller=True) as served:
            yield served
    finally:
        store.close()


def test_cluster_scoped_paths_are_kubernetes_paths(mesh: Mesh) -> None:
    # A namespace on a cluster-scoped object is dropped, as Kubernetes drops it.
    status, _, created = raw(mesh, "POST", GC_PATH, gateway_class("ours", namespace="team-a"))
    assert status == 201, created
    assert "namespace" not in created["metadata"]
    assert raw(mesh, "GET", f"{GC_PATH}/ours")[2]["spec"] == created["spec"]
    assert raw(mesh, "GET", f"{GC_PATH}/ours/status")[0] == 200
    assert [o["metadata"]["name"] for o in raw(mesh, "GET", GC_PATH)[2]["items"]] == ["ours"]
    # The other scope's path does not exist, for either kind of kind.
    namespaced = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gatewayclasses/ours"
    assert raw(mesh, "GET", namespaced)[0] == 404
    assert raw(mesh, "GET", "/apis/networking.istio.io/v1/virtualservices/x")[0] == 404
    # Nothing was written into "team-a": a cluster-scoped write creates no Namespace.
    assert raw(mesh, "GET", "/api/v1/namespaces/team-a")[0] == 404
    status, _, deleted = raw(mesh, "DELETE", f"{GC_PATH}/ours")
    assert (status, deleted["metadata"]["name"]) == (200, "ours")
    assert raw(mesh, "GET", f"{GC_PATH}/ours")[0] == 404


def test_a_write_into_a_namespace_without_one_creates_it(mesh: Mesh) -> None:
    mesh.client.apply([vs("a", "team-a")])
    status, _, created = raw(mesh, "POST", VS_PATH.format("team-b"), vs("b", "team-b"))
    assert status == 201, created
    for name in ("team-a", "team-b"):
        status, _, ns = raw(mesh, "GET", f"/api/v1/namespaces/{name}")
        assert status == 200
        assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": name}
        assert ns["status"] == {"phase": "Active"}
    # The label is the API server's: a user's Namespace gets it, whatever it says.
    labels = {"kubernetes.io/metadata.name": "x", "env": "prod"}
    mine = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-c", "labels": labels},
    }
    status, _, ns = raw(mesh, "POST", "/api/v1/namespaces", mine)
    assert status == 201, ns
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-c", "env": "prod"}
    # Applied twice: the label the server added is no change the second time.
    again = {**mine, "metadata": {**mine["metadata"], "name": "team-d"}}
    assert mesh.client.apply([again])["results"][0]["action"] == "created"
    assert mesh.client.apply([again])["results"][0]["action"] == "unchanged"


def test_deleting_a_namespace_deletes_its_objects_then_it(mesh: Mesh) -> None:
    mesh.client.apply([vs("a", "doomed"), vs("b", "doomed"), vs("a", "kept")])
    status, _, body = raw(mesh, "DELETE", "/api/v1/namespaces/default")
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == 'namespaces "default" is forbidden: this namespace may not be deleted'
    status, _, body = raw(mesh, "DELETE", "/api/v1/namespaces/doomed")
    assert status == 200
    assert body["status"]["phase"] == "Terminating" and body["metadata"]["deletionTimestamp"]
    deadline = time.monotonic() + WAIT
    while raw(mesh, "GET", "/api/v1/namespaces/doomed")[0] != 404:
        assert time.monotonic() < deadline, "the namespace was not deleted"
        time.sleep(0.05)
    assert mesh.store.list("VirtualService", "doomed") == []
    assert [o["metadata"]["name"] for o in mesh.store.list("VirtualService", "kept")] == ["a"]


def test_a_terminating_namespace_takes_no_new_objects(tmp_path: Path) -> None:
    """Without the controller, the Terminating phase stays long enough to be written into."""
    store = Store(tmp_path / "state.db")
    try:
        with serving(store, controller=False) as mesh:
            mesh.client.apply([vs("a", "closing")])
            assert raw(mesh, "DELETE", "/api/v1/namespaces/closing")[0] == 200
            status, _, body = raw(mesh, "POST", f"{VS_PATH.format('closing')}", vs("b", "closing"))
            assert (status, body["reason"]) == (403, "Forbidden")
            assert body["message"] == (
                "unable to create new content in namespace closing because it is being terminated"
            )
            # What is there may still change; the Namespace stays Terminating when reapplied.
            changed = vs("a", "closing")
            changed["spec"]["hosts"] = ["other"]
            [result] = mesh.client.apply([changed])["results"]
            assert result["action"] == "configured"
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "closing"}}
            mesh.client.apply([namespace])
            stored = store.get("Namespace", "", "closing")
            assert stored is not None and stored["metadata"]["deletionTimestamp"]
            assert stored["status"]["phase"] == "Terminating"
    finally:
        store.close()


def test_namespace_passes_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass deletes at most BATCH objects; the Namespace goes in the pass that finds none."""
    monkeypatch.setattr(namespace_controller, "BATCH", 2)
    store = Store(tmp_path / "state.db")
    try:
        meta = {"name": "big", "deletionTimestamp": "2026-01-01T00:00:00Z"}
        store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        for i in range(5):
            store.create(vs(f"r{i}", "big"))
        controller = NamespaceController(store)
        left = []
        while controller.sync():
            left.append(len(store.list("VirtualService", "big")))
        assert left == [3, 1, 0]
        assert store.get("Namespace", "", "big") is None
    finally:
        store.close()


def test_gateway_class_checks_are_the_crds(mesh: Mesh) -> None:
    status, _, body = raw(mesh, "POST", GC_PATH, gateway_class("bad", "no-slash"))
    assert (status, body["reason"]) == (422, "Invalid")
    assert 'spec.controllerName: Invalid value: "no-slash": should match' in body["message"]
    assert raw(mesh, "POST", GC_PATH, gateway_class("mine"))[0] == 201
    # controllerName is immutable (the CRD's self == oldSelf), over PUT and over apply.
    moved = gateway_class("mine", "example.net/other")
    status, _, body = raw(mesh, "PUT", f"{GC_PATH}/mine", moved)
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == (
        'GatewayClass "mine" is invalid: spec.controllerName: Invalid value: '
        '"example.net/other": Value is immutable'
    )
    with pytest.raises(ApiError, match="Value is immutable"):
        mesh.client.apply([moved])
    described = gateway_class("mine")
    described["spec"]["description"] = "for the tests"
    [result] = mesh.client.apply([described])["results"]
    assert result["action"] == "configured"
    stored = mesh.store.get("GatewayClass.gateway.networking.k8s.io", "", "mine")
    assert stored is not None and stored["metadata"]["generation"] == 2
    # v1beta1 is served too, from the same stored object.
    beta = raw(mesh, "GET", "/apis/gateway.networking.k8s.io/v1beta1/gatewayclasses/mine")
    assert beta[0] == 200
