"""The bundled tcp-echo server as a real process on a loopback address of its own."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tcpmesh.runtime.tcpecho import USAGE

pytestmark = pytest.mark.integration


def _free_address() -> str:
    # A random loopback address keeps these tests clear of anything else on 9000.
    return f"127.77.{random.randint(1, 254)}.{random.randint(1, 254)}"


def _start(args: list[str], pod_ip: str | None, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ}
    env.pop("POD_IP", None)
    if pod_ip is not None:
        env["POD_IP"] = pod_ip
    # A file, not a pipe: a server logging more than a pipe holds must not block.
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tcpmesh.runtime.tcpecho", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait_for_lines(log: Path, count: int, proc: subprocess.Popen[bytes]) -> list[str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines(keepends=True)
        if len(lines) >= count or proc.poll() is not None:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"no {count} lines in {log} within 20 s")


@contextmanager
def echo_server(
    ports: list[int], prefix: str, log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A running server; yields its address once every port listens."""
    address = _free_address()
    proc = _start([",".join(map(str, ports)), prefix], address, log)
    try:
        lines = _wait_for_lines(log, len(ports), proc)
        assert all(line.startswith("listening on ") for line in lines[: len(ports)]), lines
        yield address, proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _exchange(address: str, port: int, data: bytes, *, half_close: bool = True) -> bytes:
    """Send ``data``, optionally shut down writing, and read until the server closes."""
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_each_line_is_answered_with_the_prefix_in_order(tmp_path: Path) -> None:
    with echo_server([9000], "one", tmp_path / "log") as (address, _):
        assert _exchange(address, 9000, b"hello\nworld\r\nthird\n") == (
            b"one hello\none world\r\none third\n"
        )


def test_many_lines_on_one_connection_interleaved_with_replies(tmp_path: Path) -> None:
    with (
        echo_server([9000], "two", tmp_path / "log") as (address, _),
        socket.create_connection((address, 9000), timeout=5) as sock,
    ):
        for i in range(20):
            line = f"line {i}\n".encode()
            sock.sendall(line)
            assert _read_exactly(sock, len(line) + 4) == b"two " + line


def test_a_line_split_across_writes_is_answered_once_complete(tmp_path: Path) -> None:
    with (
        echo_server([9000], "p", tmp_path / "log") as (address, _),
        socket.create_connection((address, 9000), timeout=5) as sock,
    ):
        sock.sendall(b"hel")
        time.sleep(0.1)
        sock.sendall(b"lo\n")
        assert _read_exactly(sock, 8) == b"p hello\n"


def test_a_last_line_without_newline_gets_no_reply(tmp_path: Path) -> None:
    with echo_server([9000], "one", tmp_path / "log") as (address, _):
        assert _exchange(address, 9000, b"complete\npartial") == b"one complete\n"
        assert _exchange(address, 9000, b"no newline at all") == b""


def test_half_close_still_gets_the_reply_then_eof(tmp_path: Path) -> None:
    with (
        echo_server([9000], "one", tmp_path / "log") as (address, _),
        socket.create_connection((address, 9000), timeout=5) as sock,
    ):
        sock.sendall(b"ping\n")
        sock.shutdown(socket.SHUT_WR)
        assert _read_exactly(sock, 9) == b"one ping\n"
        assert sock.recv(100) == b""  # the server closes after EOF


def test_every_port_answers_with_the_same_prefix(tmp_path: Path) -> None:
    with echo_server([9000, 9001, 9002], "hello", tmp_path / "log") as (address, _):
        for port in (9000, 9001, 9002):
            assert _exchange(address, port, b"world\n") == b"hello world\n"


def test_long_lines_and_arbitrary_bytes_are_echoed_whole(tmp_path: Path) -> None:
    line = random.Random(1).randbytes(3_000_000).replace(b"\n", b"x")
    with echo_server([9000], "big", tmp_path / "log") as (address, _):
        assert _exchange(address, 9000, line + b"\n") == b"big " + line + b"\n"


def test_logs_listening_request_and_response(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with echo_server([9000, 9001], "one", log) as (address, proc):
        assert _exchange(address, 9001, b"abc\n") == b"one abc\n"
        lines = _wait_for_lines(log, 4, proc)
    assert lines == [
        f"listening on {address}:9000, prefix: one\n",
        f"listening on {address}:9001, prefix: one\n",
        "request: abc\n",
        "response: one abc\n",
    ]


@pytest.mark.parametrize("args", [[], ["9000"], ["9000", "one", "extra"]])
def test_wrong_argument_count_prints_usage_and_exits_1(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tcpmesh.runtime.tcpecho", *args],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stdout.decode() == USAGE + "\n"


def test_a_port_that_cannot_be_listened_on_exits_1(tmp_path: Path) -> None:
    with echo_server([9000], "one", tmp_path / "log") as (address, _):
        result = subprocess.run(
            [sys.executable, "-m", "tcpmesh.runtime.tcpecho", "9000", "two"],
            capture_output=True,
            timeout=30,
            env={**os.environ, "POD_IP": address},
        )
    assert result.returncode == 1
    assert result.stdout.decode() == (
        f"failed to create listener, err: listen tcp {address}:9000: bind: address already in use\n"
    )


def test_a_port_that_is_not_a_number_exits_1() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tcpmesh.runtime.tcpecho", "90x0", "one"],
        capture_output=True,
        timeout=30,
        env={**os.environ, "POD_IP": _free_address()},
    )
    assert result.returncode == 1
    assert result.stdout.decode() == (
        "failed to create listener, err: listen tcp: address tcp/90x0: unknown port\n"
    )
