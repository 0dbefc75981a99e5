"""Both ways an upstream connect completes: within the connect call, or a loop turn later.

On loopback the handshake is done by the time ``connect()`` returns, so the relay skips
waiting for writability; the waiting path (remote upstreams) is forced here by making the
relay believe the connect is still in progress. These are the Python relay's paths
(``dataplane.pump``): every proxy here runs with the Python engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from tcpmesh.dataplane import pump
from tcpmesh.dataplane.accesslog import AccessLogRecord
from tcpmesh.dataplane.native import EngineMode
from tcpmesh.dataplane.proxy import Proxy
from tcpmesh.dataplane.splice import RelayMode, splice_available
from tests.integration.dataplane_helpers import (
    PROXY_HOST,
    V1_HOST,
    ByteEcho,
    LineEcho,
    cluster,
    cluster_name,
    free_port,
    listener,
    read_until_eof,
    route,
    run,
    snapshot,
    spliced,
    start_backend,
)

pytestmark = pytest.mark.integration

LOOPS = ["asyncio", "uvloop"]
PATHS = ["at_once", "later"]


@pytest.fixture
def connect_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, list[bool]]:
    """The path, and what ``_connected_now`` answered per connection (``later`` forces the
    waiting path)."""
    path = str(request.param)
    answers: list[bool] = []
    real = pump._connected_now

    def observed(sock: socket.socket) -> bool:
        answer = real(sock) if path == "at_once" else False
        answers.append(answer)
        return answer

    monkeypatch.setattr(pump, "_connected_now", observed)
    return path, answers


async def _wait_records(records: list[AccessLogRecord], n: int) -> None:
    for _ in range(500):
        if len(records) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(records)} of {n} access log records")


@pytest.mark.parametrize("connect_path", PATHS, indirect=True)
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("relay_path", ["copy", "splice"])
def test_relay_and_half_close_on_either_connect_path(
    loop: str, connect_path: tuple[str, list[bool]], relay_path: str
) -> None:
    path, answers = connect_path
    if relay_path == "splice" and not splice_available():
        pytest.skip("splice(2) is not available here")

    async def main() -> list[AccessLogRecord]:
        lines, lines_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        echo, echo_port = await start_backend(V1_HOST, ByteEcho)
        port, port2 = free_port(), free_port()
        snap = snapshot(
            [
                listener(port, route((cluster_name("v1"), 100))),
                listener(port2, route((cluster_name("v2"), 100))),
            ],
            [cluster("v1", (V1_HOST, lines_port)), cluster("v2", (V1_HOST, echo_port))],
        )
        records: list[AccessLogRecord] = []
        proxy = Proxy(
            access_log=records.append, relay=RelayMode(relay_path), engine=EngineMode.PYTHON
        )
        proxy.apply(snap)
        await proxy.settled()
        try:
            # Written before the upstream can have connected: held, then delivered.
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"early\n")
            writer.write_eof()
            assert await read_until_eof(reader) == b"one early\n"
            writer.close()

            # 4 MiB up, echoed back byte-exact, then FIN both ways.
            payload = bytes(range(256)) * (4 * 4096)
            reader, writer = await asyncio.open_connection(PROXY_HOST, port2)

            async def upload() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(upload())
            got = await read_until_eof(reader, timeout=30)
            await sender
            writer.close()
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            await _wait_records(records, 2)
            assert proxy.connection_count == 0
            assert proxy.spliced_connections == (2 if spliced(relay_path) else 0)
            return records
        finally:
            await proxy.close()
            lines.close()
            echo.close()

    records = run(main(), loop=loop)
    assert [r.flags for r in records] == [(), ()]
    assert [(r.bytes_received, r.bytes_sent) for r in records] == [(6, 10), (4 << 20, 4 << 20)]
    # On loopback the handshake is done within the connect call; "later" waited for it.
    assert answers == ([True, True] if path == "at_once" else [False, False])


@pytest.mark.parametrize("loop", LOOPS)
def test_loopback_connects_complete_within_the_connect_call(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[bool] = []
    real = pump._connected_now

    def observed(sock: socket.socket) -> bool:
        answers.append(real(sock))
        return answers[-1]

    monkeypatch.setattr(pump, "_connected_now", observed)

    async def main() -> None:
        backend, backend_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))],
            [cluster("v1", (V1_HOST, backend_port))],
        )
        proxy = Proxy(access_log=lambda _: None, engine=EngineMode.PYTHON)
        proxy.apply(snap)
        await proxy.settled()
        try:
            for i in range(20):
                reader, writer = await asyncio.open_connection(PROXY_HOST, port)
                writer.write(b"x%d\n" % i)
                writer.write_eof()
                assert await read_until_eof(reader) == b"one x%d\n" % i
                writer.close()
        finally:
            await proxy.close()
            backend.close()

    run(main(), loop=loop)
    # connect() may also return 0 outright (then nothing is asked); none was left waiting.
    assert answers and all(answers)


@pytest.mark.parametrize("via_libc", [True, False])
@pytest.mark.parametrize("loop", LOOPS)
def test_fin_to_the_client_with_and_without_libc_shutdown(
    loop: str, via_libc: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream half-closes first; the client gets the FIN and can still send."""
    calls: list[int] = []
    if via_libc:
        real = pump._libc_shutdown
        assert real is not None

        def counted(fd: int, how: int) -> int:
            calls.append(how)
            return real(fd, how)

        monkeypatch.setattr(pump, "_libc_shutdown", counted)
    else:
        monkeypatch.setattr(pump, "_libc_shutdown", None)

    received: list[bytes] = []

    async def first_word_then_fin() -> tuple[asyncio.Server, int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello\n")
            writer.write_eof()
            received.append(await read_until_eof(reader))
            writer.close()

        server = await asyncio.start_server(handle, V1_HOST, 0)
        return server, server.sockets[0].getsockname()[1]

    async def main() -> bytes:
        backend, backend_port = await first_word_then_fin()
        port = free_port()
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))],
            [cluster("v1", (V1_HOST, backend_port))],
        )
        records: list[AccessLogRecord] = []
        proxy = Proxy(access_log=records.append, engine=EngineMode.PYTHON)
        proxy.apply(snap)
        await proxy.settled()
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            assert await read_until_eof(reader) == b"hello\n"
            # Half-closed towards the client only: the other direction still flows.
            writer.write(b"after the fin\n")
            writer.write_eof()
            await _wait_records(records, 1)
            writer.close()
            assert records[0].flags == ()
            assert (records[0].bytes_received, records[0].bytes_sent) == (14, 6)
            for _ in range(500):
                if received:
                    break
                await asyncio.sleep(0.01)
            return b"".join(received)
        finally:
            await proxy.close()
            backend.close()

    assert run(main(), loop=loop) == b"after the fin\n"
    assert calls == ([socket.SHUT_WR] if via_libc else [])
