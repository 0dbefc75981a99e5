"""kubectl's ``-o jsonpath=TEMPLATE`` language, evaluated by jsonpath-ng.

The template layer (literal text, ``{...}`` actions, ``{range}``/``{end}``, string
literals) and kubectl's path spelling are parsed here, following the grammar of
kubectl's ``k8s.io/client-go/util/jsonpath``; every path is then built as a
jsonpath-ng expression tree (``jsonpath_ng.ext`` for filters) which does the actual
lookup. Building the tree directly, rather than rewriting text into jsonpath-ng's own
syntax, keeps kubectl's field spelling exact: ``.metadata.labels.app\\.kubernetes\\.io/name``
is one key with dots in it, and needs no quoting rules of a second language.

Behaviour matches ``kubectl get -o jsonpath`` (which allows missing keys): a missing
field, an index past the end or a filter that matches nothing print nothing; several
results of one action are joined by a space; maps and lists print as compact JSON,
``null`` as ``<nil>``, booleans in lower case. As in kubectl, ``$`` and ``@`` name the
current object, which inside ``{range}`` is the current item.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonpath_ng.jsonpath as _ng
from jsonpath_ng.ext.filter import Expression, Filter
from jsonpath_ng.jsonpath import Child, Descendants, Fields, Index, Root, Slice, This

# Older jsonpath-ng releases have no Wildcard class and spell it Fields("*").
_wildcard: Callable[[], Any] = getattr(_ng, "Wildcard", lambda: Fields("*"))


__all__ = ["JsonPathError", "Template", "compile_template", "format_value", "go_json", "render"]


class JsonPathError(ValueError):
    """A template that does not parse, or fails while it runs (kubectl's messages)."""


# ---------------------------------------------------------------- parsed form


@dataclass(frozen=True)
class _Path:
    """A run of path steps, compiled to one jsonpath-ng expression."""

    expr: Any


@dataclass(frozen=True)
class _Union:
    """kubectl applies each member to all current values in turn (not per value)."""

    members: tuple[Any, ...]


@dataclass(frozen=True)
class _Literal:
    value: Any
    # kubectl's TextNode yields one value whatever the input; number and bool nodes
    # yield one copy per input value.
    per_input: bool


@dataclass(frozen=True)
class _Identifier:
    name: str


_Step = _Path | _Union | _Literal | _Identifier


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    steps: list[_Step]


@dataclass
class _Range:
    steps: list[_Step]
    body: list[_Node] = field(default_factory=list)


@dataclass
class _StrayEnd:
    pass


_Node = _Text | _Action | _Range | _StrayEnd


class _Error(Exception):
    """A parse or execution failure; the public error adds kubectl's prefix."""


# ---------------------------------------------------------------- action parser
#
# Mirrors kubectl's parseInsideAction: the same terminators, escapes and error texts,
# so that a template kubectl rejects is rejected here with the same detail.

_DICT_KEY = re.compile(r"^'([^']*)'$")
_SLICE = re.compile(r"^(-?\d*)(:-?\d*)?(:-?\d*)?$")
_FILTER = re.compile(r"^([^!<>=]+)([!<>=~]+)(.+?)$", re.DOTALL)
_FILTER_OPS = frozenset({"==", "!=", "<", ">", "<=", ">=", "=~"})
_TERMINATORS = frozenset(" \t\r\n.,[]$@{}")


def _is_alnum(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdigit()


@dataclass
class _RawStep:
    """One kubectl node before paths are grouped and compiled."""

    kind: str  # field | wildcard | array | union | filter | recursive | literal | ident
    value: Any = None


class _ActionParser:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def _peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def parse(self) -> tuple[list[_RawStep], int]:
        """Parse from just after ``{`` up to and including ``}``."""
        steps: list[_RawStep] = []
        while True:
            rest = self.text[self.pos :]
            if rest.startswith("}"):
                return steps, self.pos + 1
            if rest.startswith("[?("):
                steps.append(self._filter())
                continue
            if rest.startswith(".."):
                if steps and steps[-1].kind == "recursive":
                    raise _Error("invalid multiple recursive descent")
                self.pos += 2
                steps.append(_RawStep("recursive"))
                if _is_alnum(self._peek()):
                    steps.append(self._field())
                continue
            ch = self._peek()
            if ch in ("", "\r", "\n"):
                raise _Error("unclosed action")
            if ch in (" ", "@", "$"):
                self.pos += 1
            elif ch == "[":
                steps.extend(self._array())
            elif ch in ("'", '"'):
                steps.append(_RawStep("literal", _Literal(self._quoted(ch), per_input=False)))
            elif ch == ".":
                self.pos += 1
                steps.append(self._field())
            elif ch in "+-" or ch.isdigit():
                steps.append(self._number())
            elif _is_alnum(ch):
                steps.append(self._identifier())
            else:
                raise _Error(f"unrecognized character in action: U+{ord(ch):04X} '{ch}'")

    def _field(self) -> _RawStep:
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\":
                self.pos += 2
                continue
            if ch in _TERMINATORS:
                break
            self.pos += 1
        raw = self.text[start : self.pos]
        if raw == "*":
            return _RawStep("wildcard")
        return _RawStep("field", raw.replace("\\", ""))

    def _identifier(self) -> _RawStep:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _TERMINATORS:
            self.pos += 1
        word = self.text[start : self.pos]
        if word in ("true", "false"):
            return _RawStep("literal", _Literal(word == "true", per_input=True))
        return _RawStep("ident", word)

    def _number(self) -> _RawStep:
        start = self.pos
        if self._peek() in "+-":
            self.pos += 1
        while self._peek() and (self._peek() == "." or self._peek().isdigit()):
            self.pos += 1
        raw = self.text[start : self.pos]
        try:
            return _RawStep("literal", _Literal(int(raw), per_input=True))
        except ValueError:
            pass
        try:
            return _RawStep("literal", _Literal(float(raw), per_input=True))
        except ValueError:
            raise _Error(f"cannot parse number {raw}") from None

    def _quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        while True:
            ch = self._peek()
            if ch in ("", "\n"):
                raise _Error("unterminated quoted string")
            self.pos += 1
            if ch == quote and self.text[self.pos - 2] != "\\":
                break
        raw = self.text[start : self.pos]
        try:
            return _unquote(raw)
        except ValueError as exc:
            raise _Error(f"unquote string {raw} error {exc}") from None

    def _array(self) -> list[_RawStep]:
        start = self.pos
        end = start + 1
        while True:
            if end >= len(self.text) or self.text[end] == "\n":
                raise _Error("unterminated array")
            if self.text[end] == "]":
                break
            end += 1
        self.pos = end + 1
        inner = self.text[start + 1 : end]
        if inner == "*":
            inner = ":"
        members = inner.split(",")
        if len(members) > 1:
            union = [_parse_sub_action(f"[{m.strip(' ')}]") for m in members]
            return [_RawStep("union", union)]
        key = _DICT_KEY.match(inner)
        if key:
            # kubectl re-reads ['a.b'] as the path .a.b, not as one key "a.b".
            return _parse_sub_action(f".{key.group(1)}")
        m = _SLICE.match(inner)
        if m is None:
            raise _Error(f"invalid array index {inner}")
        return [_RawStep("array", _slice_params(m))]

    def _filter(self) -> _RawStep:
        self.pos += 3
        start = self.pos
        begin = end = False
        pair = ""
        while True:
            ch = self._peek()
            if ch in ("", "\n"):
                raise _Error("unterminated filter")
            self.pos += 1
            if ch in ("'", '"'):
                if not begin:
                    begin, pair = True, ch
                    continue
                if self.text[self.pos - 2] != "\\" and ch == pair:
                    end = True
            elif ch == ")" and begin == end:
                break
        if self._peek() != "]":
            raise _Error("unclosed array expect ]")
        self.pos += 1
        body = self.text[start : self.pos - 2]
        m = _FILTER.match(body)
        if m is None:
            return _RawStep("filter", (_parse_sub_action(body), None, None))
        left, op, right = m.groups()
        if op not in _FILTER_OPS:
            raise _Error(f"unrecognized filter operator {op}")
        return _RawStep("filter", (_parse_sub_action(left), op, _parse_sub_action(right)))


def _parse_sub_action(text: str) -> list[_RawStep]:
    steps, end = _ActionParser("{" + text + "}", 1).parse()
    if end != len(text) + 2:
        raise _Error(f"invalid expression {text}")
    return steps


def _slice_params(m: re.Match[str]) -> tuple[int | None, int | None, int | None]:
    """kubectl's [start:end:step] parameters; a lone index ``[n]`` comes back as (n, None, 0)."""
    start_s, end_s, step_s = m.groups()
    start = int(start_s) if start_s else None
    if end_s is None:
        # "[n]", and "[]" which kubectl reads as "[0]": one element, negative from the end.
        return (start or 0, None, 0)
    stop = int(end_s[1:]) if end_s[1:] else None
    step = int(step_s[1:]) if step_s and step_s[1:] else None
    if step is not None and step <= 0:
        raise _Error("step must be > 0")
    return start, stop, step


_GO_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}


def _unquote(raw: str) -> str:
    """Go's strconv.Unquote, extended (like kubectl) to single-quoted strings."""
    quote, body = raw[0], raw[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote:
            raise ValueError("invalid syntax")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("invalid syntax")
        esc = body[i + 1]
        if esc in _GO_ESCAPES:
            out.append(_GO_ESCAPES[esc])
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError("invalid syntax")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits):
                raise ValueError("invalid syntax")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError("invalid syntax")
    return "".join(out)


# ---------------------------------------------------------------- compile to jsonpath-ng


def _compile_steps(raw: Sequence[_RawStep], start: Callable[[], Any]) -> list[_Step]:
    """Group consecutive path steps into jsonpath-ng expressions rooted at ``start()``."""
    steps: list[_Step] = []
    expr: Any = None
    recursive = False

    def flush() -> None:
        nonlocal expr, recursive
        if recursive:
            # A trailing ".." in kubectl yields every node below; "*" under ".." does too.
            expr = Descendants(expr, _wildcard())
            recursive = False
        if expr is not None:
            steps.append(_Path(expr))
            expr = None

    for step in raw:
        if step.kind in ("literal", "ident"):
            flush()
            steps.append(step.value if step.kind == "literal" else _Identifier(step.value))
            continue
        if step.kind == "union":
            flush()
            steps.append(_Union(tuple(_single_path(m, "union") for m in step.value)))
            continue
        if step.kind == "recursive":
            if expr is None:
                expr = start()
            recursive = True
            continue
        piece = _piece(step)
        if expr is None:
            expr = start()
        if recursive:
            expr = Descendants(expr, piece)
            recursive = False
        else:
            expr = Child(expr, piece)
    flush()
    return steps


def _piece(step: _RawStep) -> Any:
    if step.kind == "field":
        # An empty name (a bare "{.}") means the current object, as "@" does.
        return This() if step.value == "" else Fields(step.value)
    if step.kind == "wildcard":
        return _wildcard()
    if step.kind == "array":
        start, stop, stride = step.value
        if stride == 0:
            return Index(start)
        # [0:] rather than [:]: jsonpath-ng reads a bare Slice() as a wildcard over maps too.
        return Slice(start=0 if start is None else start, end=stop, step=stride)
    if step.kind == "filter":
        left_raw, op, right_raw = step.value
        target = _single_path(left_raw, "filter")
        if op is None:
            return Filter([Expression(target, None, None)])
        right = _compile_steps(right_raw, This)
        operand: Any
        if len(right) == 1 and isinstance(right[0], _Literal):
            operand = right[0].value
        elif len(right) == 1 and isinstance(right[0], _Path):
            operand = right[0].expr
        else:
            raise _Error("invalid filter: the right side must be one value or path")
        return Filter([Expression(target, op, operand)])
    raise _Error(f"unexpected node {step.kind}")


def _single_path(raw: Sequence[_RawStep], where: str) -> Any:
    steps = _compile_steps(raw, This)
    if not steps:
        return This()
    if len(steps) != 1 or not isinstance(steps[0], _Path):
        raise _Error(f"invalid {where}: expected a path")
    return steps[0].expr


# ---------------------------------------------------------------- template


class Template:
    """A parsed template; :meth:`render` may be called many times."""

    def __init__(self, source: str, nodes: list[_Node]) -> None:
        self.source = source
        self._nodes = nodes

    def render(self, data: Any) -> str:
        out: list[str] = []
        try:
            self._render(self._nodes, data, out)
        except _Error as exc:
            raise JsonPathError(
                f'error executing jsonpath "{self.source}": Error executing template: {exc}'
            ) from None
        return "".join(out)

    def _render(self, nodes: Sequence[_Node], current: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                out.append(" ".join(format_value(v) for v in _evaluate(node.steps, current)))
            elif isinstance(node, _Range):
                for item in _evaluate(node.steps, current):
                    self._render(node.body, item, out)
            else:
                raise _Error("not in range, nothing to end")


def _evaluate(steps: Sequence[_Step], current: Any) -> list[Any]:
    try:
        return _evaluate_steps(steps, current)
    except (re.error, TypeError, ValueError) as exc:
        # jsonpath-ng raises these for e.g. an invalid =~ pattern.
        raise _Error(str(exc)) from None


def _evaluate_steps(steps: Sequence[_Step], current: Any) -> list[Any]:
    values: list[Any] = [current]
    for step in steps:
        if isinstance(step, _Path):
            values = [match.value for value in values for match in step.expr.find(value)]
        elif isinstance(step, _Union):
            values = [
                match.value
                for member in step.members
                for value in values
                for match in member.find(value)
            ]
        elif isinstance(step, _Literal):
            values = [step.value] * len(values) if step.per_input else [step.value]
        else:
            raise _Error(f"unrecognized identifier {step.name}")
    return values


def compile_template(template: str) -> Template:
    """Parse a kubectl JSONPath template; raises :class:`JsonPathError` like kubectl."""
    try:
        return Template(template, _parse_template(template))
    except _Error as exc:
        raise JsonPathError(f"error parsing jsonpath {template}, {exc}") from None


def _parse_template(template: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[list[_Node]] = [root]
    pos = 0
    while pos < len(template):
        brace = template.find("{", pos)
        if brace < 0:
            stack[-1].append(_Text(template[pos:]))
            break
        if brace > pos:
            stack[-1].append(_Text(template[pos:brace]))
        raw, pos = _ActionParser(template, brace + 1).parse()
        if raw and raw[0].kind == "ident" and raw[0].value == "end":
            if len(stack) > 1:
                stack.pop()
            else:
                stack[-1].append(_StrayEnd())
        elif raw and raw[0].kind == "ident" and raw[0].value == "range":
            rng = _Range(_compile_steps(raw[1:], Root))
            stack[-1].append(rng)
            stack.append(rng.body)
        else:
            stack[-1].append(_Action(_compile_steps(raw, Root)))
    # An unclosed {range} runs to the end of the template, as in kubectl.
    return root


def render(template: str, data: Any) -> str:
    """Render ``template`` against ``data`` (an object dict or a ``List``)."""
    return compile_template(template).render(data)


# ---------------------------------------------------------------- output


def format_value(value: Any) -> str:
    """Print one result the way kubectl does (Go's fmt for scalars, JSON otherwise)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, (dict, list, tuple)):
        return go_json(value)
    return str(value)


def _go_float(value: float) -> str:
    """Go's ``%v`` for a float64: shortest digits, exponent form below 1e-4 or from 1e6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    exp10 = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exponent >= 0:
        return prefix + digits + "0" * exponent
    point = len(digits) + exponent
    if point > 0:
        return f"{prefix}{digits[:point]}.{digits[point:]}"
    return f"{prefix}0.{'0' * -point}{digits}"


def _json_ready(value: Any) -> Any:
    # Go's encoder writes a float with an integral value without ".0".
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def go_json(value: Any, indent: int | None = None) -> str:
    """Go's ``json.Marshal`` (or ``MarshalIndent``): sorted keys, HTML-safe escapes."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(
        _json_ready(value),
        indent=indent,
        separators=separators,
        sort_keys=True,
        ensure_ascii=False,
    )
    # These characters only occur inside JSON strings, so replacing them in the text
    # is the same as Go's escaping of string contents.
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
