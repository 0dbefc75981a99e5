"""The built-in proxy with four worker processes behaves as one proxy per cluster.

Envoy shares a cluster's circuit breaker (``ResourceManagerImpl``, atomics used by every
worker thread) and its outlier detector (``DetectorImpl``: every thread's consecutive
errors are posted to the one detector on the main thread) across threads. Istio maps
``connectionPool.tcp.maxConnections`` to ``circuit_breakers.thresholds.max_connections``
and ``consecutive5xxErrors`` to ``consecutive_5xx`` (``applyConnectionPool`` and
``applyOutlierDetection`` in istio/istio ``pilot/pkg/networking/core/cluster_traffic_policy.go``);
for TCP a failed connect is a local-origin failure that Envoy counts as a 503 when
origins are not split (``DetectorHostMonitorImpl::putResult``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import http.client
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcpmesh.control import OutlierDetection, Snapshot
from tests.integration.dataplane_helpers import (
    PROXY_HOST,
    V1_HOST,
    V2_HOST,
    BackendThread,
    LineEcho,
    cluster,
    cluster_name,
    free_port,
    listener,
    route,
    run,
    send_line,
    snapshot,
)
from tests.integration.test_dataplane_workers import (
    Process,
    answers,
    metric_sum,
    scrape,
    wait_until,
    write_snapshot,
)

pytestmark = pytest.mark.integration
WORKERS = 4


@pytest.fixture
def backends() -> Iterator[BackendThread]:
    thread = BackendThread()
    try:
        yield thread
    finally:
        thread.stop()


class Counting(LineEcho):
    accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.accepted += 1
        super().connection_made(transport)


def _start(tmp_path: Path, make: Callable[[int], Snapshot]) -> tuple[Process, int, int]:
    """The proxy with four workers; (process, listener port, first metrics port).

    Free ports are only free until someone binds them (other suites share the machine),
    so a start whose metrics port was taken in between is retried with new ports."""
    for attempt in range(3):
        port, metrics = _ports()
        snap_file = tmp_path / f"snapshot-{attempt}.json"
        write_snapshot(snap_file, make(port))
        run_dir = tmp_path / f"run-{attempt}"
        run_dir.mkdir()
        proc = Process(
            ["-m", "tcpmesh.dataplane", "--snapshot-file", str(snap_file)],
            run_dir,
            {"TCPMESH_WORKERS": str(WORKERS), "TCPMESH_METRICS_PORT": str(metrics)},
        )
        try:
            wait_until(functools.partial(_all_answer, metrics), 60, "four workers")
            return proc, port, metrics
        except AssertionError:
            proc.kill_all()
            if "cannot serve metrics" not in proc.stderr():
                text = proc.stderr()[-3000:]
                raise AssertionError(f"the workers did not start:\n{text}") from None
    raise AssertionError("three starts lost their metrics ports to other processes")


def _all_answer(metrics: int) -> bool:
    try:
        return all(answers(metrics + i) for i in range(WORKERS))
    except http.client.HTTPException:
        return False  # a stranger sharing the port (SO_REUSEPORT) answered


def free_ports(n: int) -> int:
    """A port P with P..P+n-1 free (worker i serves its metrics on P+i)."""
    for _ in range(500):
        with socket.socket() as first:
            first.bind((PROXY_HOST, 0))
            port = first.getsockname()[1]
        if port + n > 65535:
            continue
        try:
            for i in range(n):
                with socket.socket() as s:
                    s.bind((PROXY_HOST, port + i))
        except OSError:
            continue
        return int(port)
    raise AssertionError("no free run of ports")


def _ports() -> tuple[int, int]:
    """The listener's port and the first of the workers' metrics ports, disjoint."""
    metrics = free_ports(WORKERS)
    while True:
        port = free_port()
        if not metrics <= port < metrics + WORKERS:
            return port, metrics


def _line(port: int, text: bytes) -> bytes:
    """The reply line, or b"" when the proxy closed (or reset) the connection instead."""
    try:
        return run(send_line(port, text, timeout=5), timeout=10)
    except OSError:
        return b""


def _scrape(port: int) -> str:
    """A worker's metrics. Other suites on this machine bind ports with SO_REUSEPORT, so
    a connection may land on a stranger sharing the port: ask again until ours answers."""
    for _ in range(20):
        try:
            text = scrape(port)
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
            continue
        if "istio_tcp_connections_opened_total" in text:
            return text
    raise AssertionError(f"no tcpmesh metrics on port {port}")


def _opened_per_worker(metrics: int) -> list[float]:
    return [
        metric_sum(_scrape(metrics + i), "istio_tcp_connections_opened_total")
        for i in range(WORKERS)
    ]


async def _hold(port: int, n: int) -> list[bytes]:
    """Open n connections at once, send a line on each, read what comes back."""
    conns = [await asyncio.open_connection(PROXY_HOST, port) for _ in range(n)]
    for _, writer in conns:
        writer.write(b"hi\n")

    async def first_line(reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.readline(), 5)
        except (TimeoutError, ConnectionResetError):
            return b""

    replies = await asyncio.gather(*(first_line(r) for r, _ in conns))
    for _, writer in conns:
        writer.close()
    return list(replies)


def test_max_connections_one_admits_one_connection_across_four_workers(
    backends: BackendThread, tmp_path: Path, engine: str
) -> None:
    """16 concurrent connections on 4 workers: one is relayed, 15 close with UO.

    The connections land on at least two workers (checked from the workers' own
    metrics; all 16 on one of four workers has probability 4 * 4**-16 < 1e-9), so a
    per-worker breaker would have let two or more through."""
    Counting.accepted = 0
    backend = backends.start(V1_HOST, lambda: Counting(b"one"))
    limited = dataclasses.replace(cluster("v1", (V1_HOST, backend)), max_connections=1)
    proc, port, metrics = _start(
        tmp_path, lambda p: snapshot([listener(p, route((cluster_name("v1"), 100)))], [limited])
    )
    try:
        replies = run(_hold(port, 16), timeout=30)
        assert replies.count(b"one hi\n") == 1, replies
        assert replies.count(b"") == 15, replies
        assert Counting.accepted == 1
        wait_until(lambda: sum(_opened_per_worker(metrics)) >= 16, 10, "the workers' metrics")
        per_worker = _opened_per_worker(metrics)
        assert sum(1 for n in per_worker if n > 0) >= 2, per_worker
        # The slot is free again once the admitted connection closed.
        wait_until(
            lambda: _line(port, b"again") == b"one again\n",
            10,
            "the breaker to close",
        )
    finally:
        proc.kill_all()


def test_five_connect_failures_eject_the_endpoint_once_for_all_workers(
    backends: BackendThread, tmp_path: Path, engine: str
) -> None:
    """60 connections, one at a time, to a cluster of a dead and a live endpoint.

    With one detector for the proxy, exactly consecutive5xxErrors = 5 connections fail
    (UF) and the rest reach the live endpoint; with a detector per worker up to 4 x 5
    would. (The dead endpoint is drawn at least 5 times among the first 60 draws with
    probability 1 - P[Binomial(60, 1/2) < 5] > 1 - 1e-12.)"""
    live = backends.start(V2_HOST, lambda: LineEcho(b"two"))
    with socket.socket() as s:
        s.bind((V1_HOST, 0))
        dead = s.getsockname()[1]  # closed again: nothing listens there
    both = dataclasses.replace(
        cluster("v1", (V1_HOST, dead), (V2_HOST, live)),
        outlier_detection=OutlierDetection(
            consecutive_errors=5, base_ejection_time=300.0, max_ejection_percent=100
        ),
    )
    proc, port, metrics = _start(
        tmp_path, lambda p: snapshot([listener(p, route((cluster_name("v1"), 100)))], [both])
    )
    try:
        replies = [_line(port, b"m%d" % i) for i in range(60)]
        failed = [i for i, r in enumerate(replies) if r == b""]
        assert len(failed) == 5, replies
        assert all(r in (b"", b"two m%d\n" % i) for i, r in enumerate(replies))
        assert all(r != b"" for r in replies[failed[-1] + 1 :])
        per_worker = _opened_per_worker(metrics)
        assert sum(1 for n in per_worker if n > 0) >= 2, per_worker
    finally:
        proc.kill_all()
