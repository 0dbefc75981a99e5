"""The zero-copy relay: both directions of an established connection through pipes.

Copying moves every byte through user space twice (``recv`` into a Python buffer, then
``send`` from it) and runs the interpreter once per chunk in each direction.
``splice(2)`` moves the bytes socket → pipe → socket inside the kernel: the pipe is the
only buffer, so back-pressure is its capacity (sized like the copying relay's high-water
mark), and the interpreter only sees readiness callbacks.

A ``Relay`` hands a connection over when its route needs no byte inspection (never a
TLS session the proxy terminates) and nothing is queued in user space, so no byte can
overtake another. The hand-over is chosen per connection (``RelayMode``): ``copy``
never, ``splice`` as soon as the upstream is connected, ``auto`` after the first read
that fills at least ``AUTO_SPLICE_READ`` bytes — a bulk transfer. Small
request/response traffic stays on the copying path, where the set-up (a ``dup`` and
two ``pipe2`` calls, five descriptors to close) would cost more than it saves
(measured in docs/benchmarks.md).

Each direction keeps the same ``Flow`` state as the copying relay (``flow_step``): a FIN
from the source follows the bytes still in the pipe, then goes to the sink with
``shutdown(SHUT_WR)``, while the other direction keeps flowing.

The client's socket belongs to the event loop's transport, which refuses a second
reader on its descriptor; the relay works on a duplicate (``dup``) and leaves the
transport paused and empty until it closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import resource
import socket
from enum import StrEnum
from typing import Protocol

from tcpmesh.dataplane.flow import Flow, FlowEvent, flow_step

# A read of at least this much on the copying path marks a bulk transfer (auto mode).
AUTO_SPLICE_READ = 64 * 1024
PIPE_MIN = 64 * 1024  # the kernel's default capacity, and the least it grants
_SPLICE = getattr(os, "splice", None)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTUNREACH)


class RelayMode(StrEnum):
    """How a connection's bytes are moved (``TCPMESH_RELAY``; default ``auto``)."""

    COPY = "copy"
    SPLICE = "splice"
    AUTO = "auto"


def splice_available() -> bool:
    """Whether this Python and kernel can splice (Linux, Python 3.10+)."""
    return _SPLICE is not None


def relay_mode(text: str | None) -> RelayMode:
    """The mode named by ``text`` (empty: auto); splice falls back to copy without splice."""
    try:
        mode = RelayMode(text or RelayMode.AUTO)
    except ValueError:
        raise ValueError(
            f"TCPMESH_RELAY={text!r}: expected one of {', '.join(m.value for m in RelayMode)}"
        ) from None
    return mode if splice_available() else RelayMode.COPY


def splice_after(mode: RelayMode) -> int:
    """The read size that hands a connection to the splicer: -1 never, 0 at once."""
    if mode is RelayMode.SPLICE:
        return 0
    if mode is RelayMode.AUTO:
        return AUTO_SPLICE_READ
    return -1


class SpliceOwner(Protocol):
    """What the splicer tells the relay that handed it a connection."""

    bytes_from: list[int]

    def splice_flow(self, way: int, state: Flow) -> None:
        """Direction ``way`` (DOWNSTREAM: client → upstream) moved to ``state``."""

    def splice_ended(self, failed: bool) -> None:
        """Both directions are done (``failed``: a peer reset or vanished)."""


class _Way:
    """One direction: source socket → pipe → sink socket."""

    __slots__ = ("index", "pipe", "queued", "reading", "sink", "src", "state", "writing")

    def __init__(self, index: int, src: int, sink: int, state: Flow) -> None:
        self.index = index
        self.src = src
        self.sink = sink
        self.pipe: tuple[int, int] | None = None  # (read end, write end) while bytes wait
        self.queued = 0  # bytes in the pipe
        self.reading = False
        self.writing = False
        self.state = state


class PipePool:
    """Empty pipes of one capacity, lent to a direction only while bytes sit in it.

    A direction that moves a chunk straight through (the sink took it all) gives its
    pipe back at once, so a spliced connection holds a pipe only while its sink is
    slow: thousands of spliced, mostly idle connections cost one descriptor each (the
    client duplicate), not five, and the worker's open-file limit stays the copying
    relay's.
    """

    KEEP = 64  # empty pipes kept for reuse; more are closed when returned

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, PIPE_MIN)
        self._free: list[tuple[int, int]] = []
        # Connections are handed over only while descriptors are plentiful.
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.fd_ceiling = soft // 2 if soft != resource.RLIM_INFINITY else 1 << 30

    def take(self) -> tuple[int, int]:
        """An empty pipe (raises OSError when none can be made)."""
        if self._free:
            return self._free.pop()
        rd, wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if _F_SETPIPE_SZ is not None and self.capacity > PIPE_MIN:
            # Above /proc/sys/fs/pipe-max-size (or the user's pipe quota) the default stays.
            with contextlib.suppress(OSError):
                fcntl.fcntl(wr, _F_SETPIPE_SZ, self.capacity)
        return rd, wr

    def give(self, pipe: tuple[int, int]) -> None:
        """Return an empty pipe."""
        if len(self._free) < self.KEEP:
            self._free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def discard(self, pipe: tuple[int, int]) -> None:
        """Close a pipe that may hold bytes (its connection ended)."""
        os.close(pipe[0])
        os.close(pipe[1])

    @property
    def free(self) -> int:
        return len(self._free)

    def close(self) -> None:
        """Close the pipes kept for reuse (those lent out close with their connection)."""
        while self._free:
            self.discard(self._free.pop())


