"""Weight-aware rebalancing of open connections: the built-in data plane's half.

A TCP connection keeps the version it was routed to, so a weight change (or a rollback)
moves only new connections; long-lived clients stay where they were. A route whose
Snapshot carries a ``Rebalance`` with a request id this proxy has not acted on closes
the *fewest* open connections that bring each destination's share of the route's open
connections to its weight, spread over ``over`` seconds, never more than ``max_share``
of them; the clients reconnect and are routed by weight like any new connection. A
route without one is never touched (the default stays hitless).

The decision is pure and sans-IO (``closes_needed``, ``schedule``, ``idlest``); the
``Rebalancer`` around it keeps this worker's connections per route and cluster, and
does the proxy-wide bookkeeping in the supervisor's shared table
(``dataplane.counters``), because the proxy's workers are processes that each hold
some of the connections:

- *Counts.* Each worker keeps, per (route, cluster), the number of its open
  connections in a counter slot of its own (named ``rebalance|<worker>|<route>|
  <cluster>``); only that worker writes it, so a connection's open and close cost a
  plain store, no lock. The route's shared record lists which workers and clusters
  have slots (added under the record's lock, once per worker and cluster).
- *The plan.* The first worker to see a new request id locks the route's record, sums
  every worker's counts, computes how many connections each cluster must lose and
  writes the plan: request id, start time (CLOCK_MONOTONIC, one clock for every
  process), the per-cluster counts and a random seed. Workers seeing the same id later
  read that plan instead of making another, so the count is computed once, over the
  whole proxy.
- *The closes.* Every worker derives the same schedule from the plan (the seed makes
  the jitter identical). At each scheduled moment, a worker holding a connection of
  that entry's cluster claims a close in the record if fewer closes of that cluster
  were claimed (``done``) than its entries due by now, and closes its connection idle the longest.
  So two workers firing the same entry close once, an entry a worker fires late is
  still served, and no moment ever has more closes behind it than the schedule
  allows. Workers whose idlest connection has been idle longer fire a few
  milliseconds earlier, so the proxy-wide idlest connection usually goes first. An
  entry no worker can serve (its connections already left) is skipped: a rebalance
  never closes more than planned.

A proxy restarted mid-rebalance has lost its connections and its table, so there is
nothing to continue. A worker restarted alone joins the plan for the entries still to
come.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tcpmesh.control import Snapshot, TcpRoute
from tcpmesh.dataplane.counters import ClusterCounters, CounterStore, SharedRecord
from tcpmesh.dataplane.pump import Termination

log = logging.getLogger("tcpmesh.dataplane")

TERMINATION = Termination.REBALANCE
# A worker whose idlest connection has been idle for a long time fires its entries up
# to this much earlier than one whose connections are all busy.
IDLE_HEAD_START = 0.05

C = TypeVar("C")

# ---------------------------------------------------------------- the decision (pure)


def closes_needed(
    open_by_cluster: Mapping[str, int], weights: Mapping[str, int], max_share: float
) -> dict[str, int]:
    """How many open connections each cluster must lose: the fewest that bring every
    destination's share of the route's open connections to its weight.

    Counted against the route's total N, because the closed clients come back and are
    routed by weight: a cluster holding more than its share ``w/W * N`` gives up the
    difference (to the nearest connection), one holding less gives up none, and a
    cluster that is no longer a destination (weight 0: a rollback) gives up all. So 100
    open on v1 at 80/20 close 20, not 100. At most ``floor(max_share * N)`` close in
    all; when that cap binds, each cluster gives up in proportion to its excess.
    """
    total = sum(open_by_cluster.values())
    weight_sum = sum(w for w in weights.values() if w > 0)
    if total <= 0 or weight_sum <= 0:
        return {}
    excess = {}
    for cluster, count in sorted(open_by_cluster.items()):
        extra = count - total * max(0, weights.get(cluster, 0)) / weight_sum
        closes = min(count, math.floor(extra + 0.5)) if extra > 0 else 0
        if closes > 0:
            excess[cluster] = closes
    cap = math.floor(max_share * total + 1e-9)
    return excess if sum(excess.values()) <= cap else _scaled(excess, cap)


def _scaled(counts: Mapping[str, int], cap: int) -> dict[str, int]:
    """``counts`` scaled to sum to ``cap``, by largest remainders (ties by name)."""
    total = sum(counts.values())
    exact = {k: v * cap / total for k, v in counts.items()}
    scaled = {k: math.floor(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: (scaled[k] - exact[k], k))
    for cluster in by_remainder[: cap - sum(scaled.values())]:
        scaled[cluster] += 1
    return {k: v for k, v in scaled.items() if v > 0}


def schedule(closes: Mapping[str, int], over: float, seed: int) -> list[tuple[float, str]]:
    """When each close happens (seconds after the start) and from which cluster.

    Stratified jitter: the window is cut into K equal slots and close ``j`` falls at a
    random point of slot ``j``, so closes never bunch (at most ``K/over + 1`` in any
    second) yet are not regular enough for clients to reconnect in lockstep. Clusters
    take turns in proportion to their counts (smooth weighted order), so each
    cluster's closes spread over the whole window. The same ``seed`` gives the same
    schedule in every worker.
    """
    order = _smooth_order(closes)
    rng = random.Random(seed)
    slot = over / len(order) if order else 0.0
    return [((j + rng.random()) * slot, cluster) for j, cluster in enumerate(order)]


def _smooth_order(counts: Mapping[str, int]) -> list[str]:
    total = sum(counts.values())
    current = dict.fromkeys(sorted(counts), 0)
    order = []
    for _ in range(total):
        for cluster in current:
            current[cluster] += counts[cluster]
        chosen = max(current, key=lambda c: current[c])
        current[chosen] -= total
        order.append(chosen)
    return order


def idlest(candidates: Iterable[C], count: int, idle_since: Callable[[C], float]) -> list[C]:
    """The ``count`` candidates idle the longest: the least recent activity first."""
    return heapq.nsmallest(count, candidates, key=idle_since)


# ---------------------------------------------------------------- the shared plan


@dataclass
class Plan:
    """A route's shared record: who has counts, and the rebalance in progress."""

    workers: list[int] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    request: str = ""
    started: float = 0.0
    over: float = 0.0
    seed: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # closes claimed, per cluster

    @classmethod
    def load(cls, record: SharedRecord) -> Plan:
        data = record.load()
        return cls(**json.loads(data)) if data else cls()

    def store(self, record: SharedRecord) -> None:
        record.store(json.dumps(self.__dict__, separators=(",", ":")).encode())


