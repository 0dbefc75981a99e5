"""``tcpmesh rollout status|promote|abort|retry|pause|resume NAME [--watch]``.

Like ``kubectl argo rollouts``: the one-shot requests (promote, abort, retry, resume) are
written into the Rollout's status for the controller to act on and clear; pause and
resume also set ``spec.paused``. Every write carries the resourceVersion it read, and a
conflict (the controller wrote in between) is retried with a fresh read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tcpmesh.apiserver.client import ApiClient, ApiError

Obj = dict[str, Any]
ATTEMPTS = 20
POLL = 0.25
FINAL = ("Healthy", "Degraded")


class RolloutCommandError(RuntimeError):
    """A request that makes no sense in the Rollout's phase (one line for the user)."""


def _step_text(step: Mapping[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause {duration}" if duration else "pause (until promoted)"
    return "analysis"


def summary(obj: Mapping[str, Any]) -> list[str]:
    """The ``rollout status NAME`` text: phase, step, weights, and each step's gates."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    steps = spec.get("steps") or []
    index = int(status.get("currentStepIndex") or 0)
    phase = status.get("phase") or "Pending"
    lines = [
        f"Name:      {obj['metadata']['name']}",
        f"Phase:     {phase}" + (f" ({status['message']})" if status.get("message") else ""),
        f"Step:      {index}/{len(steps)}",
        f"Weights:   stable {(spec.get('stable') or {}).get('subset')} "
        f"{status.get('stableWeight', 100)}, canary {(spec.get('canary') or {}).get('subset')} "
        f"{status.get('canaryWeight', 0)}",
        "Steps:",
    ]
    measured = {s.get("index"): s.get("measurements") or [] for s in status.get("steps") or []}
    for i, step in enumerate(steps):
        mark = "done" if i < index or phase == "Healthy" else ("<- current" if i == index else "")
        lines.append(f"  {i:<3}{_step_text(step):<24}{mark}".rstrip())
        for m in measured.get(i, [])[-1:]:
            values = " ".join(
                f"{k}={v:.3g}" if isinstance(v, int | float) else f"{k}=-"
                for k, v in (m.get("values") or {}).items()
            )
            lines.append(f"       {m.get('verdict')}: {values}")
    return lines


def watch_line(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    steps = len((obj.get("spec") or {}).get("steps") or [])
    return (
        f"step {status.get('currentStepIndex', 0)}/{steps} {status.get('phase', 'Pending')}"
        f" weights {status.get('stableWeight', 100)}/{status.get('canaryWeight', 0)}"
        f": {status.get('message') or ''}"
    ).rstrip(": ")


def watch(
    get: Callable[[], Obj],
    name: str,
    timeout: float | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[str, Obj]]:
    """A line each time what the user sees changes, until Healthy or Degraded.

    ``get`` reads the Rollout. One that does not exist yet is waited for (one
    "Waiting" line, then polling until ``timeout``): ``rollout status --watch`` is
    commonly started beside the ``apply`` that creates it, and a watch that fails
    in that race is a flake for every script doing so. Once seen, a Rollout that
    disappears ends the watch with an error, as kubectl's ``rollout status`` does
    ("object has been deleted"), rather than silently following a re-created one.
    """
    deadline = None if timeout is None else clock() + timeout
    last: str | None = None
    seen = False
    while True:
        obj = _read(get, name, seen)
        line = watch_line(obj) if obj is not None else f'Waiting for rollout "{name}" to be created'
        seen = seen or obj is not None
        if line != last:
            last = line
            yield line, obj or {}
        if obj is not None and _settled(obj):
            return
        if deadline is not None and clock() > deadline:
            phase = ((obj or {}).get("status") or {}).get("phase") or "Pending"
            raise TimeoutError(f"rollout {name} is still {phase if seen else 'not created'}")
        sleep(POLL)


def _read(get: Callable[[], Obj], name: str, seen: bool) -> Obj | None:
    """The Rollout, or None while it has not been created yet."""
    try:
        return get()
    except ApiError as exc:
        if exc.status != 404:
            raise
        if seen:
            raise RolloutCommandError(f"error: rollout {name} has been deleted") from exc
        return None


def _settled(obj: Mapping[str, Any]) -> bool:
    """Healthy or Degraded, for the current spec, with no request left to act on."""
    status = obj.get("status") or {}
    return (
        status.get("phase") in FINAL
        and status.get("observedGeneration") == obj["metadata"].get("generation")
        and not any(status.get(r) for r in ("promote", "abort", "retry", "resume"))
    )


def _retrying(client: ApiClient, namespace: str, name: str, write: Callable[[Obj], None]) -> Obj:
    for _ in range(ATTEMPTS):
        obj = client.get("Rollout", namespace, name)
        try:
            write(obj)
        except ApiError as exc:
            if exc.status == 409:
                continue
            raise
        return obj
    raise RuntimeError(f"rollout {name}: kept conflicting with other writers; try again")


def request(client: ApiClient, namespace: str, name: str, action: str) -> str:
    """Write ``action`` (promote, abort, retry, pause, resume); the line to print."""

    def write(obj: Obj) -> None:
        status = dict(obj.get("status") or {})
        phase = status.get("phase")
        if action == "retry" and not status.get("aborted"):
            raise RolloutCommandError(f"error: rollout {name} is not aborted ({phase})")
        if action in ("promote", "abort") and phase == "Healthy":
            raise RolloutCommandError(f"error: rollout {name} is already Healthy")
        if action in ("pause", "resume"):
            spec = dict(obj.get("spec") or {})
            if bool(spec.get("paused")) != (action == "pause"):
                spec["paused"] = action == "pause"
                obj = client.replace({**obj, "spec": spec})
        if action != "pause":
            status[action] = True
            client.update_status({**obj, "status": status})

    _retrying(client, namespace, name, write)
    past = {"abort": "aborted", "retry": "retried", "pause": "paused", "resume": "resumed"}
    return f"rollout.rollouts.tcpmesh.io/{name} {past.get(action, action + 'd')}"
