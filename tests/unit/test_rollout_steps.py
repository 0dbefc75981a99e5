"""The Rollout step machine as transcripts: >> tick << phase, step, weight, events."""

from __future__ import annotations

from typing import Any

import pytest

from tcpmesh.api.rollouts import RolloutSpec
from tcpmesh.controllers import Measurement, Phase, State, Tick, Verdict, advance, measuring

TARGET = "tcp-echo/v1 -> tcp-echo/v2"
GATES = {"gates": {"connectFailureRate": {"max": 0.05}}}


def spec(*steps: dict[str, Any], **extra: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "virtualService": {"name": "tcp-echo"},
            "stable": {"host": "tcp-echo", "subset": "v1"},
            "canary": {"host": "tcp-echo", "subset": "v2"},
            "steps": list(steps),
            **extra,
        }
    )


SEED = spec(
    {"setWeight": 20},
    {"pause": {"duration": "10s"}},
    {"setWeight": 50},
    {"pause": {}},
    {"setWeight": 100},
)


class Transcript:
    """Feeds ticks to ``advance`` and keeps the state, like a conversation."""

    def __init__(self, rollout: RolloutSpec) -> None:
        self.spec = rollout
        self.state = State()
        self.reasons: list[str] = []

    def tick(self, now: float, **kwargs: Any) -> State:
        outcome = advance(self.spec, self.state, Tick(now=now, target=TARGET, **kwargs))
        self.state = outcome.state
        self.reasons = [e.reason for e in outcome.events]
        return self.state

    def at(self) -> tuple[Phase, int, int]:
        return self.state.phase, self.state.step_index, self.state.canary_weight


def test_seed_steps_in_turn() -> None:
    t = Transcript(SEED)
    t.tick(0)
    assert t.at() == (Phase.PAUSED, 1, 20)
    assert t.reasons == ["RolloutStarted", "SetWeight", "RolloutPaused"]
    t.tick(9.9)
    assert t.at() == (Phase.PAUSED, 1, 20) and t.reasons == []
    t.tick(10.0)
    assert t.at() == (Phase.PAUSED, 3, 50)
    assert t.reasons == ["PauseEnded", "SetWeight", "RolloutPaused"]
    t.tick(1000)
    assert t.at() == (Phase.PAUSED, 3, 50), "an indefinite pause waits for promote"
    t.tick(1001, promote=True)
    assert t.at() == (Phase.HEALTHY, 5, 100)
    assert t.reasons == ["Promoted", "SetWeight", "RolloutCompleted"]
    t.tick(1002)
    assert t.at() == (Phase.HEALTHY, 5, 100) and t.reasons == []


def test_abort_during_pause_returns_to_stable_and_retry_starts_over() -> None:
    t = Transcript(SEED)
    t.tick(0)
    t.tick(10)
    assert t.at() == (Phase.PAUSED, 3, 50)
    t.tick(11, abort=True)
    assert t.at() == (Phase.DEGRADED, 3, 0)
    assert t.reasons == ["RolloutAborted"]
    t.tick(20, promote=True)
    assert t.at() == (Phase.DEGRADED, 3, 0), "promote does not undo an abort"
    t.tick(30, retry=True)
    assert t.at() == (Phase.PAUSED, 1, 20)
    assert t.reasons[0] == "RolloutRestarted"


def test_failed_analysis_aborts_after_failure_limit() -> None:
    t = Transcript(spec({"setWeight": 20}, {"pause": {}}, analysis={**GATES, "failureLimit": 1}))
    t.tick(0)
    failed = Measurement(Verdict.FAILED, "connect-failure rate 1.000 > 0.05")
    t.tick(10, measurement=failed)
    assert t.at() == (Phase.PAUSED, 1, 20) and t.reasons == ["MeasurementFailed"]
    t.tick(20, measurement=failed)
    assert t.at() == (Phase.DEGRADED, 1, 0)
    assert t.reasons == ["AnalysisFailed", "RolloutAborted"]
    assert "connect-failure rate 1.000" in t.state.message


def test_first_failure_aborts_by_default() -> None:
    t = Transcript(spec({"setWeight": 20}, {"pause": {}}, analysis=GATES))
    t.tick(0)
    t.tick(10, measurement=Measurement(Verdict.FAILED, "bad"))
    assert t.state.phase is Phase.DEGRADED and t.state.aborted


