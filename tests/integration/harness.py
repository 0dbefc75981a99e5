"""Drive a real mesh the way a user does: the ``tcpmesh`` command and plain sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "src" / "tcpmesh" / "samples" / "tcp-echo"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class MeshHarness:
    def __init__(
        self,
        state_dir: Path,
        address: str,
        workers: int = 2,
        dataplane: str = "python",
        env: dict[str, str] | None = None,
        store: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        # `up --store`: None for the default (SQLite in the state directory).
        self.store = store
        self.address = address
        self.workers = workers
        self.dataplane = dataplane
        # Extra environment for every command, hence for the mesh and its pods.
        self.env = env or {}

    def tcpmesh(self, *args: str, stdin: str | None = None, check: bool = True) -> Result:
        completed = subprocess.run(
            [sys.executable, "-m", "tcpmesh", "--state-dir", str(self.state_dir), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, **self.env},
        )
        result = Result(completed.returncode, completed.stdout, completed.stderr)
        if check and result.code != 0:
            raise AssertionError(f"tcpmesh {' '.join(args)} exited {result.code}: {result.stderr}")
        return result

    def up(self) -> None:
        self.tcpmesh(
            "up",
            "--detach",
            "--address",
            self.address,
            "--workers",
            str(self.workers),
            "--dataplane",
            self.dataplane,
            *(["--store", self.store] if self.store else []),
        )

    def down(self) -> None:
        self.tcpmesh("down", check=False)
        self.kill_leftover_pods()

    def kill_leftover_pods(self) -> None:
        """Stop pod processes this test's mesh started, should ``down`` have failed.

        The runtime records ``{container: {"pid", "argv"}}`` per pod; a process counts as
        ours only if it still runs that argv with this state directory in its environment.
        """
        marker = f"TCPMESH_STATE_DIR={self.state_dir}".encode()
        for pid_file in (self.state_dir / "pods").glob("*/*.pid"):
            try:
                entries = json.loads(pid_file.read_text()).values()
            except (OSError, ValueError):
                continue
            for entry in entries:
                pid = int(entry["pid"])
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
                except OSError:
                    continue
                argv = [os.fsencode(a) for a in entry["argv"]]
                if cmdline.split(b"\0") == argv and marker in _environ(pid).split(b"\0"):
                    os.killpg(pid, signal.SIGKILL)

    def apply(self, *files: Path) -> Result:
        args: list[str] = ["apply"]
        for file in files:
            args += ["-f", str(file)]
        return self.tcpmesh(*args)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.tcpmesh("get", *args, "-o", "json").stdout)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def deployments_ready(self, *names: str) -> bool:
        for name in names:
            status = self.get_json("deployment", name).get("status") or {}
            if status.get("readyReplicas", 0) < 1:
                return False
        return True

    def pods(self, namespace: str = "default") -> list[dict[str, Any]]:
        return list(self.get_json("pods", "-n", namespace)["items"])


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def exchange(address: str, port: int, line: str, hold: float = 0.0, timeout: float = 5.0) -> str:
    """``(echo LINE; sleep HOLD) | nc ADDRESS PORT``: send, half-close, read to EOF."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        if hold:
            time.sleep(hold)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode()


def first_word(address: str, port: int) -> str:
    reply = exchange(address, port, "probe")
    return reply.split(" ", 1)[0] if reply else ""


@contextmanager
def seeded_mesh(state_dir: Path, address: str, *route_files: Path) -> Iterator[MeshHarness]:
    """A one-worker mesh running the tcp-echo sample with ``route_files`` applied in order,
    whose 31400 listener answers "one"; stopped (pods killed) however the test ends."""
    harness = MeshHarness(state_dir, address, workers=1)
    try:
        harness.up()
        harness.apply(
            SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml", *route_files
        )
        harness.wait_for("routes to v1", lambda: _answers(address) == "one")
        yield harness
    finally:
        harness.down()


def _answers(address: str) -> str:
    try:
        return first_word(address, 31400)
    except OSError:
        return ""


def flip_under_load(mesh: MeshHarness, address: str, port: int, routes: Mapping[str, Path]) -> None:
    """The seed's flip test: 40 clients talk to ``address:port`` while the route flips
    between ``routes["v2"]`` and ``routes["v1"]`` (applied files) at least 8 times over
    5.5 s; no open connection is reset or moved, and new ones follow each flip in 1 s.
    The route is on v1 when it is called."""
    stop = threading.Event()
    errors: list[str] = []
    prefixes: list[set[str]] = [set() for _ in range(40)]
    replies = [0] * 40
    sent = [0] * 40

    def client(index: int) -> None:
        try:
            with socket.create_connection((address, port), timeout=5) as sock:
                reader = sock.makefile("rb")
                deadline = time.monotonic() + 30
                while not stop.is_set() and time.monotonic() < deadline:
                    sock.sendall(f"c{index} n{sent[index]}\n".encode())
                    sent[index] += 1
                    line = reader.readline().decode()
                    if not line.endswith(f"c{index} n{sent[index] - 1}\n"):
                        errors.append(f"client {index}: unexpected reply {line!r}")
                        return
                    prefixes[index].add(line.split(" ", 1)[0])
                    replies[index] += 1
                    time.sleep(0.05)
        except OSError as exc:
            errors.append(f"client {index}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        follow_times: list[float] = []
        start = time.monotonic()
        flips = 0
        while flips < 8 or time.monotonic() - start < 5.5:
            version = "v2" if flips % 2 == 0 else "v1"
            mesh.apply(routes[version])
            word = {"v1": "one", "v2": "two"}[version]
            follow_times.append(
                mesh.wait_for(
                    f"new connections on {version}",
                    lambda w=word: first_word(address, port) == w,
                    1.0,
                )
            )
            flips += 1
            assert flips <= 40
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert errors == []
    assert all(len(p) == 1 for p in prefixes), prefixes
    assert all(p == {"one"} for p in prefixes)
    assert sent == replies
    assert min(replies) >= 5.0 / 0.06 * 0.5  # each client kept talking through the flips
    assert max(follow_times) < 1.0
