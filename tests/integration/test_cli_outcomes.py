"""A write whose answer never comes is reported as unknown, with its own exit code.

Between the CLI and a real API server sits a proxy that forwards the request, waits
until the server starts answering (so the apply has committed), and then drops the
client's connection: the mesh dying at that moment, reproduced exactly every run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpmesh.apiserver.client import ApiClient
from tcpmesh.apiserver.credentials import write_credentials
from tests.integration.harness import REPO
from tests.integration.limits_server import TOKEN

pytestmark = pytest.mark.integration

EXIT_UNKNOWN = 3


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class DroppingProxy:
    """Forwards one request at a time; drops the client once the server answers."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answered = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                up.sendall(_read_request(conn))
                if up.recv(1):  # the server has committed and begun its answer
                    self.answered.set()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def server_port(tmp_path: Path) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.limits_server", str(tmp_path / "server")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    (tmp_path / "server").mkdir()
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def virtual_services(count: int) -> str:
    return "".join(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: vs-{i}}}\n"
        "spec: {hosts: [tcp-echo], tcp: [{route: [{destination: {host: tcp-echo}}]}]}\n"
        for i in range(count)
    )


def tcpmesh(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tcpmesh", "--state-dir", str(state_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_an_apply_cut_off_after_its_commit_says_unknown_and_how_to_check(
    tmp_path: Path, server_port: int
) -> None:
    proxy = DroppingProxy(server_port)
    try:
        state_dir = tmp_path / "state"
        write_credentials(state_dir, f"http://127.0.0.1:{proxy.port}", TOKEN, os.getpid())
        manifest = tmp_path / "many.yaml"
        manifest.write_text(virtual_services(400))
        completed = tcpmesh(state_dir, "apply", "-f", str(manifest))
    finally:
        proxy.close()
    assert proxy.answered.is_set()
    assert completed.returncode == EXIT_UNKNOWN, completed.stderr
    assert "Traceback" not in completed.stderr
    (line,) = completed.stderr.strip().splitlines()
    api = f"http://127.0.0.1:{proxy.port}"
    assert line.startswith(
        f"unknown: the connection to the tcpmesh API at {api} was lost after the request was sent"
    )
    assert line.endswith(
        "the outcome is unknown; the 400 objects may or may not have been applied; "
        "check with: tcpmesh get virtualservices -n default"
    )
    # And indeed they were all stored.
    stored = ApiClient(f"http://127.0.0.1:{server_port}", TOKEN).list("vs", "default")
    assert len(stored) == 400


def test_a_server_that_is_not_there_is_an_error_not_an_unknown(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    state_dir = tmp_path / "state"
    write_credentials(state_dir, f"http://127.0.0.1:{port}", TOKEN, os.getpid())
    manifest = tmp_path / "one.yaml"
    manifest.write_text(virtual_services(1))
    completed = tcpmesh(state_dir, "apply", "-f", str(manifest))
    assert completed.returncode == 1
    assert completed.stderr.startswith("error: cannot reach the tcpmesh API")
    assert len(completed.stderr.strip().splitlines()) == 1
