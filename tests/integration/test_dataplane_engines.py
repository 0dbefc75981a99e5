"""Behaviour that both engines (the Python relay and the C engine, dataplane.native) must
share and that the relay-path tests do not reach: a connect that completes only after a
SYN retry, a client that resets, and the engine actually taking the connections."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from tcpmesh.control.snapshot import TcpKeepalive
from tcpmesh.dataplane.accesslog import AccessLogRecord
from tcpmesh.dataplane.native import EngineMode
from tcpmesh.dataplane.proxy import Proxy
from tests.integration.dataplane_helpers import (
    PROXY_HOST,
    V1_HOST,
    LineEcho,
    cluster,
    cluster_name,
    free_port,
    listener,
    read_until_eof,
    route,
    run,
    snapshot,
    start_backend,
)

pytestmark = pytest.mark.integration


async def _proxy(port: int, upstream: tuple[str, int], **kw: object) -> tuple[Proxy, list[object]]:
    records: list[AccessLogRecord] = []
    proxy = Proxy(access_log=records.append)
    proxy.apply(
        snapshot(
            [listener(port, route((cluster_name("v1"), 100)))],
            [cluster("v1", upstream, **kw)],  # type: ignore[arg-type]
        )
    )
    await proxy.settled()
    return proxy, records  # type: ignore[return-value]


async def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_a_connect_answered_after_a_syn_retry_relays(engine: str) -> None:
    """The upstream's accept queue is full, so its kernel drops the proxy's SYN; once the
    queue is drained the retried SYN is answered (about 1 s later): the connect completed
    outside the connect call, and the client's early bytes were held until then."""

    async def main() -> tuple[bytes, float, list[object]]:
        blocker = socket.socket()
        blocker.bind((V1_HOST, 0))
        blocker.listen(0)
        blocker.setblocking(False)
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(blocker.getsockname())
            fillers.append(s)
        await asyncio.sleep(0.2)
        port = free_port()
        proxy, records = await _proxy(port, blocker.getsockname(), connect_timeout=10.0)
        server = None
        try:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"late\n")
            writer.write_eof()
            await asyncio.sleep(0.3)
            # Serving now accepts the fillers first, then the proxy's retried SYN.
            server = await asyncio.get_running_loop().create_server(
                lambda: LineEcho(b"one"), sock=blocker
            )
            reply = await read_until_eof(reader, 10)
            waited = time.monotonic() - started
            writer.close()
            await _until(lambda: len(records) == 1)
            return reply, waited, records
        finally:
            await proxy.close()
            for s in fillers:
                s.close()
            if server is not None:
                server.close()
            else:
                blocker.close()

    reply, waited, records = run(main())
    assert reply == b"one late\n"
    assert waited >= 0.3
    assert [r.flags for r in records] == [()]  # type: ignore[attr-defined]


def test_a_client_reset_ends_the_upstream_and_is_logged_once(engine: str) -> None:
    """A client that resets (SO_LINGER 0) after an exchange: the proxy closes the
    upstream too, logs the connection once, and holds nothing for it afterwards."""
    lost = asyncio.Event()

    class Watched(LineEcho):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.set()

    async def main() -> tuple[list[object], bool]:
        backend, backend_port = await start_backend(V1_HOST, lambda: Watched(b"one"))
        port = free_port()
        proxy, records = await _proxy(port, (V1_HOST, backend_port))
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"hi\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"one hi\n"
            # Which code holds the connection: the C engine only on the native engine.
            held = proxy.native is not None and proxy.native.engine.open == 1
            client = writer.get_extra_info("socket")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            await asyncio.wait_for(lost.wait(), 5)
            await _until(lambda: len(records) == 1 and proxy.connection_count == 0)
            if proxy.native is not None:
                assert proxy.native.engine.open == 0
                assert not proxy.native.owners
            return records, held
        finally:
            await proxy.close()
            backend.close()

    records, held = run(main())
    assert held == (engine == EngineMode.NATIVE)
    record = records[0]
    assert (record.bytes_received, record.bytes_sent) == (3, 7)  # type: ignore[attr-defined]


def test_a_keepalive_cluster_sets_keepalive_on_the_upstream_socket(engine: str) -> None:
    """The cluster's TCP keepalive reaches the proxy's upstream socket on both engines:
    ``ss -o`` shows its keepalive timer, counting down from the configured idle time."""

    async def main() -> str:
        backend, backend_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        proxy, _ = await _proxy(
            port, (V1_HOST, backend_port), keepalive=TcpKeepalive(time=600.0, interval=7.0)
        )
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"ka\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"one ka\n"
            ss = await asyncio.create_subprocess_exec(
                "ss",
                "-tno",
                "state",
                "established",
                "dst",
                f"{V1_HOST}:{backend_port}",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await ss.communicate()
            writer.close()
            return out.decode()
        finally:
            await proxy.close()
            backend.close()

    shown = run(main())
    assert "timer:(keepalive," in shown, shown
    # The idle time left is 600 s less the moment since connect (ss prints e.g. 9min59sec).
    assert "9min" in shown or "10min" in shown, shown
