"""A crash of the mesh and the next ``up`` cut no connection, on both data planes.

Twenty connections are opened through the gateway to tcp-echo v1 and kept open; the
mesh process is killed with SIGKILL and started again. The new mesh adopts the gateway
and the tcp-echo pods (the very same processes), both data planes resync from it, and
every connection keeps answering. Routes changed afterwards apply to new connections
only. Envoy runs with a 2 s drain time, so a listener it drained on resync would cut the
connections well within the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpmesh.runtime import process
from tcpmesh.store import Store
from tcpmesh.xds import missing_envoy_support
from tests.integration.harness import SAMPLES, MeshHarness, first_word

pytestmark = pytest.mark.integration

ADDRESSES = {"python": "127.0.0.162", "envoy": "127.0.0.163"}
HAND_OVER_ADDRESS = "127.0.0.165"
PORT = 31400
CONNECTIONS = 20
ENVOY_DRAIN_TIME = "2"


@pytest.fixture(params=["python", "envoy"])
def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeshHarness]:
    dataplane: str = request.param
    env = {}
    if dataplane == "envoy":
        missing = missing_envoy_support()
        if missing is not None:
            pytest.skip(f"Envoy data plane: {missing}")
        env["TCPMESH_ENVOY_DRAIN_TIME"] = ENVOY_DRAIN_TIME
    harness = MeshHarness(
        tmp_path / "state", ADDRESSES[dataplane], workers=1, dataplane=dataplane, env=env
    )
    try:
        harness.up()
        harness.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
        harness.wait_for(
            "tcp-echo v1 and v2",
            lambda: harness.deployments_ready("tcp-echo-v1", "tcp-echo-v2"),
            60.0,
        )
        harness.apply(SAMPLES / "tcp-echo-all-v1.yaml")
        harness.wait_for("routes to v1", lambda: _word(harness) == "one")
        yield harness
    finally:
        harness.down()


def _word(mesh: MeshHarness) -> str:
    try:
        return first_word(mesh.address, PORT)
    except OSError:
        return ""


class Conversation:
    """One long-lived connection that says a numbered line and expects it echoed."""

    def __init__(self, address: str, index: int) -> None:
        self.index = index
        self.sock = socket.create_connection((address, PORT), timeout=10)
        self.said = 0
        self.reader = self.sock.makefile("rb")

    def say(self) -> str:
        self.said += 1
        line = f"c{self.index} line {self.said}\n".encode()
        self.sock.sendall(line)
        reply = self.reader.readline()
        if not reply:
            raise ConnectionResetError("closed by the peer")
        prefix, _, echoed = reply.decode().rstrip("\n").partition(" ")
        assert echoed == line.decode().rstrip("\n"), reply
        return prefix

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _pids(mesh: MeshHarness) -> dict[str, str]:
    """containerID (``pid://N``) of every pod, by pod name, all namespaces."""
    pods = mesh.get_json("pods", "-A")["items"]
    return {
        p["metadata"]["name"]: s.get("containerID", "")
        for p in pods
        for s in (p.get("status") or {}).get("containerStatuses") or []
    }


def _survivors(conversations: list[Conversation]) -> tuple[int, list[str]]:
    """How many conversations still answer, and the first word of each answer."""
    words = []
    for conversation in conversations:
        try:
            words.append(conversation.say())
        except OSError as exc:
            words.append(f"reset: {exc}")
    return sum(1 for w in words if not w.startswith("reset")), words


def test_kill_9_and_up_again_cut_no_connection(mesh: MeshHarness) -> None:
    conversations = [Conversation(mesh.address, i) for i in range(CONNECTIONS)]
    try:
        assert [c.say() for c in conversations] == ["one"] * CONNECTIONS
        before = _pids(mesh)
        credentials = json.loads((mesh.state_dir / "apiserver.json").read_text())
        os.kill(credentials["pid"], signal.SIGKILL)
        mesh.wait_for("the API to go away", lambda: mesh.tcpmesh("status", check=False).code != 0)
        assert _survivors(conversations) == (CONNECTIONS, ["one"] * CONNECTIONS)

        mesh.up()
        # The same processes serve on: adopted, not restarted.
        assert _pids(mesh) == before
        # Longer than Envoy's drain time: a drained listener would have closed them by now.
        time.sleep(float(ENVOY_DRAIN_TIME) + 1)
        alive, words = _survivors(conversations)
        assert (alive, words) == (CONNECTIONS, ["one"] * CONNECTIONS)

        # The new control plane drives both data planes: a route change applies to new
        # connections, and still to none of the open ones.
        mesh.apply(SAMPLES / "tcp-echo-all-v2.yaml")
        mesh.wait_for("the new route", lambda: _word(mesh) == "two", 15.0)
        time.sleep(float(ENVOY_DRAIN_TIME) + 1)
        assert _survivors(conversations) == (CONNECTIONS, ["one"] * CONNECTIONS)
    finally:
        for conversation in conversations:
            conversation.close()


def test_up_after_a_crash_stops_the_processes_no_pod_wants_any_more(
    mesh: MeshHarness,
) -> None:
    credentials = json.loads((mesh.state_dir / "apiserver.json").read_text())
    mesh.wait_for("every container running", lambda: all(_pids(mesh).values()))
    pids = _pids(mesh)
    os.kill(credentials["pid"], signal.SIGKILL)
    mesh.wait_for("the API to go away", lambda: mesh.tcpmesh("status", check=False).code != 0)
    # While the mesh is down, v2's pod is removed from the store behind its back.
    v2 = next(name for name in pids if name.startswith("tcp-echo-v2-"))
    v2_pid = int(pids[v2].removeprefix("pid://"))
    store = Store(mesh.state_dir / "store.db")
    try:
        store.delete("Deployment", "default", "tcp-echo-v2")
        store.delete("Pod", "default", v2)
    finally:
        store.close()
    mesh.up()
    mesh.wait_for("v2's old process to stop", lambda: not _alive(v2_pid), 15.0)
    after = _pids(mesh)
    assert v2 not in after
    assert {k: v for k, v in after.items() if k != v2} == {k: v for k, v in pids.items() if k != v2}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _api_up(mesh: MeshHarness) -> bool:
    return mesh.tcpmesh("status", check=False).code == 0


def test_a_gateway_of_an_older_build_hands_over_by_draining(tmp_path: Path) -> None:
    """After an upgrade, the new gateway takes new connections and the old one drains."""
    state_dir, address = tmp_path / "state", HAND_OVER_ADDRESS
    old_build = MeshHarness(state_dir, address, workers=1, env={"TCPMESH_BUILD": "build-1"})
    new_build = MeshHarness(state_dir, address, workers=1, env={"TCPMESH_BUILD": "build-2"})
    conversations: list[Conversation] = []
    try:
        old_build.up()
        old_build.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
        old_build.apply(SAMPLES / "tcp-echo-all-v1.yaml")
        old_build.wait_for("routes to v1", lambda: _word(old_build) == "one", 60.0)
        conversations = [Conversation(address, i) for i in range(CONNECTIONS)]
        assert [c.say() for c in conversations] == ["one"] * CONNECTIONS
        (gateway,) = [n for n in _pids(old_build) if n.startswith("istio-ingressgateway-")]
        old_gateway = int(_pids(old_build)[gateway].removeprefix("pid://"))
        credentials = json.loads((state_dir / "apiserver.json").read_text())
        os.kill(credentials["pid"], signal.SIGKILL)
        old_build.wait_for(
            "the API to go away", lambda: old_build.tcpmesh("status", check=False).code != 0
        )

        new_build.up()
        new_build.wait_for(
            "the old gateway to stop accepting",
            lambda: PORT not in process.listening_ports(old_gateway),
            30.0,
        )
        new_gateway = int(_pids(new_build)[gateway].removeprefix("pid://"))
        assert new_gateway != old_gateway
        # Draining: the old gateway still relays every open connection...
        assert _alive(old_gateway)
        assert _survivors(conversations) == (CONNECTIONS, ["one"] * CONNECTIONS)
        # ...while the new one takes the new connections.
        assert _word(new_build) == "one"
        # It exits once its last connection is closed.
        for conversation in conversations:
            conversation.close()
        conversations = []
        new_build.wait_for("the drained gateway to exit", lambda: not _alive(old_gateway), 15.0)
    finally:
        for conversation in conversations:
            conversation.close()
        new_build.down()
