"""``rollout status --watch``: waiting for a Rollout to appear, and losing it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tcpmesh.apiserver.client import ApiError
from tcpmesh.cli.rollout import RolloutCommandError, watch

NOT_FOUND = ApiError(404, "NotFound", 'rollouts.rollouts.tcpmesh.io "tcp-echo" not found')


def _rollout(phase: str, step: int, weights: tuple[int, int], message: str = "") -> Any:
    return {
        "metadata": {"name": "tcp-echo", "generation": 1},
        "spec": {"steps": [{"setWeight": 20}, {"pause": {}}]},
        "status": {
            "phase": phase,
            "currentStepIndex": step,
            "stableWeight": weights[0],
            "canaryWeight": weights[1],
            "message": message,
            "observedGeneration": 1,
        },
    }


def _reads(*answers: Any) -> Callable[[], Any]:
    """A getter answering each of ``answers`` in turn (an exception is raised)."""
    it: Iterator[Any] = iter(answers)

    def get() -> Any:
        answer = next(it)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return get


def _lines(get: Callable[[], Any], timeout: float | None = None) -> list[str]:
    ticks = iter(range(1000))
    return [
        line
        for line, _ in watch(
            get, "tcp-echo", timeout, clock=lambda: float(next(ticks)), sleep=lambda _: None
        )
    ]


def test_a_rollout_not_created_yet_is_waited_for_with_one_line() -> None:
    get = _reads(
        NOT_FOUND,
        NOT_FOUND,
        NOT_FOUND,
        _rollout("Progressing", 0, (80, 20)),
        _rollout("Healthy", 2, (0, 100), "all steps done"),
    )
    assert _lines(get) == [
        'Waiting for rollout "tcp-echo" to be created',
        "step 0/2 Progressing weights 80/20",
        "step 2/2 Healthy weights 0/100: all steps done",
    ]


def test_a_rollout_deleted_while_watched_ends_the_watch() -> None:
    get = _reads(_rollout("Progressing", 0, (80, 20)), NOT_FOUND)
    with pytest.raises(RolloutCommandError, match="rollout tcp-echo has been deleted"):
        _lines(get)


def test_a_rollout_never_created_times_out_saying_so() -> None:
    get = _reads(*[NOT_FOUND] * 10)
    with pytest.raises(TimeoutError, match="rollout tcp-echo is still not created"):
        _lines(get, timeout=3)


def test_other_server_errors_are_not_waited_through() -> None:
    get = _reads(ApiError(403, "Forbidden", "no"))
    with pytest.raises(ApiError, match="no"):
        _lines(get)
