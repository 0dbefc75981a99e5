"""The splicing relay against real socket pairs, driven by a recording fake event loop.

The fake loop keeps the callbacks the splicer registers; ``turn`` runs those whose
descriptors ``select`` reports ready, so each test reads as a transcript of what the
peers did and which callbacks the splicer kept (reading the source, waiting for the sink).
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tcpmesh.dataplane import splice
from tcpmesh.dataplane.flow import Flow
from tcpmesh.dataplane.splice import PipePool, RelayMode, Splicer, relay_mode, splice_after

pytestmark = pytest.mark.skipif(not splice.splice_available(), reason="no splice(2)")

Callback = tuple[Callable[..., None], tuple[Any, ...]]


class FakeLoop:
    def __init__(self) -> None:
        self.readers: dict[int, Callback] = {}
        self.writers: dict[int, Callback] = {}

    def add_reader(self, fd: int, cb: Callable[..., None], *args: Any) -> None:
        self.readers[fd] = (cb, args)

    def remove_reader(self, fd: int) -> bool:
        return self.readers.pop(fd, None) is not None

    def add_writer(self, fd: int, cb: Callable[..., None], *args: Any) -> None:
        self.writers[fd] = (cb, args)

    def remove_writer(self, fd: int) -> bool:
        return self.writers.pop(fd, None) is not None

    def turn(self, rounds: int = 50) -> None:
        """Run ready callbacks until none is ready (at most ``rounds`` times)."""
        for _ in range(rounds):
            readable, writable, _ = select.select(list(self.readers), list(self.writers), [], 0)
            if not readable and not writable:
                return
            for fd in readable:
                if fd in self.readers:
                    cb, args = self.readers[fd]
                    cb(*args)
            for fd in writable:
                if fd in self.writers:
                    cb, args = self.writers[fd]
                    cb(*args)


class Owner:
    def __init__(self) -> None:
        self.bytes_from = [0, 0]
        self.flows = [Flow.OPEN, Flow.OPEN]
        self.ended: list[bool] = []

    def splice_flow(self, way: int, state: Flow) -> None:
        self.flows[way] = state

    def splice_ended(self, failed: bool) -> None:
        self.ended.append(failed)


class Wired:
    """client <-> [client_inner | splicer | upstream_inner] <-> upstream."""

    def __init__(self, capacity: int = 64 * 1024) -> None:
        self.client, inner_c = socket.socketpair()
        self.upstream, self.inner_u = socket.socketpair()
        for s in (self.client, inner_c, self.upstream, self.inner_u):
            s.setblocking(False)
        self.inner_c_fd = inner_c.detach()  # the splicer closes its client descriptor
        self.loop = FakeLoop()
        self.owner = Owner()
        self.pool = PipePool(capacity)
        self.splicer = Splicer(
            self.loop,  # type: ignore[arg-type]
            self.inner_c_fd,
            self.inner_u.fileno(),
            self.owner,
            self.pool,
        )
        self.splicer.start()

    def close(self) -> None:
        self.splicer.close()
        self.pool.close()
        for s in (self.client, self.upstream, self.inner_u):
            s.close()


@pytest.fixture
def wired() -> Iterator[Wired]:
    w = Wired()
    try:
        yield w
    finally:
        w.close()


def recv_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not data:
            return out + b"<EOF>"
        out += data


def send_some(sock: socket.socket, data: bytes) -> int:
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


def test_modes_and_when_each_hands_over() -> None:
    assert relay_mode(None) is RelayMode.AUTO
    assert relay_mode("copy") is RelayMode.COPY
    assert relay_mode("splice") is RelayMode.SPLICE
    assert splice_after(RelayMode.COPY) == -1
    assert splice_after(RelayMode.SPLICE) == 0
    assert splice_after(RelayMode.AUTO) == splice.AUTO_SPLICE_READ > 0


def test_an_unknown_mode_is_one_line_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^TCPMESH_RELAY='fast': expected one of copy, splice"):
        relay_mode("fast")


def test_without_splice_every_mode_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splice, "_SPLICE", None)
    assert relay_mode("splice") is RelayMode.COPY
    assert relay_mode("auto") is RelayMode.COPY


def test_bytes_cross_both_ways_and_are_counted(wired: Wired) -> None:
    wired.client.send(b"hello upstream")
    wired.upstream.send(b"hello client!")
    wired.loop.turn()
    assert recv_all(wired.upstream) == b"hello upstream"
    assert recv_all(wired.client) == b"hello client!"
    assert wired.owner.bytes_from == [14, 13]
    assert wired.splicer.queued == 0
    # Each chunk went straight through: the one pipe made went back to the pool.
    assert wired.pool.free == 1


def test_half_close_each_way_then_the_relay_ends(wired: Wired) -> None:
    wired.client.send(b"request")
    wired.client.shutdown(socket.SHUT_WR)
    wired.loop.turn()
    assert recv_all(wired.upstream) == b"request<EOF>"
    assert wired.owner.flows == [Flow.FIN_SENT, Flow.OPEN]
    assert wired.inner_c_fd not in wired.loop.readers  # nothing more to read from the client
    assert wired.owner.ended == []
    wired.upstream.send(b"reply after the FIN")
    wired.loop.turn()
    assert recv_all(wired.client) == b"reply after the FIN"
    wired.upstream.shutdown(socket.SHUT_WR)
    wired.loop.turn()
    assert recv_all(wired.client) == b"<EOF>"
    assert wired.owner.flows == [Flow.FIN_SENT, Flow.FIN_SENT]
    assert wired.owner.ended == [False]
    assert wired.loop.readers == {} and wired.loop.writers == {}


def test_a_full_sink_stops_reading_the_source_until_it_drains(wired: Wired) -> None:
    payload = os.urandom(4 << 20)
    sent = 0
    # The upstream reads nothing: the client fills its socket, the pipe, the upstream's.
    for _ in range(200):
        sent += send_some(wired.client, payload[sent : sent + 65536])
        wired.loop.turn(5)
        if wired.inner_c_fd not in wired.loop.readers:
            break
    assert wired.inner_c_fd not in wired.loop.readers  # the source is no longer read
    assert wired.inner_u.fileno() in wired.loop.writers  # it waits for the sink
    assert 0 < wired.splicer.queued <= 64 * 1024
    assert wired.pool.free == 0  # the waiting direction holds its pipe
    got = b""
    for _ in range(2000):
        got += recv_all(wired.upstream)
        sent += send_some(wired.client, payload[sent : sent + 65536])
        wired.loop.turn(5)
        if sent == len(payload) and len(got) == sent:
            break
    assert got == payload
    assert wired.owner.bytes_from[0] == len(payload)
    assert wired.pool.free == 1 and wired.splicer.queued == 0


def test_a_reset_peer_ends_the_relay_as_failed(wired: Wired) -> None:
    wired.client.send(b"unread by the proxy yet")
    wired.upstream.close()
    wired.loop.turn()
    assert wired.owner.ended == [True]
    assert wired.loop.readers == {} and wired.loop.writers == {}