def test_analysis_step_needs_consecutive_successes() -> None:
    analysis = {**GATES, "consecutiveSuccessLimit": 2}
    t = Transcript(spec({"setWeight": 20}, {"analysis": analysis}, {"setWeight": 100}))
    ok = Measurement(Verdict.SUCCESSFUL, "fine")
    t.tick(0)
    assert t.at() == (Phase.PROGRESSING, 1, 20)
    t.tick(5, measurement=ok)
    assert t.at() == (Phase.PROGRESSING, 1, 20)
    t.tick(10, measurement=Measurement(Verdict.FAILED, "one bad"))
    assert t.state.phase is Phase.DEGRADED, "failureLimit 0: the first failure aborts"

    t = Transcript(spec({"setWeight": 20}, {"analysis": {**analysis, "failureLimit": 3}}))
    t.tick(0)
    t.tick(5, measurement=ok)
    t.tick(10, measurement=Measurement(Verdict.FAILED, "one bad"))
    t.tick(15, measurement=ok)
    assert t.at() == (Phase.PROGRESSING, 1, 20), "a failure breaks the run of successes"
    t.tick(20, measurement=ok)
    assert t.at() == (Phase.HEALTHY, 2, 100)
    assert "AnalysisPassed" in t.reasons


def test_pending_measurement_is_no_verdict() -> None:
    t = Transcript(spec({"setWeight": 20}, {"analysis": GATES}))
    t.tick(0)
    for now in range(1, 50):
        t.tick(now, measurement=Measurement(Verdict.PENDING, "3 of 20 canary connections"))
    assert t.at() == (Phase.PROGRESSING, 1, 20)
    assert t.state.successes == 0 and t.state.failures == 0


def test_inconclusive_pauses_until_resume_or_promote() -> None:
    t = Transcript(spec({"setWeight": 20}, {"analysis": GATES}, {"setWeight": 60}))
    t.tick(0)
    t.tick(5, measurement=Measurement(Verdict.INCONCLUSIVE, "no stable durations"))
    assert t.at() == (Phase.PAUSED, 1, 20)
    assert t.state.pause_reason == "InconclusiveAnalysis"
    assert measuring(t.spec, t.state) is None, "an inconclusive pause measures nothing"
    t.tick(100)
    assert t.at() == (Phase.PAUSED, 1, 20)
    t.tick(101, resume=True)
    assert t.at() == (Phase.PROGRESSING, 1, 20) and t.state.pause_reason == ""
    t.tick(105, measurement=Measurement(Verdict.INCONCLUSIVE, "again"))
    t.tick(106, promote=True)
    assert t.at() == (Phase.HEALTHY, 3, 100)


def test_user_pause_holds_and_resume_continues_the_timer() -> None:
    t = Transcript(SEED)
    t.tick(0)
    t.spec = SEED.model_copy(update={"paused": True})
    t.tick(5)
    assert t.at() == (Phase.PAUSED, 1, 20) and t.state.pause_reason == "PausedByUser"
    t.tick(50)
    assert t.at() == (Phase.PAUSED, 1, 20), "a user pause holds a timed pause too"
    t.spec = SEED
    t.tick(51)
    assert t.reasons[0] == "RolloutResumed"
    assert t.at() == (Phase.PAUSED, 3, 50)


def test_new_target_starts_over_even_when_healthy() -> None:
    rollout = spec({"setWeight": 30}, {"pause": {}}, {"setWeight": 100})
    t = Transcript(rollout)
    t.tick(0)
    t.tick(1, promote=True)
    assert t.at() == (Phase.HEALTHY, 3, 100)
    outcome = advance(rollout, t.state, Tick(now=2, target="tcp-echo/v2 -> tcp-echo/v3"))
    assert [e.reason for e in outcome.events][:2] == ["RolloutRestarted", "SetWeight"]
    assert (outcome.state.phase, outcome.state.step_index) == (Phase.PAUSED, 1)
    assert outcome.state.canary_weight == 30 and outcome.state.target.endswith("v3")


@pytest.mark.parametrize("weight", [0, 100])
def test_background_analysis_only_while_canary_has_traffic(weight: int) -> None:
    rollout = spec({"setWeight": weight}, {"pause": {}}, analysis=GATES)
    t = Transcript(rollout)
    t.tick(0)
    assert (measuring(rollout, t.state) is None) == (weight == 0)


def test_abort_message_from_the_controller() -> None:
    t = Transcript(SEED)
    t.tick(0)
    t.tick(1, abort=True, abort_message='VirtualService "tcp-echo" not found')
    assert t.state.phase is Phase.DEGRADED
    assert t.state.message == 'VirtualService "tcp-echo" not found'
