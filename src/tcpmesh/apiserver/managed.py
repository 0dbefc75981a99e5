"""Server-side apply and ``metadata.managedFields``, as Kubernetes keeps them (pure).

Every write records which manager set which fields (``FieldsV1``: ``f:<field>`` for an
object's field, ``k:{"name":"x"}`` for an element of a list merged by key,
``v:<value>`` for a member of a set). An apply by manager M (``kubectl apply
--server-side``) then means: merge the applied configuration into the live object;
fields M applied before and leaves out now are removed unless another manager also
owns them; a field another manager owns with a different value is a conflict, unless
``force`` moves it to M. Other writes (create, update, patch) give the fields they
change to their manager. Lists are atomic unless their schema makes them a map or a set
(``x-kubernetes-list-type``), as for Kubernetes' own kinds; Istio's lists are atomic, as
in Istio's CRDs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tcpmesh.api.openapi import resolve

Obj = dict[str, Any]
Schema = Mapping[str, Any]
Step = tuple[str, str]  # ("f", field) | ("k", '{"name":"x"}') | ("v", '"value"')
Path = tuple[Step, ...]

# Never owned: identity, server-set metadata and (outside the status subresource) status.
_UNTRACKED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
}
_UNTRACKED_TOP = {"apiVersion", "kind", "status"}


@dataclass(frozen=True)
class Conflict:
    manager: str
    path: Path

    def field(self) -> str:
        return render(self.path)


class ApplyConflicts(Exception):
    def __init__(self, conflicts: list[Conflict], api_version: str) -> None:
        self.conflicts = conflicts
        self.api_version = api_version
        super().__init__(self.message())

    def message(self) -> str:
        lines = [
            f'conflict with "{c.manager}" using {self.api_version}: {c.field()}'
            for c in self.conflicts
        ]
        count = len(lines)
        head = f"Apply failed with {count} conflict{'s' if count != 1 else ''}: "
        return head + ("\n".join(lines) if count > 1 else lines[0])


def render(path: Path) -> str:
    """``.spec.tcp`` / ``.spec.template.spec.containers[name="tcp-echo"].image``."""
    out = ""
    for kind, value in path:
        if kind == "f":
            out += f".{value}"
        elif kind == "k":
            keys = json.loads(value)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        else:
            out += f"[={value}]"
    return out


# ---------------------------------------------------------------- field sets


def _list_key(schema: Schema) -> str | None:
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        return str(keys[0]) if keys else None
    return None


def leaves(obj: Mapping[str, Any], schema: Schema, defs: Mapping[str, Any]) -> dict[Path, Any]:
    """Each owned leaf of ``obj`` and its value (list-map elements count as nodes too)."""
    found: dict[Path, Any] = {}
    top = {k: v for k, v in obj.items() if k not in _UNTRACKED_TOP}
    meta = top.get("metadata")
    if isinstance(meta, Mapping):
        top["metadata"] = {k: v for k, v in meta.items() if k not in _UNTRACKED_META}
        if not top["metadata"]:
            del top["metadata"]
    for path, value in _walk(top, schema, defs, ()):
        found[path] = value
    return found


def _walk(
    value: Any, schema: Schema, defs: Mapping[str, Any], path: Path
) -> Iterator[tuple[Path, Any]]:
    schema = resolve(schema, defs)
    if isinstance(value, Mapping) and value:
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) or (extra if isinstance(extra, Mapping) else {})
            yield from _walk(item, sub, defs, (*path, ("f", str(key))))
        return
    if isinstance(value, list) and schema.get("x-kubernetes-list-type") in ("map", "set"):
        key = _list_key(schema)
        items = resolve(schema.get("items") or {}, defs)
        for element in value:
            if key is not None and isinstance(element, Mapping) and key in element:
                step: Step = ("k", json.dumps({key: element[key]}, sort_keys=True))
                yield (*path, step), None
                yield from _walk(element, items, defs, (*path, step))
            else:
                yield (*path, ("v", json.dumps(element, sort_keys=True))), element
        return
    yield path, value


def to_fields_v1(paths: set[Path]) -> Obj:
    tree: Obj = {}
    for path in sorted(paths):
        node = tree
        for i, (kind, value) in enumerate(path):
            node = node.setdefault(f"{kind}:{value}", {})
            if kind == "k" and i == len(path) - 1:
                node.setdefault(".", {})
    return tree


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    found: set[Path] = set()
    if not isinstance(tree, Mapping):
        return found
    for name, sub in tree.items():
        if name == ".":
            found.add(prefix)
            continue
        kind, _, value = str(name).partition(":")
        path = (*prefix, (kind, value))
        if isinstance(sub, Mapping) and sub and set(sub) != {"."}:
            found |= from_fields_v1(sub, path)
            if "." in sub:
                found.add(path)
        else:
            found.add(path)
    return found


# ---------------------------------------------------------------- managed entries


def _entries(obj: Mapping[str, Any]) -> list[Obj]:
    raw = (obj.get("metadata") or {}).get("managedFields")
    return [dict(e) for e in raw if isinstance(e, Mapping)] if isinstance(raw, list) else []


def _owned(entries: list[Obj]) -> dict[tuple[str, str], set[Path]]:
    return {
        (str(e.get("manager", "")), str(e.get("operation", "Update"))): from_fields_v1(
            e.get("fieldsV1")
        )
        for e in entries
    }


def _store_entries(
    owned: dict[tuple[str, str], set[Path]], api_version: str, now: str, touched: str
) -> list[Obj]:
    out = []
    for (manager, operation), paths in owned.items():
        if not paths:
            continue
        out.append(
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": api_version,
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(paths),
            }
        )
    out.sort(key=lambda e: (e["manager"] != touched, e["manager"], e["operation"]))
    return out


def _with_entries(obj: Obj, entries: list[Obj]) -> Obj:
    result = dict(obj)
    meta = dict(result.get("metadata") or {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)
    result["metadata"] = meta
    return result


def record_update(
    old: Mapping[str, Any] | None,
    new: Obj,
    manager: str,
    schema: Schema,
    defs: Mapping[str, Any],
    api_version: str,
    now: str,
) -> Obj:
    """``new`` with managedFields after a non-apply write by ``manager``.

    Fields whose value changed (or appeared) become the manager's; fields gone from the
    object are no one's. A write that sets managedFields itself keeps what it set.
    """
    if old is not None and _entries(new) != _entries(old) and _entries(new):
        return new
    before = leaves(old, schema, defs) if old is not None else {}
    after = leaves(new, schema, defs)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    owned = _owned(_entries(old) if old is not None else [])
    for key in owned:
        owned[key] = {p for p in owned[key] if p in after and p not in changed}
    if changed:
        owned.setdefault((manager, "Update"), set()).update(changed)
    return _with_entries(new, _store_entries(owned, api_version, now, manager))


def _apply_merge(live: Any, config: Any, schema: Schema, defs: Mapping[str, Any]) -> Any:
    schema = resolve(schema, defs)
    if isinstance(config, Mapping) and isinstance(live, Mapping):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        result = dict(live)
        for key, value in config.items():
            sub = props.get(key) or (extra if isinstance(extra, Mapping) else {})
            result[key] = _apply_merge(live.get(key), value, sub, defs)
        return result
    key = _list_key(schema)
    if isinstance(config, list) and isinstance(live, list) and key is not None:
        items = resolve(schema.get("items") or {}, defs)
        result_list = [copy.deepcopy(v) for v in live]
        for element in config:
            match = next(
                (
                    i
                    for i, v in enumerate(result_list)
                    if isinstance(v, Mapping)
                    and isinstance(element, Mapping)
                    and v.get(key) == element.get(key)
                ),
                None,
            )
            if match is None:
                result_list.append(copy.deepcopy(element))
            else:
                result_list[match] = _apply_merge(result_list[match], element, items, defs)
        return result_list
    if (
        isinstance(config, list)
        and isinstance(live, list)
        and schema.get("x-kubernetes-list-type") == "set"
    ):
        return [*live, *(v for v in config if v not in live)]
    return copy.deepcopy(config)


def _remove(obj: Any, path: Path) -> None:
    """Delete the field, list element or set member at ``path`` (if present)."""
    if not path:
        return
    parent: Any = obj
    for kind, value in path[:-1]:
        parent = _step(parent, kind, value)
        if parent is None:
            return
    kind, value = path[-1]
    if kind == "f" and isinstance(parent, dict):
        parent.pop(value, None)
    elif isinstance(parent, list):
        target = json.loads(value)
        for i, element in enumerate(parent):
            if (
                kind == "k"
                and isinstance(element, Mapping)
                and all(element.get(k) == v for k, v in target.items())
            ) or (kind == "v" and element == target):
                del parent[i]
                return


def _step(node: Any, kind: str, value: str) -> Any:
    if kind == "f":
        return node.get(value) if isinstance(node, dict) else None
    if isinstance(node, list) and kind == "k":
        target = json.loads(value)
        for element in node:
            if isinstance(element, dict) and all(element.get(k) == v for k, v in target.items()):
                return element
    return None


def server_side_apply(
    live: Obj | None,
    config: Obj,
    manager: str,
    *,
    force: bool,
    schema: Schema,
    defs: Mapping[str, Any],
    api_version: str,
    now: str,
) -> Obj:
    """The object after ``manager`` applies ``config``; raises ApplyConflicts."""
    applied = leaves(config, schema, defs)
    base: Obj = copy.deepcopy(live) if live is not None else {}
    owned = _owned(_entries(base))
    mine = owned.pop((manager, "Apply"), set())
    current = leaves(base, schema, defs) if live is not None else {}
    conflicts = [
        Conflict(other, path)
        for (other, _), paths in owned.items()
        if other != manager
        for path in sorted(paths & set(applied))
        if path in current and current[path] != applied[path]
    ]
    if conflicts and not force:
        raise ApplyConflicts(conflicts, api_version)
    # Forced: the conflicting fields move to this manager; fields applied with the same
    # value stay shared.
    for conflict in conflicts:
        for (other, _), paths in owned.items():
            if other == conflict.manager:
                paths.discard(conflict.path)
    result = _apply_merge(base, {k: v for k, v in config.items() if k != "status"}, schema, defs)
    if live is not None:
        result["metadata"] = {
            **result.get("metadata", {}),
            **{k: v for k, v in (live.get("metadata") or {}).items() if k in _UNTRACKED_META},
        }
    others = set().union(*owned.values()) if owned else set()
    for path in sorted(mine - set(applied), key=len, reverse=True):
        if path not in others and not any(p[: len(path)] == path for p in others):
            _remove(result, path)
    owned[(manager, "Apply")] = set(applied)
    final = leaves(result, schema, defs)
    for key in owned:
        owned[key] = {p for p in owned[key] if p in final}
    return _with_entries(result, _store_entries(owned, api_version, now, manager))
