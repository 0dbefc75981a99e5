"""A pod's logs stay within the kubelet's cap (10 MiB x 5 files) under any write rate.

1 GiB goes through a tcp-echo pod, which logs every request and every response, so more
than 2 GiB are written to its log; the files are watched while it happens, and never
exceed the cap.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpmesh.runtime import logs
from tests.integration.harness import SAMPLES, MeshHarness

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

ADDRESS = "127.0.0.164"
GIB = 1024**3
LINE = b"x" * (64 * 1024 - 1) + b"\n"
CAP_FILE = logs.MAX_BYTES
CAP_TOTAL = logs.MAX_BYTES * logs.MAX_FILES


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[MeshHarness]:
    harness = MeshHarness(tmp_path / "state", ADDRESS, workers=1)
    try:
        harness.up()
        harness.apply(SAMPLES / "tcp-echo-deployments.yaml")
        harness.wait_for("tcp-echo v1", lambda: harness.deployments_ready("tcp-echo-v1"))
        yield harness
    finally:
        harness.down()


class Watcher(threading.Thread):
    """Samples the log files' sizes until stopped; keeps the largest seen."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(daemon=True)
        self.log_path = log_path
        self.largest_file = 0
        self.largest_total = 0
        self.most_files = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.sample()

    def sample(self) -> None:
        sizes = []
        for path in logs.all_files(self.log_path):
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:
                continue
        self.largest_file = max(self.largest_file, *sizes, 0)
        self.largest_total = max(self.largest_total, sum(sizes))
        self.most_files = max(self.most_files, len(sizes))


def pump(address: str, port: int, total: int) -> int:
    """Send ``total`` bytes of lines and read every echo; return the bytes echoed."""
    received = 0
    with socket.create_connection((address, port), timeout=30) as sock:
        sent = 0

        def send() -> None:
            nonlocal sent
            while sent < total:
                sock.sendall(LINE)
                sent += len(LINE)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        while True:
            data = sock.recv(1024 * 1024)
            if not data:
                break
            received += len(data)
        sender.join(30)
    return received


def test_a_gib_through_tcp_echo_keeps_its_log_within_the_cap(mesh: MeshHarness) -> None:
    (pod,) = [p for p in mesh.pods() if p["metadata"]["name"].startswith("tcp-echo-v1-")]
    name, pod_ip = pod["metadata"]["name"], pod["status"]["podIP"]
    log_path = mesh.state_dir / "pods" / "default" / f"{name}.log"
    watcher = Watcher(log_path)
    watcher.start()
    started = time.monotonic()
    try:
        received = pump(pod_ip, 9000, GIB)
    finally:
        watcher.done.set()
        watcher.join(5)
    watcher.sample()
    seconds = time.monotonic() - started
    # "one " before every line of the echo.
    assert received == GIB + (GIB // len(LINE)) * len(b"one ")
    print(
        f"1 GiB in {seconds:.1f} s; largest log file {watcher.largest_file / 2**20:.1f} MiB, "
        f"largest total {watcher.largest_total / 2**20:.1f} MiB in {watcher.most_files} files"
    )
    assert watcher.most_files == logs.MAX_FILES  # it did rotate, all the way round
    assert watcher.largest_file <= CAP_FILE
    assert watcher.largest_total <= CAP_TOTAL
    # The newest lines are in the current file: the log still follows the pod.
    assert log_path.read_bytes().rstrip(b"\n").endswith(b"x")
