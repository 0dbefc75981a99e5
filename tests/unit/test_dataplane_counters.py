"""Counters shared by worker processes: one circuit breaker and one outlier detector per cluster.

Envoy keeps ``ResourceManager`` counts and the outlier detector per cluster for all worker
threads (``source/common/upstream/resource_manager_impl.h``,
``source/common/upstream/outlier_detection_impl.cc`` ``DetectorImpl``: consecutive errors of
every thread are posted to one detector). These tests run real processes on one table.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from multiprocessing.connection import Connection

from tcpmesh.control import Cluster, Endpoint, OutlierDetection
from tcpmesh.dataplane.balancer import LoadBalancer
from tcpmesh.dataplane.counters import LocalCounters, SharedCounters

BAD = Endpoint("127.0.0.9", 9)
GOOD = Endpoint("127.0.0.10", 9000)
LIMITED = Cluster("outbound|9000||a.ns.svc.cluster.local", "a", 9000, max_connections=1)
OUTLIER = Cluster(
    "outbound|9000||b.ns.svc.cluster.local",
    "b",
    9000,
    outlier_detection=OutlierDetection(consecutive_errors=5, max_ejection_percent=100),
    endpoints=(BAD, GOOD),
)
WORKERS = 4
ROUNDS = 300


def _breaker_worker(fd: int, out: Connection) -> None:
    """Take the one slot when free, check nobody else holds it, give it back."""
    counters = SharedCounters.from_fd(fd)
    witness = counters.cluster("witness")
    balancer = LoadBalancer(random.Random(os.getpid()), store=counters)
    admitted = violations = 0
    for _ in range(ROUNDS):
        if not balancer.try_start(LIMITED):
            continue
        admitted += 1
        with witness.locked():
            witness.open = witness.open + 1
            inside = witness.open
        violations += inside != 1
        time.sleep(0.0002)
        with witness.locked():
            witness.open = witness.open - 1
        balancer.connection_finished(LIMITED.name)
    out.send((admitted, violations))


def _failing_worker(fd: int, out: Connection) -> None:
    counters = SharedCounters.from_fd(fd)
    balancer = LoadBalancer(random.Random(), store=counters)
    ejected = sum(balancer.connect_failed(OUTLIER, BAD) for _ in range(5))
    out.send((ejected, balancer.is_ejected(OUTLIER.name, BAD)))


def _run(target: object, counters: SharedCounters) -> list[tuple[int, int]]:
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe(duplex=False) for _ in range(WORKERS)]
    procs = [ctx.Process(target=target, args=(counters.fd, w)) for _, w in pipes]  # type: ignore[arg-type]
    for proc in procs:
        proc.start()
    try:
        results = [r.recv() for r, _ in pipes]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)
    return results


def test_max_connections_one_admits_one_connection_across_four_processes() -> None:
    counters = SharedCounters.create()
    try:
        results = _run(_breaker_worker, counters)
        assert sum(v for _, v in results) == 0, results
        assert sum(a for a, _ in results) > 0
        assert counters.cluster(LIMITED.name).open == 0
    finally:
        counters.close()


def test_consecutive_failures_from_four_processes_eject_once() -> None:
    """Twenty failures in four processes: one ejection, seen by every process."""
    counters = SharedCounters.create()
    try:
        results = _run(_failing_worker, counters)
        assert sum(e for e, _ in results) == 1, results
        assert all(seen for _, seen in results)
        balancer = LoadBalancer(random.Random(), store=counters)
        assert balancer.pick(OUTLIER) == GOOD
    finally:
        counters.close()


def test_failures_spread_over_workers_add_up() -> None:
    """3 failures in one worker and 2 in another are the 5 consecutive failures that eject."""
    counters = SharedCounters.create()
    try:
        first = LoadBalancer(random.Random(), store=counters)
        second = LoadBalancer(random.Random(), store=SharedCounters.from_fd(os.dup(counters.fd)))
        assert not any(first.connect_failed(OUTLIER, BAD) for _ in range(3))
        assert not second.connect_failed(OUTLIER, BAD)
        assert second.connect_failed(OUTLIER, BAD)
        assert first.is_ejected(OUTLIER.name, BAD)
    finally:
        counters.close()


def test_a_success_in_another_worker_resets_the_count() -> None:
    counters = SharedCounters.create()
    try:
        first = LoadBalancer(random.Random(), store=counters)
        second = LoadBalancer(random.Random(), store=SharedCounters.from_fd(os.dup(counters.fd)))
        for _ in range(4):
            first.connect_failed(OUTLIER, BAD)
        second.connect_succeeded(OUTLIER, BAD)
        assert not first.connect_failed(OUTLIER, BAD)
        assert not first.is_ejected(OUTLIER.name, BAD)
    finally:
        counters.close()


def test_least_request_load_is_shared() -> None:
    """A connection open in one worker makes another worker prefer the idle endpoint."""
    two = Cluster("outbound|9000||c.ns.svc.cluster.local", "c", 9000, endpoints=(BAD, GOOD))
    counters = SharedCounters.create()
    try:
        first = LoadBalancer(random.Random(1), store=counters)
        second = LoadBalancer(random.Random(2), store=SharedCounters.from_fd(os.dup(counters.fd)))
        first.connect_succeeded(two, BAD)
        assert all(second.pick(two) == GOOD for _ in range(20))
        first.connection_closed(two.name, BAD)
        assert {second.pick(two) for _ in range(200)} == {BAD, GOOD}
    finally:
        counters.close()


def test_the_table_has_no_name_so_nothing_is_left_behind() -> None:
    counters = SharedCounters.create()
    try:
        assert os.fstat(counters.fd).st_nlink == 0
    finally:
        counters.close()


def test_local_counters_keep_the_same_rules() -> None:
    balancer = LoadBalancer(random.Random(), store=LocalCounters())
    assert balancer.try_start(LIMITED)
    assert not balancer.try_start(LIMITED)
    balancer.connection_finished(LIMITED.name)
    assert balancer.try_start(LIMITED)


def test_connection_ended_frees_the_breaker_slot_and_the_endpoint_load_at_once() -> None:
    """One closing connection: the cluster's open count and the endpoint's active count
    both drop (shared table), and a connect that never succeeded drops only the first."""
    counters = SharedCounters.create()
    try:
        balancer = LoadBalancer(random.Random(), store=counters)
        other = LoadBalancer(random.Random(), store=SharedCounters.from_fd(os.dup(counters.fd)))
        assert balancer.try_start(LIMITED)
        balancer.connect_succeeded(LIMITED, GOOD)
        assert not other.try_start(LIMITED)
        assert other.active(LIMITED.name, GOOD) == 1
        balancer.connection_ended(LIMITED.name, GOOD)
        assert other.active(LIMITED.name, GOOD) == 0
        assert other.try_start(LIMITED)
        other.connection_ended(LIMITED.name, None)
        assert balancer.try_start(LIMITED)
        assert balancer.active(LIMITED.name, GOOD) == 0
    finally:
        counters.close()