_Slot = tuple[set["Movable"], ClusterCounters]


class Movable(Protocol):
    """What the rebalancer needs of a connection (``dataplane.proxy``'s connections)."""

    @property
    def idle_since(self) -> float: ...

    def abort(self, termination: str = "") -> None: ...


def route_key(listener: tuple[str, int], route: TcpRoute) -> str:
    """A route's name across Snapshots: its listener address and its origin rule."""
    return f"{listener[0]}:{listener[1]}|{route.origin}"


# ---------------------------------------------------------------- this worker


class Rebalancer:
    """This worker's connections per route and cluster, and its part of each rebalance."""

    def __init__(self, store: CounterStore, worker: int | None = None) -> None:
        self._store = store
        self._worker = worker if worker is not None else _worker_from_env()
        self._pools: dict[str, dict[str, set[Movable]]] = {}
        # Per connection: its (route, cluster) pool and count slot, so a close looks up
        # nothing. ``_slots`` finds them by (route object, cluster) for the current state.
        self._where: dict[Movable, _Slot] = {}
        self._slots: dict[tuple[int, str], _Slot] = {}
        self._tallies: dict[tuple[str, str], ClusterCounters] = {}
        self._seen: dict[str, str] = {}
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}
        self._due_at: dict[str, dict[str, list[float]]] = {}
        self.closed_by_rebalance = 0

    # -- connections (called by the proxy) ---------------------------------------------

    def opened(
        self, conn: Movable, listener: tuple[str, int], route: TcpRoute, cluster: str
    ) -> None:
        slot = self._slots.get((id(route), cluster))
        if slot is None:
            slot = self._slot(listener, route, cluster)
        pool = slot[0]
        pool.add(conn)
        self._where[conn] = slot
        # The pool is this worker's count: one store, no read-modify-write.
        slot[1].open = len(pool)

    def closed(self, conn: Movable) -> None:
        slot = self._where.pop(conn, None)
        if slot is None:
            return
        pool = slot[0]
        pool.discard(conn)
        slot[1].open = len(pool)

    def _slot(self, listener: tuple[str, int], route: TcpRoute, cluster: str) -> _Slot:
        key = route_key(listener, route)
        pool = self._pools.setdefault(key, {}).setdefault(cluster, set())
        tally = self._tallies.get((key, cluster)) or self._register(key, cluster)
        # Keyed by identity: the routes live as long as the state that holds them.
        slot = self._slots[(id(route), cluster)] = (pool, tally)
        return slot

    def _register(self, key: str, cluster: str) -> ClusterCounters:
        """This worker's count slot for (route, cluster), listed in the route's record."""
        tally = self._store.cluster(f"rebalance|{self._worker}|{key}|{cluster}")
        record = self._store.record(f"rebalance|{key}")
        with record.locked():
            plan = Plan.load(record)
            if self._worker not in plan.workers or cluster not in plan.clusters:
                plan.workers = sorted({*plan.workers, self._worker})
                plan.clusters = sorted({*plan.clusters, cluster})
                _store_or_log(plan, record, key)
        self._tallies[(key, cluster)] = tally
        return tally

    # -- snapshots ----------------------------------------------------------------------

    def apply(self, snapshot: Snapshot) -> None:
        """Act on each route's rebalance request that is new to this worker."""
        self._slots = {}
        for listener in snapshot.listeners:
            for route in listener.routes:
                if route.rebalance is None:
                    continue
                key = route_key((listener.address, listener.port), route)
                if self._seen.get(key) != route.rebalance.request:
                    self._seen[key] = route.rebalance.request
                    self._begin(key, route)

    def _begin(self, key: str, route: TcpRoute) -> None:
        assert route.rebalance is not None
        record = self._store.record(f"rebalance|{key}")
        with record.locked():
            plan = Plan.load(record)
            if plan.request != route.rebalance.request:
                self._make_plan(plan, key, route)
                _store_or_log(plan, record, key)
        for handle in self._timers.pop(key, []):
            handle.cancel()
        for pool in self._pools.get(key, {}).values():
            for conn in pool:
                conn.idle_since  # noqa: B018 -- a reading now tells idle from busy later
        self._timers[key] = self._arm(key, plan)
        if plan.closes:
            log.info("rebalance %s %s: closing %s", key, plan.request, plan.closes)

    def _make_plan(self, plan: Plan, key: str, route: TcpRoute) -> None:
        """The proxy-wide plan: every worker's counts summed (under the record's lock)."""
        assert route.rebalance is not None
        counts: dict[str, int] = {}
        for cluster in plan.clusters:
            for worker in plan.workers:
                slot = self._store.cluster(f"rebalance|{worker}|{key}|{cluster}")
                counts[cluster] = counts.get(cluster, 0) + max(0, slot.open)
        weights = {d.cluster_name: d.weight for d in route.destinations}
        plan.request = route.rebalance.request
        plan.started = time.monotonic()
        plan.over = route.rebalance.over
        plan.seed = random.getrandbits(63)
        plan.closes = closes_needed(counts, weights, route.rebalance.max_share)
        plan.done = {}

    def _arm(self, key: str, plan: Plan) -> list[asyncio.TimerHandle]:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        handles = []
        entries = schedule(plan.closes, plan.over, plan.seed)
        due_at: dict[str, list[float]] = {}
        for at, cluster in entries:
            due_at.setdefault(cluster, []).append(plan.started + at)
            delay = plan.started + at - now
            if delay >= 0:
                handles.append(loop.call_later(delay, self._due, key, plan.request, cluster))
        self._due_at[key] = due_at
        return handles

    def _due(self, key: str, request: str, cluster: str) -> None:
        if self._pools.get(key, {}).get(cluster):
            lag = self._lag(key, cluster)
            asyncio.get_running_loop().call_later(lag, self._fire, key, request, cluster)

    def _lag(self, key: str, cluster: str) -> float:
        """Fire later the more recently this worker's idlest connection was active."""
        pool = self._pools.get(key, {}).get(cluster) or ()
        if not pool:
            return IDLE_HEAD_START
        idle = max(0.0, time.monotonic() - min(c.idle_since for c in pool))
        return IDLE_HEAD_START / (1.0 + idle)

    def _fire(self, key: str, request: str, cluster: str) -> None:
        pool = self._pools.get(key, {}).get(cluster)
        if not pool:
            return
        record = self._store.record(f"rebalance|{key}")
        with record.locked():
            plan = Plan.load(record)
            due_at = self._due_at.get(key, {}).get(cluster, [])
            done = plan.done.get(cluster, 0)
            if plan.request != request or done >= bisect.bisect_right(due_at, time.monotonic()):
                return
            plan.done[cluster] = done + 1
            _store_or_log(plan, record, key)
        for victim in idlest(pool, 1, lambda c: c.idle_since):
            # Out of the pool now: its close completes on a later turn of the loop.
            pool.discard(victim)
            self.closed_by_rebalance += 1
            victim.abort(TERMINATION)

    def close(self) -> None:
        for handles in self._timers.values():
            for handle in handles:
                handle.cancel()
        self._timers.clear()


def _store_or_log(plan: Plan, record: SharedRecord, key: str) -> None:
    try:
        plan.store(record)
    except ValueError as exc:
        log.error("rebalance %s: its shared record is full (%s)", key, exc)


def _worker_from_env() -> int:
    try:
        return int(os.environ.get("TCPMESH_WORKER_INDEX", "0"))
    except ValueError:
        return 0
