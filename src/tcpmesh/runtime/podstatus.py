"""Pod status in Kubernetes shape, computed from what the kubelet knows of its containers."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tcpmesh.runtime.objects import Obj, condition, now_rfc3339

SHUTDOWN_REASON = "Terminated"
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."


def _waiting(reason: str, message: str | None = None) -> Obj:
    waiting: Obj = {"reason": reason}
    if message:
        waiting["message"] = message
    return {"waiting": waiting}


@dataclass
class ContainerRecord:
    """One container as the kubelet tracks it; `to_status` gives its containerStatus."""

    name: str
    image: str
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: _waiting("ContainerCreating"))
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    pid: int | None = None

    @classmethod
    def resume(cls, name: str, image: str, before: Mapping[str, Any] | None) -> ContainerRecord:
        """A container starting again after the node restarted: its restart counts."""
        record = cls(name=name, image=image)
        if before is None:
            return record
        state = before.get("state") or {}
        last_state = dict(before.get("lastState") or {})
        if "terminated" in state:
            last_state = {"terminated": state["terminated"]}
        ran = bool(last_state) or "running" in state
        record.restart_count = int(before.get("restartCount", 0)) + (1 if ran else 0)
        record.last_state = last_state
        return record

    @classmethod
    def adopt(
        cls, name: str, image: str, before: Mapping[str, Any] | None, pid: int
    ) -> ContainerRecord:
        """A container whose process outlived the mesh: it keeps running, uncounted.

        Its readiness is kept from the stored status until the first probe: the process
        is the same one, so the endpoints it served stay in place without a flap.
        """
        before = before or {}
        started = ((before.get("state") or {}).get("running") or {}).get("startedAt")
        return cls(
            name=name,
            image=image,
            restart_count=int(before.get("restartCount", 0)),
            state={"running": {"startedAt": started or now_rfc3339()}},
            last_state=dict(before.get("lastState") or {}),
            ready=bool(before.get("ready")),
            pid=pid,
        )

    def waiting(self, reason: str, message: str | None = None) -> None:
        self.state = _waiting(reason, message)
        self.ready = False

    def running(self, pid: int) -> None:
        self.pid = pid
        self.state = {"running": {"startedAt": now_rfc3339()}}

    def terminated(
        self, exit_code: int | None, reason: str | None = None, message: str = ""
    ) -> None:
        """The process ended (``exit_code`` as asyncio reports it: -N for signal N)."""
        started = (self.state.get("running") or {}).get("startedAt")
        code = 128 if exit_code is None else exit_code
        info: Obj = {"exitCode": code if code >= 0 else 128 - code}
        if code < 0:
            info["signal"] = -code
            message = message or f"killed by {signal.Signals(-code).name}"
        info["reason"] = reason or ("Completed" if code == 0 else "Error")
        if message:
            info["message"] = message
        if started:
            info["startedAt"] = started
        info["finishedAt"] = now_rfc3339()
        if self.pid is not None:
            info["containerID"] = f"pid://{self.pid}"
        self.state = {"terminated": info}
        self.last_state = {"terminated": info}
        self.ready = False
        self.pid = None

    def to_status(self) -> Obj:
        status: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": "running" in self.state,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.pid is not None:
            status["containerID"] = f"pid://{self.pid}"
        return status


def _exit_code(record: ContainerRecord) -> int | None:
    terminated = record.state.get("terminated") or record.last_state.get("terminated") or {}
    code = terminated.get("exitCode")
    return None if code is None else int(code)


def pod_phase(containers: Sequence[ContainerRecord], restart_policy: str) -> str:
    """Kubernetes' kubelet getPhase, for pods without init containers."""
    running = sum(1 for c in containers if "running" in c.state)
    waiting = sum(1 for c in containers if "waiting" in c.state and not c.last_state)
    stopped = len(containers) - running - waiting
    succeeded = sum(1 for c in containers if "running" not in c.state and _exit_code(c) == 0)
    if waiting or not containers:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always" or (restart_policy == "OnFailure" and stopped != succeeded):
        return "Running"
    return "Succeeded" if stopped == succeeded else "Failed"


def pod_status(
    containers: Sequence[ContainerRecord],
    *,
    restart_policy: str,
    pod_ip: str,
    host_ip: str,
    start_time: str,
    previous: Mapping[str, Any] | None = None,
    shutdown: bool = False,
) -> Obj:
    """The whole ``status`` of a pod; ``shutdown`` marks pods stopped with the mesh."""
    before = (previous or {}).get("conditions") or []
    unready = [c.name for c in containers if not c.ready]
    all_ready = bool(containers) and not unready
    reason = None if all_ready else "ContainersNotReady"
    message = None if all_ready else f"containers with unready status: [{' '.join(unready)}]"
    status: Obj = {
        "phase": "Failed" if shutdown else pod_phase(containers, restart_policy),
        "conditions": [
            condition("Initialized", True, before),
            condition("Ready", all_ready, before, reason, message),
            condition("ContainersReady", all_ready, before, reason, message),
            condition("PodScheduled", True, before),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "containerStatuses": [c.to_status() for c in containers],
        "qosClass": "BestEffort",
    }
    if shutdown:
        status["reason"] = SHUTDOWN_REASON
        status["message"] = SHUTDOWN_MESSAGE
    return status


def stopped_by_shutdown(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Failed" and status.get("reason") == SHUTDOWN_REASON


def previous_containers(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return {s["name"]: s for s in statuses if "name" in s}
