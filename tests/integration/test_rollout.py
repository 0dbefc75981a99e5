"""A Rollout over the seed's tcp-echo, driven by the real controller, CLI and gateway."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.apiserver.client import ApiClient
from tests.integration.harness import SAMPLES, MeshHarness, exchange, seeded_mesh
from tests.integration.kubectl_helpers import current_kubectl, kubectl

pytestmark = pytest.mark.integration

ADDRESS = "127.0.12.1"
PORT = 31400
# Steady load: one connection every LOAD_GAP seconds, bounded in count and time.
LOAD_GAP = 0.05
LOAD_LIMIT = 4000

ROLLOUT = """
apiVersion: rollouts.tcpmesh.io/v1alpha1
kind: Rollout
metadata: {name: tcp-echo}
spec:
  virtualService: {name: tcp-echo, port: 31400}
  stable: {host: tcp-echo, subset: v1}
  canary: {host: tcp-echo, subset: v2}
  analysis:
    interval: 2s
    minSamples: 5
    gates:
      connectFailureRate: {max: 0.05}
  steps:
  - setWeight: 20
  - pause: {duration: 10s}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
"""


class Load:
    """Connections one after another in a thread; every reply's first word is counted."""

    def __init__(self) -> None:
        self.words: Counter[str] = Counter()
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for n in range(LOAD_LIMIT):
            if self._stop.is_set():
                return
            try:
                reply = exchange(ADDRESS, PORT, f"load {n}", timeout=5)
                word = reply.split(" ", 1)[0]
                if word in ("one", "two"):
                    self.words[word] += 1
                else:
                    self.failed += 1
            except OSError:
                self.failed += 1
            self._stop.wait(LOAD_GAP)


@pytest.fixture
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    with seeded_mesh(
        tmp_path_factory.mktemp("state"),
        ADDRESS,
        SAMPLES / "tcp-echo-all-v1.yaml",
    ) as harness:
        yield harness


def _apply_text(mesh: MeshHarness, tmp: Path, text: str) -> None:
    path = tmp / "rollout.yaml"
    path.write_text(text)
    mesh.apply(path)


def _client(mesh: MeshHarness) -> ApiClient:
    # In-process over the API's socket: a CLI process per poll is too slow to see a
    # 10 s step on a loaded machine.
    return ApiClient.from_state_dir(mesh.state_dir)


def _weights(mesh: MeshHarness) -> str:
    vs = _client(mesh).get("VirtualService", "default", "tcp-echo")
    return " ".join(str(d.get("weight")) for d in vs["spec"]["tcp"][0]["route"])


def _get_vs_weights(mesh: MeshHarness) -> str:
    template = "jsonpath={.spec.tcp[0].route[*].weight}"
    return mesh.tcpmesh("get", "vs", "tcp-echo", "-o", template).stdout.strip()


def _status(mesh: MeshHarness) -> dict[str, Any]:
    obj = _client(mesh).get("Rollout", "default", "tcp-echo")
    status: dict[str, Any] = obj.get("status") or {}
    return status


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _started_at(mesh: MeshHarness, step: int) -> float:
    """When the controller began ``step`` (its status's stepStartedAt)."""
    status = _status(mesh)
    assert status["currentStepIndex"] == step, status
    return _seconds(status["stepStartedAt"])


def _at(mesh: MeshHarness, phase: str, step: int) -> bool:
    status = _status(mesh)
    return status.get("phase") == phase and status.get("currentStepIndex") == step


