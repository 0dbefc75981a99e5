"""The ingress gateway of a running mesh under volume: 1 GiB each way, and 10,000
connections held open at once (bounded in count and time; not timed assertions).

Both go through ``tcpmesh up`` exactly as users run it: the seed's tcp-echo v1 behind
the gateway on port 31400.

- 1 GiB each way, on both data planes: the client streams 1 GiB of newline-terminated
  lines up while it reads the echo (``one `` + each line, so a little more than 1 GiB)
  down; SHA-256 of what came back equals SHA-256 of what tcp-echo must have sent.
- 10,000 connections, built-in plane: every client connects, then each sends a line and
  reads its reply over its own still-open connection; the gateway's workers' memory per
  held connection is printed and bounded. Envoy is not run here: one Envoy process holds
  two descriptors per connection, 20,000 at 10,000 connections, and this machine's hard
  open-file limit is 20,000 (``ulimit -Hn``); the built-in gateway spreads the
  connections over two worker processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration.dataplane_helpers import gather_limited, run
from tests.integration.harness import SAMPLES, MeshHarness, first_word

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

ADDRESS = "127.0.0.1"
PORT = 31400
GiB = 1 << 30
LINE = 64 * 1024  # bytes per line, newline included
HELD = 10_000


def _start(harness: MeshHarness) -> None:
    """Up, the seed's tcp-echo and its all-to-v1 route, answered through the gateway."""
    harness.up()
    harness.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
    harness.wait_for("tcp-echo v1", lambda: harness.deployments_ready("tcp-echo-v1"), 60.0)
    harness.apply(SAMPLES / "tcp-echo-all-v1.yaml")
    harness.wait_for("routes to v1", lambda: _answers(), 30.0)


def _answers() -> bool:
    try:
        return first_word(ADDRESS, PORT) == "one"
    except OSError:
        return False


@pytest.fixture(params=["python", "envoy"])
def any_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeshHarness]:
    dataplane: str = request.param
    if dataplane == "envoy" and (missing := missing_envoy_support()) is not None:
        pytest.skip(f"Envoy data plane: {missing}")
    harness = MeshHarness(tmp_path / "state", ADDRESS, workers=2, dataplane=dataplane)
    try:
        _start(harness)
        yield harness
    finally:
        harness.down()


def line(i: int) -> bytes:
    seed = hashlib.sha256(b"%d" % i).hexdigest().encode()  # 64 printable bytes, no newline
    return (seed * (LINE // len(seed)))[: LINE - 1] + b"\n"


def test_1_gib_each_way_sha256_verified_through_the_gateway(any_mesh: MeshHarness) -> None:
    lines = GiB // LINE
    expected = hashlib.sha256()
    for i in range(lines):
        expected.update(b"one " + line(i))

    async def transfer() -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(ADDRESS, PORT, limit=4 * LINE)

        async def upload() -> None:
            for i in range(lines):
                writer.write(line(i))
                await writer.drain()
            writer.write_eof()

        async def download() -> tuple[int, str]:
            digest, total = hashlib.sha256(), 0
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 60):
                digest.update(chunk)
                total += len(chunk)
            return total, digest.hexdigest()

        try:
            _, result = await asyncio.gather(upload(), download())
            return result
        finally:
            writer.close()

    started = time.monotonic()
    total, digest = run(transfer(), timeout=600, loop="uvloop")
    took = time.monotonic() - started
    print(f"{any_mesh.dataplane}: 1 GiB up, {total / GiB:.3f} GiB down in {took:.1f}s")
    assert total == lines * (LINE + 4)
    assert digest == expected.hexdigest()


def _gateway_workers(mesh: MeshHarness) -> list[int]:
    """The pids of the gateway supervisor's worker processes."""
    [pid_file] = (mesh.state_dir / "pods" / "istio-system").glob("*.pid")
    supervisor = int(next(iter(json.loads(pid_file.read_text()).values()))["pid"])
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(c) for c in children]


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                total += int(row.split()[1]) * 1024
    return total


def test_10000_connections_held_through_the_gateway(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = HELD + 500  # this process holds the client ends only
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"open-file limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    mesh = MeshHarness(tmp_path / "state", ADDRESS, workers=2, dataplane="python")
    try:
        _start(mesh)
        workers = _gateway_workers(mesh)
        assert len(workers) == 2
        baseline = _rss(workers)
        peak = [baseline]

        async def main() -> list[bytes]:
            conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

            async def connect(_: int) -> None:
                conns.append(await asyncio.wait_for(asyncio.open_connection(ADDRESS, PORT), 60))

            try:
                await gather_limited(HELD, 200, connect)
                await asyncio.sleep(2.0)  # every upstream connected meanwhile
                peak[0] = _rss(workers)

                async def talk(i: int) -> bytes:
                    reader, writer = conns[i]
                    writer.write(b"c%d\n" % i)
                    return await asyncio.wait_for(reader.readline(), 60)

                replies = await gather_limited(HELD, 500, talk)
                peak[0] = max(peak[0], _rss(workers))
                return replies
            finally:
                for _, writer in conns:
                    writer.close()

        replies = run(main(), timeout=480, loop="uvloop")
        per_connection = (peak[0] - baseline) / HELD
        print(
            f"10,000 held: gateway workers {baseline / 2**20:.1f} -> {peak[0] / 2**20:.1f} MiB, "
            f"{per_connection / 1024:.1f} KiB per connection"
        )
        assert replies == [b"one c%d\n" % i for i in range(HELD)]
        # Bounded: two sockets, a relay object and its buffers per connection.
        assert per_connection < 64 * 1024, per_connection
    finally:
        mesh.down()
