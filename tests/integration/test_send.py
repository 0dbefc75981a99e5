"""``tcpmesh send`` against small servers on 127.0.0.1 that answer by a fixed pattern."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tcpmesh.cli import send, stats

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LocalServer:
    """A TCP server on 127.0.0.1:<free port>, run by its own event loop in a thread.

    The test's client (``send.run`` under ``asyncio.run``) lives on the test's thread,
    so the server keeps answering while the client blocks. Handlers still running at
    the end are cancelled, so no connection outlives the test.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


class PatternEcho:
    """tcp-echo's behaviour, with the prefix chosen per connection by a fixed cycle."""

    def __init__(self, pattern: list[str], hold: float = 0.0, after_eof: bool = False) -> None:
        self._prefixes = itertools.cycle(pattern)
        self._hold = hold
        self._after_eof = after_eof
        self.lines: list[bytes] = []
        self.active = 0
        self.max_active = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        prefix = next(self._prefixes).encode()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self._hold:
                await asyncio.sleep(self._hold)
            if self._after_eof:
                # Answers only once the client has half-closed its side.
                data = await reader.read()
                self.lines.append(data)
                writer.write(prefix + b" " + data)
            else:
                while line := await reader.readline():
                    if not line.endswith(b"\n"):
                        break
                    self.lines.append(line)
                    writer.write(prefix + b" " + line)
            await writer.drain()
        finally:
            self.active -= 1


@pytest.fixture
def eighty_twenty() -> Iterator[tuple[LocalServer, PatternEcho]]:
    echo = PatternEcho(["one", "one", "one", "one", "two"])
    with LocalServer(echo) as server:
        yield server, echo


def run(target: str, **kwargs: Any) -> send.SendResult:
    host, port = send.parse_target(target)
    return asyncio.run(send.run(host, port, **kwargs))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------- replies


def test_replies_are_grouped_by_first_word(
    eighty_twenty: tuple[LocalServer, PatternEcho],
) -> None:
    server, _ = eighty_twenty
    result = run(server.target, count=100, concurrency=10, timeout=5)
    assert result.groups == {"one": 80, "two": 20}
    assert result.failures == {}
    assert result.total == 100
    assert result.elapsed_seconds > 0
    assert result.connections_per_second > 0
    assert stats.fit(
        result.groups, result.failed, stats.parse_expectation("v1=80,v2=20")
    ).consistent
    assert not stats.fit(
        result.groups, result.failed, stats.parse_expectation("v1=50,v2=50")
    ).consistent


def test_the_message_is_sent_as_one_line(eighty_twenty: tuple[LocalServer, PatternEcho]) -> None:
    server, echo = eighty_twenty
    result = run(server.target, count=5, concurrency=1, message="hello mesh")
    assert echo.lines == [b"hello mesh\n"] * 5
    assert result.samples == {"one": "one hello mesh", "two": "two hello mesh"}


def test_the_default_message_is_the_date(eighty_twenty: tuple[LocalServer, PatternEcho]) -> None:
    server, _ = eighty_twenty
    result = run(server.target, count=1)
    assert re.fullmatch(r"one \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}", result.samples["one"])


def test_the_write_side_is_half_closed_like_nc() -> None:
    echo = PatternEcho(["one"], after_eof=True)
    with LocalServer(echo) as server:
        result = run(server.target, count=3, concurrency=3, message="eof", timeout=5)
    assert result.groups == {"one": 3}
    assert echo.lines == [b"eof\n"] * 3


def test_concurrency_is_bounded() -> None:
    echo = PatternEcho(["one"], hold=0.05)
    with LocalServer(echo) as server:
        result = run(server.target, count=30, concurrency=5)
    assert result.groups == {"one": 30}
    assert 1 < echo.max_active <= 5


# ---------------------------------------------------------------- failures


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # What a proxy's NC/UH looks like from the client: accepted, then closed, no data.
    await reader.readline()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()
    await asyncio.sleep(30)


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def test_refused() -> None:
    result = run(f"127.0.0.1:{closed_port()}", count=3, concurrency=2)
    assert result.groups == {}
    assert result.failures == {"refused": 3}


def test_closed_without_data_is_empty() -> None:
    with LocalServer(close_at_once) as server:
        result = run(server.target, count=4, concurrency=2)
    assert result.failures == {"empty": 4}


def test_timeout() -> None:
    started = time.monotonic()
    with LocalServer(never_answer) as server:
        result = run(server.target, count=2, concurrency=2, timeout=0.3)
    assert result.failures == {"timeout": 2}
    assert time.monotonic() - started < 10


def test_reset() -> None:
    with LocalServer(reset) as server:
        result = run(server.target, count=3, concurrency=1)
    assert result.failures == {"reset": 3}


def test_overall_deadline_stops_the_run() -> None:
    started = time.monotonic()
    with LocalServer(never_answer) as server:
        result = run(server.target, count=4, concurrency=2, timeout=30, deadline=0.5)
    assert result.failures == {"deadline": 4}
    assert result.groups == {}
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------- the command


def test_main_json_document_and_exit_codes(
    eighty_twenty: tuple[LocalServer, PatternEcho],
) -> None:
    server, _ = eighty_twenty
    out, err = io.StringIO(), io.StringIO()
    code = send.main(
        server.target, count=50, expect="v1=80,v2=20", output="json", stdout=out, stderr=err
    )
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["total"] == 50
    assert doc["groups"] == {"one": 40, "two": 10}
    assert doc["failures"] == {}
    assert doc["expected"] == {"one": 80.0, "two": 20.0}
    assert doc["consistent"] is True
    assert doc["p_value"] == pytest.approx(1.0)
    assert doc["alpha"] == 1e-6
    assert doc["elapsed_seconds"] > 0

    out = io.StringIO()
    assert send.main(server.target, count=10, expect="v1=100", stdout=out, stderr=err) == 1
    assert "INCONSISTENT with v1=100" in out.getvalue()
    assert send.main(server.target, count=5, stdout=io.StringIO(), stderr=err) == 0


def test_main_fails_when_nothing_answers() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert send.main(f"127.0.0.1:{closed_port()}", count=2, stdout=out, stderr=err) == 1
    assert "refused 2" in out.getvalue()
