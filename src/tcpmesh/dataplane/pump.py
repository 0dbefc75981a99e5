"""Moves bytes between the client and the upstream: flow control, half-close, timeouts.

One ``Relay`` object per connection is both the asyncio Protocol of the client's
transport and the owner of the upstream socket, which it drives itself with the loop's
``add_reader``/``add_writer`` (no second transport, no task, no coroutine per
connection). Profiling showed the per-connection cost dominated by the upstream
transport's ``create_connection`` task and its protocol adapter; a plain non-blocking
socket connects with one ``connect`` call and, only when the handshake did not complete
within that call (it does to a peer on this host), one writability callback.

Back-pressure: data from the upstream goes to the client transport; when that
transport's buffer passes the high-water mark (``pause_writing``), the relay stops
reading the upstream until it drains (``resume_writing``). Data from the client is sent
on the upstream socket at once; what the socket does not take is kept (at most about
``high_water`` plus one read chunk: above the mark the client transport is paused) and
flushed when the socket is writable again.

Half-close: when one peer sends FIN, the relay sends FIN to the other peer once the
bytes queued for it have left, and keeps relaying the opposite direction. The FIN goes
out with ``shutdown(SHUT_WR)`` on the socket, never with ``transport.write_eof()``:
uvloop 0.23 aborted with "double free or corruption" when ``write_eof`` (libuv's
``uv_shutdown`` request) ran under heavy connection churn. On the client side the relay
shuts the socket down only when the transport's buffer is empty (libuv's queue
included), so no byte can be queued behind the FIN, and it never writes to it again.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
from collections.abc import Callable
from enum import StrEnum
from typing import cast

from tcpmesh.dataplane.flow import Flow, FlowEvent, fin_seen, flow_step
from tcpmesh.dataplane.splice import PipePool, Splicer

DOWNSTREAM = 0
UPSTREAM = 1
DEFAULT_HIGH_WATER = 256 * 1024
# One read takes at most this much: large reads keep the per-byte cost of bulk transfers
# low (uvloop reads the client side with the same size).
READ_CHUNK = 256 * 1024


class Termination(StrEnum):
    """Why the proxy itself ended a connection (``Relay.termination``; empty: a peer closed)."""

    IDLE_TIMEOUT = "idle_timeout"
    MAX_CONNECTION_DURATION = "max_connection_duration"
    REBALANCE = "rebalance"  # dataplane.rebalance moved it toward the route's weights


# A direction can be handed to the splicer open, or done (its FIN delivered).
_SPLICEABLE = (Flow.OPEN, Flow.FIN_SENT)
_CONNECT_PENDING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN)
_SOCK_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)


class _ReadBuffer:
    """The buffer upstream reads land in, shared by every relay of the process.

    Reads go into one preallocated buffer and are written from a view of it, so the
    upstream-to-client direction allocates nothing per chunk while the client keeps up.
    """

    def __init__(self) -> None:
        self.buffer = bytearray(READ_CHUNK)
        self.view = memoryview(self.buffer)

    def renew(self) -> None:
        self.buffer = bytearray(READ_CHUNK)
        self.view = memoryview(self.buffer)


_shared = _ReadBuffer()


def _find_libc_shutdown() -> Callable[[int, int], int] | None:
    """shutdown(2) on a bare descriptor. A socket object over the descriptor would do
    too, but building one costs a getsockname() call and an object per connection."""
    try:
        func = ctypes.CDLL(None, use_errno=True).shutdown
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int)
    func.restype = ctypes.c_int
    return cast(Callable[[int, int], int], func)


_libc_shutdown = _find_libc_shutdown()


def shutdown_write(transport: asyncio.BaseTransport) -> None:
    """Send FIN on the transport's socket, bypassing the loop's own shutdown request."""
    if transport.get_extra_info("ssl_object") is not None:
        # A TLS session the proxy terminated: a bare FIN under it would cut the session
        # without close_notify. Closing sends close_notify once the buffer is flushed.
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        writer = cast(asyncio.WriteTransport, transport)
        if writer.can_write_eof():
            writer.write_eof()
        return
    fd = sock.fileno()
    if fd < 0:
        return
    if _libc_shutdown is not None:
        # Errors (ENOTCONN and friends: the peer is gone) are left to connection_lost.
        _libc_shutdown(fd, socket.SHUT_WR)
        return
    # A socket object over the transport's own descriptor: detach() in all cases, or its
    # finaliser would close a descriptor the event loop still owns.
    view = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
    try:
        view.shutdown(socket.SHUT_WR)
    except OSError:
        # ENOTCONN and friends: the peer is gone already; connection_lost will follow.
        pass
    finally:
        view.detach()


def _connected_now(sock: socket.socket) -> bool:
    """Whether a connect that returned EINPROGRESS has completed already.

    To a peer on this host it usually has (the kernel runs the peer's side of the
    handshake within the connect call); getpeername() succeeds only once it has, and
    spares waiting a loop iteration for writability (a poll handle, a timer, SO_ERROR).
    """
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


class Relay(asyncio.Protocol):
    """Both directions of one proxied connection (the client transport's protocol).

    Subclasses decide where to connect (``connection_made`` calls ``connect``) and
    hear about the outcome through ``upstream_connected``, ``upstream_failed`` and
    ``relay_done``.
    """

    __slots__ = (
        "_down",
        "_down_lost",
        "_down_paused",
        "_down_write_paused",
        "_early",
        "_high_water",
        "_loop",
        "_pending",
        "_pending_size",
        "_pipes",
        "_splice",
        "_splice_after",
        "_to_client",
        "_to_up",
        "_up",
        "_up_close_wanted",
        "_up_connected",
        "_up_fd",
        "_up_reading",
        "_up_timer",
        "_up_writing",
        "bytes_from",
        "done",
        "termination",
        "was_spliced",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        high_water: int,
        splice_after: int = -1,
        pipes: PipePool | None = None,
    ) -> None:
        self._loop = loop
        self._high_water = high_water
        # Hand the connection to a Splicer after a read of this many bytes (0: once the
        # upstream is connected; -1: never), with pipes from ``pipes``. See
        # dataplane.splice.
        self._splice_after = splice_after if pipes is not None else -1
        self._pipes = pipes
        self._splice: Splicer | None = None
        self.was_spliced = False
        self._down: asyncio.Transport | None = None
        self._up: socket.socket | None = None
        self._up_fd = -1
        self._up_connected = False
        self._up_reading = False
        self._up_writing = False
        self._up_close_wanted = False  # close the upstream once the pending bytes left
        self._up_timer: asyncio.TimerHandle | None = None
        self._down_lost = False
        self._down_paused = False  # we paused reading the client
        self._down_write_paused = False  # the client transport's buffer is above the mark
        # The two directions (see Flow): client -> upstream, upstream -> client.
        self._to_up = Flow.OPEN
        self._to_client = Flow.OPEN
        # Client bytes that arrived before the upstream connected, and client bytes the
        # upstream socket has not taken yet: () until there are some, so an idle
        # connection holds no list objects (about 140 bytes each with their GC headers).
        self._early: list[bytes] | tuple[()] = ()
        self._pending: list[bytes | memoryview] | tuple[()] = ()
        self._pending_size = 0
        # Bytes read from each side: [received from the client, received from upstream].
        self.bytes_from = [0, 0]
        # A Termination when the proxy ended the connection, else "".
        self.termination: str = ""
        self.done = False

    # -- the upstream socket ----------------------------------------------------------

    def connect(self, address: str, port: int, timeout: float) -> None:
        """Start the non-blocking connect; the client is held (not read) until it ends."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            # Non-blocking from the start: no separate ioctl.
            sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
        except OSError:
            self._fail_connect(False)
            return
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        self._up = sock
        self._up_fd = sock.fileno()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex((address, port))
        except OSError:
            code = errno.EINVAL
        if code == 0:
            self._on_connected()
        elif code in _CONNECT_PENDING:
            if _connected_now(sock):
                self._on_connected()
                return
            self._up_writing = True
            self._loop.add_writer(self._up_fd, self._on_connect_ready)
            self._up_timer = self._loop.call_later(timeout, self._connect_timed_out)
        else:
            self._fail_connect(False)

    def _on_connect_ready(self) -> None:
        sock = self._up
        if sock is None:
            return
        if self._up_timer is not None:
            self._up_timer.cancel()
            self._up_timer = None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            self._fail_connect(False)
            return
        loop = self._loop
        if not self._down_lost:
            # The reader goes on before the writer comes off: uvloop then keeps its poll
            # handle for the descriptor instead of closing it and opening a new one, which
            # saves several epoll_ctl calls and an ioctl per connection.
            self._up_reading = True
            loop.add_reader(self._up_fd, self._on_up_readable)
        loop.remove_writer(self._up_fd)
        self._up_writing = False
        self._on_connected()

    def _connect_timed_out(self) -> None:
        self._up_timer = None
        self._fail_connect(True)

    def _fail_connect(self, timed_out: bool) -> None:
        sock = self._up
        if sock is not None and not self._down_lost:
            # Drop the failed socket but keep the flow open: the owner may connect again
            # (Envoy's max_connect_attempts), and then the client never notices.
            self._up = None
            if self._up_timer is not None:
                self._up_timer.cancel()
                self._up_timer = None
            if self._up_writing:
                self._loop.remove_writer(self._up_fd)
                self._up_writing = False
            sock.close()
            if self.upstream_failed(timed_out):
                return
            self._to_up, _ = flow_step(self._to_up, FlowEvent.LOST, False)
        else:
            self._close_upstream()
            self.upstream_failed(timed_out)
        down = self._down
        if down is not None and not down.is_closing():
            down.close()
        self._maybe_done()

    def _on_connected(self) -> None:
        sock = self._up
        assert sock is not None
        if self._down_lost:
            self._close_upstream()
            self._maybe_done()
            return
        self._up_connected = True
        self.upstream_connected(sock)
        if self._early:
            early, self._early = self._early, ()
            for chunk in early:
                self._send_up(chunk)
                if self._up is None:
                    return
        if self._to_up is Flow.FIN_PENDING:
            self._up_drained()
        if not self._up_reading:
            self._up_reading = True
            self._loop.add_reader(self._up_fd, self._on_up_readable)
        self._update_down_reading()
        if self._splice_after == 0:
            # Not from here: this may run inside connection_made(), after which uvloop
            # starts reading the client whatever the protocol paused.
            self._loop.call_soon(self._maybe_splice)

    def _on_up_readable(self) -> None:
        sock = self._up
        if sock is None:
            return
        shared = _shared
        try:
            n = sock.recv_into(shared.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end("")
            return
        if not n:
            self._stop_up_reading()
            self._to_client, _ = flow_step(self._to_client, FlowEvent.EOF, True)
            if fin_seen(self._to_up) or self._down_lost:
                self._close_all()  # both directions ended: no half-open state to keep
                return
            self._send_fin_down_when_drained()
            return
        self.bytes_from[UPSTREAM] += n
        down = self._down
        if down is None or self._down_lost:
            return
        down.write(shared.view[:n])
        if down.get_write_buffer_size():
            # The transport queued (part of) the view instead of copying it: the buffer
            # is its now, and the next read goes to a fresh one.
            shared.renew()
        # The transport calls pause_writing() from write() when it passes the mark.
        if self._down_write_paused:
            self._stop_up_reading()
        elif n >= self._splice_after >= 0:
            self._maybe_splice()

    def _send_up(self, data: bytes | memoryview) -> None:
        sock = self._up
        assert sock is not None
        pending = self._pending
        if pending:
            pending.append(data)  # not empty: a list
            self._pending_size += len(data)
        else:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._end("")
                return
            if sent == len(data):
                return
            # A view, not a copy, of what the socket did not take.
            rest = memoryview(data)[sent:]
            self._pending = [rest]
            self._pending_size += len(rest)
            if not self._up_writing:
                self._up_writing = True
                self._loop.add_writer(self._up_fd, self._on_up_writable)
        if self._pending_size > self._high_water:
            self._update_down_reading()

    def _on_up_writable(self) -> None:
        sock = self._up
        if sock is None:
            return
        pending = self._pending
        while isinstance(pending, list) and pending:
            chunk = pending[0]
            try:
                sent = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._end("")
                return
            self._pending_size -= sent
            if sent < len(chunk):
                pending[0] = memoryview(chunk)[sent:]
                break
            pending.pop(0)
        if pending:
            if self._pending_size <= self._high_water // 4:
                self._update_down_reading()
            return
        self._pending = ()  # drained: the list goes
        self._up_writing = False
        self._loop.remove_writer(self._up_fd)
        if self._up_close_wanted:
            self._close_upstream()
            self._maybe_done()
            return
        if self._to_up is Flow.FIN_PENDING:
            self._up_drained()
        self._update_down_reading()

    def _up_drained(self) -> None:
        """Nothing may be queued for the upstream: send the client's FIN if it waits."""
        self._to_up, fin = flow_step(self._to_up, FlowEvent.DRAINED, bool(self._pending))
        if fin:
            self._shutdown_up()

    def _shutdown_up(self) -> None:
        if self._up is not None:
            # ENOTCONN and friends: the peer is gone; the next read or write says so.
            # try/except, not contextlib.suppress: no context object per connection.
            try:  # noqa: SIM105
                self._up.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _stop_up_reading(self) -> None:
        if self._up_reading:
            self._up_reading = False
            self._loop.remove_reader(self._up_fd)

    def _close_upstream_after_flush(self) -> None:
        """Close the upstream once the client bytes still queued for it have left (as a
        transport's ``close()`` would); at once when nothing is queued."""
        if not self._pending or self._up is None:
            self._close_upstream()
            return
        self._up_close_wanted = True
        self._stop_up_reading()

    def _close_upstream(self) -> None:
        if self._splice is not None:
            self._splice.close()
            self._splice = None
        sock = self._up
        if sock is None:
            return
        self._up = None
        self._to_up, _ = flow_step(self._to_up, FlowEvent.LOST, False)
        if self._up_timer is not None:
            self._up_timer.cancel()
            self._up_timer = None
        if self._up_reading:
            self._loop.remove_reader(self._up_fd)
            self._up_reading = False
        if self._up_writing:
            self._loop.remove_writer(self._up_fd)
            self._up_writing = False
        self._pending = ()
        self._pending_size = 0
        sock.close()

    # -- asyncio.Protocol: the client's transport ------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it (an
        # annotation, not cast(): no function call per connection).
        down: asyncio.Transport = transport  # type: ignore[assignment]
        self._down = down
        down.set_write_buffer_limits(high=self._high_water, low=self._high_water // 4)
        # Nothing is read from the client until the upstream is connected.
        self._down_paused = True
        down.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.bytes_from[DOWNSTREAM] += len(data)
        if not self._up_connected:
            # uvloop may deliver data right after connection_made() paused reading.
            if self._early:
                self._early.append(data)  # not empty: a list
            else:
                self._early = [data]
            return
        if self._up is not None:
            self._send_up(data)
            if len(data) >= self._splice_after >= 0:
                self._maybe_splice()

    def eof_received(self) -> bool:
        if fin_seen(self._to_client):
            # Both directions ended: close (which flushes what is queued) instead of a FIN.
            self._to_up, _ = flow_step(self._to_up, FlowEvent.EOF, True)
            self._close_all()
            return True
        queued = not self._up_connected or bool(self._pending)
        self._to_up, fin = flow_step(self._to_up, FlowEvent.EOF, queued)
        if fin:
            self._shutdown_up()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._down_lost = True
        self._to_client, _ = flow_step(self._to_client, FlowEvent.LOST, False)
        connecting = self._up is not None and not self._up_connected
        if connecting:
            self._close_upstream()
            self.upstream_failed(None)
        else:
            self._close_upstream_after_flush()
        self._maybe_done()

    def pause_writing(self) -> None:
        self._down_write_paused = True

    def resume_writing(self) -> None:
        self._down_write_paused = False
        if self._to_client is Flow.FIN_PENDING:
            self._send_fin_down_when_drained()
        if (
            self._up is not None
            and self._up_connected
            and not self._up_reading
            and self._to_client is Flow.OPEN
        ):
            self._up_reading = True
            self._loop.add_reader(self._up_fd, self._on_up_readable)

    # -- internals --------------------------------------------------------------------

    def _send_fin_down_when_drained(self) -> None:
        down = self._down
        if down is None or down.is_closing():
            return
        queued = down.get_write_buffer_size() != 0
        self._to_client, fin = flow_step(self._to_client, FlowEvent.DRAINED, queued)
        if fin:
            shutdown_write(down)
            return
        # Ask for resume_writing() exactly when the buffer is empty.
        down.set_write_buffer_limits(high=0, low=0)
        self._down_write_paused = True

    def _update_down_reading(self) -> None:
        down = self._down
        if down is None or down.is_closing():
            return
        want = (
            self._up_connected
            and self._up is not None
            and self._to_up is Flow.OPEN
            and self._pending_size <= self._high_water
        )
        if want == (not self._down_paused):
            return
        self._down_paused = not want
        if want:
            down.resume_reading()
        else:
            down.pause_reading()

    def _close_all(self) -> None:
        self._close_upstream_after_flush()
        down = self._down
        if down is not None and not down.is_closing():
            down.close()
        self._maybe_done()

    def _end(self, termination: str) -> None:
        """End the connection now (both sides), dropping what is still queued."""
        if self.done:
            return
        if termination and not self.termination:
            self.termination = termination
        self._close_upstream()
        down = self._down
        if down is not None and not self._down_lost:
            down.abort()
        self._maybe_done()

    def abort(self, termination: str = "") -> None:
        self._end(termination)

    def buffered(self) -> int:
        """Bytes queued in user space for both peers."""
        down = self._down
        queued = down.get_write_buffer_size() if down is not None and not self._down_lost else 0
        spliced = self._splice.queued if self._splice is not None else 0
        return queued + self._pending_size + sum(len(c) for c in self._early) + spliced

    # -- the zero-copy relay (dataplane.splice) ----------------------------------------

    def _maybe_splice(self) -> None:
        """Hand both directions to a Splicer if nothing is queued in user space now."""
        down = self._down
        if (
            self._splice is not None
            or down is None
            or self._up is None
            or not self._up_connected
            or self._down_lost
            or self._to_up not in _SPLICEABLE
            or self._to_client not in _SPLICEABLE
            or (fin_seen(self._to_up) and fin_seen(self._to_client))
            or self._pending
            or self._early
            or self._down_write_paused
            or down.get_write_buffer_size()
        ):
            return
        sock = down.get_extra_info("socket")
        if sock is None or down.get_extra_info("ssl_object") is not None:
            self._splice_after = -1  # not a plain socket: this connection keeps copying
            return
        pipes = self._pipes
        assert pipes is not None  # splice_after >= 0 only with a pool
        try:
            client_fd = os.dup(sock.fileno())
        except OSError:
            return
        if client_fd >= pipes.fd_ceiling:
            # Descriptors run short (the duplicate got the lowest free number): copying
            # needs none beyond the two sockets.
            os.close(client_fd)
            self._splice_after = -1
            return
        splicer = Splicer(
            self._loop, client_fd, self._up_fd, self, pipes, (self._to_up, self._to_client)
        )
        # The transport reads nothing more; the splicer reads and writes the duplicate.
        self._down_paused = True
        down.pause_reading()
        self._stop_up_reading()
        self._splice = splicer
        self.was_spliced = True
        splicer.start()

    def splice_flow(self, way: int, state: Flow) -> None:
        if way == DOWNSTREAM:
            self._to_up = state
        else:
            self._to_client = state

    def splice_ended(self, failed: bool) -> None:
        self._splice = None  # it closed itself
        if failed:
            self._end("")
        else:
            self._close_all()

    def _maybe_done(self) -> None:
        if self.done or not self._down_lost or self._up is not None:
            return
        self.done = True
        self.relay_done()

    # -- hooks for the owner ----------------------------------------------------------

    def upstream_connected(self, sock: socket.socket) -> None:
        """The upstream accepted the connection."""

    def upstream_failed(self, timed_out: bool | None) -> bool:
        """The connect failed (True: timed out; False: refused/error; None: abandoned).

        True when the owner started another ``connect`` (only while the client is
        still there and ``timed_out`` is not None); the client is then kept."""
        return False

    def relay_done(self) -> None:
        """Both sides are closed; called once."""
