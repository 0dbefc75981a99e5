"""PATCH semantics: JSON patch, merge patch, strategic merge with Kubernetes' merge keys."""

from __future__ import annotations

from typing import Any

import pytest

from tcpmesh.api import kinds, openapi
from tcpmesh.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "finalizers": ["a"]},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "i:1", "ports": [{"containerPort": 9000}]},
                        {"name": "side", "image": "s:1", "args": ["x", "y"]},
                    ]
                }
            },
        },
    }


def smp(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    schema, defs = openapi.kind_schema(kinds.by_key("Deployment"))
    return strategic_merge_patch(obj, patch, schema, defs)


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def test_strategic_merge_merges_containers_by_name() -> None:
    patched = smp(
        deployment(),
        {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "s:2"}]}}}},
    )
    assert [(c["name"], c["image"]) for c in containers(patched)] == [
        ("app", "i:1"),
        ("side", "s:2"),
    ]
    assert containers(patched)[1]["args"] == ["x", "y"]  # untouched fields stay


def test_strategic_merge_directives() -> None:
    spec = {"containers": [{"name": "app", "$patch": "delete"}, {"name": "new", "image": "n"}]}
    patched = smp(deployment(), {"spec": {"template": {"spec": spec}}})
    assert [c["name"] for c in containers(patched)] == ["side", "new"]
    ordered = smp(
        deployment(),
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                        "containers": [{"name": "app", "image": "i:2"}],
                    }
                }
            }
        },
    )
    assert [c["name"] for c in containers(ordered)] == ["side", "app"]
    replaced = smp(
        deployment(), {"spec": {"template": {"spec": {"$patch": "replace", "containers": []}}}}
    )
    assert containers(replaced) == []
    removed = smp(deployment(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert removed["metadata"]["finalizers"] == []
    merged = smp(deployment(), {"metadata": {"finalizers": ["b"]}})
    assert merged["metadata"]["finalizers"] == ["a", "b"]  # a set, merged


def test_strategic_merge_replaces_lists_without_a_merge_key_and_null_deletes() -> None:
    patched = smp(
        deployment(),
        {
            "spec": {
                "replicas": None,
                "template": {"spec": {"containers": [{"name": "side", "args": ["z"]}]}},
            }
        },
    )
    assert "replicas" not in patched["spec"]
    assert containers(patched)[1]["args"] == ["z"]


def test_strategic_merge_needs_the_merge_key() -> None:
    with pytest.raises(PatchError, match="merge key"):
        smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})


def test_merge_patch_is_rfc_7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None}, "l": [3]}) == {
        "a": {"c": 2},
        "l": [3],
    }


def test_json_patch() -> None:
    doc = {"spec": {"tcp": [{"route": [{"weight": 100}]}]}}
    ops = [{"op": "replace", "path": "/spec/tcp/0/route/0/weight", "value": 80}]
    assert json_patch(doc, ops)["spec"]["tcp"][0]["route"][0]["weight"] == 80
    assert doc["spec"]["tcp"][0]["route"][0]["weight"] == 100  # the original is untouched
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/spec/tcp/0/route/0/weight", "value": 1}])
    with pytest.raises(PatchError):
        json_patch(doc, {"op": "add"})
