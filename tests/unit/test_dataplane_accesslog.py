"""The access log line: Envoy-like, one per connection, parseable."""

from __future__ import annotations

import io
from pathlib import Path

from tcpmesh.dataplane.accesslog import (
    AccessLogRecord,
    StreamAccessLog,
    format_line,
    parse_line,
    rfc3339,
)


def record(**kw: object) -> AccessLogRecord:
    base: dict[str, object] = {
        "start_time": 1_795_000_000.25,
        "flags": (),
        "bytes_received": 29,
        "bytes_sent": 33,
        "duration_ms": 1004,
        "upstream_host": "127.0.1.2:9000",
        "upstream_cluster": "outbound|9000|v1|tcp-echo.default.svc.cluster.local",
        "local_address": "127.0.0.1:31400",
        "downstream_peer": "127.0.0.1:51234",
    }
    base.update(kw)
    return AccessLogRecord(**base)  # type: ignore[arg-type]


def test_line_shape() -> None:
    line = format_line(record())
    assert line == (
        '[2026-11-18T11:06:40.250Z] "- - -" 0 - 29 33 1004 - "-" "-" "-" "127.0.1.2:9000" '
        "outbound|9000|v1|tcp-echo.default.svc.cluster.local 127.0.0.1:31400 127.0.0.1:51234"
    )
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_round_trip_with_flags() -> None:
    rec = record(flags=("UF",), upstream_host="-", bytes_sent=0)
    parsed = parse_line(format_line(rec) + "\n")
    assert parsed is not None
    assert parsed.flags == ("UF",)
    assert (parsed.bytes_received, parsed.bytes_sent, parsed.duration_ms) == (29, 0, 1004)
    assert parsed.upstream_host == "-"
    assert parsed.upstream_cluster == rec.upstream_cluster
    assert parsed.downstream_peer == "127.0.0.1:51234"
    assert parse_line(format_line(record())).flags == ()  # type: ignore[union-attr]
    assert parse_line("listening on 127.0.0.1:31400") is None


def test_stream_log_without_a_loop_writes_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as f:
        sink = StreamAccessLog(f)
        sink(record(flags=("NC",)))
        sink(record())
    lines = path.read_text().splitlines()
    assert [parse_line(x).flags for x in lines] == [("NC",), ()]  # type: ignore[union-attr]


def test_stream_log_to_a_stream_without_descriptor() -> None:
    buf = io.StringIO()
    sink = StreamAccessLog(buf)
    sink(record())
    sink.flush()
    assert buf.getvalue().count("\n") == 1
