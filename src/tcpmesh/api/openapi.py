"""OpenAPI v2 and v3 documents generated from the typed models, as kubectl reads them.

The schemas come from :mod:`tcpmesh.api.models` (pydantic's JSON Schema, rewritten into
the OpenAPI dialect Kubernetes serves), so ``kubectl explain`` and kubectl's validation
see exactly the fields tcpmesh accepts. Kubernetes' extensions are added where kubectl
relies on them:

- ``x-kubernetes-group-version-kind`` on every kind's schema and on its operations, which
  is how kubectl finds the schema of ``virtualservice`` and learns that the server checks
  ``fieldValidation`` itself;
- ``x-kubernetes-patch-merge-key`` / ``x-kubernetes-patch-strategy`` on the lists that
  strategic merge patch merges by key (containers by name, ports by containerPort...);
  the server's own strategic merge reads the same schemas, so client and server agree;
- ``x-kubernetes-int-or-string`` and ``x-kubernetes-preserve-unknown-fields`` for
  ``int | str`` and the loosely typed (``Any``) fields.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic.json_schema import models_json_schema

from tcpmesh.api import kinds
from tcpmesh.api.kinds import KindInfo

Schema = dict[str, Any]

_REF = "#/$defs/"
# Strategic-merge keys of the lists Kubernetes merges by key (k8s.io/api struct tags):
# (model, JSON field) -> merge key; None for a list of scalars merged as a set.
MERGE_KEYS: dict[tuple[str, str], str | None] = {
    ("PodSpec", "containers"): "name",
    ("PodSpec", "initContainers"): "name",
    ("PodSpec", "volumes"): "name",
    ("PodSpec", "imagePullSecrets"): "name",
    ("Container", "ports"): "containerPort",
    ("Container", "env"): "name",
    ("Container", "volumeMounts"): "mountPath",
    ("ServiceSpec", "ports"): "port",
    ("ObjectMeta", "ownerReferences"): "uid",
    ("ObjectMeta", "finalizers"): None,
}
# What ``kubectl explain`` prints for the fields users tune most (Istio's and Kubernetes'
# API reference, in short).
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("VirtualServiceSpec", "hosts"): (
        "The destination hosts to which traffic is being sent: a DNS name with an optional "
        "wildcard prefix or a short name resolved in the rule's namespace."
    ),
    ("VirtualServiceSpec", "gateways"): (
        "The names of gateways and sidecars that should apply these routes; without it the "
        "routes apply to the reserved gateway `mesh` only."
    ),
    ("VirtualServiceSpec", "tcp"): "An ordered list of route rules for opaque TCP traffic.",
    ("TCPRoute", "match"): "Match conditions to be satisfied for the rule to be activated.",
    ("TCPRoute", "route"): "The destination to which the connection should be forwarded to.",
    ("RouteDestination", "destination"): "Destination uniquely identifies the service.",
    ("RouteDestination", "weight"): (
        "The relative proportion of traffic to be forwarded to the destination: it receives "
        "weight/(sum of all weights) of the connections. A single destination receives all "
        "traffic; a destination with weight 0 receives none. Negative weights are invalid."
    ),
    ("Destination", "host"): "The name of a service from the service registry.",
    ("Destination", "subset"): "The name of a subset within the service (a DestinationRule's).",
    ("Destination", "port"): "The port on the host that is being addressed.",
    ("L4MatchAttributes", "port"): "The port on the host that is being addressed.",
    ("DestinationRuleSpec", "host"): "The name of a service from the service registry.",
    ("DestinationRuleSpec", "subsets"): "One or more named sets that represent versions.",
    ("DeploymentSpec", "replicas"): "Number of desired pods. Defaults to 1.",
    ("GatewaySpec", "selector"): "The pods (by label) this gateway configuration applies to.",
}


def _convert(node: Any, v2: bool) -> Any:
    """pydantic's JSON Schema node -> the OpenAPI dialect (v2 when ``v2``, else v3)."""
    if isinstance(node, list):
        return [_convert(n, v2) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in ("title", "default")}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        types = sorted(o.get("type", "") for o in options)
        if types == ["integer", "string"]:
            node.update({"x-kubernetes-int-or-string": True})
            if v2:
                node.update(type="string", format="int-or-string")
        elif len(options) == 1:
            node.update(options[0])
        else:
            node["x-kubernetes-preserve-unknown-fields"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    elif node.get("additionalProperties") is True:
        # kubectl's explain templates expect a schema here, never a bare boolean.
        node["additionalProperties"] = {"x-kubernetes-preserve-unknown-fields": True}
    if "$ref" in node:
        target = "#/definitions/" if v2 else "#/components/schemas/"
        node["$ref"] = target + _definition_name(node["$ref"].removeprefix(_REF))
    elif not any(k in node for k in ("type", "x-kubernetes-int-or-string", "enum", "properties")):
        node["x-kubernetes-preserve-unknown-fields"] = True
        if v2:
            node["type"] = "object"
    converted = {k: _convert(v, v2) for k, v in node.items() if k != "properties"}
    if "properties" in node:
        # A map of field name -> schema, not a schema itself.
        converted["properties"] = {k: _convert(v, v2) for k, v in node["properties"].items()}
    return converted


def _definition_name(model: str) -> str:
    """Kind schemas get Kubernetes-style names; their parts stay in tcpmesh's namespace."""
    for info in kinds.KINDS:
        if info.model.__name__ == model:
            return _kind_definition(info)
    return f"dev.tcpmesh.api.{model}"


def _kind_definition(info: KindInfo) -> str:
    if info.group == "":
        return f"io.k8s.api.core.{info.versions[0]}.{info.kind}"
    if info.group == "apps":
        return f"io.k8s.api.apps.{info.versions[0]}.{info.kind}"
    reversed_group = ".".join(reversed(info.group.split(".")))
    return f"{reversed_group}.{info.versions[0]}.{info.kind}"


@functools.cache
def _pydantic_defs() -> dict[str, Schema]:
    _, schema = models_json_schema(
        [(info.model, "validation") for info in kinds.KINDS],
        by_alias=True,
        ref_template=_REF + "{model}",
    )
    defs: dict[str, Schema] = schema["$defs"]
    return defs


def _annotate(model: str, schema: Schema) -> None:
    properties = schema.get("properties") or {}
    for (owner, field), key in MERGE_KEYS.items():
        if owner == model and field in properties:
            prop = properties[field]
            prop["x-kubernetes-patch-strategy"] = "merge"
            if key is not None:
                prop["x-kubernetes-patch-merge-key"] = key
                prop["x-kubernetes-list-type"] = "map"
                prop["x-kubernetes-list-map-keys"] = [key]
            else:
                prop["x-kubernetes-list-type"] = "set"
    for (owner, field), text in DESCRIPTIONS.items():
        if owner == model and field in properties:
            properties[field]["description"] = text


def _gvks(info: KindInfo) -> list[Schema]:
    return [{"group": info.group, "version": v, "kind": info.kind} for v in info.versions]


@functools.cache
def _definitions(v2: bool) -> dict[str, Schema]:
    found: dict[str, Schema] = {}
    for model, raw in _pydantic_defs().items():
        schema: Schema = _convert(copy.deepcopy(raw), v2)
        _annotate(model, schema)
        found[_definition_name(model)] = schema
    for info in kinds.KINDS:
        schema = found[_kind_definition(info)]
        schema["x-kubernetes-group-version-kind"] = _gvks(info)
        props = schema.setdefault("properties", {})
        props["apiVersion"]["description"] = "APIVersion defines the versioned schema."
        props["kind"]["description"] = "Kind is a string value representing the REST resource."
        props["status"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if v2:
            props["status"].pop("x-kubernetes-preserve-unknown-fields")
        schema["required"] = [r for r in schema.get("required", []) if r not in ("apiVersion",)]
        schema.setdefault("description", f"{info.kind} ({info.group or 'core'} API).")
    return found


def definitions(v2: bool = False) -> dict[str, Schema]:
    """Every schema by name (a deep copy: callers may change it)."""
    return copy.deepcopy(_definitions(v2))


def kind_schema(info: KindInfo) -> tuple[Mapping[str, Any], Mapping[str, Schema]]:
    """The kind's (v3) schema and every definition its ``$ref`` names; shared, read-only."""
    defs = _definitions(False)
    return defs[_kind_definition(info)], defs


# ---------------------------------------------------------------- operations

_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def _operation(info: KindInfo, version: str, action: str, v2: bool, ref: str) -> Schema:
    params: list[Schema] = []
    for name in _QUERY_PARAMS:
        param: Schema = {"name": name, "in": "query", "uniqueItems": True}
        if v2:
            param["type"] = "string"
        else:
            param["schema"] = {"type": "string"}
        params.append(param)
    if action == "patch":
        params.append(
            {"name": "force", "in": "query", **({"type": "boolean"} if v2 else {"schema": {}})}
        )
    operation: Schema = {
        "operationId": f"{action}{info.kind}",
        "parameters": params,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": info.group,
            "version": version,
            "kind": info.kind,
        },
    }
    if v2:
        operation["responses"] = {"200": {"description": "OK", "schema": {"$ref": ref}}}
    else:
        content = {"application/json": {"schema": {"$ref": ref}}}
        operation["responses"] = {"200": {"description": "OK", "content": content}}
    return operation


def _paths(info: KindInfo, version: str, v2: bool) -> Iterator[tuple[str, Schema]]:
    """The collection and item paths; a cluster-scoped kind's have no namespace part."""
    prefix = f"/apis/{info.group}/{version}" if info.group else f"/{'api'}/{version}"
    base = f"{prefix}/{info.plural}"
    target = "#/definitions/" if v2 else "#/components/schemas/"
    ref = target + _kind_definition(info)
    ns_param: Schema = {"name": "namespace", "in": "path", "required": True}
    name_param: Schema = {"name": "name", "in": "path", "required": True}
    for param in (ns_param, name_param):
        if v2:
            param["type"] = "string"
        else:
            param["schema"] = {"type": "string"}
    scope: list[Schema] = []
    if info.namespaced:
        base = f"{prefix}/namespaces/{{namespace}}/{info.plural}"
        scope = [ns_param]
    yield (
        base,
        {
            "get": _operation(info, version, "list", v2, ref),
            "post": _operation(info, version, "post", v2, ref),
            "parameters": scope,
        },
    )
    yield (
        base + "/{name}",
        {
            "get": _operation(info, version, "get", v2, ref),
            "put": _operation(info, version, "put", v2, ref),
            "patch": _operation(info, version, "patch", v2, ref),
            "delete": _operation(info, version, "delete", v2, ref),
            "parameters": [*scope, name_param],
        },
    )


# ---------------------------------------------------------------- documents


def openapi_v2() -> Schema:
    """The whole API as one Swagger 2.0 document (``/openapi/v2``)."""
    paths: Schema = {}
    for info in kinds.KINDS:
        for version in info.versions:
            paths.update(_paths(info, version, True))
    return {
        "swagger": "2.0",
        "info": {"title": "tcpmesh", "version": "v1.32.0"},
        "paths": paths,
        "definitions": definitions(v2=True),
    }


def group_versions() -> list[str]:
    """``api/v1``, ``apis/apps/v1``...: the keys of the v3 discovery document."""
    found: dict[str, None] = {}
    for info in kinds.KINDS:
        for version in info.versions:
            key = f"apis/{info.group}/{version}" if info.group else f"api/{version}"
            found[key] = None
    return list(found)


def openapi_v3(group_version: str) -> Schema | None:
    """The OpenAPI 3.0 document of one group version (``api/v1``, ``apis/apps/v1``)."""
    parts = group_version.split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    members = [i for i in kinds.KINDS if i.group == group and version in i.versions]
    if not members:
        return None
    paths: Schema = {}
    for info in members:
        paths.update(_paths(info, version, False))
    return {
        "openapi": "3.0.0",
        "info": {"title": "tcpmesh", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": definitions()},
    }


def openapi_v3_index() -> Schema:
    """``/openapi/v3``: where each group version's document is, with a content hash."""
    paths = {}
    for gv in group_versions():
        document = openapi_v3(gv)
        digest = hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest[:128].upper()}"}
    return {"paths": paths}


# ---------------------------------------------------------------- schema walking


def resolve(schema: Mapping[str, Any], defs: Mapping[str, Schema]) -> Mapping[str, Any]:
    """``schema`` with a top-level ``$ref`` followed (v3 names)."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return defs[ref.rsplit("/", 1)[-1]]
    return schema


FieldPath = tuple[str | int, ...]


def render_path(path: FieldPath) -> str:
    """``("spec", "tcp", 0, "wieght")`` -> ``spec.tcp[0].wieght``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def unknown_fields(obj: Mapping[str, Any], info: KindInfo) -> list[FieldPath]:
    """Paths of the fields in ``obj`` that the kind's schema does not have."""
    defs = _definitions(False)
    found: list[FieldPath] = []
    _walk(obj, defs[_kind_definition(info)], defs, (), found)
    return found


def without_fields(obj: Any, paths: list[FieldPath]) -> Any:
    """A copy of ``obj`` without the fields at ``paths`` (kubectl's fieldValidation=Ignore)."""
    result = copy.deepcopy(obj)
    for path in paths:
        node = result
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return result


def _walk(
    value: Any,
    schema: Mapping[str, Any],
    defs: Mapping[str, Schema],
    path: FieldPath,
    found: list[FieldPath],
) -> None:
    schema = resolve(schema, defs)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, Mapping) and schema.get("type") == "object":
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = (*path, str(key))
            if properties is not None and key in properties:
                _walk(item, properties[key], defs, where, found)
            elif isinstance(extra, Mapping):
                _walk(item, extra, defs, where, found)
            elif properties is not None and extra is not True:
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _walk(item, schema["items"], defs, (*path, i), found)
