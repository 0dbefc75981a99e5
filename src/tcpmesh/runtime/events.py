"""Events for what the runtime does, as the kubelet and the deployment controller report them.

``kubectl get events`` and ``kubectl describe`` show them. The transitions a user should
see are derived from the status the runtime already writes (level-triggered: compare the
previous status with the new one), so the kubelet's and the controller's logic stays
where it is and only tells the recorder what changed. A repeat of the same event on the
same object is counted on the existing Event (``count``, ``lastTimestamp``), as
Kubernetes aggregates them, and Events older than an hour are removed, as the API server
expires them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tcpmesh.runtime.objects import key_of, now_rfc3339
from tcpmesh.runtime.storeapi import StoreLike

log = logging.getLogger("tcpmesh.runtime.events")

Obj = dict[str, Any]

NORMAL = "Normal"
WARNING = "Warning"
# The API server's default --event-ttl.
EVENT_TTL = timedelta(hours=1)
# Expired events are looked for once per this many recorded ones.
PRUNE_EVERY = 100


@dataclass(frozen=True)
class Happening:
    """One event to record: ``type`` Normal or Warning, a CamelCase reason, a sentence."""

    type: str
    reason: str
    message: str


def _containers(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("name")): c for c in status.get("containerStatuses") or []}


def pod_happenings(
    pod_name: str, namespace: str, uid: str, previous: Mapping[str, Any], status: Mapping[str, Any]
) -> Iterator[Happening]:
    """What changed between two statuses of a pod, in the kubelet's words."""
    before = _containers(previous)
    for name, container in _containers(status).items():
        old = before.get(name) or {}
        state, old_state = container.get("state") or {}, old.get("state") or {}
        running, was_running = state.get("running"), old_state.get("running")
        if running and (
            not was_running or container.get("restartCount", 0) != old.get("restartCount", 0)
        ):
            yield Happening(NORMAL, "Started", f"Started container {name}")
        waiting = state.get("waiting") or {}
        old_waiting = old_state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason and (reason != old_waiting.get("reason") or old != container):
            if reason == "CrashLoopBackOff":
                yield Happening(
                    WARNING,
                    "BackOff",
                    f"Back-off restarting failed container {name} in pod "
                    f"{pod_name}_{namespace}({uid})",
                )
            elif reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                message = str(waiting.get("message") or f"image of container {name}")
                yield Happening(WARNING, "Failed", message)
        terminated = state.get("terminated") or {}
        if terminated.get("reason") == "StartError" and terminated != (
            old_state.get("terminated") or {}
        ):
            yield Happening(WARNING, "Failed", f"Error: {terminated.get('message', '')}")


class EventRecorder:
    """Writes core/v1 Events into the store for one component (``kubelet``...)."""

    def __init__(self, store: StoreLike, component: str, host: str = "") -> None:
        self._store = store
        self._component = component
        self._host = host
        self._recorded = 0

    def record(self, obj: Mapping[str, Any], happening: Happening) -> None:
        """Best effort: an event that cannot be written is logged, never raised."""
        try:
            self._write(obj, happening)
            self._recorded += 1
            if self._recorded % PRUNE_EVERY == 0:
                self.prune()
        except Exception:
            log.exception("event %s for %s/%s not recorded", happening.reason, *key_of(obj))

    def _write(self, obj: Mapping[str, Any], happening: Happening) -> None:
        namespace, name = key_of(obj)
        meta = obj.get("metadata") or {}
        involved = {
            "kind": obj.get("kind"),
            "namespace": namespace,
            "name": name,
            "uid": meta.get("uid"),
            "apiVersion": obj.get("apiVersion"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        now = now_rfc3339()
        source = {"component": self._component}
        if self._host:
            source["host"] = self._host
        for event in self._store.list("Event", namespace):
            same = event.get("involvedObject") or {}
            if (
                same.get("uid") == involved["uid"]
                and same.get("kind") == involved["kind"]
                and event.get("reason") == happening.reason
                and event.get("message") == happening.message
            ):
                event = {**event, "count": int(event.get("count") or 1) + 1, "lastTimestamp": now}
                self._store.replace(event)
                return
        self._store.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": involved,
                "reason": happening.reason,
                "message": happening.message,
                "type": happening.type,
                "source": {
                    "component": self._component,
                    **({"host": self._host} if self._host else {}),
                },
                "reportingComponent": self._component,
                "reportingInstance": self._host,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )

    def prune(self, now: datetime | None = None) -> None:
        """Delete the Events last seen more than :data:`EVENT_TTL` ago."""
        cutoff = (now or datetime.now(UTC)) - EVENT_TTL
        for event in self._store.list("Event"):
            seen = _parse(event.get("lastTimestamp"))
            if seen is not None and seen < cutoff:
                self._store.delete("Event", *key_of(event))


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
