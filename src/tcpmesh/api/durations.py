"""Durations as Istio accepts them in YAML.

Istio's CRDs carry ``google.protobuf.Duration`` values, whose JSON form is seconds with an
``s`` suffix (``"10s"``, ``"0.5s"``), and its documentation uses Go durations freely
(``"30ms"``, ``"1m"``, ``"1h"``). Both grammars are accepted: one or more
``<number><unit>`` terms, units ``h``, ``m``, ``s``, ``ms``, ``us`` (``µs``), ``ns``.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNIT_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# Longer units first so that "ms" is not read as "m" followed by garbage.
_TERM = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")
_HINT = 'expected a number with a unit, such as "10s", "0.5s", "500ms", "1m30s" or "1h"'


def parse_duration_ns(text: str) -> int:
    """Parse a duration into whole nanoseconds (exact, for precision checks)."""
    body = text
    negative = body.startswith("-")
    if body and body[0] in "+-":
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f'invalid duration "{text}": {_HINT}')
    total = Fraction(0)
    pos = 0
    while pos < len(body):
        term = _TERM.match(body, pos)
        if term is None or not (term.group(1) or term.group(2)):
            raise ValueError(f'invalid duration "{text}": {_HINT}')
        whole, frac, unit = term.group(1), term.group(2) or "", term.group(3)
        number = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
        total += number * _UNIT_NANOS[unit]
        pos = term.end()
    nanos = round(total)
    return -nanos if negative else nanos


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"10s"``, ``"1.5s"``, ``"500ms"`` or ``"1h"``.

    Raises ``ValueError`` naming the bad value.
    """
    return parse_duration_ns(text) / 1_000_000_000
