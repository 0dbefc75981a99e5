"""Multi-document YAML manifests → checked, normalized object dicts.

All documents are checked before anything is returned and every problem in every
document is reported, one self-contained line each (``<file>: <resource> is invalid:
<field path>: <reason>``), so a bad file changes nothing and is fixed in one round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tcpmesh.api.errors import InvalidInput
from tcpmesh.api.objects import check_object, describe

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """``safe_load`` as Kubernetes reads YAML: timestamps stay strings, keys stay unique."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            # An earlier key silently losing to a later one is a classic manifest bug
            # (two "weight:" lines); kubectl rejects it too.
            if not isinstance(key, str | int | float | bool):
                continue  # SafeLoader reports unhashable keys itself.
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key "{key}"', key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(text: str, source: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Parse, default and validate every document in ``text``; raise ``InvalidInput``."""
    objects, _ = load_documents_with_warnings(text, source, namespace)
    return objects


def load_documents_with_warnings(
    text: str, source: str, namespace: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Like :func:`load_documents`, also returning the warnings (prefixed with ``source``).

    ``metadata.namespace`` defaults to ``namespace`` or ``"default"``; a document naming
    another namespace than an explicit ``namespace`` is an error, as with kubectl.
    """
    documents, yaml_error = _read_documents(text)
    objects: list[dict[str, Any]] = []
    errors: list[str] = []
    warnings: list[str] = []
    for where, item in _items(documents):
        if isinstance(item, _Problem):
            errors.append(f"{source}: {where}: {item.message}")
            continue
        mismatch = _default_namespace(item, namespace, where)
        if mismatch:
            errors.append(f"{source}: {mismatch}")
        checked = check_object(item, where)
        errors += [f"{source}: {line}" for line in checked.errors]
        warnings += [f"{source}: {line}" for line in checked.warnings]
        if checked.object is not None:
            objects.append(checked.object)
    if yaml_error:
        errors.append(f"{source}: error parsing YAML: {yaml_error}")
    if errors:
        raise InvalidInput(errors)
    return objects, warnings


def _read_documents(text: str) -> tuple[list[tuple[int, Any]], str | None]:
    """The documents read before any syntax error, numbered from 1, and that error."""
    documents: list[tuple[int, Any]] = []
    try:
        for number, document in enumerate(yaml.load_all(text, Loader=_Loader), start=1):
            documents.append((number, document))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return documents, where + problem
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return documents, (
            f"line {line}, column {column}: unacceptable character #x{ord(character):04x}: "
            f"{exc.reason}"
        )
    except yaml.YAMLError as exc:
        return documents, " ".join(str(exc).split())
    return documents, None


@dataclass(frozen=True)
class _Problem:
    message: str


def _items(documents: list[tuple[int, Any]]) -> list[tuple[str, Any]]:
    """Non-empty documents with ``kind: List`` flattened, each with where it came from."""
    items: list[tuple[str, Any]] = []
    for number, document in documents:
        if document is not None:
            _flatten(document, f"document {number}", items)
    return items


def _flatten(document: Any, where: str, into: list[tuple[str, Any]]) -> None:
    if isinstance(document, dict) and document.get("kind") == "List":
        items = document.get("items")
        if not isinstance(items, list):
            into.append((where, _Problem("kind List: items must be a list")))
            return
        for index, item in enumerate(items):
            _flatten(item, f"{where}, item {index}", into)
    else:
        into.append((where, document))


def _default_namespace(obj: Any, namespace: str | None, where: str) -> str | None:
    """Fill in ``metadata.namespace``; return the kubectl error on a conflicting one."""
    if not isinstance(obj, dict):
        return None
    if obj.get("metadata") is None:
        obj["metadata"] = {}
    metadata = obj["metadata"]
    if not isinstance(metadata, dict):
        return None
    current = metadata.get("namespace")
    if not current:
        metadata["namespace"] = namespace or "default"
        return None
    if namespace is not None and current != namespace:
        label = describe(str(obj.get("kind")), metadata.get("name"), current, where)
        return (
            f'{label}: the namespace from the provided object "{current}" does not match the '
            f"namespace \"{namespace}\". You must pass '--namespace={current}' to perform this "
            "operation."
        )
    return None
