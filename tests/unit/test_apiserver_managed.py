"""Server-side apply: ownership, removal of fields a manager stops applying, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from tcpmesh.api import kinds, openapi
from tcpmesh.apiserver.managed import (
    ApplyConflicts,
    from_fields_v1,
    leaves,
    record_update,
    server_side_apply,
    to_fields_v1,
)

NOW = "2026-12-01T00:00:00Z"


def apply(live: Any, config: dict[str, Any], manager: str, force: bool = False) -> dict[str, Any]:
    schema, defs = openapi.kind_schema(kinds.by_key("Deployment"))
    return server_side_apply(
        live, config, manager, force=force, schema=schema, defs=defs, api_version="apps/v1", now=NOW
    )


def config(**labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "default", "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "i:1"}]}}},
    }


def managers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["manager"]: m for m in obj["metadata"]["managedFields"]}


def test_apply_records_ownership_in_fields_v1() -> None:
    obj = apply(None, config(a="1"), "alice")
    fields = managers(obj)["alice"]["fieldsV1"]
    assert fields["f:metadata"]["f:labels"] == {"f:a": {}}
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers['k:{"name": "app"}'] == {".": {}, "f:image": {}, "f:name": {}}


def test_fields_v1_round_trips() -> None:
    schema, defs = openapi.kind_schema(kinds.by_key("Deployment"))
    paths = set(leaves(config(a="1", b="2"), schema, defs))
    assert from_fields_v1(to_fields_v1(paths)) == paths


def test_a_field_a_manager_stops_applying_is_removed_unless_someone_else_owns_it() -> None:
    obj = apply(None, config(a="1", b="2"), "alice")
    obj = apply(obj, config(a="1"), "alice")
    assert obj["metadata"]["labels"] == {"a": "1"}
    shared = apply(obj, config(a="1"), "bob")  # same value: no conflict, both own it
    dropped = apply(shared, config(), "alice")
    assert dropped["metadata"]["labels"] == {"a": "1"}  # bob still applies it


def test_a_different_value_owned_by_another_manager_conflicts_unless_forced() -> None:
    obj = apply(None, config(a="1"), "alice")
    with pytest.raises(ApplyConflicts) as caught:
        apply(obj, config(a="2"), "bob")
    assert caught.value.message() == (
        'Apply failed with 1 conflict: conflict with "alice" using apps/v1: .metadata.labels.a'
    )
    forced = apply(obj, config(a="2"), "bob", force=True)
    assert forced["metadata"]["labels"] == {"a": "2"}
    assert "f:labels" not in managers(forced)["alice"]["fieldsV1"].get("f:metadata", {})


def test_containers_merge_by_name_under_apply() -> None:
    obj = apply(None, config(), "alice")
    other = config()
    other["spec"]["template"]["spec"]["containers"] = [{"name": "side", "image": "s"}]
    both = apply(obj, other, "bob")
    names = [c["name"] for c in both["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "side"]


def test_an_update_gives_the_changed_fields_to_its_manager() -> None:
    schema, defs = openapi.kind_schema(kinds.by_key("Deployment"))
    obj = apply(None, config(a="1"), "alice")
    changed = {**obj, "metadata": {**obj["metadata"], "labels": {"a": "2"}}}
    updated = record_update(obj, changed, "kubectl-edit", schema, defs, "apps/v1", NOW)
    assert managers(updated)["kubectl-edit"]["operation"] == "Update"
    assert managers(updated)["kubectl-edit"]["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:a": {}}}
    }
    with pytest.raises(ApplyConflicts):
        apply(updated, config(a="1"), "alice")
