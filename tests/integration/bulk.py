"""Bulk transfers through tcp-echo, timed at both ends of the client, checked byte for byte.

A transfer sends random lines as fast as the path takes them and reads the replies
(``<prefix> <line>``) at the same time, recording when each chunk went out and came in.
The reply stream is a function of the sent one, so comparing SHA-256 digests checks that
nothing was dropped, reordered or changed in either direction. Rates are taken over a
window that starts after the load balancer's burst and the socket buffers have filled.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field

LINE = 16 * 1024  # bytes per line, newline included
# A fixed send buffer (no autotuning) for capped transfers: otherwise the kernel keeps
# growing it for seconds and the sender's count runs ahead of what the path carries.
SEND_BUFFER = 64 * 1024
MEGABIT = 1_000_000 / 8  # bytes


@dataclass
class Trace:
    """(monotonic time, bytes so far) after each send or receive."""

    points: list[tuple[float, int]] = field(default_factory=list)

    def add(self, count: int) -> None:
        total = self.points[-1][1] + count if self.points else count
        self.points.append((time.monotonic(), total))

    def at(self, when: float) -> int:
        """Bytes moved by ``when``."""
        index = bisect_left(self.points, (when, -1))
        return self.points[index - 1][1] if index else 0

    def mbps(self, start: float, end: float) -> float:
        return (self.at(end) - self.at(start)) / (end - start) / MEGABIT


@dataclass
class Transfer:
    started: float
    sent: Trace = field(default_factory=Trace)
    received: Trace = field(default_factory=Trace)
    until: float = 0.0  # the sender stops then (it may be moved while it runs)
    sent_digest: str = ""  # SHA-256 of the replies the sent lines call for
    received_digest: str = ""
    error: BaseException | None = None


def _send(sock: socket.socket, transfer: Transfer) -> None:
    expected = hashlib.sha256()
    try:
        while time.monotonic() < transfer.until:
            line = os.urandom(LINE // 2 - 1).hex().encode() + b"\n"
            sock.sendall(line)
            transfer.sent.add(len(line))
            expected.update(line)
        sock.shutdown(socket.SHUT_WR)
    except BaseException as exc:  # reported by the test, never swallowed
        transfer.error = exc
    transfer.sent_digest = expected.hexdigest()


def _receive(sock: socket.socket, transfer: Transfer) -> None:
    digest = hashlib.sha256()
    pending = b""
    try:
        while chunk := sock.recv(256 * 1024):
            transfer.received.add(len(chunk))
            # Strip the echo's "<prefix> " from each line; what remains must be what was sent.
            data = pending + chunk
            view = memoryview(data)
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                digest.update(view[data.index(b" ", start) + 1 : end + 1])
                start = end + 1
            pending = data[start:]
    except BaseException as exc:
        transfer.error = exc
    transfer.received_digest = digest.hexdigest()


def connect(address: str, port: int, fixed_buffer: bool = True) -> socket.socket:
    sock = socket.socket()
    if fixed_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.settimeout(30)
    sock.connect((address, port))
    return sock


def run(
    address: str, port: int, seconds: float, connections: int = 1, fixed_buffer: bool = True
) -> list[Transfer]:
    """``connections`` parallel transfers of ``seconds`` each; returns once all replies are in."""
    socks = [connect(address, port, fixed_buffer) for _ in range(connections)]
    started = time.monotonic()
    transfers = [Transfer(started, until=started + seconds) for _ in socks]
    threads = []
    for sock, transfer in zip(socks, transfers, strict=True):
        threads += [
            threading.Thread(target=_send, args=(sock, transfer)),
            threading.Thread(target=_receive, args=(sock, transfer)),
        ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    for sock in socks:
        sock.close()
    return transfers


class Background:
    """One transfer in the background (to change the cap while it runs)."""

    def __init__(self, address: str, port: int, seconds: float) -> None:
        self.sock = connect(address, port)
        now = time.monotonic()
        self.transfer = Transfer(now, until=now + seconds)
        self.threads = [
            threading.Thread(target=_send, args=(self.sock, self.transfer)),
            threading.Thread(target=_receive, args=(self.sock, self.transfer)),
        ]
        for thread in self.threads:
            thread.start()

    def finish(self, timeout: float) -> Transfer:
        for thread in self.threads:
            thread.join(timeout=timeout)
        self.sock.close()
        return self.transfer


def aggregate_mbps(transfers: list[Transfer], start: float, end: float, sent: bool) -> float:
    return sum((t.sent if sent else t.received).mbps(start, end) for t in transfers)
