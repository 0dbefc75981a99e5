"""Pydantic validation errors, told the way a Kubernetes user reads them.

Pydantic locations mix field aliases, list indexes, map keys and union-member tags
(``('spec', 'ports', 0, 'targetPort', 'int')``). Walking them alongside the model's type
annotations tells these apart, so that paths come out as ``spec.ports[0].targetPort``
and map keys as ``metadata.labels[app]``, and the several failures of one union value
merge into one line ("must be an integer or a string").
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from tcpmesh.api.findings import Finding

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "float_type": "a number",
    "float_parsing": "a number",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "a list",
}


def shape_findings(model: type[BaseModel], error: ValidationError) -> list[Finding]:
    """One finding per offending field, in the order pydantic reports them."""
    expected: dict[str, list[str]] = {}
    got: dict[str, Any] = {}
    findings: dict[str, str] = {}
    for detail in error.errors():
        path = field_path(model, detail["loc"])
        kind = detail["type"]
        if kind in _EXPECTED:
            wanted = expected.setdefault(path, [])
            if _EXPECTED[kind] not in wanted:
                wanted.append(_EXPECTED[kind])
            got[path] = detail["input"]
            findings.setdefault(path, "")
        else:
            findings.setdefault(path, _message(kind, detail))
    out = []
    for path, message in findings.items():
        if path in expected:
            message = f"must be {' or '.join(expected[path])}, got {_describe(got[path])}"
        out.append(Finding(path, message))
    return out


def _message(kind: str, detail: Any) -> str:
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "Required value"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", detail.get("ctx", {}).get("expected", ""))
        supported = ", ".join(json.dumps(value) for value in allowed)
        return f"Unsupported value: {_describe(detail['input'])}: supported values: {supported}"
    text = str(detail["msg"])
    return text[:1].lower() + text[1:]


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str | int | float | bool) or value is None:
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + "..."
    return type(value).__name__


def field_path(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """``('spec', 'tcp', 0, 'route')`` → ``spec.tcp[0].route`` for fields of ``model``."""
    path = ""
    hint: Any = model
    for element in loc:
        if element == "[key]":
            continue  # the map key itself failed; the path already ends at it
        hint = _without_none(hint)
        args = typing.get_args(hint)
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            # A union member's tag, not a field: follow that member silently.
            hint = next((a for a in args if _tag(a) == element), Any)
            continue
        if isinstance(element, int):
            path += f"[{element}]"
            hint = args[0] if origin is list and args else Any
        elif isinstance(hint, type) and issubclass(hint, BaseModel):
            path += f".{element}" if path else element
            hint = _field_hint(hint, element)
        elif origin is dict:
            path += f"[{element}]"
            hint = args[1] if len(args) == 2 else Any
        else:
            path += f".{element}" if path else element
            hint = Any
    return path


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1:
            return members[0]
        if len(members) < len(typing.get_args(hint)):
            return typing.Union[tuple(members)]  # noqa: UP007 -- built from a runtime list
    return hint


def _tag(hint: Any) -> str:
    """The name pydantic gives a union member in error locations (``int``, ``Server``)."""
    return getattr(hint, "__name__", str(hint))


def _field_hint(model: type[BaseModel], alias: str) -> Any:
    for name, field in model.model_fields.items():
        if alias in (field.alias, name):
            return field.annotation
    return Any
