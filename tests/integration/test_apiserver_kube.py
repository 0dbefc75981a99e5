"""The Kubernetes API details kubectl and client-go rely on, over a real socket.

Uses the in-process server of test_apiserver (its fixture and helpers): watch semantics
(selectors, bookmarks, timeouts, 410), Table responses, dryRun, fieldValidation, the
status and scale subresources.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from tcpmesh.apiserver import server
from tests.integration import test_apiserver as base
from tests.integration.test_apiserver import TOKEN, WAIT, Mesh, vs

mesh = base.mesh  # the in-process API server fixture

pytestmark = pytest.mark.integration

VS_PATH = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def request(
    mesh: Mesh, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any, bytes]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(
        mesh.url + path,
        method=method,
        data=data,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **headers},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=WAIT) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def lines(body: bytes) -> list[Any]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def test_watch_with_a_selector_sees_objects_enter_and_leave_it(mesh: Mesh) -> None:
    mesh.client.apply([vs("a", app="echo")])
    events = mesh.client.watch("vs", "default", label_selector={"app": "echo"}, timeout=WAIT)
    assert next(events)["type"] == "ADDED"
    mesh.store.apply([vs("a", app="other")])
    assert next(events)["type"] == "DELETED"
    mesh.store.apply([vs("a", app="echo")])
    assert next(events)["type"] == "ADDED"
    events.close()


def test_watch_bookmarks_and_timeout(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "BOOKMARK_SECONDS", 0.2)
    mesh.client.apply([vs("a")])
    path = f"{VS_PATH}?watch=1&allowWatchBookmarks=true&timeoutSeconds=1"
    code, headers, body = request(mesh, "GET", path)
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    events = lines(body)  # the stream ended by itself after timeoutSeconds
    assert events[0]["type"] == "ADDED"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[0]["object"]["kind"] == "VirtualService"
    assert bookmarks[0]["object"]["metadata"]["resourceVersion"] == str(mesh.store.revision)


def test_watch_from_a_trimmed_history_is_410_gone(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_module = sys.modules[type(mesh.store).__module__]
    monkeypatch.setattr(store_module, "EVENT_HISTORY", 2)
    for weight in range(1, 6):
        mesh.store.apply([vs("a", weight=weight)])
    code, _, body = request(mesh, "GET", f"{VS_PATH}?watch=1&resourceVersion=1&timeoutSeconds=2")
    assert code == 200
    (event,) = lines(body)
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_table_output_has_kubectl_and_istio_columns(mesh: Mesh) -> None:
    mesh.client.apply([vs("a")])
    code, _, body = request(mesh, "GET", VS_PATH, Accept=TABLE)
    table = json.loads(body)
    assert code == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Gateways", "Hosts", "Age"]
    (row,) = table["rows"]
    assert row["cells"][:3] == ["a", "", '["tcp-echo"]']
    assert row["object"]["kind"] == "PartialObjectMetadata"
    _, _, one = request(mesh, "GET", f"{VS_PATH}/a?includeObject=Object", Accept=TABLE)
    assert json.loads(one)["rows"][0]["object"]["spec"]["hosts"] == ["tcp-echo"]


def test_dry_run_and_field_validation(mesh: Mesh) -> None:
    code, _, _ = request(mesh, "POST", f"{VS_PATH}?dryRun=All", vs("dry"))
    assert code == 201 and mesh.store.get("VirtualService", "default", "dry") is None
    typo = vs("typo")
    typo["spec"]["hostz"] = ["x"]
    code, _, body = request(mesh, "POST", VS_PATH, typo)
    assert (
        code == 400
        and 'strict decoding error: unknown field "spec.hostz"' in json.loads(body)["message"]
    )
    code, headers, body = request(mesh, "POST", f"{VS_PATH}?fieldValidation=Warn", typo)
    assert code == 201 and 'unknown field \\"spec.hostz\\"' in headers["Warning"]
    assert "hostz" not in json.loads(body)["spec"]
    code, _, _ = request(mesh, "POST", f"{VS_PATH}?fieldValidation=Sometimes", vs("x"))
    assert code == 400


def test_status_and_scale_subresources(mesh: Mesh) -> None:
    mesh.client.apply([vs("a")])
    patch = json.dumps({"status": {"observed": True}}).encode()
    code, _, body = request(
        mesh,
        "PATCH",
        f"{VS_PATH}/a/status",
        patch,
        **{"Content-Type": "application/merge-patch+json"},
    )
    assert code == 200 and json.loads(body)["status"] == {"observed": True}
    # The main resource ignores status; the status subresource ignores the rest.
    assert mesh.store.get("VirtualService", "default", "a")["spec"]["hosts"] == ["tcp-echo"]  # type: ignore[index]
    code, _, _ = request(mesh, "GET", f"{VS_PATH}/a/scale")
    assert code == 404  # only Deployments scale


def test_strategic_merge_patch_is_refused_for_istio_kinds(mesh: Mesh) -> None:
    mesh.client.apply([vs("a")])
    code, _, body = request(
        mesh,
        "PATCH",
        f"{VS_PATH}/a",
        b'{"spec":{"hosts":["b"]}}',
        **{"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert code == 415 and "application/merge-patch+json" in json.loads(body)["message"]


def test_server_side_apply_creates_then_patches(mesh: Mesh) -> None:
    apply_type = {"Content-Type": "application/apply-patch+yaml"}
    config = (
        b"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        b"metadata: {name: a}\nspec: {hosts: [x]}\n"
    )
    code, _, body = request(mesh, "PATCH", f"{VS_PATH}/a?fieldManager=me", config, **apply_type)
    assert code == 201 and json.loads(body)["metadata"]["managedFields"][0]["manager"] == "me"
    code, _, body = request(mesh, "PATCH", f"{VS_PATH}/a", config, **apply_type)
    assert code == 422 and "fieldManager: Required value" in json.loads(body)["message"]
    merge = {"Content-Type": "application/merge-patch+json"}
    code, _, body = request(mesh, "PATCH", f"{VS_PATH}/a", b'{"spec":{"hosts":["y"]}}', **merge)
    assert code == 200 and json.loads(body)["spec"]["hosts"] == ["y"]
    code, _, _ = request(mesh, "PATCH", f"{VS_PATH}/missing", b"{}", **merge)
    assert code == 404
