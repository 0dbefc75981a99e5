"""Moves bytes between the client and the upstream: flow control, half-close, timeouts.

The relay works on asyncio transports through two thin Protocol adapters, so a chunk
costs one callback and one ``write``. Back-pressure: when one side's write buffer goes
above the high-water mark, reading from the other side pauses until it drains below
the low-water mark. So each direction holds at most about ``high_water`` plus one read
chunk in user space.

Half-close: when one peer sends FIN, the relay sends FIN to the other peer once the
bytes queued for it have left, and keeps relaying the opposite direction. The FIN is
sent with ``shutdown(SHUT_WR)`` on the socket, never with ``transport.write_eof()``:
uvloop 0.23 aborted with "double free or corruption" when ``write_eof`` (libuv's
``uv_shutdown`` request) ran under heavy connection churn. The relay only shuts the
socket down when the transport's buffer is empty (libuv's queue included), so no
byte can be queued behind the FIN, and it never writes to that side again.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol, cast

DOWNSTREAM = 0
UPSTREAM = 1
DEFAULT_HIGH_WATER = 256 * 1024


class RelayOwner(Protocol):
    """What the relay reports to the connection that owns it."""

    def upstream_connected(self, transport: asyncio.Transport) -> None: ...

    def downstream_lost_while_connecting(self) -> None: ...

    def relay_done(self) -> None: ...


def shutdown_write(transport: asyncio.BaseTransport) -> None:
    """Send FIN on the transport's socket, bypassing the loop's own shutdown request."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        writer = cast(asyncio.WriteTransport, transport)
        if writer.can_write_eof():
            writer.write_eof()
        return
    fd = sock.fileno()
    if fd < 0:
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


