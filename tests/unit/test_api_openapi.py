"""The OpenAPI documents pin every served kind, with the extensions kubectl relies on."""

from __future__ import annotations

from tcpmesh.api import kinds, openapi


def gvk_index(schemas: dict) -> set[tuple[str, str, str]]:  # type: ignore[type-arg]
    return {
        (g["group"], g["version"], g["kind"])
        for s in schemas.values()
        for g in s.get("x-kubernetes-group-version-kind", [])
    }


SERVED = {(i.group, v, i.kind) for i in kinds.KINDS for v in i.versions}


def test_every_served_kind_has_a_schema_in_v2_and_v3() -> None:
    assert gvk_index(openapi.openapi_v2()["definitions"]) == SERVED
    for gv in openapi.group_versions():
        document = openapi.openapi_v3(gv)
        assert document is not None
        group, version = gv.split("/")[1:] if gv.startswith("apis/") else ["", gv.split("/")[1]]
        patch_ops = [
            p["patch"]["x-kubernetes-group-version-kind"]
            for p in document["paths"].values()
            if "patch" in p
        ]
        served_here = {(g, v, k) for g, v, k in SERVED if (g, v) == (group, version)}
        assert {(o["group"], o["version"], o["kind"]) for o in patch_ops} == served_here
        for path in document["paths"].values():
            if "patch" in path:
                names = {p["name"] for p in path["patch"]["parameters"]}
                assert {"fieldValidation", "dryRun", "fieldManager"} <= names
    index = openapi.openapi_v3_index()["paths"]
    assert set(index) == set(openapi.group_versions())
    assert index["apis/networking.istio.io/v1"]["serverRelativeURL"].startswith(
        "/openapi/v3/apis/networking.istio.io/v1?hash="
    )


def test_schemas_come_from_the_models() -> None:
    defs = openapi.definitions()
    route = defs["dev.tcpmesh.api.RouteDestination"]
    assert route["properties"]["weight"]["type"] == "integer"
    assert "relative proportion" in route["properties"]["weight"]["description"]
    port = defs["dev.tcpmesh.api.ServicePort"]["properties"]["targetPort"]
    assert port == {"x-kubernetes-int-or-string": True}
    containers = defs["dev.tcpmesh.api.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]


def test_no_boolean_where_kubectl_expects_a_schema() -> None:
    """kubectl's Go OpenAPI types refuse ``additionalProperties: true`` and the like."""

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("additionalProperties", "items", "not"):
                    assert isinstance(value, dict), key
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(openapi.definitions())
    walk(openapi.definitions(v2=True))


def test_unknown_fields_are_found_and_can_be_dropped() -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "x", "labels": {"free": "form"}},
        "spec": {"hosts": ["a"], "tcp": [{"route": [{"wieght": 1}]}], "extra": {}},
        "status": {"anything": True},
    }
    info = kinds.by_key("VirtualService")
    found = openapi.unknown_fields(vs, info)
    assert [openapi.render_path(p) for p in found] == ["spec.tcp[0].route[0].wieght", "spec.extra"]
    assert openapi.unknown_fields(openapi.without_fields(vs, found), info) == []
