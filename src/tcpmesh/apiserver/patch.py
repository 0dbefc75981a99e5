"""PATCH bodies as Kubernetes applies them: JSON patch, JSON merge patch, strategic merge.

Pure functions over plain dicts. JSON patch (RFC 6902) is the ``jsonpatch`` library's;
merge patch is RFC 7386; strategic merge patch follows k8s.io/apimachinery's
``strategicpatch``: lists whose schema carries ``x-kubernetes-patch-merge-key`` merge
element by element on that key (containers by name, ports by containerPort), other lists
are replaced, and the directives kubectl sends are honoured (``$patch: replace|delete``,
``$retainKeys``, ``$setElementOrder/<field>``, ``$deleteFromPrimitiveList/<field>``).
The schemas are the OpenAPI ones (:mod:`tcpmesh.api.openapi`), the same kubectl reads to
compute the patch, so both sides agree on every list.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch

from tcpmesh.api.openapi import resolve

Obj = dict[str, Any]
Schema = Mapping[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


class PatchError(ValueError):
    """A patch that cannot be applied (a 422 or 400 for the client)."""


def json_patch(original: Obj, operations: Any) -> Obj:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    try:
        result = jsonpatch.JsonPatch(operations).apply(copy.deepcopy(original))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(str(exc)) from None
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise PatchError(f"invalid JSON patch: {exc}") from None
    if not isinstance(result, dict):
        raise PatchError("the patched document is not an object")
    return result


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(original) if isinstance(original, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(
    original: Obj, patch: Any, schema: Schema, defs: Mapping[str, Any]
) -> Obj:
    """Apply a strategic merge patch to ``original`` whose type is ``schema``."""
    if not isinstance(patch, Mapping):
        raise PatchError("a strategic merge patch is a JSON object")
    result = _merge_map(original, patch, schema, defs)
    return result


def _property(schema: Schema, key: str, defs: Mapping[str, Any]) -> Schema:
    schema = resolve(schema, defs)
    props = schema.get("properties") or {}
    if key in props:
        return resolve(props[key], defs)
    extra = schema.get("additionalProperties")
    return resolve(extra, defs) if isinstance(extra, Mapping) else {}


def _merge_map(original: Any, patch: Mapping[str, Any], schema: Schema, defs: Any) -> Obj:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive}")
    result: Obj = dict(original) if isinstance(original, Mapping) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith(_SET_ORDER):
            orders[key.removeprefix(_SET_ORDER)] = list(value or [])
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key.removeprefix(_DELETE_PRIMITIVE)
            gone = set(map(_hashable, value or []))
            current = result.get(field)
            if isinstance(current, list):
                result[field] = [v for v in current if _hashable(v) not in gone]
            continue
        if value is None:
            result.pop(key, None)
            continue
        prop = _property(schema, key, defs)
        result[key] = _merge_value(result.get(key), value, prop, defs)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _ordered(result[field], order, _property(schema, field, defs))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        keep = set(retain)
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _merge_value(original: Any, value: Any, schema: Schema, defs: Any) -> Any:
    if isinstance(value, Mapping):
        return _merge_map(original, value, schema, defs)
    if isinstance(value, list) and schema.get("x-kubernetes-patch-strategy", "").find("merge") >= 0:
        current = original if isinstance(original, list) else []
        key = schema.get("x-kubernetes-patch-merge-key")
        if key is None:
            return _merge_scalars(current, value)
        return _merge_list(current, value, str(key), resolve(schema.get("items") or {}, defs), defs)
    return copy.deepcopy(value)


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (dict, list)) else value


def _merge_scalars(current: list[Any], patch: list[Any]) -> list[Any]:
    seen = set(map(_hashable, current))
    return [*current, *(v for v in patch if _hashable(v) not in seen)]


def _merge_list(
    current: list[Any], patch: list[Any], key: str, item_schema: Schema, defs: Any
) -> list[Any]:
    result = [copy.deepcopy(v) for v in current]
    for element in patch:
        if not isinstance(element, Mapping):
            raise PatchError(f"an element of a list merged on {key!r} is not an object")
        directive = element.get("$patch")
        if directive == "replace":
            return [{k: v for k, v in e.items() if k != "$patch"} for e in patch]
        if key not in element:
            raise PatchError(f"map: {dict(element)} does not contain declared merge key: {key}")
        index = next(
            (
                i
                for i, v in enumerate(result)
                if isinstance(v, Mapping) and v.get(key) == element[key]
            ),
            None,
        )
        if directive == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_merge_map({}, element, item_schema, defs))
        else:
            result[index] = _merge_map(result[index], element, item_schema, defs)
    return result


def _ordered(values: list[Any], order: list[Any], schema: Schema) -> list[Any]:
    """``$setElementOrder``: the listed elements first in that order, the others after."""
    key = schema.get("x-kubernetes-patch-merge-key")

    def ident(v: Any) -> Any:
        if key is not None and isinstance(v, Mapping):
            return _hashable(v.get(key))
        return _hashable(v)

    rank = {ident(v): i for i, v in enumerate(order)}
    return sorted(values, key=lambda v: rank.get(ident(v), len(rank)))
