"""The Rollout controller over a real store, with a fake clock and fake metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.api import load_documents
from tcpmesh.controllers import Event, RolloutController, Sample
from tcpmesh.store import Store

SERVICE = "tcp-echo.default.svc.cluster.local"
OBJECTS = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: tcp-echo-destination}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: rollouts.tcpmesh.io/v1alpha1
kind: Rollout
metadata: {name: tcp-echo}
spec:
  virtualService: {name: tcp-echo}
  stable: {host: tcp-echo, subset: v1}
  canary: {host: tcp-echo, subset: v2}
  analysis:
    interval: 5s
    minSamples: 10
    gates:
      connectFailureRate: {max: 0.05}
  steps:
  - setWeight: 20
  - pause: {duration: 30s}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
"""


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(tmp_path / "store.db")
        self.store.apply(load_documents(OBJECTS, "objects.yaml"))
        self.now = 1_000_000.0
        self.counts = {"v1": [0, 0], "v2": [0, 0]}  # opened, closed with UF
        self.events: list[Event] = []
        self.controller = RolloutController(
            self.store,
            metrics=self.metrics,
            record=lambda obj, event: self.events.append(event),
            clock=lambda: self.now,
        )

    async def metrics(self) -> list[Sample]:
        samples = []
        for version, (opened, failed) in self.counts.items():
            labels = {"destination_service": SERVICE, "destination_version": version}
            samples.append(
                Sample(
                    "istio_tcp_connections_opened_total", {**labels, "response_flags": "-"}, opened
                )
            )
            samples.append(
                Sample(
                    "istio_tcp_connections_closed_total", {**labels, "response_flags": "UF"}, failed
                )
            )
        return samples

    def rollout(self) -> dict[str, Any]:
        obj = self.store.get("Rollout", "default", "tcp-echo")
        assert obj is not None
        return obj

    def weights(self) -> list[int]:
        vs = self.store.get("VirtualService", "default", "tcp-echo")
        assert vs is not None
        return [int(d.get("weight", 0)) for d in vs["spec"]["tcp"][0]["route"]]

    def sync(self, after: float = 0.0) -> dict[str, Any]:
        self.now += after
        asyncio.run(asyncio.wait_for(self.controller.sync(self.rollout()), 10))
        status: dict[str, Any] = self.rollout()["status"]
        return status

    def request(self, **flags: bool) -> None:
        obj = self.rollout()
        self.store.update_status("Rollout", "default", "tcp-echo", {**obj["status"], **flags})

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Any:
    w = World(tmp_path)
    yield w
    w.close()


def test_healthy_rollout_walks_every_step(world: World) -> None:
    status = world.sync()
    assert (status["phase"], status["currentStepIndex"], world.weights()) == ("Paused", 1, [80, 20])
    assert status["analysis"]["window"]["step"] == 1
    world.counts["v2"][0] += 40
    status = world.sync(after=5)
    (step,) = status["steps"]
    assert step["index"] == 1
    assert step["measurements"][0]["verdict"] == "Successful"
    assert step["measurements"][0]["values"]["connectFailureRate"] == 0.0
    status = world.sync(after=25)
    assert (status["phase"], status["currentStepIndex"], world.weights()) == ("Paused", 3, [50, 50])
    assert status["message"] == "step 3: paused until promoted"
    world.request(promote=True)
    status = world.sync(after=1)
    assert (status["phase"], status["currentStepIndex"], world.weights()) == (
        "Healthy",
        5,
        [0, 100],
    )
    assert "promote" not in status, "the request is consumed"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Progressing": "True", "Paused": "False", "Healthy": "True"}
    assert [e.reason for e in world.events] == [
        "RolloutStarted",
        "SetWeight",
        "RolloutPaused",
        "PauseEnded",
        "SetWeight",
        "RolloutPaused",
        "Promoted",
        "SetWeight",
        "RolloutCompleted",
    ]


def test_connect_failures_abort_to_stable_with_the_rate(world: World) -> None:
    world.sync()
    world.counts["v2"] = [12, 12]
    status = world.sync(after=5)
    assert status["phase"] == "Degraded"
    assert world.weights() == [100, 0]
    assert "connect-failure rate 1.000 (UF/UH/NC 12 of 12) > 0.05" in status["message"]
    assert status["steps"][0]["measurements"][-1]["values"]["connectFailureRate"] == 1.0
    world.counts["v2"] = [12, 12]  # no new failures after the retry
    world.request(retry=True)
    status = world.sync(after=1)
    assert (status["phase"], status["currentStepIndex"], world.weights()) == ("Paused", 1, [80, 20])


def test_failures_before_the_window_do_not_count(world: World) -> None:
    world.counts["v2"] = [100, 100]  # an earlier canary's failures, before this rollout
    world.sync()
    world.counts["v2"][0] += 20
    status = world.sync(after=5)
    assert status["phase"] == "Paused" and world.weights() == [80, 20]


def test_abort_during_pause_and_resume_after_restart(world: World, tmp_path: Path) -> None:
    world.sync()
    world.sync(after=30)
    assert world.weights() == [50, 50]
    # A new controller (after down/up) resumes from the status alone.
    world.controller = RolloutController(
        world.store, metrics=world.metrics, clock=lambda: world.now
    )
    status = world.sync(after=100)
    assert (status["phase"], status["currentStepIndex"]) == ("Paused", 3)
    world.request(abort=True)
    status = world.sync(after=1)
    assert (status["phase"], world.weights()) == ("Degraded", [100, 0])
    assert status["message"] == "aborted by the user"


def test_missing_virtual_service_is_reported_not_started(world: World) -> None:
    world.store.delete("VirtualService", "default", "tcp-echo")
    status = world.sync()
    assert status["phase"] == "Degraded"
    assert status["message"] == 'VirtualService "tcp-echo" not found'
    assert status["conditions"][0]["type"] == "InvalidSpec"


def _rebalance_request(world: World) -> str | None:
    vs = world.store.get("VirtualService", "default", "tcp-echo")
    assert vs is not None
    annotations = vs["metadata"].get("annotations") or {}
    return annotations.get("traffic.tcpmesh.io/rebalance-request")


def test_rebalance_true_asks_for_a_rebalance_with_every_weight_it_writes(world: World) -> None:
    world.sync()
    assert _rebalance_request(world) is None, "without rebalance: true, weights alone"
    obj = world.rollout()
    world.store.replace({**obj, "spec": {**obj["spec"], "rebalance": True}})
    world.sync(after=30)
    assert world.weights() == [50, 50]
    at_50 = _rebalance_request(world)
    assert at_50 is not None and at_50.startswith("tcp-echo-")
    world.request(abort=True)
    world.sync(after=1)
    assert world.weights() == [100, 0]
    after_abort = _rebalance_request(world)
    assert after_abort is not None and after_abort != at_50, "the abort moves connections back"
