"""A Rollout's status: the step machine's ``State`` in Kubernetes' status conventions.

Everything the controller needs to resume after ``down``/``up`` is here (the step, when
it began, the analysis counters and the window's baseline tallies), next to what users
read: ``phase``, ``currentStepIndex``, the weights, ``conditions`` with reason and
message, and the measured gate values of each step. The user's one-shot requests
(``promote``, ``resume``, ``abort``, ``retry``) are status fields too, as Argo's
``kubectl argo rollouts`` writes them; the controller clears each one it has acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tcpmesh.api.rollouts import VersionRef
from tcpmesh.controllers.gates import Report, Tally
from tcpmesh.controllers.steps import Phase, State, Tick

REQUESTS = ("promote", "resume", "abort", "retry")
# Measurements kept per step (the latest ones): enough to see a trend, bounded.
KEPT_MEASUREMENTS = 10
_PAUSE_STEP = "CanaryPauseStep"


def rfc3339(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def epoch(text: Any) -> float:
    if not isinstance(text, str) or not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def state_of(status: Mapping[str, Any]) -> State:
    """The machine's state as a previous sync left it (a fresh State for a new Rollout)."""
    if not status.get("started"):
        return State()
    analysis = status.get("analysis") or {}
    try:
        phase = Phase(status.get("phase", Phase.PROGRESSING))
    except ValueError:
        phase = Phase.PROGRESSING
    return State(
        phase=phase,
        step_index=int(status.get("currentStepIndex") or 0),
        canary_weight=int(status.get("canaryWeight") or 0),
        step_started=epoch(status.get("stepStartedAt")),
        successes=int(analysis.get("successes") or 0),
        failures=int(analysis.get("failures") or 0),
        pause_reason=str(status.get("pauseReason") or ""),
        aborted=bool(status.get("aborted")),
        observed_generation=int(status.get("observedGeneration") or 0),
        message=str(status.get("message") or ""),
        started=True,
        target=str(status.get("target") or ""),
    )


def target_of(stable: VersionRef, canary: VersionRef) -> str:
    return f"{stable.host}/{stable.subset} -> {canary.host}/{canary.subset}"


def tick_of(status: Mapping[str, Any], now: float, generation: int, target: str) -> Tick:
    return Tick(
        now=now,
        generation=generation,
        target=target,
        promote=bool(status.get("promote")),
        resume=bool(status.get("resume")),
        abort=bool(status.get("abort")),
        retry=bool(status.get("retry")),
    )


def baseline_of(status: Mapping[str, Any], state: State) -> tuple[Tally, Tally] | None:
    """The tallies the current step's window began with, if taken for this very step."""
    window = (status.get("analysis") or {}).get("window") or {}
    if window.get("step") != state.step_index or window.get("startedAt") != rfc3339(
        state.step_started
    ):
        return None
    return Tally.from_json(window.get("canary") or {}), Tally.from_json(window.get("stable") or {})


def last_measured(status: Mapping[str, Any]) -> float:
    return epoch((status.get("analysis") or {}).get("lastMeasuredAt"))


def status_of(
    previous: Mapping[str, Any],
    state: State,
    *,
    now: float,
    stable_subset: str,
    canary_subset: str,
    window: tuple[Tally, Tally] | None,
    report: Report | None,
    measured_at: float | None,
) -> dict[str, Any]:
    """The status to write: the new state, the window, the measurements and conditions."""
    old_analysis = previous.get("analysis") or {}
    analysis: dict[str, Any] = {"successes": state.successes, "failures": state.failures}
    if window is not None:
        analysis["window"] = {
            "step": state.step_index,
            "startedAt": rfc3339(state.step_started),
            "canary": window[0].to_json(),
            "stable": window[1].to_json(),
        }
    stamp = measured_at if measured_at is not None else epoch(old_analysis.get("lastMeasuredAt"))
    if stamp:
        analysis["lastMeasuredAt"] = rfc3339(stamp)
    status: dict[str, Any] = {
        "observedGeneration": state.observed_generation,
        "phase": state.phase.value,
        "message": state.message,
        "currentStepIndex": state.step_index,
        "stableWeight": 100 - state.canary_weight,
        "canaryWeight": state.canary_weight,
        "stable": stable_subset,
        "canary": canary_subset,
        "stepStartedAt": rfc3339(state.step_started),
        "started": state.started,
        "target": state.target,
        "aborted": state.aborted,
        "analysis": analysis,
        "steps": _measurements(previous, report, measured_at),
        "conditions": conditions(previous.get("conditions") or [], state, now),
    }
    if state.pause_reason:
        status["pauseReason"] = state.pause_reason
    return status


def _measurements(
    previous: Mapping[str, Any], report: Report | None, measured_at: float | None
) -> list[dict[str, Any]]:
    steps = [dict(s) for s in previous.get("steps") or [] if isinstance(s, Mapping)]
    if report is None or measured_at is None:
        return steps
    index = int(previous.get("currentStepIndex") or 0)
    entry = {
        "time": rfc3339(measured_at),
        "verdict": report.verdict.value,
        "message": report.message,
        "values": report.values(),
    }
    for step in steps:
        if step.get("index") == index:
            step["measurements"] = [*(step.get("measurements") or []), entry][-KEPT_MEASUREMENTS:]
            return steps
    return [*steps, {"index": index, "measurements": [entry]}]


def _condition_values(state: State) -> list[tuple[str, bool, str]]:
    pause = state.pause_reason or (_PAUSE_STEP if state.phase is Phase.PAUSED else "")
    if state.phase is Phase.DEGRADED:
        progressing = (False, "RolloutAborted")
    elif state.phase is Phase.HEALTHY:
        progressing = (True, "RolloutCompleted")
    elif pause:
        progressing = (True, "RolloutPaused")
    else:
        progressing = (True, "RolloutProgressing")
    return [
        ("Progressing", *progressing),
        ("Paused", bool(pause), pause or ("RolloutResumed" if state.started else "NotPaused")),
        ("Healthy", state.phase is Phase.HEALTHY, state.phase.value),
    ]


def conditions(previous: list[Mapping[str, Any]], state: State, now: float) -> list[dict[str, Any]]:
    """Kubernetes conditions; ``lastTransitionTime`` moves only when the status flips."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    result = []
    for kind, value, reason in _condition_values(state):
        text = "True" if value else "False"
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == text else None
        result.append(
            {
                "type": kind,
                "status": text,
                "reason": reason,
                "message": state.message,
                "lastTransitionTime": since or rfc3339(now),
            }
        )
    return result


def invalid_status(previous: Mapping[str, Any], message: str, now: float) -> dict[str, Any]:
    """A Rollout that cannot start: its route is not there (yet)."""
    status = {k: v for k, v in previous.items() if k not in REQUESTS}
    status.update(phase=Phase.DEGRADED.value, message=message, started=False)
    status["conditions"] = [
        {
            "type": "InvalidSpec",
            "status": "True",
            "reason": "InvalidSpec",
            "message": message,
            "lastTransitionTime": rfc3339(now),
        }
    ]
    return status
