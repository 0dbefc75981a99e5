"""``tcpmesh send``: open N connections, one line each, and count the replies.

Each connection does what the seed's ``(date; sleep 1) | nc HOST PORT`` does: send one
line, half-close the write side as nc does at the end of its input, and read the
reply. Replies are grouped by their first word (tcp-echo answers ``one …`` or
``two …``); connections that get no reply are counted by reason. What a client sees of
a proxy's ``NC``/``UH`` outcome is a connection closed without data (``empty``).

Only the HOST:PORT given is contacted. The loop is bounded by the number of
connections, the concurrency, a per-connection timeout and an overall deadline.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape

from tcpmesh.cli import stats
from tcpmesh.cli.printers import format_columns

__all__ = [
    "FAILURE_REASONS",
    "SendResult",
    "date_line",
    "main",
    "parse_target",
    "render_text",
    "run",
    "send",
    "to_document",
]

# Why a connection produced no reply, in the order the output lists them.
FAILURE_REASONS = ("refused", "reset", "timeout", "empty", "unreachable", "deadline", "error")
DEFAULT_CONCURRENCY = 10
DEFAULT_TIMEOUT = 5.0
_MAX_REPLY = 64 * 1024
_CLOSE_TIMEOUT = 1.0


@dataclass
class SendResult:
    """What N connections to one target produced."""

    target: str
    total: int
    groups: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    # The first reply seen in each group, to show what the group looks like.
    samples: dict[str, str] = field(default_factory=dict)

    @property
    def replies(self) -> int:
        return sum(self.groups.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def connections_per_second(self) -> float:
        return self.total / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"target {text!r} is not HOST:PORT (for example 127.0.0.1:31400)")
    return host, int(port_text)


def date_line(now: float | None = None) -> str:
    """The current time as ``date`` prints it: ``Mon Nov 12 23:38:45 UTC 2018``."""
    t = time.localtime(now)
    return time.strftime("%a %b ", t) + f"{t.tm_mday:>2}" + time.strftime(" %H:%M:%S %Z %Y", t)


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, OSError) and exc.errno == errno.ENOTCONN:
        # A reset that lands before our half-close makes shutdown() fail this way.
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return "error"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        # Bounded: a peer that stops reading must not hold the run up.
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT)
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        # The peer may reset the connection after replying; the reply stands.
        pass


async def _one(host: str, port: int, line: str, timeout: float) -> tuple[str | None, str]:
    """One connection: (reply, "") or (None, failure reason)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=_MAX_REPLY)
            writer.write(line.encode() + b"\n")
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            try:
                data = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                # Closed before a whole line: whatever came is the reply.
                data = exc.partial
            except asyncio.LimitOverrunError:
                data = await reader.read(_MAX_REPLY)
    except (OSError, TimeoutError) as exc:
        return None, _failure_reason(exc)
    finally:
        if writer is not None:
            await _close(writer)
    if not data:
        return None, "empty"
    return data.decode(errors="replace").rstrip("\r\n"), ""


