"""A Rollout's step machine: pure, driven by one ``Tick`` at a time, tested as transcripts.

The controller reads the Rollout (spec and status), measures the gates when they are due,
and calls ``advance``; what comes back is the new ``State`` (written to the status), the
canary weight to write into the VirtualService and the Events to record. Nothing here
reads a clock, a socket or the store, so every rule below is a table of cases in the
unit tests (as mitmproxy tests its layers: ``>> tick << state, events``).

Rules, following Argo Rollouts' canary strategy:
- ``setWeight`` takes effect at once and the next step starts.
- ``pause: {duration}`` waits that long from the step's start; ``pause: {}`` waits for
  ``promote``. ``promote`` also skips an analysis step or an inconclusive pause.
- ``analysis`` steps pass after ``consecutiveSuccessLimit`` successful measurements in a
  row and fail after more than ``failureLimit`` failed ones; ``spec.analysis`` is measured
  in the background during every step the canary has traffic, with the same limits.
- A measurement without enough samples is no verdict; an inconclusive one pauses
  (``resume`` measures again, ``promote`` skips the step, ``abort`` rolls back).
- Abort (a failed analysis, or the user) puts 100% on stable at once: phase Degraded until
  ``retry``, which starts again from the first step.
- ``spec.paused`` holds the rollout where it is; a new stable/canary pair (the next
  version) starts again from the first step, whatever the phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from tcpmesh.api.durations import parse_duration
from tcpmesh.api.rollouts import (
    DEFAULT_CONSECUTIVE_SUCCESS,
    DEFAULT_INTERVAL,
    Analysis,
    RolloutSpec,
)


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"


# pause_reason values: the user's spec.paused, and a measurement that could not decide.
BY_USER = "PausedByUser"
INCONCLUSIVE = "InconclusiveAnalysis"


class Verdict(StrEnum):
    """The outcome of one measurement of a set of gates."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    PENDING = "Pending"  # not enough samples yet: no verdict


@dataclass(frozen=True)
class Measurement:
    verdict: Verdict
    message: str = ""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record: type Normal or Warning, a reason and a message."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class State:
    """What the status keeps between ticks (so a restarted controller resumes here)."""

    phase: Phase = Phase.PROGRESSING
    step_index: int = 0
    canary_weight: int = 0
    step_started: float = 0.0
    successes: int = 0
    failures: int = 0
    pause_reason: str = ""  # BY_USER or INCONCLUSIVE: no step moves, nothing is measured
    aborted: bool = False
    observed_generation: int = 0
    message: str = ""
    started: bool = False
    target: str = ""


@dataclass(frozen=True)
class Tick:
    """Everything one sync knows: the clock, user requests and a measurement if due."""

    now: float
    generation: int = 1
    target: str = ""  # what moves where ("host/v1 -> host/v2"); a new target starts over
    promote: bool = False
    resume: bool = False
    abort: bool = False
    abort_message: str = "aborted by the user"
    retry: bool = False
    measurement: Measurement | None = None


@dataclass(frozen=True)
class Outcome:
    state: State
    events: tuple[Event, ...] = ()
    # When the next sync is due even without a change (a timed pause, the next measurement).
    wake_at: float | None = None


@dataclass
class _Run:
    state: State
    events: list[Event] = field(default_factory=list)

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def update(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]


def effective_analysis(spec: RolloutSpec, index: int) -> Analysis | None:
    """The gates measured during step ``index``: the step's own analysis (its fields over
    ``spec.analysis``'s), else ``spec.analysis`` while the canary has traffic."""
    steps = spec.steps
    own = steps[index].analysis if 0 <= index < len(steps) else None
    if own is None:
        return spec.analysis
    if spec.analysis is None:
        return own
    base = spec.analysis.model_dump(exclude_unset=True)
    base_gates = base.pop("gates", {})
    mine = own.model_dump(exclude_unset=True)
    mine_gates = mine.pop("gates", {})
    return Analysis.model_validate({**base, **mine, "gates": {**base_gates, **mine_gates}})


def interval_of(analysis: Analysis) -> float:
    return parse_duration(analysis.interval or DEFAULT_INTERVAL)


def measuring(spec: RolloutSpec, state: State) -> Analysis | None:
    """The analysis to measure now, or None (nothing to gate, or nothing to move)."""
    if state.phase in (Phase.HEALTHY, Phase.DEGRADED) or spec.paused:
        return None
    if state.pause_reason:
        return None
    index = state.step_index
    is_step = 0 <= index < len(spec.steps) and spec.steps[index].analysis is not None
    if not is_step and state.canary_weight == 0:
        return None
    return effective_analysis(spec, index)


def advance(spec: RolloutSpec, state: State, tick: Tick) -> Outcome:
    """The next state of a Rollout, the Events on the way and when to look again."""
    run = _Run(state)
    if not state.started or _restarts(state, tick):
        _start(run, tick, "RolloutStarted" if not state.started else "RolloutRestarted")
    run.update(observed_generation=tick.generation, target=tick.target)
    if run.state.aborted or tick.abort:
        return _aborted(spec, run, tick)
    if spec.paused:
        if run.state.pause_reason != BY_USER:
            run.update(phase=Phase.PAUSED, pause_reason=BY_USER, message="paused by the user")
            run.emit("Normal", "RolloutPaused", "paused by the user")
        return Outcome(run.state, tuple(run.events))
    if run.state.pause_reason == BY_USER:
        run.update(pause_reason="", phase=Phase.PROGRESSING, message="resumed")
        run.emit("Normal", "RolloutResumed", "resumed by the user")
    elif run.state.pause_reason:
        if tick.resume:
            run.update(pause_reason="", phase=Phase.PROGRESSING, message="resumed")
            run.emit("Normal", "RolloutResumed", "resumed: measuring again")
        elif not tick.promote:
            return Outcome(run.state, tuple(run.events))
    if tick.measurement is not None and _judge(spec, run, tick):
        return Outcome(run.state, tuple(run.events))
    wake = _walk(spec, run, tick)
    return Outcome(run.state, tuple(run.events), wake)


