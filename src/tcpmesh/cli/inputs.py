"""Reading what the user points ``-f`` at: files, directories and standard input."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tcpmesh.api import MAX_INPUT_BYTES, InvalidInput, load_documents_with_warnings, size_problem

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class InputError(Exception):
    """A file that cannot be read; the message names it."""


def manifest_sources(paths: Iterable[str]) -> list[tuple[str, str]]:
    """(source label, text) for each file; a directory contributes its manifests by name."""
    sources: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            # Read one character past the limit: enough to know, never the whole stream.
            text = sys.stdin.read(MAX_INPUT_BYTES + 1)
            problem = size_problem(len(text.encode()), MAX_INPUT_BYTES, "the input")
            if problem:
                raise InputError(f"error: <stdin>: {problem}")
            sources.append(("<stdin>", text))
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES)
            if not files:
                raise InputError(f'error: no manifests (*.yaml, *.yml, *.json) in "{raw}"')
        else:
            files = [path]
        for file in files:
            try:
                problem = size_problem(file.stat().st_size, MAX_INPUT_BYTES, "the file")
                if problem:
                    raise InputError(f'error: "{file}": {problem}')
                sources.append((str(file), file.read_text()))
            except FileNotFoundError:
                raise InputError(f'error: the path "{file}" does not exist') from None
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f'error: cannot read "{file}": {exc}') from None
    return sources


def load_manifests(
    paths: Iterable[str], namespace: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every document of every file, all validated before any is used.

    Raises InvalidInput carrying the errors of all files at once.
    """
    objects: list[dict[str, Any]] = []
    warnings: list[str] = []
    for _, docs, doc_warnings in load_manifests_by_source(paths, namespace):
        objects.extend(docs)
        warnings.extend(doc_warnings)
    return objects, warnings


def load_manifests_by_source(
    paths: Iterable[str], namespace: str | None
) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
    """(source, objects, warnings) per file; InvalidInput with the errors of all files."""
    loaded: list[tuple[str, list[dict[str, Any]], list[str]]] = []
    errors: list[str] = []
    for source, text in manifest_sources(paths):
        try:
            docs, doc_warnings = load_documents_with_warnings(text, source, namespace)
        except InvalidInput as exc:
            errors.extend(exc.messages)
            continue
        loaded.append((source, docs, doc_warnings))
    if errors:
        raise InvalidInput(errors)
    return loaded