async def run(
    host: str,
    port: int,
    *,
    count: int,
    concurrency: int = DEFAULT_CONCURRENCY,
    message: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SendResult:
    """Open ``count`` connections, at most ``concurrency`` at a time.

    ``message`` is sent on each (default: the current date line, made per connection);
    ``timeout`` bounds each connection from connect to reply; ``deadline`` bounds the
    whole run (default: long enough for every connection to time out once), and
    connections not finished by then are counted as ``deadline``.
    """
    if count < 1 or concurrency < 1 or timeout <= 0:
        raise ValueError("count and concurrency must be >= 1 and timeout > 0")
    if deadline is None:
        deadline = timeout * (math.ceil(count / concurrency) + 1)
    groups: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    samples: dict[str, str] = {}
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            next_index += 1
            line = message if message is not None else date_line()
            reply, reason = await _one(host, port, line, timeout)
            if reply is None:
                failures[reason] += 1
                continue
            word = reply.split(maxsplit=1)[0] if reply.strip() else ""
            groups[word] += 1
            samples.setdefault(word, reply)

    started = clock()
    tasks = [asyncio.create_task(worker()) for _ in range(min(concurrency, count))]
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = clock() - started
    unfinished = count - sum(groups.values()) - sum(failures.values())
    if unfinished:
        failures["deadline"] += unfinished
    return SendResult(
        target=f"{host}:{port}",
        total=count,
        groups=dict(sorted(groups.items())),
        failures={r: failures[r] for r in FAILURE_REASONS if failures[r]},
        elapsed_seconds=elapsed,
        samples=samples,
    )


def send(host: str, port: int, **kwargs: Any) -> SendResult:
    """:func:`run` from synchronous code."""
    return asyncio.run(run(host, port, **kwargs))


# ---------------------------------------------------------------- output


def _clip(text: str, width: int = 40) -> str:
    # Replies come from the network: never let them drive the terminal.
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def to_document(
    result: SendResult,
    expectation: stats.Expectation | None = None,
    fit: stats.Fit | None = None,
) -> dict[str, Any]:
    """The ``-o json`` document."""
    doc: dict[str, Any] = {
        "target": result.target,
        "total": result.total,
        "groups": dict(result.groups),
        "failures": dict(result.failures),
        "expected": None,
        "p_value": None,
        "alpha": None,
        "consistent": None,
        "test": None,
        "note": None,
        "elapsed_seconds": round(result.elapsed_seconds, 6),
        "connections_per_second": round(result.connections_per_second, 3),
    }
    if expectation is not None:
        doc["expected"] = {g: expectation.percent(g) for g in expectation.weights}
    if fit is not None:
        doc.update(
            p_value=fit.p_value,
            alpha=fit.alpha,
            consistent=fit.consistent,
            test=fit.test,
            note=fit.note,
        )
    return doc


def render_text(
    result: SendResult,
    console: Console,
    expectation: stats.Expectation | None = None,
    fit: stats.Fit | None = None,
) -> None:
    """The human table and verdict, printed on ``console``."""
    headers = [
        "GROUP",
        "COUNT",
        "PERCENT",
        *(["EXPECTED"] if expectation is not None else []),
        "SAMPLE REPLY",
    ]
    rows: list[list[str]] = []

    def expected_cell(group: str) -> list[str]:
        if expectation is None:
            return []
        return [f"{expectation.percent(group):.1f}%"]

    names: list[str] = list(result.groups)
    if expectation is not None:
        names += [g for g in expectation.weights if g != stats.FAILED and g not in result.groups]
    for group in names:
        count = result.groups.get(group, 0)
        label = group if expectation is None else expectation.label(group)
        shown = group if label == group else f"{group} ({label})"
        rows.append(
            [
                _clip(shown) or '""',
                str(count),
                f"{_percent(count, result.total):.1f}%",
                *expected_cell(group),
                _clip(result.samples.get(group, "")),
            ]
        )
    if result.failed or (expectation is not None and stats.FAILED in expectation.weights):
        reasons = ", ".join(f"{r} {n}" for r, n in result.failures.items()) or "none"
        rows.append(
            [
                "failed",
                str(result.failed),
                f"{_percent(result.failed, result.total):.1f}%",
                *expected_cell(stats.FAILED),
                reasons,
            ]
        )
    # Plain aligned columns (as ``get`` prints them) read the same on a terminal, in a
    # pipe and in a log; only the verdict is coloured, and only on a terminal.
    console.print(format_columns(headers, rows), markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"{result.total} connections to {result.target} in {result.elapsed_seconds:.2f}s "
        f"({result.connections_per_second:.1f} connections/s)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if expectation is not None and fit is not None:
        verdict = "consistent" if fit.consistent else "INCONSISTENT"
        style = "green" if fit.consistent else "bold red"
        relation = ">=" if fit.consistent else "<"
        # soft_wrap: one line however narrow the terminal, for grep and friends.
        console.print(
            f"[{style}]{verdict}[/] "
            + escape(
                f"with {expectation.text}: "
                f"p = {fit.p_value:.3g} {relation} alpha {fit.alpha:g}; {fit.note}"
            ),
            highlight=False,
            soft_wrap=True,
        )


def main(
    target: str,
    *,
    count: int = 20,
    concurrency: int = DEFAULT_CONCURRENCY,
    message: str | None = None,
    expect: str | None = None,
    alpha: float = stats.DEFAULT_ALPHA,
    timeout: float = DEFAULT_TIMEOUT,
    output: str = "text",
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The whole command; returns the exit code.

    0: the split is consistent with ``expect`` (or, without ``expect``, at least one
    reply came back); 1: inconsistent, or no connection got a reply; 2: bad arguments.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        host, port = parse_target(target)
        expectation = stats.parse_expectation(expect) if expect is not None else None
        if "\n" in (message or ""):
            raise ValueError("--message must be a single line")
        if not 0 < alpha <= 1:
            raise ValueError(f"--alpha must be in (0, 1], not {alpha}")
        if count < 1 or concurrency < 1 or timeout <= 0:
            raise ValueError("--count and --concurrency must be >= 1, --timeout > 0")
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return 2
    result = send(
        host, port, count=count, concurrency=concurrency, message=message, timeout=timeout
    )
    fit = (
        stats.fit(result.groups, result.failed, expectation, alpha)
        if expectation is not None
        else None
    )
    if output == "json":
        print(json.dumps(to_document(result, expectation, fit), indent=2), file=out)
    else:
        render_text(result, Console(file=out, highlight=False), expectation, fit)
    if fit is not None:
        return 0 if fit.consistent else 1
    return 0 if result.replies else 1
