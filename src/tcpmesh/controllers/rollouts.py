"""The Rollout controller: level-triggered, writing VirtualService weights and status.

Every sync computes from what is stored (the Rollout's spec and status, the
VirtualService, the DestinationRules) and the proxies' metrics, never from the event
that woke it: a watch event only marks the world dirty, and a burst is one sync. The
step machine is ``steps.advance``; this module is the I/O around it: read, measure when
due, advance, write the weights, then the status (with optimistic concurrency: a user's
``promote`` written in between makes the status write fail and the next sync sees it).
Events are recorded after the status is written, so a failed write repeats none.

It never touches a data plane: the control plane turns the weights it writes into
Snapshots like any other change. Its clock is the only timer: a timed pause or a due
measurement wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tcpmesh.api import from_dict, new_request_id, with_request
from tcpmesh.api.rollouts import Rollout
from tcpmesh.controllers import rolloutstatus as rs
from tcpmesh.controllers.gates import Report, Sample, Tally, evaluate, tally
from tcpmesh.controllers.reconciler import Reconciler
from tcpmesh.controllers.scrape import (
    MetricsSource,
    ScrapeFailed,
    pod_metrics,
    prometheus_value,
)
from tcpmesh.controllers.steps import Event, Measurement, State, advance, interval_of, measuring
from tcpmesh.controllers.traffic import RouteProblem, version_selector, weighted
from tcpmesh.runtime.storeapi import StoreLike
from tcpmesh.store import Conflict, NotFound

log = logging.getLogger("tcpmesh.controllers.rollouts")

WATCHED = ("Rollout", "VirtualService", "DestinationRule")
# Longest sleep between syncs without an event: bounds how late a timer can fire.
MAX_SLEEP = 1.0

Obj = dict[str, Any]
Recorder = Callable[[Mapping[str, Any], Event], None]


@dataclass
class _Measured:
    window: tuple[Tally, Tally] | None = None
    report: Report | None = None
    at: float | None = None


class RolloutController(Reconciler):
    """Drives every Rollout in the store; ``record`` writes its Events (if given)."""

    name = "rollout"

    def __init__(
        self,
        store: StoreLike,
        *,
        metrics: MetricsSource | None = None,
        record: Recorder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, WATCHED)
        self._store = store
        self._metrics = metrics or pod_metrics(store)
        self._record = record
        self._clock = clock

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), MAX_SLEEP)
            self._dirty.clear()
            for obj in self._store.list("Rollout"):
                try:
                    await self.sync(obj)
                except (Conflict, NotFound):
                    self._dirty.set()  # someone wrote in between: look again at once
                except Exception:
                    log.exception("rollout %s failed to sync", obj["metadata"].get("name"))

    async def sync(self, obj: Obj) -> None:
        """One level-triggered pass over one Rollout."""
        self.syncs += 1
        rollout = from_dict(obj)
        assert isinstance(rollout, Rollout)
        spec, namespace = rollout.spec, rollout.namespace
        status: Mapping[str, Any] = obj.get("status") or {}
        now = self._clock()
        state = rs.state_of(status)
        target = rs.target_of(spec.stable, spec.canary)
        tick = rs.tick_of(status, now, rollout.metadata.generation or 1, target)
        vs = self._store.get("VirtualService", namespace, spec.virtual_service.name)
        try:
            if vs is None:
                raise RouteProblem(f'VirtualService "{spec.virtual_service.name}" not found')
            weighted(vs, spec, state.canary_weight)
        except RouteProblem as problem:
            if not state.started or state.aborted:
                self._write_status(obj, rs.invalid_status(status, str(problem), now))
                return
            tick = replace(tick, abort=True, abort_message=str(problem))
        measured = await self._measure(obj, state, status, now)
        if measured.report is not None:
            verdict = Measurement(measured.report.verdict, measured.report.message)
            tick = replace(tick, measurement=verdict)
        outcome = advance(spec, state, tick)
        if vs is not None:
            self._write_weights(vs, rollout, outcome.state.canary_weight)
        window = measured.window
        if (outcome.state.step_index, outcome.state.step_started) != (
            state.step_index,
            state.step_started,
        ) or window is None:
            window = await self._baseline(obj, outcome.state)
        new_status = rs.status_of(
            status,
            outcome.state,
            now=now,
            stable_subset=spec.stable.subset,
            canary_subset=spec.canary.subset,
            window=window,
            report=measured.report,
            measured_at=measured.at,
        )
        self._write_status(obj, new_status)
        for event in outcome.events:
            log.info("rollout %s/%s: %s %s", namespace, rollout.name, event.reason, event.message)
            if self._record is not None:
                self._record(obj, event)

    async def _tallies(self, obj: Obj) -> tuple[Tally, Tally]:
        rollout = from_dict(obj)
        assert isinstance(rollout, Rollout)
        rules = self._store.list("DestinationRule")
        samples: list[Sample] = await self._metrics()
        canary = version_selector(rollout.spec.canary, rollout.namespace, rules)
        stable = version_selector(rollout.spec.stable, rollout.namespace, rules)
        return tally(samples, canary), tally(samples, stable)

    async def _baseline(self, obj: Obj, state: State) -> tuple[Tally, Tally] | None:
        """The tallies a new window starts from, when the new step measures anything."""
        rollout = from_dict(obj)
        assert isinstance(rollout, Rollout)
        if measuring(rollout.spec, state) is None:
            return None
        try:
            return await self._tallies(obj)
        except ScrapeFailed as exc:
            log.info("no baseline yet: %s", exc)
            return None

    async def _measure(
        self, obj: Obj, state: State, status: Mapping[str, Any], now: float
    ) -> _Measured:
        """Measure the current window's gates if an analysis runs and is due."""
        rollout = from_dict(obj)
        assert isinstance(rollout, Rollout)
        analysis = measuring(rollout.spec, state)
        baseline = rs.baseline_of(status, state)
        if analysis is None or baseline is None:
            return _Measured()
        if now - max(rs.last_measured(status), state.step_started) < interval_of(analysis):
            return _Measured(window=baseline)
        try:
            canary_now, stable_now = await self._tallies(obj)
        except ScrapeFailed as exc:
            log.info("measurement skipped: %s", exc)
            return _Measured(window=baseline)
        prom: float | str | None = None
        if analysis.gates.prometheus is not None:
            gate = analysis.gates.prometheus
            prom = await prometheus_value(gate.address, gate.query)
        report = evaluate(
            analysis, canary_now.since(baseline[0]), stable_now.since(baseline[1]), prom
        )
        return _Measured(window=baseline, report=report, at=now)

    def _write_weights(self, vs: Obj, rollout: Rollout, canary_weight: int) -> None:
        try:
            new, _ = weighted(vs, rollout.spec, canary_weight)
        except RouteProblem:
            return
        if new is not None and rollout.spec.rebalance:
            # Asked for in the same write: the proxies move open connections to the new
            # weights (an abort moves the canary's back to stable).
            new = with_request(new, new_request_id(rollout.metadata.name))
        if new is not None:
            self._store.replace(
                new, expected_resource_version=vs["metadata"].get("resourceVersion")
            )

    def _write_status(self, obj: Obj, status: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._store.update_status(
            "Rollout",
            meta.get("namespace") or "default",
            meta["name"],
            status,
            expected_resource_version=meta.get("resourceVersion"),
        )
