"""The data plane as processes: ``python -m tcpmesh.dataplane`` and one uvloop worker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpmesh.control.snapshot import Snapshot
from tcpmesh.dataplane.accesslog import parse_line
from tests.integration.dataplane_helpers import (
    PROXY_HOST,
    V1_HOST,
    V2_HOST,
    BackendThread,
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
    write_credentials,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def backends() -> Iterator[BackendThread]:
    thread = BackendThread()
    try:
        yield thread
    finally:
        thread.stop()


def free_port_pair() -> int:
    """A port P with P+1 free as well (worker i serves metrics on P+i)."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind((PROXY_HOST, port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two adjacent free ports")


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(x) for x in text.split()}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def reply(port: int, line: bytes) -> bytes:
    try:
        return run(send_line(port, line, timeout=2), timeout=5)
    except OSError:
        return b""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


def answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def metric_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


class Process:
    """A child process whose stdout/stderr go to files; killed (with its children) at exit."""

    def __init__(self, args: list[str], tmp: Path, env: dict[str, str]) -> None:
        self.stdout_path = tmp / "stdout.log"
        self.stderr_path = tmp / "stderr.log"
        full_env = {**os.environ, **env}
        full_env.pop("TCPMESH_SUPERVISOR_PID", None)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *args], stdout=out, stderr=err, env=full_env
            )
        self.pid = self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill_all(self) -> None:
        kids = children(self.pid)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for kid in kids:
            if alive(kid):
                os.kill(kid, signal.SIGKILL)


def write_snapshot(path: Path, snap: Snapshot) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(snap.to_json())
    tmp.replace(path)


def test_supervisor_with_two_workers(backends: BackendThread, tmp_path: Path) -> None:
    p1 = backends.start(V1_HOST, lambda: LineEcho(b"one"))
    p2 = backends.start(V2_HOST, lambda: LineEcho(b"two"))
    port, metrics = free_port(), free_port_pair()
    clusters = [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))]
    snap_file = tmp_path / "snapshot.json"
    write_snapshot(
        snap_file, snapshot([listener(port, route((cluster_name("v1"), 100)))], clusters)
    )
    proc = Process(
        ["-m", "tcpmesh.dataplane", "--snapshot-file", str(snap_file)],
        tmp_path,
        {"TCPMESH_WORKERS": "2", "TCPMESH_METRICS_PORT": str(metrics)},
    )
    try:
        # A worker serves metrics once its listeners are set up.
        wait_until(lambda: answers(metrics) and answers(metrics + 1), 20, "both workers")
        wait_until(lambda: reply(port, b"up") == b"one up\n", 20, "the proxy to answer")
        workers = children(proc.pid)
        assert len(workers) == 2

        n = 200
        replies = run(gather_limited(n, 20, lambda i: send_line(port, b"m%d" % i)), timeout=60)
        assert replies == [b"one m%d\n" % i for i in range(n)]
        # Each worker has its own registry on port+index; the kernel spread the load.
        wait_until(
            lambda: (
                sum(
                    metric_sum(scrape(metrics + i), "istio_tcp_connections_closed_total")
                    for i in range(2)
                )
                >= n + 1
            ),
            10,
            "metrics of both workers",
        )
        per_worker = [
            metric_sum(scrape(metrics + i), "istio_tcp_connections_opened_total") for i in range(2)
        ]
        assert sum(per_worker) == n + 1 and min(per_worker) > 0, per_worker

        # SIGHUP: every worker re-reads the snapshot file.
        write_snapshot(
            snap_file, snapshot([listener(port, route((cluster_name("v2"), 100)))], clusters)
        )
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: all(reply(port, b"h%d" % i) == b"two h%d\n" % i for i in range(20)),
            10,
            "both workers to serve the new snapshot",
        )

        # Access log lines are flushed in batches; SIGKILL would lose an unflushed one.
        wait_until(lambda: len(proc.stdout().splitlines()) >= n + 21, 5, "the access log")

        # A dead worker is replaced.
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid),
            15,
            "a replacement worker",
        )
        wait_until(lambda: reply(port, b"again") == b"two again\n", 10, "service after restart")

        workers = children(proc.pid)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(15) == 0
        wait_until(lambda: not any(alive(w) for w in workers), 5, "workers to exit")
        lines = [parse_line(x) for x in proc.stdout().splitlines()]
        parsed = [x for x in lines if x is not None]
        assert len(parsed) >= n + 20
        assert all(x.flags == () for x in parsed)
    finally:
        proc.kill_all()


