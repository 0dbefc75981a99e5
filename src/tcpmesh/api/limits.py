"""Bounds on input, so that no manifest or request body can exhaust the machine.

YAML aliases let a few hundred bytes describe billions of nodes (the "billion laughs"
bomb): PyYAML keeps them shared, but every later step (validation, JSON, the store)
expands them. Deep nesting drives recursive code into Python's recursion limit. So
every input is measured before it is used, with aliases counted at their expanded size.

The limits are generous for real manifests and far below what hurts:

- ``MAX_DOCUMENT_BYTES`` (3 MiB): one YAML document or one object's JSON body, as the
  Kubernetes API server's request limit;
- ``MAX_INPUT_BYTES`` (32 MiB): one file, standard input, or a bulk apply request;
- ``MAX_DEPTH`` (64 levels, aliases expanded): a Deployment with affinity rules, the
  deepest common manifest, needs about 12;
- ``MAX_NODES`` (250,000 values per document, aliases expanded): a ``kind: List`` of a
  few thousand objects.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DOCUMENT_BYTES = 3 * 1024 * 1024
MAX_INPUT_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 250_000

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class LimitExceeded(ValueError):
    """Input over one of the limits; the message says which, in one line.

    ``too_large`` tells a size limit (HTTP 413) from a shape limit such as depth (400).
    """

    def __init__(self, message: str, *, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large


def size_problem(size: int, limit: int, what: str) -> str | None:
    """``"the request body is 40.0 MiB, more than the limit of 32 MiB"``, or None."""
    if size <= limit:
        return None
    return f"{what} is {_mib(size)}, more than the limit of {_mib(limit)}"


def _mib(size: int) -> str:
    mib = size / (1024 * 1024)
    return f"{mib:g} MiB" if mib == int(mib) else f"{mib:.1f} MiB"


def json_depth(raw: bytes) -> int:
    """The nesting depth of a JSON text, found without parsing it.

    Strings are blanked out first (a ``[`` inside a string is not nesting), so only the
    brackets themselves are walked; the cost is a regular-expression pass and one step
    per bracket, with no recursion and no objects built.
    """
    brackets = _JSON_STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def load_json_body(raw: bytes, *, max_bytes: int = MAX_INPUT_BYTES) -> Any:
    """Parse a request body, refusing oversized or over-deep input before parsing it.

    Raises ``LimitExceeded`` for a limit and ``ValueError`` for text that is not JSON.
    The API server's caller reads at most ``max_bytes + 1`` bytes, so memory stays
    bounded even before this runs.
    """
    problem = size_problem(len(raw), max_bytes, "the request body")
    if problem:
        raise LimitExceeded(problem, too_large=True)
    depth = json_depth(raw)
    if depth > MAX_DEPTH:
        raise LimitExceeded(
            f"the request body nests deeper than {MAX_DEPTH} levels", too_large=False
        )
    return json.loads(raw)
