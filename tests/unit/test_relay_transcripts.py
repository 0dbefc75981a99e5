"""Relay as transcripts: events in, what it does to both peers out, without sockets.

The relay's direction state is the pure ``flow_step`` (tested first, as a table); then the
real ``Relay`` is driven through a fake event loop, a fake upstream socket and a fake
client transport that write down every call, in the style of mitmproxy's layer tests.
"""

from __future__ import annotations

import errno
import socket
import types
from collections.abc import Callable
from typing import Any

import pytest

from tcpmesh.dataplane import pump
from tcpmesh.dataplane.pump import Flow, FlowEvent, Relay, flow_step

# -- the direction state machine ----------------------------------------------------------


def test_a_fin_with_nothing_queued_goes_to_the_sink_at_once() -> None:
    assert flow_step(Flow.OPEN, FlowEvent.EOF, False) == (Flow.FIN_SENT, True)


def test_a_fin_waits_for_the_queued_bytes_then_goes() -> None:
    state, fin = flow_step(Flow.OPEN, FlowEvent.EOF, True)
    assert (state, fin) == (Flow.FIN_PENDING, False)
    assert flow_step(state, FlowEvent.DRAINED, True) == (Flow.FIN_PENDING, False)
    assert flow_step(state, FlowEvent.DRAINED, False) == (Flow.FIN_SENT, True)


def test_drained_or_a_second_fin_changes_nothing_else() -> None:
    assert flow_step(Flow.OPEN, FlowEvent.DRAINED, False) == (Flow.OPEN, False)
    assert flow_step(Flow.FIN_SENT, FlowEvent.EOF, False) == (Flow.FIN_SENT, False)
    assert flow_step(Flow.FIN_SENT, FlowEvent.DRAINED, False) == (Flow.FIN_SENT, False)


@pytest.mark.parametrize("state", list(Flow))
def test_a_lost_sink_ends_the_direction_from_any_state(state: Flow) -> None:
    assert flow_step(state, FlowEvent.LOST, True) == (Flow.LOST, False)
    assert flow_step(Flow.LOST, FlowEvent.EOF, False) == (Flow.LOST, False)


# -- fakes that record ---------------------------------------------------------------------

Log = list[str]


class FakeHandle:
    def __init__(self, log: Log) -> None:
        self.log = log

    def cancel(self) -> None:
        self.log.append("timer cancelled")


class FakeLoop:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.readers: dict[int, Callable[[], None]] = {}
        self.writers: dict[int, Callable[[], None]] = {}

    def add_reader(self, fd: int, cb: Callable[[], None]) -> None:
        self.readers[fd] = cb
        self.log.append("up: read on")

    def remove_reader(self, fd: int) -> None:
        del self.readers[fd]
        self.log.append("up: read off")

    def add_writer(self, fd: int, cb: Callable[[], None]) -> None:
        self.writers[fd] = cb

    def remove_writer(self, fd: int) -> None:
        del self.writers[fd]

    def call_later(self, delay: float, cb: Callable[[], None]) -> FakeHandle:
        self.log.append(f"timer {delay:g}s")
        return FakeHandle(self.log)


class FakeSocket:
    """The upstream: connect_ex answers ``connect``; send takes at most ``room`` bytes."""

    def __init__(self, log: Log, connect: int) -> None:
        self.log = log
        self.connect = connect
        self.room = 1 << 30
        self.incoming: list[bytes] = []

    def fileno(self) -> int:
        return 7

    def setsockopt(self, *args: Any) -> None:
        pass

    def getsockopt(self, *args: Any) -> int:
        return 0

    def connect_ex(self, address: tuple[str, int]) -> int:
        return self.connect

    def getpeername(self) -> tuple[str, int]:
        raise OSError(errno.ENOTCONN, "not connected yet")

    def send(self, data: bytes | memoryview) -> int:
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        if not taken:
            raise BlockingIOError
        self.log.append(f"up: send {taken!r}")
        return len(taken)

    def recv_into(self, buffer: bytearray) -> int:
        chunk = self.incoming.pop(0)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def shutdown(self, how: int) -> None:
        assert how == socket.SHUT_WR
        self.log.append("up: FIN")

    def close(self) -> None:
        self.log.append("up: close")


