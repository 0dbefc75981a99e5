"""The built-in proxy with real sockets on 127.0.0.0/8, in this process.

Backends are small asyncio servers started by each test; the proxy logs into a list so
the tests read response flags directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tcpmesh.control.snapshot import RouteOrigin, Snapshot, TcpKeepalive, WeightedPick
from tcpmesh.dataplane.accesslog import AccessLogRecord
from tcpmesh.dataplane.feed import SnapshotFeed
from tcpmesh.dataplane.proxy import Proxy, _apply_keepalive
from tests.integration.dataplane_helpers import (
    PROXY_HOST,
    SERVICE,
    V1_HOST,
    V2_HOST,
    ByteEcho,
    CountThenReply,
    LineEcho,
    SnapshotSource,
    cluster,
    cluster_name,
    free_port,
    gather_limited,
    listener,
    read_until_eof,
    route,
    run,
    send_line,
    snapshot,
    spliced,
    start_backend,
    write_credentials,
)

pytestmark = pytest.mark.integration

LOOPS = ["asyncio", "uvloop"]


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def assert_relay_path(proxy: Proxy, relay_path: str, connections: int) -> None:
    """Every finished connection took the path the test runs on (conftest.relay_path)."""
    assert proxy.spliced_connections == (connections if spliced(relay_path) else 0)


async def started_proxy(snap: Snapshot, **kw: object) -> tuple[Proxy, list[AccessLogRecord]]:
    records: list[AccessLogRecord] = []
    proxy = Proxy(access_log=records.append, **kw)  # type: ignore[arg-type]
    proxy.apply(snap)
    await proxy.settled()
    return proxy, records


@pytest.mark.parametrize("loop", LOOPS)
def test_single_route_relays_every_line(loop: str) -> None:
    async def main() -> None:
        v1, v1_port = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))],
            [cluster("v1", (V1_HOST, v1_port))],
        )
        proxy, records = await started_proxy(snap)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            replies = []
            for word in (b"hello", b"world", b"again"):
                writer.write(word + b"\n")
                replies.append(await asyncio.wait_for(reader.readline(), 5))
            writer.close()
            assert replies == [b"one hello\n", b"one world\n", b"one again\n"]
            await wait_for(lambda: len(records) == 1)
            rec = records[0]
            assert rec.flags == ()
            assert (rec.bytes_received, rec.bytes_sent) == (18, 30)
            assert rec.upstream_cluster == cluster_name("v1")
            assert rec.upstream_host == f"{V1_HOST}:{v1_port}"
            assert rec.local_address == f"{PROXY_HOST}:{port}"
            assert (
                proxy.stats.value(
                    "istio_tcp_connections_closed_total",
                    destination_service=SERVICE,
                    destination_version="v1",
                    response_flags="-",
                )
                == 1
            )
            assert proxy.stats.value("istio_tcp_received_bytes_total") == 18
            assert proxy.stats.value("istio_tcp_sent_bytes_total") == 30
        finally:
            await proxy.close()
            v1.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("pick", ["smooth", "random"])
def test_weighted_split_80_20_over_2000_connections(pick: str) -> None:
    n = 2000

    async def main() -> Counter[bytes]:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        v2, p2 = await start_backend(V2_HOST, lambda: LineEcho(b"two"))
        port = free_port()
        snap = snapshot(
            [
                listener(
                    port,
                    route(
                        (cluster_name("v1"), 80),
                        (cluster_name("v2"), 20),
                        weighted_pick=WeightedPick(pick),
                    ),
                )
            ],
            [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))],
        )
        proxy, records = await started_proxy(snap)
        try:
            started = time.monotonic()
            replies = await gather_limited(n, 50, lambda i: send_line(port, b"x%d" % i))
            elapsed = time.monotonic() - started
            print(f"{n} connections in {elapsed:.2f}s = {n / elapsed:.0f}/s")
            counts = Counter(r.split(b" ", 1)[0] for r in replies)
            await wait_for(lambda: len(records) == n)
            for version, word in (("v1", b"one"), ("v2", b"two")):
                opened = proxy.stats.value(
                    "istio_tcp_connections_opened_total", destination_version=version
                )
                assert opened == counts[word]
            by_cluster = Counter(r.upstream_cluster for r in records)
            assert by_cluster[cluster_name("v2")] == counts[b"two"]
            return counts
        finally:
            await proxy.close()
            v1.close()
            v2.close()

    counts = run(main(), timeout=120)
    print(f"split ({pick}):", dict(counts))
    assert counts[b"one"] + counts[b"two"] == n
    if pick == "smooth":
        # One worker, smooth weighted round robin: every 100 connections split 80/20.
        assert counts[b"two"] == n // 5, counts
    else:
        result = binomtest(counts[b"two"], n, 0.2, alternative="two-sided")
        assert result.pvalue > 1e-6, (counts, result.pvalue)


@pytest.mark.parametrize(
    ("flag", "clusters"),
    [
        ("NC", []),  # the route names a cluster that does not exist
        ("UH", [cluster("v1")]),  # the cluster exists but has no endpoints
    ],
)
def test_nc_and_uh_close_the_client_at_once(flag: str, clusters: list[object], engine: str) -> None:
    async def main() -> None:
        port = free_port()
        snap = snapshot([listener(port, route((cluster_name("v1"), 100)))], clusters)  # type: ignore[arg-type]
        proxy, records = await started_proxy(snap)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"hello\n")
            started = time.monotonic()
            assert await read_until_eof(reader, 2) == b""
            assert time.monotonic() - started < 1.0
            writer.close()
            await wait_for(lambda: len(records) == 1)
            assert records[0].flags == (flag,)
            assert records[0].upstream_cluster == cluster_name("v1")
            assert (
                proxy.stats.value(
                    "istio_tcp_connections_closed_total",
                    response_flags=flag,
                    destination_version="v1",
                )
                == 1
            )
        finally:
            await proxy.close()

    run(main())


def test_refused_upstream_connect_is_uf(engine: str) -> None:
    async def main() -> None:
        port = free_port()
        dead = free_port(V1_HOST)
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))], [cluster("v1", (V1_HOST, dead))]
        )
        proxy, records = await started_proxy(snap)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"hello\n")
            assert await read_until_eof(reader) == b""
            writer.close()
            await wait_for(lambda: len(records) == 1)
            assert records[0].flags == ("UF",)
            assert records[0].upstream_host == f"{V1_HOST}:{dead}"
            assert proxy.connection_count == 0
        finally:
            await proxy.close()

    run(main())


def test_upstream_connect_timeout_is_uf(engine: str) -> None:
    async def main() -> None:
        # A listener whose accept queue is full drops SYNs, so connects hang.
        blocker = socket.socket()
        blocker.bind((V1_HOST, 0))
        blocker.listen(0)
        fillers = []
        try:
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(blocker.getsockname())
                fillers.append(s)
            await asyncio.sleep(0.2)
            port = free_port()
            snap = snapshot(
                [listener(port, route((cluster_name("v1"), 100)))],
                [cluster("v1", blocker.getsockname(), connect_timeout=0.3)],
            )
            proxy, records = await started_proxy(snap)
            try:
                reader, writer = await asyncio.open_connection(PROXY_HOST, port)
                started = time.monotonic()
                assert await read_until_eof(reader, 5) == b""
                waited = time.monotonic() - started
                writer.close()
                await wait_for(lambda: len(records) == 1)
                assert records[0].flags == ("UF",)
                assert 0.25 <= waited < 2.0
                # Filed on the cluster, as Envoy does (cluster.<name>.upstream_cx_connect_timeout).
                timeouts = proxy.stats.value(
                    "tcpmesh_cluster_events_total",
                    cluster_name=cluster_name("v1"),
                    event="upstream_cx_connect_timeout",
                )
                assert timeouts == 1
                route_events = proxy.stats.value("tcpmesh_tcp_proxy_events_total")
                assert route_events == 0
            finally:
                await proxy.close()
        finally:
            for s in fillers:
                s.close()
            blocker.close()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_gets_its_reply_like_date_sleep_nc(loop: str, relay_path: str) -> None:
    """``(date; sleep 1) | nc HOST PORT``: a line, a pause, then FIN; the reply still comes."""

    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        counter, p2 = await start_backend(V2_HOST, CountThenReply)
        port, port2 = free_port(), free_port()
        snap = snapshot(
            [
                listener(port, route((cluster_name("v1"), 100))),
                listener(port2, route((cluster_name("v2"), 100))),
            ],
            [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))],
        )
        proxy, records = await started_proxy(snap)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            writer.write(b"Mon Nov 12 23:38:45 UTC 2018\n")
            await asyncio.sleep(0.3)
            writer.write_eof()
            assert await read_until_eof(reader) == b"one Mon Nov 12 23:38:45 UTC 2018\n"
            writer.close()
            # The reply is only written after the client's FIN reached the upstream.
            reader, writer = await asyncio.open_connection(PROXY_HOST, port2)
            writer.write(b"z" * 100_000)
            writer.write_eof()
            assert await read_until_eof(reader) == b"100000\n"
            writer.close()
            await wait_for(lambda: len(records) == 2)
            assert [r.flags for r in records] == [(), ()]
            assert proxy.connection_count == 0
            assert_relay_path(proxy, relay_path, 2)
        finally:
            await proxy.close()
            v1.close()
            counter.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_64_mib_each_way_byte_exact(loop: str, relay_path: str) -> None:
    size = 64 * 1024 * 1024

    async def main() -> None:
        echo, p1 = await start_backend(V1_HOST, ByteEcho)
        port = free_port()
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))], [cluster("v1", (V1_HOST, p1))]
        )
        proxy, records = await started_proxy(snap)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            rng = random.Random(42)
            block = rng.randbytes(1 << 20)
            sent = hashlib.sha256()

            async def upload() -> None:
                for i in range(size // len(block)):
                    chunk = block[i:] + block[:i]
                    sent.update(chunk)
                    writer.write(chunk)
                    await writer.drain()
                writer.write_eof()

            async def download() -> tuple[int, str]:
                got = hashlib.sha256()
                total = 0
                while True:
                    data = await reader.read(1 << 20)
                    if not data:
                        return total, got.hexdigest()
                    total += len(data)
                    got.update(data)

            started = time.monotonic()
            _, (total, digest) = await asyncio.gather(upload(), download())
            elapsed = time.monotonic() - started
            rate = 2 * size / elapsed / 2**20
            print(f"{loop}: 64 MiB each way in {elapsed:.2f}s ({rate:.0f} MiB/s)")
            writer.close()
            assert total == size
            assert digest == sent.hexdigest()
            await wait_for(lambda: len(records) == 1)
            assert (records[0].bytes_received, records[0].bytes_sent) == (size, size)
            assert_relay_path(proxy, relay_path, 1)
        finally:
            await proxy.close()
            echo.close()

    run(main(), timeout=240, loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_back_pressure_keeps_proxy_buffers_bounded(loop: str, relay_path: str) -> None:
    """A client that does not read (and an upstream that does not read) cannot make the
    proxy buffer what the other side sends."""
    size = 32 * 1024 * 1024
    high_water = 64 * 1024
    bound = 2 * (high_water + 256 * 1024)

    class Flood(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(b"f" * size)  # type: ignore[attr-defined]
            transport.close()

    class Sink(asyncio.Protocol):
        """Reads nothing for a while, then everything."""

        received = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.pause_reading()  # type: ignore[attr-defined]
            asyncio.get_running_loop().call_later(1.0, transport.resume_reading)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            Sink.received += len(data)

    async def main() -> None:
        flood, p1 = await start_backend(V1_HOST, Flood)
        sink, p2 = await start_backend(V2_HOST, Sink)
        port, port2 = free_port(), free_port()
        snap = snapshot(
            [
                listener(port, route((cluster_name("v1"), 100))),
                listener(port2, route((cluster_name("v2"), 100))),
            ],
            [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))],
        )
        proxy, records = await started_proxy(snap, high_water=high_water)
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, proxy.buffered_bytes())
                await asyncio.sleep(0.005)

        sampler = asyncio.get_running_loop().create_task(sample())
        try:
            # Download direction: the client reads nothing for a second.
            reader, writer = await asyncio.open_connection(PROXY_HOST, port, limit=1 << 16)
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            await asyncio.sleep(1.0)
            writer.transport.resume_reading()  # type: ignore[attr-defined]
            total = 0
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
                total += len(chunk)
            writer.close()
            assert total == size
            # Upload direction: the upstream reads nothing for a second.
            reader, writer = await asyncio.open_connection(PROXY_HOST, port2)
            payload = b"u" * (1 << 20)
            for _ in range(size // len(payload)):
                writer.write(payload)
                await writer.drain()
            writer.write_eof()
            await read_until_eof(reader, 10)
            writer.close()
            await wait_for(lambda: Sink.received == size, 10)
            await wait_for(lambda: len(records) == 2)
            assert_relay_path(proxy, relay_path, 2)
        finally:
            sampler.cancel()
            await proxy.close()
            flood.close()
            sink.close()
        print(f"{loop}: peak proxy buffer {peak} bytes while moving {size} bytes each way")
        assert 0 < peak <= bound

    run(main(), timeout=120, loop=loop)


def test_new_snapshot_leaves_open_connections_on_their_upstream(relay_path: str) -> None:
    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        v2, p2 = await start_backend(V2_HOST, lambda: LineEcho(b"two"))
        port = free_port()
        clusters = [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))]
        proxy, records = await started_proxy(
            snapshot([listener(port, route((cluster_name("v1"), 100)))], clusters)
        )
        conns = []
        try:
            for i in range(40):
                reader, writer = await asyncio.open_connection(PROXY_HOST, port)
                writer.write(b"a%d\n" % i)
                assert await asyncio.wait_for(reader.readline(), 5) == b"one a%d\n" % i
                conns.append((reader, writer))
            proxy.apply(snapshot([listener(port, route((cluster_name("v2"), 100)))], clusters))
            await proxy.settled()
            for i, (reader, writer) in enumerate(conns):
                writer.write(b"b%d\n" % i)
                assert await asyncio.wait_for(reader.readline(), 5) == b"one b%d\n" % i
            for i in range(20):
                assert await send_line(port, b"c%d" % i) == b"two c%d\n" % i
            await wait_for(lambda: proxy.connection_count == 40)
            assert len(records) == 20
            assert all(r.upstream_cluster == cluster_name("v2") for r in records)
            for _, writer in conns:
                writer.close()
            await wait_for(lambda: len(records) == 60)
            old = [r for r in records if r.upstream_cluster == cluster_name("v1")]
            assert len(old) == 40 and all(r.flags == () for r in old)
            assert_relay_path(proxy, relay_path, 60)
        finally:
            for _, writer in conns:
                writer.close()
            await proxy.close()
            v1.close()
            v2.close()

    run(main())


def test_removed_listener_stops_accepting_but_open_connections_continue(relay_path: str) -> None:
    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        keep, gone = free_port(), free_port()
        clusters = [cluster("v1", (V1_HOST, p1))]
        r = route((cluster_name("v1"), 100))
        proxy, records = await started_proxy(
            snapshot([listener(keep, r), listener(gone, r)], clusters)
        )
        try:
            kept_before = proxy.bound_address(PROXY_HOST, keep)
            reader, writer = await asyncio.open_connection(PROXY_HOST, gone)
            writer.write(b"first\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"one first\n"
            other = RouteOrigin("VirtualService", "default", "other", 0)
            changed = route((cluster_name("v1"), 100), origin=other)
            proxy.apply(snapshot([listener(keep, changed)], clusters))
            await proxy.settled()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(PROXY_HOST, gone)
            writer.write(b"second\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"one second\n"
            writer.close()
            assert proxy.bound_address(PROXY_HOST, keep) == kept_before
            assert await send_line(keep, b"still") == b"one still\n"
            await wait_for(lambda: len(records) == 2)
            assert_relay_path(proxy, relay_path, 2)
        finally:
            await proxy.close()
            v1.close()

    run(main())


def test_bind_failure_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        blocker = socket.socket()
        blocker.bind((PROXY_HOST, 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))], [cluster("v1", (V1_HOST, p1))]
        )
        proxy, _ = await started_proxy(snap, bind_retry=(0.1, 0.2))
        try:
            assert proxy.bound_address(PROXY_HOST, port) is None
            blocker.close()
            await wait_for(lambda: proxy.bound_address(PROXY_HOST, port) is not None, 5)
            assert await send_line(port, b"bound") == b"one bound\n"
        finally:
            blocker.close()
            await proxy.close()
            v1.close()

    with caplog.at_level("WARNING", logger="tcpmesh.dataplane"):
        run(main())
    assert any("cannot listen on" in m for m in caplog.messages)


def test_idle_timeout_and_max_connection_duration(relay_path: str) -> None:
    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        idle_port, dur_port = free_port(), free_port()
        clusters = [cluster("v1", (V1_HOST, p1))]
        snap = snapshot(
            [
                listener(idle_port, route((cluster_name("v1"), 100), idle_timeout=0.4)),
                listener(
                    dur_port,
                    route((cluster_name("v1"), 100), max_connection_duration=0.6),
                ),
            ],
            clusters,
        )
        proxy, records = await started_proxy(snap)
        try:
            # Traffic every 0.1s keeps an idle timer from firing but not a duration limit.
            async def chatty(port: int, rounds: int) -> tuple[int, float]:
                reader, writer = await asyncio.open_connection(PROXY_HOST, port)
                started = time.monotonic()
                answered = 0
                try:
                    for i in range(rounds):
                        writer.write(b"p%d\n" % i)
                        if await asyncio.wait_for(reader.readline(), 5):
                            answered += 1
                        else:
                            break
                        await asyncio.sleep(0.1)
                    else:
                        await asyncio.sleep(0.5)
                        assert await read_until_eof(reader, 5) == b""
                except ConnectionResetError:
                    pass
                finally:
                    writer.close()
                return answered, time.monotonic() - started

            answered, elapsed = await chatty(idle_port, 8)
            assert answered == 8 and elapsed >= 1.0
            answered, elapsed = await chatty(dur_port, 20)
            assert 3 <= answered < 20 and elapsed < 1.5
            await wait_for(lambda: len(records) == 2)
            by_port = {r.local_address: r for r in records}
            idle = by_port[f"{PROXY_HOST}:{idle_port}"]
            assert (idle.flags, idle.termination) == ((), "idle_timeout")
            dur = by_port[f"{PROXY_HOST}:{dur_port}"]
            assert (dur.flags, dur.termination) == (("DT",), "max_connection_duration")
            assert_relay_path(proxy, relay_path, 2)
        finally:
            await proxy.close()
            v1.close()

    run(main())


def test_tcp_keepalive_options_on_upstream_socket() -> None:
    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, V1_HOST, p1
            )
            _apply_keepalive(transport, TcpKeepalive(probes=4, time=30.0, interval=7.0))
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
            transport.close()
        finally:
            v1.close()

    run(main())


def test_keepalive_cluster_still_relays(engine: str) -> None:
    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        port = free_port()
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))],
            [cluster("v1", (V1_HOST, p1), keepalive=TcpKeepalive(time=60.0))],
        )
        proxy, _ = await started_proxy(snap)
        try:
            assert await send_line(port, b"ka") == b"one ka\n"
        finally:
            await proxy.close()
            v1.close()

    run(main())


def test_feed_keeps_the_last_snapshot_and_follows_a_restarted_api(tmp_path: Path) -> None:
    async def main() -> None:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        v2, p2 = await start_backend(V2_HOST, lambda: LineEcho(b"two"))
        port = free_port()
        clusters = [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))]
        snap_v1 = snapshot([listener(port, route((cluster_name("v1"), 100)))], clusters)
        snap_v2 = snapshot([listener(port, route((cluster_name("v2"), 100)))], clusters)

        source = SnapshotSource("first-token")
        url = await source.start()
        write_credentials(tmp_path, url, "first-token")
        source.current = snap_v1.to_json()
        feed = SnapshotFeed(
            None,
            None,
            "istio-system/gw-1",
            state_dir=tmp_path,
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        proxy = Proxy(access_log=lambda r: None)
        applied: list[str] = []

        async def follow() -> None:
            async for snap in feed:
                applied.append(snap.version)
                proxy.apply(snap)

        task = asyncio.get_running_loop().create_task(follow())
        second: SnapshotSource | None = None
        try:
            await wait_for(lambda: applied == [snap_v1.version])
            await proxy.settled()
            assert await send_line(port, b"a") == b"one a\n"

            await source.stop()
            await wait_for(lambda: feed.failures >= 3, 10)
            assert proxy.snapshot == snap_v1
            assert await send_line(port, b"b") == b"one b\n"

            # The API comes back elsewhere, with another token, already at v2.
            second = SnapshotSource("second-token")
            url2 = await second.start()
            second.current = snap_v2.to_json()
            write_credentials(tmp_path, url2, "second-token")
            await wait_for(lambda: applied == [snap_v1.version, snap_v2.version], 10)
            await proxy.settled()
            assert await send_line(port, b"c") == b"two c\n"

            # A later push, and a broken line that must not cost the last good snapshot.
            await second.push("{broken")
            await second.push(snap_v1.to_json())
            await wait_for(lambda: len(applied) == 3, 10)
            assert applied[-1] == snap_v1.version
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await proxy.close()
            await source.stop()
            if second is not None:
                await second.stop()
            v1.close()
            v2.close()

    run(main(), timeout=60)


def test_smooth_pick_keeps_its_place_across_snapshots_that_keep_the_route() -> None:
    """90/10: the 6th connection of a worker goes to v2. A snapshot in between that
    changes something else must not restart the sequence (which would give 10 x v1)."""

    async def main() -> list[bytes]:
        v1, p1 = await start_backend(V1_HOST, lambda: LineEcho(b"one"))
        v2, p2 = await start_backend(V2_HOST, lambda: LineEcho(b"two"))
        port, other = free_port(), free_port()
        clusters = [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))]
        split = route((cluster_name("v1"), 90), (cluster_name("v2"), 10))
        proxy, _ = await started_proxy(snapshot([listener(port, split)], clusters))
        try:
            first = [await send_line(port, b"a%d" % i) for i in range(5)]
            proxy.apply(
                snapshot(
                    [listener(port, split), listener(other, route((cluster_name("v1"), 100)))],
                    clusters,
                )
            )
            await proxy.settled()
            return first + [await send_line(port, b"b%d" % i) for i in range(5)]
        finally:
            await proxy.close()
            v1.close()
            v2.close()

    words = [r.split(b" ", 1)[0] for r in run(main())]
    assert words == [b"one"] * 5 + [b"two"] + [b"one"] * 4


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_queued_for_a_half_closed_upstream_are_delivered_before_close(
    loop: str, relay_path: str
) -> None:
    """The upstream half-closes first and reads slowly; the client uploads 8 MiB and then
    sends FIN. Both sides have sent FIN while bytes are still queued for the upstream:
    the proxy must deliver them before it closes the upstream socket."""
    size = 8 * 1024 * 1024
    got: list[int] = []

    class ReadOnlySink(asyncio.Protocol):
        """Half-closes at once, then reads in bursts: 5 ms on, 20 ms off."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.count = 0
            self.t: asyncio.Transport = transport  # type: ignore[assignment]
            self.t.write_eof()
            self.t.pause_reading()
            asyncio.get_running_loop().call_later(0.02, self.toggle)

        def toggle(self) -> None:
            if self.t.is_closing():
                return
            reading = self.t.is_reading()
            if reading:
                self.t.pause_reading()
            else:
                self.t.resume_reading()
            asyncio.get_running_loop().call_later(0.02 if reading else 0.005, self.toggle)

        def data_received(self, data: bytes) -> None:
            self.count += len(data)

        def eof_received(self) -> bool:
            got.append(self.count)
            return False

    async def main() -> None:
        sink, p1 = await start_backend(V1_HOST, ReadOnlySink)
        port = free_port()
        snap = snapshot(
            [listener(port, route((cluster_name("v1"), 100)))], [cluster("v1", (V1_HOST, p1))]
        )
        proxy, records = await started_proxy(snap)
        try:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            assert await read_until_eof(reader, 5) == b""  # the upstream's FIN came through
            writer.write(b"x" * size)
            writer.write_eof()
            await asyncio.wait_for(writer.drain(), 10)
            await wait_for(lambda: bool(got), 10)
            writer.close()
            await wait_for(lambda: len(records) == 1)
            assert got == [size]
            assert records[0].bytes_received == size
            assert_relay_path(proxy, relay_path, 1)
        finally:
            await proxy.close()
            sink.close()

    run(main(), loop=loop)
