"""The long-running part of ``gateway join`` and ``workload join``: heartbeats, readiness,
certificate renewal, and leaving cleanly on SIGTERM/SIGINT.

The loop never gives up on the control plane: when no server answers, the peer goes on
(a gateway keeps serving its last snapshot; a workload keeps its last registration until
its lease runs out) and tries again at the next beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from tcpmesh.join.agent import JoinError, PeerAgent

log = logging.getLogger("tcpmesh.join")

READINESS_POLL = 0.5
HEARTBEAT_RETRY = 1.0

Readiness = Callable[[], Awaitable[bool]]


async def keep_registered(
    agent: PeerAgent,
    ready: Readiness,
    stop: asyncio.Event,
    on_answer: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Heartbeat every third of the lease and at once when readiness changes; renew the
    certificate when due; deregister when ``stop`` is set."""
    loop = asyncio.get_running_loop()
    last_ready: bool | None = None
    next_beat = 0.0
    while not stop.is_set():
        now_ready = await ready()
        if now_ready != last_ready or loop.time() >= next_beat:
            next_beat = loop.time() + agent.lease_seconds / 3
            try:
                answer = await agent.heartbeat(now_ready)
            except ConnectionError as exc:
                log.warning("heartbeat: %s", exc)
                # No server answered: try again soon, as the kubelet retries its node
                # lease, so a link that returns well within the lease keeps it.
                next_beat = loop.time() + HEARTBEAT_RETRY
            except JoinError as exc:
                log.error("heartbeat refused: %s", exc)
            else:
                last_ready = now_ready
                if on_answer is not None:
                    on_answer(answer)
        await _renew_if_due(agent)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), READINESS_POLL)
    with contextlib.suppress(ConnectionError, JoinError):
        await agent.leave()
        log.info("left: %s deregistered", agent.identity.node_id)


async def _renew_if_due(agent: PeerAgent) -> None:
    if not agent.renew_due(datetime.datetime.now(datetime.UTC)):
        return
    try:
        await agent.renew()
    except (ConnectionError, JoinError) as exc:
        log.warning("certificate renewal: %s; retrying", exc)


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