class Splicer:
    """Both directions of one connection, spliced; the event loop drives it."""

    __slots__ = ("_client", "_closed", "_loop", "_owner", "_pool", "_ways")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client_fd: int,
        upstream_fd: int,
        owner: SpliceOwner,
        pool: PipePool,
        states: tuple[Flow, Flow] = (Flow.OPEN, Flow.OPEN),
    ) -> None:
        """Take over ``client_fd`` (a duplicate this object closes) and ``upstream_fd``
        (the owner's, left open), each direction in its current state (OPEN or
        FIN_SENT); pipes come from ``pool`` when bytes have to wait in one."""
        self._loop = loop
        self._owner = owner
        self._client = client_fd
        self._closed = False
        self._pool = pool
        self._ways = (
            _Way(0, client_fd, upstream_fd, states[0]),
            _Way(1, upstream_fd, client_fd, states[1]),
        )

    def start(self) -> None:
        for way in self._ways:
            if way.state is Flow.OPEN:
                self._read_on(way)

    @property
    def queued(self) -> int:
        """Bytes in the pipes (kernel memory, bounded by their capacity)."""
        return self._ways[0].queued + self._ways[1].queued

    # -- readiness --------------------------------------------------------------------

    def _readable(self, way: _Way) -> None:
        assert _SPLICE is not None
        pipe = way.pipe
        try:
            if pipe is None:
                # Only read with an empty pipe: a full sink turns reading off (below).
                pipe = way.pipe = self._pool.take()
            n = _SPLICE(way.src, pipe[1], self._pool.capacity, flags=_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._fail()
            return
        if not n:
            self._eof(way)
            return
        way.queued += n
        self._owner.bytes_from[way.index] += n
        if self._drain(way) and way.queued:
            # The sink is full: stop reading the source until it takes more.
            self._read_off(way)
            way.writing = True
            self._loop.add_writer(way.sink, self._writable, way)

    def _writable(self, way: _Way) -> None:
        if not self._drain(way) or way.queued:
            return
        way.writing = False
        self._loop.remove_writer(way.sink)
        if way.state is Flow.FIN_PENDING:
            self._step(way, FlowEvent.DRAINED)
        elif way.state is Flow.OPEN:
            self._read_on(way)

    def _drain(self, way: _Way) -> bool:
        """Move what the pipe holds to the sink; False when the connection failed."""
        assert _SPLICE is not None
        pipe = way.pipe
        if pipe is None:
            return True
        while way.queued:
            try:
                n = _SPLICE(pipe[0], way.sink, way.queued, flags=_FLAGS)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self._fail()
                return False
            way.queued -= n
        way.pipe = None
        self._pool.give(pipe)
        return True

    def _eof(self, way: _Way) -> None:
        self._read_off(way)
        if self._step(way, FlowEvent.EOF) and way.queued and not way.writing:
            way.writing = True
            self._loop.add_writer(way.sink, self._writable, way)

    def _step(self, way: _Way, event: FlowEvent) -> bool:
        """Apply ``event`` to the direction; False when the relay ended because of it."""
        way.state, fin = flow_step(way.state, event, bool(way.queued))
        self._owner.splice_flow(way.index, way.state)
        if fin:
            try:
                os_shutdown(way.sink)
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise
        if all(w.state is Flow.FIN_SENT for w in self._ways):
            self.close()
            self._owner.splice_ended(False)
            return False
        return True

    def _fail(self) -> None:
        self.close()
        self._owner.splice_ended(True)

    def _read_on(self, way: _Way) -> None:
        if not way.reading and not self._closed:
            way.reading = True
            self._loop.add_reader(way.src, self._readable, way)

    def _read_off(self, way: _Way) -> None:
        if way.reading:
            way.reading = False
            self._loop.remove_reader(way.src)

    def close(self) -> None:
        """Unregister every callback, close the pipes and the client duplicate (once)."""
        if self._closed:
            return
        self._closed = True
        for way in self._ways:
            self._read_off(way)
            if way.writing:
                way.writing = False
                self._loop.remove_writer(way.sink)
            way.queued = 0
            if way.pipe is not None:
                self._pool.discard(way.pipe)
                way.pipe = None
        os.close(self._client)


def os_shutdown(fd: int) -> None:
    """``shutdown(fd, SHUT_WR)`` on a bare descriptor: a socket object over it, detached.
    Family and type are given so that Python asks the kernel nothing to build it."""
    view = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        view.shutdown(socket.SHUT_WR)
    finally:
        view.detach()
