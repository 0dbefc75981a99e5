"""Rebalancing of open connections: the pure decision, and one worker's part of it."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from typing import Any

import pytest

from tcpmesh.control import Rebalance, RouteOrigin, TcpRoute, WeightedCluster
from tcpmesh.dataplane.counters import LocalCounters, SharedCounters
from tcpmesh.dataplane.rebalance import Plan, Rebalancer, closes_needed, idlest, schedule

V1, V2, V3 = "outbound|9000|v1|e", "outbound|9000|v2|e", "outbound|9000|v3|e"


def test_100_open_on_v1_at_80_20_close_20_not_100() -> None:
    assert closes_needed({V1: 100}, {V1: 80, V2: 20}, 1.0) == {V1: 20}


def test_a_rollback_closes_every_connection_of_a_version_that_lost_its_weight() -> None:
    assert closes_needed({V1: 50, V2: 50}, {V1: 100}, 1.0) == {V2: 50}


def test_a_split_already_at_its_weights_closes_nothing() -> None:
    assert closes_needed({V1: 80, V2: 20}, {V1: 80, V2: 20}, 1.0) == {}
    assert closes_needed({}, {V1: 80, V2: 20}, 1.0) == {}


def test_excess_rounds_to_the_nearest_connection() -> None:
    # 99 open: v1's share is 79.2, so v1 keeps 79 (the closest to 80%).
    assert closes_needed({V1: 99}, {V1: 80, V2: 20}, 1.0) == {V1: 20}
    assert closes_needed({V1: 97, V2: 3}, {V1: 80, V2: 20}, 1.0) == {V1: 17}


def test_only_the_versions_above_their_share_give_up_connections() -> None:
    assert closes_needed({V1: 60, V2: 30, V3: 10}, {V1: 40, V2: 40, V3: 20}, 1.0) == {V1: 20}


def test_max_share_caps_the_total_in_proportion_to_each_excess() -> None:
    assert closes_needed({V1: 100}, {V1: 80, V2: 20}, 0.1) == {V1: 10}
    capped = closes_needed({V1: 50, V2: 50, V3: 0}, {V3: 100}, 0.25)
    assert capped == {V1: 13, V2: 12} and sum(capped.values()) == 25


def test_schedule_puts_one_close_in_each_slot_of_the_window() -> None:
    entries = schedule({V1: 20}, 10.0, seed=7)
    assert len(entries) == 20
    for j, (at, cluster) in enumerate(entries):
        assert j * 0.5 <= at < (j + 1) * 0.5 and cluster == V1
    per_second = Counter(int(at) for at, _ in entries)
    assert max(per_second.values()) <= 20 / 3
    assert schedule({V1: 20}, 10.0, seed=7) == entries, "the same seed, the same schedule"
    assert schedule({V1: 20}, 10.0, seed=8) != entries


def test_schedule_interleaves_clusters_by_their_counts() -> None:
    order = [c for _, c in schedule({V1: 6, V2: 2}, 8.0, seed=1)]
    assert Counter(order) == {V1: 6, V2: 2}
    assert order.index(V2) < 4 and order[::-1].index(V2) < 4, order


def test_schedule_over_zero_closes_at_once() -> None:
    assert [at for at, _ in schedule({V1: 3}, 0.0, seed=1)] == [0.0, 0.0, 0.0]


def test_idlest_takes_the_least_recently_active_first() -> None:
    assert idlest([("a", 5.0), ("b", 1.0), ("c", 3.0)], 2, lambda c: c[1]) == [
        ("b", 1.0),
        ("c", 3.0),
    ]


# ---------------------------------------------------------------- the worker side


class _Conn:
    def __init__(self, idle_since: float) -> None:
        self.idle_since = idle_since
        self.aborted: str | None = None

    def abort(self, termination: str = "") -> None:
        self.aborted = termination


def _route(weights: dict[str, int], request: str, over: float = 0.2) -> TcpRoute:
    return TcpRoute(
        destinations=tuple(WeightedCluster(c, w) for c, w in weights.items()),
        origin=RouteOrigin("VirtualService", "default", "tcp-echo", 0),
        stat_prefix="tcp-echo.default",
        rebalance=Rebalance(request, over, 1.0),
    )


def _snapshot(route: TcpRoute):  # type: ignore[no-untyped-def]
    from tcpmesh.control import Listener, Snapshot

    return Snapshot(version="x", listeners=(Listener("0.0.0.0_31400", "0.0.0.0", 31400, (route,)),))


LISTENER = ("0.0.0.0", 31400)


def test_a_worker_closes_the_planned_number_idlest_first_once_per_request() -> None:
    async def run() -> list[_Conn]:
        rebalancer = Rebalancer(LocalCounters(), worker=0)
        before = _route({V1: 100}, "r0")
        conns = [_Conn(idle_since=float(i)) for i in range(10)]
        for conn in conns:
            rebalancer.opened(conn, LISTENER, before, V1)
        after = _route({V1: 80, V2: 20}, "r1")
        rebalancer.apply(_snapshot(after))
        await asyncio.sleep(0.4)
        rebalancer.apply(_snapshot(after))  # the same request again: nothing more
        await asyncio.sleep(0.4)
        for conn in conns:
            if conn.aborted:
                rebalancer.closed(conn)
        return conns

    conns = asyncio.run(run())
    assert [c.aborted for c in conns] == ["rebalance", "rebalance"] + [None] * 8


def _worker(fd: int, index: int, opened: dict[str, int], queues: tuple[Any, ...]) -> None:
    ready, go, out = queues

    async def run() -> int:
        store = SharedCounters.from_fd(fd)
        rebalancer = Rebalancer(store, worker=index)
        conns = []
        for cluster, count in opened.items():
            for _ in range(count):
                conns.append(_Conn(idle_since=0.0))
                rebalancer.opened(conns[-1], LISTENER, _route({V1: 100}, "r0"), cluster)
        ready.put(index)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        rebalancer.apply(_snapshot(_route({V1: 80, V2: 20}, "r1", over=0.5)))
        await asyncio.sleep(1.0)
        return sum(1 for c in conns if c.aborted)

    out.put((index, asyncio.run(run())))


def _closed_by_workers(opened: dict[int, dict[str, int]]) -> dict[int, int]:
    ctx = multiprocessing.get_context("fork")
    table = SharedCounters.create()
    queues = (ctx.Queue(), ctx.Event(), ctx.Queue())
    procs = [ctx.Process(target=_worker, args=(table.fd, i, n, queues)) for i, n in opened.items()]
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            queues[0].get(timeout=10)
        queues[1].set()
        return dict(queues[2].get(timeout=10) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        table.close()


def test_workers_close_the_fewest_needed_over_the_whole_proxy() -> None:
    closed = _closed_by_workers({0: {V1: 30}, 1: {V1: 50}, 2: {V1: 20}})
    assert sum(closed.values()) == 20, closed


def test_a_proxy_already_at_its_weights_closes_nothing_though_its_workers_are_not() -> None:
    """Worker 0 holds 50 on v1, worker 1 30 on v1 and 20 on v2: 80/20 over the proxy.
    Each worker deciding alone would close 10 (0's v1 above 80%, 1's v2 above 20%)."""
    closed = _closed_by_workers({0: {V1: 50}, 1: {V1: 30, V2: 20}})
    assert closed == {0: 0, 1: 0}


def test_a_plan_that_does_not_fit_its_record_is_refused() -> None:
    record = LocalCounters().record("r")
    plan = Plan(clusters=["x" * 5000])
    with pytest.raises(ValueError, match="at most"):
        plan.store(record)
