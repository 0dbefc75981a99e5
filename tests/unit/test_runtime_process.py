"""Identifying a pod's process across meshes: pid, start time, argv, state dir, token."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpmesh.runtime import process
from tcpmesh.runtime.process import TOKEN_VARIABLE, PodProcess

IDENTITY = {"POD_NAME": "web-1", "POD_NAMESPACE": "default", "TCPMESH_STATE_DIR": "/state"}
ARGV = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[bytes], PodProcess]]:
    token = process.new_token()
    env = {**os.environ, **IDENTITY, TOKEN_VARIABLE: token}
    proc = subprocess.Popen(ARGV, env=env, start_new_session=True)
    try:
        ticks = process.start_ticks(proc.pid)
        assert ticks is not None
        yield proc, PodProcess(proc.pid, tuple(ARGV), ticks, token, "uid-1")
    finally:
        proc.kill()
        proc.wait()


def _wait_for_exec(proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        if cmdline.rstrip(b"\0").split(b"\0")[-1] == ARGV[-1].encode():
            return
        asyncio.run(asyncio.sleep(0.01))
    raise AssertionError("the child did not exec")


def test_the_process_it_started_is_recognised(
    child: tuple[subprocess.Popen[bytes], PodProcess],
) -> None:
    proc, recorded = child
    _wait_for_exec(proc)
    assert process.is_ours(recorded, IDENTITY)


@pytest.mark.parametrize(
    "change",
    [
        {"token": "0" * 32},
        {"start_ticks": -1},
        {"argv": (sys.executable, "-c", "other")},
    ],
    ids=["another-token", "another-start-time", "another-argv"],
)
def test_anything_else_is_not(
    child: tuple[subprocess.Popen[bytes], PodProcess], change: dict[str, object]
) -> None:
    proc, recorded = child
    _wait_for_exec(proc)
    assert not process.is_ours(dataclasses.replace(recorded, **change), IDENTITY)  # type: ignore[arg-type]
    assert not process.is_ours(recorded, {**IDENTITY, "TCPMESH_STATE_DIR": "/other"})


def test_a_pid_file_round_trips_privately(tmp_path: Path) -> None:
    recorded = PodProcess(42, ("a", "b"), 7, "t" * 32, "uid-1")
    path = tmp_path / "web-1.pid"
    process.write_pid_file(path, {"c": recorded})
    assert process.read_pid_file(path) == {"c": recorded}
    assert path.stat().st_mode & 0o077 == 0
    path.write_text('{"c": {"pid": 42, "argv": ["a"]}}')  # an older tcpmesh's entry
    assert process.read_pid_file(path) == {}


def test_stop_and_wait_for_a_process_that_is_not_a_child_of_the_loop(
    child: tuple[subprocess.Popen[bytes], PodProcess],
) -> None:
    proc, recorded = child
    _wait_for_exec(proc)

    async def stop() -> None:
        await process.stop_adopted(recorded, IDENTITY, grace=5.0)

    asyncio.run(stop())
    assert proc.wait(5) == -15
    assert not process.is_ours(recorded, IDENTITY)


def test_listening_ports_are_those_of_the_process_tree(tmp_path: Path) -> None:
    script = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); time.sleep(60)\n"
    )
    # The listener is a grandchild: a shell in between, as a supervisor and its workers.
    shell = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -c "$0"', script],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "MARKER": "value"},
    )
    try:
        assert shell.stdout is not None
        port = int(shell.stdout.readline())
        assert port in process.listening_ports(shell.pid)
        # The test runner is the shell's parent: its tree includes the listener.
        assert port in process.listening_ports(os.getpid())
        with subprocess.Popen(["sleep", "60"]) as bystander:
            assert process.listening_ports(bystander.pid) == set()
            bystander.kill()
        assert process.environment_value(shell.pid, "MARKER") == "value"
        assert process.environment_value(shell.pid, "NOT_THERE") is None
    finally:
        os.killpg(shell.pid, 9)
        shell.wait()