def _restarts(state: State, tick: Tick) -> bool:
    """A new stable/canary pair starts from the first step, and so does ``retry``."""
    return tick.target != state.target or (tick.retry and state.aborted)


def _start(run: _Run, tick: Tick, reason: str) -> None:
    run.update(
        phase=Phase.PROGRESSING,
        step_index=0,
        step_started=tick.now,
        successes=0,
        failures=0,
        pause_reason="",
        aborted=False,
        started=True,
        message="",
    )
    run.emit("Normal", reason, "starting at step 0")


def _aborted(spec: RolloutSpec, run: _Run, tick: Tick) -> Outcome:
    if not run.state.aborted:
        reason = tick.abort_message
        run.update(aborted=True, message=reason)
        run.emit("Warning", "RolloutAborted", f"{reason}: 100% to stable {spec.stable.subset}")
    run.update(phase=Phase.DEGRADED, canary_weight=0, pause_reason="")
    return Outcome(run.state, tuple(run.events))


def _judge(spec: RolloutSpec, run: _Run, tick: Tick) -> bool:
    """Count one measurement against the current analysis; True when it ends the tick."""
    analysis = measuring(spec, run.state)
    measurement = tick.measurement
    if analysis is None or measurement is None:
        return False
    state = run.state
    index = state.step_index
    if measurement.verdict is Verdict.FAILED:
        failures = state.failures + 1
        run.update(failures=failures, successes=0)
        limit = analysis.failure_limit or 0
        if failures > limit:
            message = f"analysis failed at step {index}: {measurement.message}"
            run.update(aborted=True, phase=Phase.DEGRADED, canary_weight=0, message=message)
            run.emit("Warning", "AnalysisFailed", message)
            run.emit("Warning", "RolloutAborted", f"100% to stable {spec.stable.subset}")
            return True
        run.emit("Warning", "MeasurementFailed", f"step {index}: {measurement.message}")
    elif measurement.verdict is Verdict.INCONCLUSIVE:
        message = f"analysis inconclusive at step {index}: {measurement.message}"
        run.update(pause_reason=INCONCLUSIVE, phase=Phase.PAUSED, message=message)
        run.emit("Warning", "AnalysisInconclusive", message)
        return not tick.promote
    elif measurement.verdict is Verdict.SUCCESSFUL:
        run.update(successes=state.successes + 1)
    return False


def _next_step(run: _Run, tick: Tick) -> None:
    run.update(
        step_index=run.state.step_index + 1,
        step_started=tick.now,
        successes=0,
        failures=0,
        pause_reason="",
    )


def _walk(spec: RolloutSpec, run: _Run, tick: Tick) -> float | None:
    """Take every step that can complete now; return when the current one may."""
    promote = tick.promote
    while run.state.step_index < len(spec.steps):
        index = run.state.step_index
        step = spec.steps[index]
        if step.set_weight is not None:
            if run.state.canary_weight != step.set_weight:
                run.emit("Normal", "SetWeight", f"step {index}: canary weight {step.set_weight}")
            run.update(canary_weight=step.set_weight)
            _next_step(run, tick)
            continue
        if promote:
            promote = False
            run.emit("Normal", "Promoted", f"step {index} skipped by promote")
            _next_step(run, tick)
            continue
        if step.pause is not None:
            wake = _pause(run, tick, index, step.pause.duration)
            if wake is None:
                continue
            return wake if wake > 0 else None
        analysis = effective_analysis(spec, index)
        assert analysis is not None  # validation: an analysis step has gates
        needed = analysis.consecutive_success_limit or DEFAULT_CONSECUTIVE_SUCCESS
        if run.state.successes >= needed:
            run.emit("Normal", "AnalysisPassed", f"step {index}: {needed} successful")
            _next_step(run, tick)
            continue
        run.update(phase=Phase.PROGRESSING, message=f"step {index}: analysis running")
        return None
    _finish(spec, run)
    return None


def _pause(run: _Run, tick: Tick, index: int, duration: str | None) -> float | None:
    """None when the pause is over; else when to wake (0: only a request ends it)."""
    if duration is not None:
        until = run.state.step_started + parse_duration(duration)
        if tick.now >= until:
            run.emit("Normal", "PauseEnded", f"step {index}: pause of {duration} ended")
            _next_step(run, tick)
            return None
        message = f"step {index}: paused for {duration}"
        wake = until
    else:
        message = f"step {index}: paused until promoted"
        wake = 0.0
    if run.state.phase is not Phase.PAUSED or run.state.message != message:
        run.emit("Normal", "RolloutPaused", message)
    run.update(phase=Phase.PAUSED, message=message)
    return wake


def _finish(spec: RolloutSpec, run: _Run) -> None:
    if run.state.phase is Phase.HEALTHY:
        return
    message = f"all steps done: 100% to canary {spec.canary.subset}"
    run.update(phase=Phase.HEALTHY, canary_weight=100, message=message)
    run.emit("Normal", "RolloutCompleted", message)
