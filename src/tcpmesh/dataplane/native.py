"""The C accept/connect/relay path (``_engine.c``) and how a worker picks it.

A profile of one worker put 54% of its time in the interpreter over about 150 Python
calls per connection, with no hot spot: the per-connection cost was the number of
Python-level steps (transport and protocol objects, readiness callbacks, add/remove
reader churn), not any one of them. The engine does those steps in C over one epoll
set that the event loop watches as a single descriptor; Python keeps what decides
semantics (route, balancer pick, circuit breaker, stats, timeouts, access log), so both
paths share that code (``dataplane.proxy``) and cannot disagree about it.

``TCPMESH_ENGINE`` (``tcpmesh up --engine``): ``auto`` (default: native when the
extension was built at install, else python), ``native`` or ``python``. The engine takes
plain TCP listeners only; a listener that reads ClientHellos or terminates TLS stays on
the Python path whatever the mode.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from enum import StrEnum
from types import ModuleType
from typing import Any, Protocol

log = logging.getLogger("tcpmesh.dataplane")


def _load() -> ModuleType | None:
    try:
        from tcpmesh.dataplane import _engine  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _engine
    return module


_ENGINE = _load()

Address = tuple[str, int]
# The engine's answers to connect(), and its event kinds (see _engine.c).
DONE, PENDING, FAILED = 0, 1, -1
ACCEPTED, CONNECTED, CONNECT_FAILED, CLOSED = 0, 1, 2, 3


class EngineMode(StrEnum):
    """Which code moves a plain TCP listener's connections (``TCPMESH_ENGINE``)."""

    AUTO = "auto"
    NATIVE = "native"
    PYTHON = "python"


def engine_available() -> bool:
    """Whether the C extension was built and imports."""
    return _ENGINE is not None


def engine_mode(text: str | None) -> EngineMode:
    """The mode ``text`` names (empty: auto), resolved to NATIVE or PYTHON."""
    try:
        mode = EngineMode(text or EngineMode.AUTO)
    except ValueError:
        raise ValueError(
            f"TCPMESH_ENGINE={text!r}: expected one of {', '.join(m.value for m in EngineMode)}"
        ) from None
    if mode is EngineMode.AUTO:
        return EngineMode.NATIVE if engine_available() else EngineMode.PYTHON
    if mode is EngineMode.NATIVE and not engine_available():
        raise ValueError(
            "TCPMESH_ENGINE=native: the C extension tcpmesh.dataplane._engine is not built "
            "(reinstall with a C compiler and Python's headers, or use --engine python)"
        )
    return mode


class NativeOwner(Protocol):
    """What the driver tells the owner of an accepted connection."""

    def native_connected(self) -> None:
        """A connect that was PENDING completed."""

    def native_failed(self) -> None:
        """A connect that was PENDING failed; the client is kept."""

    def native_closed(self, received: int, sent: int, spliced: bool) -> None:
        """Both sides are closed (bytes from the client, from the upstream)."""


OnAccept = Callable[[int, Address, Address], None]


class NativeDriver:
    """One engine, watched by the event loop; hands its events to their owners."""

    def __init__(self, loop: asyncio.AbstractEventLoop, high_water: int, splice_after: int):
        assert _ENGINE is not None, "engine_mode() selects NATIVE only when it imports"
        self.engine = _ENGINE.Engine(high_water, splice_after)
        self.owners: dict[int, NativeOwner] = {}
        self._on_accept: dict[int, OnAccept] = {}
        self._loop = loop
        # The engine's own method, not a Python function: readiness that is relay work
        # only (most of it) runs no Python code; batches of events go to _handle.
        loop.add_reader(self.engine.fileno(), self.engine.serve, self._handle)

    def listen(self, sock: socket.socket, on_accept: OnAccept) -> int:
        """Accept on ``sock`` (kept open by the caller until ``unlisten``)."""
        lid: int = self.engine.listen(sock.fileno())
        self._on_accept[lid] = on_accept
        return lid

    def unlisten(self, lid: int) -> None:
        self.engine.unlisten(lid)
        self._on_accept.pop(lid, None)

    def _handle(self, events: list[tuple[Any, ...]]) -> None:
        for event in events:
            try:
                self._dispatch(event)
            except Exception:
                # A bug in one connection's bookkeeping must not strand the rest of the
                # batch: that connection is closed, the others go on.
                log.exception("native engine event %r failed", event)
                cid = event[2] if event[0] == ACCEPTED else event[1]
                self.owners.pop(cid, None)
                self.engine.abort(cid)

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == CLOSED:
            closed = self.owners.pop(event[1], None)
            if closed is not None:
                closed.native_closed(event[2], event[3], event[4])
        elif kind == ACCEPTED:
            on_accept = self._on_accept.get(event[1])
            if on_accept is None:
                self.engine.abort(event[2])  # its listener went in this batch
            else:
                on_accept(event[2], event[3], event[4])
        else:
            owner = self.owners.get(event[1])
            if owner is None:
                return
            if kind == CONNECTED:
                owner.native_connected()
            else:
                owner.native_failed()

    def close(self) -> None:
        """Close every connection the engine holds (owners were told by abort first)."""
        self._loop.remove_reader(self.engine.fileno())
        self.engine.close()