class RelayProtocol(asyncio.Protocol):
    """Adapter from one transport's callbacks to one side of a Relay."""

    def __init__(self, relay: Relay, side: int) -> None:
        self._relay = relay
        self._side = side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._relay.attach(self._side, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._relay.data_received(self._side, data)

    def eof_received(self) -> bool:
        return self._relay.eof_received(self._side)

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.connection_lost(self._side)

    def pause_writing(self) -> None:
        self._relay.pause_writing(self._side)

    def resume_writing(self) -> None:
        self._relay.resume_writing(self._side)


class Relay:
    """Both directions of one proxied connection."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: RelayOwner,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        idle_timeout: float | None = None,
        max_duration: float | None = None,
    ) -> None:
        self._loop = loop
        self._owner = owner
        self._high_water = high_water
        self._idle_timeout = idle_timeout
        self._max_duration = max_duration
        self._transports: list[asyncio.Transport | None] = [None, None]
        self._reading = [False, False]
        self._eof = [False, False]  # FIN received from this side
        self._fin_wanted = [False, False]  # FIN to send to this side once drained
        self._fin_sent = [False, False]
        self._write_paused = [False, False]
        self._lost = [False, False]
        self._connecting = False
        self._done = False
        # Client bytes that arrived before the upstream connected (uvloop starts reading
        # after connection_made() even when the protocol paused the transport there).
        self._early: list[bytes] = []
        self._last_activity = loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._duration_handle: asyncio.TimerHandle | None = None
        # Bytes read from each side: [received from the client, received from upstream].
        self.bytes_from = [0, 0]
        # "idle_timeout" or "max_connection_duration" when a timer ended the connection.
        self.termination = ""

    # -- life cycle -------------------------------------------------------------------

    def start_connecting(self) -> None:
        """The upstream connect is under way; the client is held (not read) until then.

        The maximum duration counts from here, the downstream connection's start."""
        self._connecting = True
        if self._max_duration is not None and self._max_duration > 0:
            self._duration_handle = self._loop.call_later(
                self._max_duration, self._end, "max_connection_duration"
            )

    def upstream_failed(self) -> None:
        """The upstream connect failed or was abandoned; close the client."""
        if not self._connecting:
            return
        self._connecting = False
        down = self._transports[DOWNSTREAM]
        if down is not None and not down.is_closing():
            down.close()
        self._maybe_done()

    def attach(self, side: int, transport: asyncio.Transport) -> None:
        self._transports[side] = transport
        self._reading[side] = True
        transport.set_write_buffer_limits(high=self._high_water, low=self._high_water // 4)
        if side == DOWNSTREAM:
            self._set_reading(DOWNSTREAM, False)
            return
        self._connecting = False
        if self._lost[DOWNSTREAM]:
            transport.close()
            return
        self._owner.upstream_connected(transport)
        if self._early:
            transport.writelines(self._early)
            self._early.clear()
        if self._fin_wanted[UPSTREAM]:
            self._send_fin_when_drained(UPSTREAM)
        self._last_activity = self._loop.time()
        if self._idle_timeout is not None and self._idle_timeout > 0:
            self._idle_handle = self._loop.call_later(self._idle_timeout, self._check_idle)
        self._update_reading(DOWNSTREAM)
        self._update_reading(UPSTREAM)

    @property
    def done(self) -> bool:
        return self._done

    def buffered(self) -> int:
        """Bytes queued in user space for both peers."""
        return sum(t.get_write_buffer_size() for t in self._transports if t is not None)

    def abort(self, termination: str = "") -> None:
        """End the connection now, dropping what is still queued."""
        self._end(termination)

    # -- events from the transports ---------------------------------------------------

    def data_received(self, side: int, data: bytes) -> None:
        self.bytes_from[side] += len(data)
        self._last_activity = self._loop.time()
        other = self._transports[1 - side]
        if other is None:
            self._early.append(data)
            down = self._transports[DOWNSTREAM]
            if down is not None:
                down.pause_reading()
                self._reading[DOWNSTREAM] = False
        elif not self._lost[1 - side]:
            other.write(data)

    def eof_received(self, side: int) -> bool:
        self._eof[side] = True
        self._reading[side] = False
        self._last_activity = self._loop.time()
        other = 1 - side
        if self._eof[other]:
            for t in self._transports:
                if t is not None and not t.is_closing():
                    t.close()
            return True
        self._fin_wanted[other] = True
        self._send_fin_when_drained(other)
        return True

    def connection_lost(self, side: int) -> None:
        self._lost[side] = True
        self._reading[side] = False
        if side == DOWNSTREAM and self._connecting:
            self._owner.downstream_lost_while_connecting()
        other = self._transports[1 - side]
        if other is not None and not other.is_closing():
            other.close()
        self._maybe_done()

    def pause_writing(self, side: int) -> None:
        self._write_paused[side] = True
        self._update_reading(1 - side)

    def resume_writing(self, side: int) -> None:
        self._write_paused[side] = False
        if self._fin_wanted[side]:
            self._send_fin_when_drained(side)
        self._update_reading(1 - side)

    # -- internals --------------------------------------------------------------------

    def _send_fin_when_drained(self, side: int) -> None:
        t = self._transports[side]
        if t is None or self._fin_sent[side] or t.is_closing():
            return
        if t.get_write_buffer_size() == 0:
            self._fin_sent[side] = True
            shutdown_write(t)
            return
        # Ask for resume_writing() exactly when the buffer is empty.
        t.set_write_buffer_limits(high=0, low=0)

    def _update_reading(self, side: int) -> None:
        want = (
            self._transports[UPSTREAM] is not None
            and not self._eof[side]
            and not self._lost[side]
            and not self._lost[1 - side]
            and not self._write_paused[1 - side]
        )
        self._set_reading(side, want)

    def _set_reading(self, side: int, want: bool) -> None:
        t = self._transports[side]
        if t is None or want == self._reading[side] or t.is_closing():
            return
        self._reading[side] = want
        if want:
            t.resume_reading()
        else:
            t.pause_reading()

    def _check_idle(self) -> None:
        self._idle_handle = None
        assert self._idle_timeout is not None
        idle_for = self._loop.time() - self._last_activity
        if idle_for >= self._idle_timeout:
            self._end("idle_timeout")
        else:
            self._idle_handle = self._loop.call_later(
                self._idle_timeout - idle_for, self._check_idle
            )

    def _end(self, termination: str) -> None:
        if self._done:
            return
        if termination and not self.termination:
            self.termination = termination
        for side, t in enumerate(self._transports):
            if t is not None and not self._lost[side]:
                t.abort()

    def _maybe_done(self) -> None:
        if self._done or not self._lost[DOWNSTREAM] or self._connecting:
            return
        if self._transports[UPSTREAM] is not None and not self._lost[UPSTREAM]:
            return
        self._done = True
        for handle in (self._idle_handle, self._duration_handle):
            if handle is not None:
                handle.cancel()
        self._idle_handle = self._duration_handle = None
        self._owner.relay_done()