class FakeTransport:
    """The client: ``buffered`` is what its write buffer holds (the relay asks for it)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.buffered = 0
        self.closing = False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def pause_reading(self) -> None:
        self.log.append("client: read off")

    def resume_reading(self) -> None:
        self.log.append("client: read on")

    def write(self, data: bytes | memoryview) -> None:
        self.log.append(f"client: write {bytes(data)!r}")

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> None:
        return None  # no socket: the relay sends FIN with write_eof()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.log.append("client: FIN")

    def close(self) -> None:
        self.closing = True
        self.log.append("client: close")

    def abort(self) -> None:
        self.closing = True
        self.log.append("client: abort")


class Recorded(Relay):
    __slots__ = ("log",)

    def __init__(self, loop: FakeLoop, log: Log) -> None:
        super().__init__(loop, 1000)  # type: ignore[arg-type]
        self.log = log

    def upstream_connected(self, sock: socket.socket) -> None:
        self.log.append("hook: connected")

    def upstream_failed(self, timed_out: bool | None) -> bool:
        self.log.append(f"hook: failed timed_out={timed_out}")
        return False

    def relay_done(self) -> None:
        self.log.append("hook: done")


class Transcript:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, connect: int = 0) -> None:
        self.log: Log = []
        self.loop = FakeLoop(self.log)
        self.up = FakeSocket(self.log, connect)
        self.client = FakeTransport(self.log)
        fake = types.SimpleNamespace(**vars(socket))
        fake.socket = lambda *args: self.up
        monkeypatch.setattr(pump, "socket", fake)
        self.relay = Recorded(self.loop, self.log)
        self.relay.connection_made(self.client)  # type: ignore[arg-type]
        self.relay.connect("127.0.0.2", 9000, 3.0)

    def take(self) -> Log:
        """What happened since the last take."""
        out, self.log[:] = list(self.log), []
        return out

    def upstream_sends(self, data: bytes) -> None:
        self.up.incoming.append(data)
        self.loop.readers[7]()

    def upstream_writable(self) -> None:
        self.loop.writers[7]()


def test_half_close_from_the_client_keeps_the_upstream_direction_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = Transcript(monkeypatch)
    assert t.take() == ["client: read off", "hook: connected", "up: read on", "client: read on"]
    t.relay.data_received(b"ping\n")
    assert t.take() == ["up: send b'ping\\n'"]
    t.relay.eof_received()  # >> client FIN
    assert t.take() == ["up: FIN"]  # << FIN to the upstream
    t.upstream_sends(b"pong\n")  # the other direction still flows
    assert t.take() == ["client: write b'pong\\n'"]
    t.upstream_sends(b"")  # >> upstream FIN: both directions ended
    assert t.take() == ["up: read off", "up: close", "client: close"]
    t.relay.connection_lost(None)
    assert t.take() == ["hook: done"]


def test_half_close_from_the_upstream_waits_for_the_client_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = Transcript(monkeypatch)
    t.take()
    t.upstream_sends(b"last words\n")
    t.client.buffered = 11  # the client has not taken them yet
    t.upstream_sends(b"")  # >> upstream FIN
    assert t.take() == ["client: write b'last words\\n'", "up: read off"]  # no FIN yet
    t.relay.data_received(b"still talking\n")  # the client direction still flows
    assert t.take() == ["up: send b'still talking\\n'"]
    t.client.buffered = 0
    t.relay.resume_writing()  # the buffer drained
    assert t.take() == ["client: FIN"]  # << FIN to the client, after its bytes


def test_a_client_fin_follows_the_bytes_the_upstream_has_not_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = Transcript(monkeypatch)
    t.take()
    t.up.room = 3
    t.relay.data_received(b"abcdef")
    t.relay.eof_received()
    assert t.take() == ["up: send b'abc'"]  # "def" is queued: the FIN waits
    t.up.room = 100
    t.upstream_writable()
    # The FIN follows the last byte; the client, done sending, is not read any more.
    assert t.take() == ["up: send b'def'", "up: FIN", "client: read off"]


def test_abort_while_connecting_closes_the_upstream_and_is_not_its_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = Transcript(monkeypatch, connect=errno.EINPROGRESS)
    assert t.take() == ["client: read off", "timer 3s"]  # waiting for the handshake
    t.relay.data_received(b"early")  # held until the upstream is there
    assert t.take() == []
    t.relay.connection_lost(None)  # >> the client leaves
    assert t.take() == ["timer cancelled", "up: close", "hook: failed timed_out=None", "hook: done"]
    assert t.loop.writers == {} and t.loop.readers == {}


def test_back_pressure_pauses_and_resumes_each_side(monkeypatch: pytest.MonkeyPatch) -> None:
    t = Transcript(monkeypatch)
    t.take()
    # The client cannot keep up: its transport passes the mark, upstream reading stops.
    t.relay.pause_writing()
    t.upstream_sends(b"x" * 10)
    assert t.take() == ["client: write b'xxxxxxxxxx'", "up: read off"]
    t.relay.resume_writing()
    assert t.take() == ["up: read on"]
    # The upstream cannot keep up: above the high-water mark (1000) the client is paused.
    t.up.room = 0
    t.relay.data_received(b"y" * 1001)
    assert t.take() == ["client: read off"]
    t.up.room = 1 << 20
    t.upstream_writable()
    assert t.take() == [f"up: send {b'y' * 1001!r}", "client: read on"]
