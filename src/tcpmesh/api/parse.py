"""Multi-document YAML manifests → checked, normalized object dicts.

All documents are checked before anything is returned and every problem in every
document is reported, one self-contained line each (``<file>: <resource> is invalid:
<field path>: <reason>``), so a bad file changes nothing and is fixed in one round.

The loader measures while it composes (:mod:`tcpmesh.api.limits`): nesting depth and
node count with aliases expanded, and the size of each document, so an alias bomb or a
runaway document stops at the limit with one line instead of growing until it is killed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import yaml

from tcpmesh.api import kinds, limits
from tcpmesh.api.errors import InvalidInput
from tcpmesh.api.objects import check_object, describe

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """``safe_load`` as Kubernetes reads YAML: timestamps stay strings, keys stay unique.

    It also keeps, per composed node, its size and height with aliases expanded, so an
    alias costs one dictionary look-up to account for however much it stands for.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._measures: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height)
        self._depth = 0
        self._nodes = 0
        self._document_start = 0

    def compose_document(self) -> yaml.Node | None:
        self._measures, self._depth, self._nodes = {}, 0, 0
        self._document_start = _offset(self._peek())
        node: yaml.Node | None = super().compose_document()
        self._measures = {}
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self._peek()
        if _offset(event) - self._document_start > limits.MAX_DOCUMENT_BYTES:
            self._refuse(f"document larger than {limits.MAX_DOCUMENT_BYTES // 2**20} MiB", event)
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            measure = self._measures.get(id(node))
            if measure is None:
                self._refuse(f"alias *{event.anchor} refers to a node that contains it", event)
            self._count(measure[0], self._depth + measure[1], event)
            return node
        self._depth += 1
        self._count(1, self._depth, event)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is not None:
            self._measures[id(node)] = self._measure(node)
        return node

    def _peek(self) -> yaml.Event:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """(nodes, height) of a just-composed node from its children's measures."""
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            return 1, 1
        measures = [self._measures[id(child)] for child in children]
        return 1 + sum(m[0] for m in measures), 1 + max((m[1] for m in measures), default=0)

    def _count(self, nodes: int, depth: int, event: yaml.Event) -> None:
        self._nodes += nodes
        if depth > limits.MAX_DEPTH:
            self._refuse(f"document nests deeper than {limits.MAX_DEPTH} levels", event)
        if self._nodes > limits.MAX_NODES:
            self._refuse(
                f"document has more than {limits.MAX_NODES:,} values with aliases expanded",
                event,
            )

    @staticmethod
    def _refuse(problem: str, event: yaml.Event) -> NoReturn:
        mark = event.start_mark if isinstance(event.start_mark, yaml.Mark) else None
        raise yaml.composer.ComposerError(None, None, problem, mark)

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


def _offset(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.index if isinstance(mark, yaml.Mark) else 0


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
    too_large = limits.size_problem(len(text), limits.MAX_INPUT_BYTES, "the input")
    if too_large:
        raise InvalidInput([f"{source}: {too_large}"])
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


def load_yaml_body(raw: bytes, *, max_bytes: int = limits.MAX_DOCUMENT_BYTES) -> Any:
    """One YAML document of a request body (``Content-Type: application/yaml``).

    The same limits as for files apply; raises ``LimitExceeded`` for a size limit and
    ``ValueError`` with the YAML problem for everything else (a depth or alias limit
    included), so the API server answers a bomb as fast as a typo.
    """
    problem = limits.size_problem(len(raw), max_bytes, "the request body")
    if problem:
        raise limits.LimitExceeded(problem, too_large=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the request body is not UTF-8") from None
    documents, error = _read_documents(text)
    if error:
        raise ValueError(f"error parsing YAML: {error}")
    if len(documents) != 1:
        raise ValueError("the request body must hold exactly one YAML document")
    return documents[0][1]


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


def _namespaced(obj: dict[str, Any]) -> bool:
    """Whether the object's kind is namespaced (unknown kinds are, and fail later)."""
    try:
        return kinds.for_object(obj).namespaced
    except kinds.UnknownKind:
        return True


def _default_namespace(obj: Any, namespace: str | None, where: str) -> str | None:
    """Fill in ``metadata.namespace``; return the kubectl error on a conflicting one.

    A cluster-scoped object (Namespace, GatewayClass) has none: kubectl ignores ``-n`` for
    it and the API server drops one written in the file, so it is dropped here too."""
    if not isinstance(obj, dict):
        return None
    if obj.get("metadata") is None:
        obj["metadata"] = {}
    metadata = obj["metadata"]
    if not isinstance(metadata, dict):
        return None
    if not _namespaced(obj):
        metadata.pop("namespace", None)
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
