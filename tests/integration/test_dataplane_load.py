"""The data plane under load, as a real worker process (not timed, but bounded).

What the speed work touched: large transfers stay byte-exact in both directions, a slow
reader does not make the proxy's memory grow, thousands of connections are open at once
through one worker. (Half-close under churn: test_dataplane_workers.py.)
"""

from __future__ import annotations

import asyncio
import hashlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpmesh.control.snapshot import Cluster, Listener
from tests.integration.dataplane_helpers import (
    PROXY_HOST,
    V1_HOST,
    V2_HOST,
    BackendThread,
    LineEcho,
    cluster,
    cluster_name,
    free_port,
    gather_limited,
    listener,
    pipes_open,
    route,
    run,
    snapshot,
    spliced,
)
from tests.integration.test_dataplane_workers import (
    Process,
    metric_sum,
    reply,
    scrape,
    wait_until,
    write_snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

MiB = 1 << 20
BIG = 256 * MiB


def block(i: int) -> bytes:
    """The i-th MiB of a deterministic stream: numbered, so a lost or reordered block shows."""
    seed = hashlib.sha256(b"%d" % (i % 64)).digest()
    body = (seed * (MiB // len(seed)))[: MiB - 8]
    return i.to_bytes(8, "big") + body


def stream_digest(n_blocks: int) -> str:
    h = hashlib.sha256()
    for i in range(n_blocks):
        h.update(block(i))
    return h.hexdigest()


class HashSink(asyncio.Protocol):
    """Hashes what it receives; on the client's FIN answers ``<bytes> <sha256>``."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.write(b"%d %s\n" % (self.count, self.hash.hexdigest().encode()))
        self.transport.close()
        return True


class Source(asyncio.Protocol):
    """Sends ``blocks`` MiB of the deterministic stream, flow-controlled, then closes."""

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self.next = 0
        self.paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=4 * MiB)
        self._fill()

    def _fill(self) -> None:
        assert self.transport is not None
        while not self.paused and self.next < self.blocks:
            self.transport.write(block(self.next))
            self.next += 1
        if self.next >= self.blocks and not self.paused:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._fill()


@pytest.fixture
def backends() -> Iterator[BackendThread]:
    thread = BackendThread()
    try:
        yield thread
    finally:
        thread.stop()


def start_worker(
    tmp_path: Path, snap_listeners: list[Listener], clusters: list[Cluster]
) -> Process:
    snap_file = tmp_path / "snapshot.json"
    write_snapshot(snap_file, snapshot(snap_listeners, clusters))
    return Process(
        ["-m", "tcpmesh.dataplane.worker", "--snapshot-file", str(snap_file)],
        tmp_path,
        {"TCPMESH_METRICS_PORT": str(free_port()), "TCPMESH_LOG_LEVEL": "WARNING"},
    )


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_listening(port: int, timeout: float = 20.0) -> None:
    def up() -> bool:
        try:
            with socket.create_connection((PROXY_HOST, port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(up, timeout, f"the worker to listen on {port}")


def test_256_mib_each_way_byte_exact_through_a_worker(
    backends: BackendThread, tmp_path: Path, relay_path: str
) -> None:
    """256 MiB up (client → upstream) and 256 MiB down (upstream → client) at the same
    time, each checked with SHA-256 at the far end."""
    blocks = BIG // MiB
    sink = backends.start(V1_HOST, HashSink)
    source = backends.start(V2_HOST, lambda: Source(blocks))
    up_port, down_port = free_port(), free_port()
    proc = start_worker(
        tmp_path,
        [
            listener(up_port, route((cluster_name("v1"), 100))),
            listener(down_port, route((cluster_name("v2"), 100))),
        ],
        [cluster("v1", (V1_HOST, sink)), cluster("v2", (V2_HOST, source))],
    )
    expected = stream_digest(blocks)
    peak_pipes = [0]

    async def count_pipes(pid: int) -> None:
        while True:
            peak_pipes[0] = max(peak_pipes[0], pipes_open(pid))
            await asyncio.sleep(0.05)

    async def upload() -> bytes:
        reader, writer = await asyncio.open_connection(PROXY_HOST, up_port)
        try:
            for i in range(blocks):
                writer.write(block(i))
                await writer.drain()
            writer.write_eof()
            return await asyncio.wait_for(reader.readline(), 60)
        finally:
            writer.close()

    async def download() -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(PROXY_HOST, down_port)
        h, total = hashlib.sha256(), 0
        try:
            while chunk := await asyncio.wait_for(reader.read(MiB), 60):
                h.update(chunk)
                total += len(chunk)
        finally:
            writer.close()
        return total, h.hexdigest()

    async def both() -> tuple[bytes, tuple[int, str]]:
        sampler = asyncio.get_running_loop().create_task(count_pipes(proc.pid))
        try:
            return await asyncio.gather(upload(), download())
        finally:
            sampler.cancel()

    try:
        wait_listening(up_port)
        wait_listening(down_port)
        baseline = pipes_open(proc.pid)
        started = time.monotonic()
        answer, (got, digest) = run(both(), timeout=240, loop="uvloop")
        elapsed = time.monotonic() - started
        print(f"256 MiB each way in {elapsed:.1f}s ({2 * BIG / MiB / elapsed:.0f} MiB/s)")
        assert answer == b"%d %s\n" % (BIG, expected.encode())
        assert (got, digest) == (BIG, expected)
        # Spliced directions borrow pipes while their sink lags; copying uses none.
        assert (peak_pipes[0] > baseline) == (spliced(relay_path))
        assert proc.proc.poll() is None, proc.stderr()
    finally:
        proc.kill_all()


def test_slow_readers_do_not_grow_the_proxys_memory(
    backends: BackendThread, tmp_path: Path, relay_path: str
) -> None:
    """An upstream floods 128 MiB at a client that reads 256 KiB every 10 ms, and a client
    floods 128 MiB at an upstream that reads as slowly: the worker's RSS stays within a
    few MiB of where it started, because each direction pauses at its high-water mark."""
    blocks = 128

    class SlowSink(asyncio.Protocol):
        """Reads in short bursts: 10 ms reading, then 10 ms paused."""

        received = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.loop = asyncio.get_running_loop()
            self.toggle()

        def toggle(self) -> None:
            if self.transport.is_closing():
                return
            if self.transport.is_reading():
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()
            self.loop.call_later(0.01, self.toggle)

        def data_received(self, data: bytes) -> None:
            SlowSink.received += len(data)

        def eof_received(self) -> bool:
            assert self.transport is not None
            self.transport.close()
            return True

    source = backends.start(V1_HOST, lambda: Source(blocks))
    sink = backends.start(V2_HOST, SlowSink)
    down_port, up_port = free_port(), free_port()
    proc = start_worker(
        tmp_path,
        [
            listener(down_port, route((cluster_name("v1"), 100))),
            listener(up_port, route((cluster_name("v2"), 100))),
        ],
        [cluster("v1", (V1_HOST, source)), cluster("v2", (V2_HOST, sink))],
    )
    peak = [0]
    peak_pipes = [0]

    async def slow_download() -> int:
        reader, writer = await asyncio.open_connection(PROXY_HOST, down_port, limit=64 * 1024)
        total = 0
        try:
            while chunk := await asyncio.wait_for(reader.read(256 * 1024), 30):
                total += len(chunk)
                await asyncio.sleep(0.01)
        finally:
            writer.close()
        return total

    async def flood_upload() -> None:
        _, writer = await asyncio.open_connection(PROXY_HOST, up_port)
        try:
            for i in range(blocks):
                writer.write(block(i))
                await asyncio.wait_for(writer.drain(), 30)
            writer.write_eof()
        finally:
            writer.close()

    async def sample(pid: int) -> None:
        while True:
            peak[0] = max(peak[0], rss(pid))
            peak_pipes[0] = max(peak_pipes[0], pipes_open(pid))
            await asyncio.sleep(0.02)

    async def main() -> int:
        sampler = asyncio.get_running_loop().create_task(sample(proc.pid))
        try:
            got, _ = await asyncio.gather(slow_download(), flood_upload())
            return got
        finally:
            sampler.cancel()

    try:
        wait_listening(down_port)
        wait_listening(up_port)
        time.sleep(0.5)
        baseline = rss(proc.pid)
        pipes_before = pipes_open(proc.pid)
        got = run(main(), timeout=240)
        wait_until(lambda: blocks * MiB == SlowSink.received, 30, "the slow upstream to get all")
        assert got == blocks * MiB
        growth = peak[0] - baseline
        print(f"worker RSS {baseline / MiB:.1f} MiB, peak growth {growth / MiB:.1f} MiB")
        # High-water 256 KiB per direction plus one read chunk; allocator slack on top.
        assert growth < 16 * MiB, growth
        assert (peak_pipes[0] > pipes_before) == (spliced(relay_path))
        assert proc.proc.poll() is None, proc.stderr()
    finally:
        proc.kill_all()


def test_5000_concurrent_connections_through_one_worker(
    backends: BackendThread, tmp_path: Path
) -> None:
    """5,000 clients connect and stay connected; then each sends a line and gets its
    reply over its own open connection; the worker counts 5,000 closed connections."""
    n = 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # This process holds both ends outside the proxy: clients and the backend's sockets.
    need = 2 * n + 500
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"open-file limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    echo = backends.start(V1_HOST, lambda: LineEcho(b"one"))
    port = free_port()
    metrics = free_port()
    snap_file = tmp_path / "snapshot.json"
    write_snapshot(
        snap_file,
        snapshot(
            [listener(port, route((cluster_name("v1"), 100)))], [cluster("v1", (V1_HOST, echo))]
        ),
    )
    proc = Process(
        ["-m", "tcpmesh.dataplane.worker", "--snapshot-file", str(snap_file)],
        tmp_path,
        {"TCPMESH_METRICS_PORT": str(metrics), "TCPMESH_LOG_LEVEL": "WARNING"},
    )

    async def main() -> list[bytes]:
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

        async def connect(_: int) -> None:
            conns.append(await asyncio.wait_for(asyncio.open_connection(PROXY_HOST, port), 30))

        try:
            await gather_limited(n, 200, connect)
            # Every client is connected; give the worker time to connect every upstream.
            await asyncio.sleep(1.0)

            async def talk(i: int) -> bytes:
                reader, writer = conns[i]
                writer.write(b"c%d\n" % i)
                return await asyncio.wait_for(reader.readline(), 30)

            return await gather_limited(n, 500, talk)
        finally:
            for _, writer in conns:
                writer.close()

    try:
        wait_until(lambda: reply(port, b"up") == b"one up\n", 20, "the worker to answer")
        replies = run(main(), timeout=240)
        assert replies == [b"one c%d\n" % i for i in range(n)]
        wait_until(
            lambda: metric_sum(scrape(metrics), "istio_tcp_connections_closed_total") == n + 1,
            30,
            "every connection to be closed",
        )
        assert proc.proc.poll() is None, proc.stderr()
        assert "Traceback" not in proc.stderr(), proc.stderr()
    finally:
        proc.kill_all()