def test_rollout_reaches_healthy_under_load_with_each_weight_in_turn(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    watcher = subprocess.Popen(
        [
            *(sys.executable, "-m", "tcpmesh", "--state-dir", str(mesh.state_dir)),
            *("rollout", "status", "tcp-echo", "--watch", "--timeout", "90"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        missing = mesh.tcpmesh("rollout", "status", "tcp-echo", check=False)
        assert missing.code == 1 and "(NotFound)" in missing.stderr, missing.stderr
        assert watcher.stdout is not None
        # The watch started before the Rollout exists waits for it (no NotFound race).
        first = watcher.stdout.readline()
        assert first == 'Waiting for rollout "tcp-echo" to be created\n'
        with Load() as load:
            _apply_text(mesh, tmp_path, ROLLOUT)
            mesh.wait_for("weight 20", lambda: _weights(mesh) == "80 20", 15)
            seen.append(_weights(mesh))
            paused_at = _started_at(mesh, 1)
            mesh.wait_for("step 3", lambda: _at(mesh, "Paused", 3), 25)
            seen.append(_weights(mesh))
            # The controller's own clock: when the pause began and when step 3 did.
            waited = _started_at(mesh, 3) - paused_at
            time.sleep(2)
            assert _at(mesh, "Paused", 3), "an indefinite pause waits for promote"
            assert _weights(mesh) == "50 50"
            promoted = mesh.tcpmesh("rollout", "promote", "tcp-echo")
            assert promoted.stdout.strip() == "rollout.rollouts.tcpmesh.io/tcp-echo promoted"
            mesh.wait_for("Healthy", lambda: _at(mesh, "Healthy", 5), 15)
            seen.append(_weights(mesh))
            time.sleep(1)
        out, err = watcher.communicate(timeout=30)
        out = first + out
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert seen == ["80 20", "50 50", "0 100"]
    assert _get_vs_weights(mesh) == "0 100"
    assert 10.0 <= waited <= 13.0, f"the 10s pause took {waited:.1f}s"
    assert load.failed == 0, f"{load.failed} failed connections (words {load.words})"
    assert load.words["one"] > 0 and load.words["two"] > 0
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    for expected in (
        "step 1/5 Paused weights 80/20: step 1: paused for 10s",
        "step 3/5 Paused weights 50/50: step 3: paused until promoted",
        "step 5/5 Healthy weights 0/100: all steps done: 100% to canary v2",
    ):
        assert expected in lines, out
    table = mesh.tcpmesh("get", "rollout").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "STEP", "WEIGHTS", "AGE"]
    assert table[1].split()[:4] == ["tcp-echo", "Healthy", "5/5", "0/100"]


def test_abort_during_pause_returns_to_stable_and_retry_starts_over(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    _apply_text(mesh, tmp_path, ROLLOUT.replace("duration: 10s", "duration: 1s"))
    mesh.wait_for("the indefinite pause", lambda: _at(mesh, "Paused", 3), 20)
    assert _weights(mesh) == "50 50"
    aborted = mesh.tcpmesh("rollout", "abort", "tcp-echo")
    assert aborted.stdout.strip() == "rollout.rollouts.tcpmesh.io/tcp-echo aborted"
    mesh.wait_for("Degraded", lambda: _status(mesh).get("phase") == "Degraded", 10)
    assert _weights(mesh) == "100 0"
    assert _status(mesh)["message"] == "aborted by the user"
    words = {exchange(ADDRESS, PORT, "after abort").split(" ", 1)[0] for _ in range(20)}
    assert words == {"one"}
    watch = mesh.tcpmesh("rollout", "status", "tcp-echo", "--watch", check=False)
    assert watch.code == 1, "a Degraded rollout's watch exits 1"
    assert "Degraded weights 100/0: aborted by the user" in watch.stdout
    _events_show_the_abort(mesh)

    retried = mesh.tcpmesh("rollout", "retry", "tcp-echo")
    assert retried.stdout.strip() == "rollout.rollouts.tcpmesh.io/tcp-echo retried"
    mesh.wait_for("the first pause again", lambda: _weights(mesh) in ("80 20", "50 50"), 10)
    again = mesh.tcpmesh("rollout", "retry", "tcp-echo", check=False)
    assert again.code == 1 and "is not aborted" in again.stderr


def _events_show_the_abort(mesh: MeshHarness) -> None:
    """Every transition is a core/v1 Event that kubectl lists and describes."""
    config = Path(mesh.tcpmesh("kubeconfig", "--path").stdout.strip())
    listed = kubectl(
        *(current_kubectl(), config, "get", "events", "--field-selector"),
        *("involvedObject.kind=Rollout", "-o", "jsonpath={range .items[*]}{.reason}{'\\n'}{end}"),
    ).stdout.split()
    for reason in ("RolloutStarted", "SetWeight", "PauseEnded", "RolloutPaused"):
        assert reason in listed, listed
    assert listed.count("RolloutAborted") == 1, listed
    described = kubectl(current_kubectl(), config, "describe", "rollout", "tcp-echo").stdout
    events = described[described.index("Events:") :]
    assert re.search(r"Warning\s+RolloutAborted\s.*rollouts-controller", events), events
    assert "aborted by the user: 100% to stable v1" in events, events


def test_pause_resume_and_down_up_mid_rollout(mesh: MeshHarness, tmp_path: Path) -> None:
    _apply_text(mesh, tmp_path, ROLLOUT.replace("duration: 10s", "duration: 12s"))
    mesh.wait_for("weight 20", lambda: _weights(mesh) == "80 20", 15)
    mesh.tcpmesh("rollout", "pause", "tcp-echo")
    mesh.wait_for(
        "paused by the user", lambda: _status(mesh).get("pauseReason") == "PausedByUser", 10
    )
    assert _at(mesh, "Paused", 1)
    time.sleep(13)
    assert _at(mesh, "Paused", 1) and _weights(mesh) == "80 20", "a user pause holds the timer"
    mesh.tcpmesh("down")
    mesh.up()
    time.sleep(2)
    assert _at(mesh, "Paused", 1) and _weights(mesh) == "80 20"
    mesh.tcpmesh("rollout", "resume", "tcp-echo")
    mesh.wait_for("weight 50 after down/up", lambda: _weights(mesh) == "50 50", 20)
    mesh.tcpmesh("down")
    mesh.up()
    time.sleep(2)
    assert _at(mesh, "Paused", 3), "it resumes at the step it was in"
    mesh.tcpmesh("rollout", "promote", "tcp-echo")
    mesh.wait_for("Healthy", lambda: _at(mesh, "Healthy", 5), 15)
    summary = mesh.tcpmesh("rollout", "status", "tcp-echo").stdout
    assert "Phase:     Healthy (all steps done: 100% to canary v2)" in summary
    assert "Weights:   stable v1 0, canary v2 100" in summary


# v2 whose container cannot start (its port argument is not a number): it crash-loops,
# never becomes ready, and every connection the route gives v2 closes with UH.
BROKEN_V2 = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-echo-v2}
spec:
  replicas: 1
  selector: {matchLabels: {app: tcp-echo, version: v2}}
  template:
    metadata: {labels: {app: tcp-echo, version: v2}}
    spec:
      containers:
      - name: tcp-echo
        image: docker.io/istio/tcp-echo-server:1.1
        args: ["not-a-port", "two"]
        ports:
        - containerPort: 9000
"""


def _v2_pods(mesh: MeshHarness) -> list[dict[str, Any]]:
    return [p for p in mesh.pods() if p["metadata"]["name"].startswith("tcp-echo-v2-")]


def _only_broken_v2(mesh: MeshHarness) -> bool:
    """The old v2 pod (which answers) is gone; only the broken one is left."""
    pods = _v2_pods(mesh)
    return len(pods) == 1 and pods[0]["spec"]["containers"][0].get("args") == [
        "not-a-port",
        "two",
    ]


def test_broken_canary_aborts_on_the_connect_failure_gate(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_V2)
    # A rolling update would keep the good v2 pod while the new one is not ready.
    mesh.tcpmesh("delete", "deployment", "tcp-echo-v2")
    mesh.wait_for("the good v2 pod to go", lambda: not _v2_pods(mesh), 30)
    mesh.apply(broken)
    mesh.wait_for("only the broken v2 pod", lambda: _only_broken_v2(mesh), 60)
    with Load() as load:
        _apply_text(mesh, tmp_path, ROLLOUT.replace("duration: 10s", "duration: 60s"))
        # The abort may come before a poll ever sees 80/20: wait for the verdict.
        mesh.wait_for("the abort", lambda: _status(mesh).get("phase") == "Degraded", 40)
        assert _weights(mesh) == "100 0"
        failed_at_abort = load.failed
        time.sleep(2)
        # Give in-flight connections picked before the weight change time to finish.
        after = load.failed
        time.sleep(3)
        assert load.failed == after, "no failures once stable has 100% again"
    status = _status(mesh)
    conditions = {c["type"]: c for c in status["conditions"]}
    # The controller's clock: from the canary's first traffic (step 1 began right after
    # setWeight 20) to the abort.
    took = _seconds(conditions["Progressing"]["lastTransitionTime"]) - _seconds(
        status["stepStartedAt"]
    )
    assert 0 < took < 10, f"aborted {took:.1f}s after the canary got traffic"
    assert status["currentStepIndex"] == 1
    assert failed_at_abort > 0
    measured = status["steps"][0]["measurements"][-1]
    rate = measured["values"]["connectFailureRate"]
    assert measured["verdict"] == "Failed" and rate > 0.05
    # The message carries the measured rate (endpoints may still have listed the old
    # v2 pod for a moment, so not every canary connection need have failed).
    assert re.search(
        rf"^analysis failed at step 1: connect-failure rate {rate:.3f} "
        r"\(UF/UH/NC \d+ of \d+\) > 0.05$",
        status["message"],
    ), status["message"]
    progressing = conditions["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutAborted")
    mesh.tcpmesh("rollout", "retry", "tcp-echo")
    mesh.wait_for("weight 20 again", lambda: _weights(mesh) == "80 20", 10)
    assert _status(mesh)["phase"] == "Paused"