def test_uvloop_worker_survives_half_close_churn(backends: BackendThread, tmp_path: Path) -> None:
    """Thousands of half-closed connections, some reset right after their FIN, through one
    uvloop worker: every reply arrives, nothing crashes, every connection is logged."""
    p1 = backends.start(V1_HOST, lambda: LineEcho(b"one"))
    port, metrics = free_port(), free_port()
    snap_file = tmp_path / "snapshot.json"
    write_snapshot(
        snap_file,
        snapshot(
            [listener(port, route((cluster_name("v1"), 100)))], [cluster("v1", (V1_HOST, p1))]
        ),
    )
    proc = Process(
        ["-m", "tcpmesh.dataplane.worker", "--snapshot-file", str(snap_file)],
        tmp_path,
        {"TCPMESH_METRICS_PORT": str(metrics)},
    )
    n = 4000

    async def churn() -> tuple[int, int, float]:
        async def one(i: int) -> int:
            reader, writer = await asyncio.open_connection(PROXY_HOST, port)
            try:
                writer.write(b"c%d\n" % i)
                writer.write_eof()
                if i % 4 == 3:
                    writer.transport.abort()
                    return 0
                return 1 if await read_until_eof(reader, 10) == b"one c%d\n" % i else -1
            finally:
                writer.close()

        started = time.monotonic()
        results = await gather_limited(n, 32, one)
        return results.count(1), results.count(-1), time.monotonic() - started

    try:
        wait_until(lambda: reply(port, b"up") == b"one up\n", 20, "the worker to answer")
        assert "event loop: uvloop" in proc.stderr()
        good, bad, elapsed = run(churn(), timeout=180)
        print(f"half-close churn: {n} connections in {elapsed:.2f}s = {n / elapsed:.0f}/s")
        assert (good, bad) == (n - n // 4, 0)
        assert proc.proc.poll() is None, proc.stderr()
        wait_until(
            lambda: metric_sum(scrape(metrics), "istio_tcp_connections_closed_total") == n + 1,
            10,
            "every connection to be closed",
        )
        assert metric_sum(scrape(metrics), "istio_tcp_connections_opened_total") == n + 1
        wait_until(lambda: len(proc.stdout().splitlines()) == n + 1, 5, "the access log")
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(15) == 0
        err = proc.stderr()
        assert "double free" not in err and "Traceback" not in err, err
    finally:
        proc.kill_all()


def status_code(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/ready", timeout=5) as r:
            code: int = r.status
            return code
    except OSError:
        return 0


def test_dataplane_follows_the_api_and_outlives_it(backends: BackendThread, tmp_path: Path) -> None:
    p1 = backends.start(V1_HOST, lambda: LineEcho(b"one"))
    p2 = backends.start(V2_HOST, lambda: LineEcho(b"two"))
    port, status = free_port(), free_port()
    clusters = [cluster("v1", (V1_HOST, p1)), cluster("v2", (V2_HOST, p2))]
    to_v1 = snapshot([listener(port, route((cluster_name("v1"), 100)))], clusters)
    to_v2 = snapshot([listener(port, route((cluster_name("v2"), 100)))], clusters)
    source = SnapshotSource("secret")
    source.current = to_v1.to_json()
    url = asyncio.run_coroutine_threadsafe(source.start(), backends.loop).result(10)
    state = tmp_path / "state"
    state.mkdir()
    env = {
        "POD_NAMESPACE": "istio-system",
        "POD_NAME": "gw-1",
        "POD_IP": "127.0.0.1",
        "TCPMESH_STATE_DIR": str(state),
        "TCPMESH_STATUS_PORT": str(status),
    }
    proc = Process(["-m", "tcpmesh.dataplane", "--workers", "2"], tmp_path, env)
    try:
        # No API credentials yet: no configuration, so the status port stays closed.
        wait_until(lambda: proc.stderr().count("event loop") == 2, 20, "the workers")
        time.sleep(0.5)
        assert status_code(status) == 0
        write_credentials(state, url, "secret")
        wait_until(lambda: reply(port, b"a") == b"one a\n", 20, "the first snapshot")
        wait_until(lambda: status_code(status) == 200, 10, "readiness")
        asyncio.run_coroutine_threadsafe(source.push(to_v2.to_json()), backends.loop)
        wait_until(
            lambda: all(reply(port, b"b%d" % i) == b"two b%d\n" % i for i in range(10)),
            10,
            "the pushed snapshot in both workers",
        )
        asyncio.run_coroutine_threadsafe(source.stop(), backends.loop).result(10)
        time.sleep(1.0)
        assert [reply(port, b"c%d" % i) for i in range(5)] == [b"two c%d\n" % i for i in range(5)]
        assert status_code(status) == 200
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(15) == 0
    finally:
        proc.kill_all()
        asyncio.run_coroutine_threadsafe(source.stop(), backends.loop).result(10)
