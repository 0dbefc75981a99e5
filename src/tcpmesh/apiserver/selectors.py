"""Label and field selectors with Kubernetes' syntax and meaning (pure).

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``
and ``!a``, comma-separated, all must hold (k8s.io/apimachinery/pkg/labels). Field
selectors: ``path=value``, ``path==value``, ``path!=value`` over the fields each kind
supports, as the Kubernetes API server restricts them; an unsupported field is refused
rather than silently matching nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

# Fields every kind supports, and those some kinds add (as in Kubernetes' field label
# conversion functions, e.g. pkg/apis/core/v1/conversion.go).
COMMON_FIELDS = ("metadata.name", "metadata.namespace")
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "spec.restartPolicy", "status.phase", "status.podIP"),
    "Service": ("spec.clusterIP", "spec.type"),
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
}


class SelectorError(ValueError):
    """A selector that cannot be parsed or names an unsupported field (a 400)."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        # != and notin match objects without the label too, as in Kubernetes.
        return not present or value not in self.values


_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SelectorError(f"unable to parse requirement: {text[pos:]!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def _values(tokens: list[str], i: int, text: str) -> tuple[frozenset[str], int]:
    if i >= len(tokens) or tokens[i] != "(":
        raise SelectorError(f"found '{tokens[i] if i < len(tokens) else ''}', expected: '('")
    values: set[str] = set()
    i += 1
    expect_value = True
    while i < len(tokens) and tokens[i] != ")":
        token = tokens[i]
        if token == ",":
            expect_value = True
        elif expect_value:
            values.add(token)
            expect_value = False
        else:
            raise SelectorError(f"unable to parse requirement: {text!r}")
        i += 1
    if i >= len(tokens):
        raise SelectorError(f"unable to parse requirement: missing ')' in {text!r}")
    return frozenset(values), i + 1


def _requirement(tokens: list[str], i: int, text: str) -> tuple[_Requirement, int]:
    if tokens[i] == "!":
        if i + 1 >= len(tokens):
            raise SelectorError(f"unable to parse requirement: {text!r}")
        return _Requirement(tokens[i + 1], "!"), i + 2
    key = tokens[i]
    if key in ("=", "==", "!=", "(", ")", ","):
        raise SelectorError(f"unable to parse requirement: found '{key}', expected: identifier")
    i += 1
    if i >= len(tokens) or tokens[i] == ",":
        return _Requirement(key, "exists"), i
    op = tokens[i]
    if op in ("=", "==", "!="):
        value = ""
        if i + 1 < len(tokens) and tokens[i + 1] not in (",", "(", ")", "!", "=", "==", "!="):
            value = tokens[i + 1]
            i += 1
        if not _LABEL_VALUE.match(value):
            raise SelectorError(f'invalid label value: "{value}"')
        return _Requirement(key, "!=" if op == "!=" else "=", frozenset({value})), i + 1
    if op in ("in", "notin"):
        values, i = _values(tokens, i + 1, text)
        return _Requirement(key, op, values), i
    raise SelectorError(f"unable to parse requirement: found '{op}', expected: in, notin, =, !=")


def label_selector(text: str) -> Predicate:
    """A predicate over objects for a label selector string (empty: everything)."""
    tokens = _tokens(text)
    requirements: list[_Requirement] = []
    i = 0
    while i < len(tokens):
        requirement, i = _requirement(tokens, i, text)
        requirements.append(requirement)
        if i < len(tokens):
            if tokens[i] != ",":
                raise SelectorError(f"unable to parse requirement: found '{tokens[i]}'")
            i += 1

    def matches(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in requirements)

    return matches


def _field(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if path == "source" and isinstance(value, Mapping):
        value = value.get("component")
    return "" if value is None else str(value)


def field_selector(kind: str, text: str) -> Predicate:
    """A predicate for a field selector string; refuses fields ``kind`` does not support."""
    supported = (*COMMON_FIELDS, *KIND_FIELDS.get(kind, ()))
    terms: list[tuple[str, bool, str]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            path, _, value = term.partition("!=")
            negate = True
        elif "==" in term:
            path, _, value = term.partition("==")
            negate = False
        elif "=" in term:
            path, _, value = term.partition("=")
            negate = False
        else:
            raise SelectorError(f"invalid selector: '{term}'; can't understand '{term}'")
        path = path.strip()
        if path not in supported:
            raise SelectorError(f'field label not supported: "{path}"')
        terms.append((path, negate, value.strip()))

    def matches(obj: Obj) -> bool:
        return all((_field(obj, path) == value) != negate for path, negate, value in terms)

    return matches
