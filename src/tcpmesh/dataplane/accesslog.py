"""One Envoy-like access log line per closed connection.

Format (fields separated by single spaces, quoted fields never contain spaces or quotes
because they hold addresses or ``-``)::

    [START] "- - -" 0 FLAGS RX TX DURATION_MS - "-" "-" "-" "UPSTREAM_HOST" CLUSTER LOCAL PEER

FLAGS is ``-`` or comma-separated Envoy response flags (``NC``, ``UH``, ``UF``, ``UO``,
``NR``, ``DT``); RX are bytes received from the client, TX bytes sent to it. CLUSTER is
the cluster the connection was routed to (for ``NC`` the name that resolved to nothing).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import select
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO


# Not frozen: the proxy builds one per connection, and a frozen dataclass pays for
# object.__setattr__ on every field.
@dataclass(slots=True)
class AccessLogRecord:
    start_time: float  # wall clock, seconds since the epoch
    flags: tuple[str, ...]
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    upstream_host: str  # "address:port" or "-"
    upstream_cluster: str  # cluster name or "-"
    local_address: str
    downstream_peer: str
    # Why the proxy ended the connection when no flag says so: "idle_timeout",
    # "max_connection_duration"; empty when a peer closed. Not part of the line.
    termination: str = ""

    @property
    def flags_text(self) -> str:
        return ",".join(self.flags) if self.flags else "-"


AccessLogSink = Callable[[AccessLogRecord], None]


_second_cache: list[tuple[int, str]] = [(-1, "")]


def rfc3339(ts: float) -> str:
    """``2026-11-26T00:28:42.123Z``; the date and time part is cached per second."""
    frac, whole = math.modf(ts)
    micros = round(frac * 1_000_000)
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    cached_second, prefix = _second_cache[0]
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_cache[0] = (second, prefix)
    return f"{prefix}{micros // 1000:03d}Z"


def format_line(rec: AccessLogRecord) -> str:
    return (
        f'[{rfc3339(rec.start_time)}] "- - -" 0 {rec.flags_text} {rec.bytes_received} '
        f'{rec.bytes_sent} {rec.duration_ms} - "-" "-" "-" "{rec.upstream_host}" '
        f"{rec.upstream_cluster} {rec.local_address} {rec.downstream_peer}"
    )


_LINE = re.compile(
    r'^\[(?P<start>[^\]]+)\] "- - -" 0 (?P<flags>\S+) (?P<rx>\d+) (?P<tx>\d+) (?P<ms>\d+) - '
    r'"-" "-" "-" "(?P<host>[^"]*)" (?P<cluster>\S+) (?P<local>\S+) (?P<peer>\S+)$'
)


@dataclass(frozen=True)
class ParsedLine:
    start: str
    flags: tuple[str, ...]
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    upstream_host: str
    upstream_cluster: str
    local_address: str
    downstream_peer: str


def parse_line(line: str) -> ParsedLine | None:
    """Parse a line written by this module; None for anything else."""
    m = _LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    flags = m["flags"]
    return ParsedLine(
        start=m["start"],
        flags=() if flags == "-" else tuple(flags.split(",")),
        bytes_received=int(m["rx"]),
        bytes_sent=int(m["tx"]),
        duration_ms=int(m["ms"]),
        upstream_host=m["host"],
        upstream_cluster=m["cluster"],
        local_address=m["local"],
        downstream_peer=m["peer"],
    )


class StreamAccessLog:
    """Buffers lines and writes them in batches, like Envoy's periodic access log flush.

    One ``write`` per batch keeps lines of several worker processes sharing a stdout
    from interleaving mid-line.
    """

    def __init__(self, stream: IO[str] | None = None, flush_interval: float = 0.2) -> None:
        self._stream = stream
        self._flush_interval = flush_interval
        # Records are formatted when flushed, in one batch.
        self._pending: list[AccessLogRecord] = []
        self._scheduled: asyncio.TimerHandle | None = None

    def __call__(self, rec: AccessLogRecord) -> None:
        self._pending.append(rec)
        if self._scheduled is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = loop.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if not self._pending:
            return
        data = "\n".join([format_line(rec) for rec in self._pending]) + "\n"
        self._pending.clear()
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            stream.write(data)
            stream.flush()
            return
        stream.flush()
        _write_all(fd, data.encode())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    stalls = 0
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            # A non-blocking stdout that stays full for a second loses the batch rather
            # than stalling every connection of the worker.
            stalls += 1
            if stalls > 100:
                return
            select.select([], [fd], [], 0.01)
            continue
        except OSError:
            # A closed or broken log stream must not take the proxy down.
            return
        view = view[n:]
