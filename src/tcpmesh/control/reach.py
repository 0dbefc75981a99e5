"""Whether this replica can still vouch for its copy of a shared store.

A replica whose host is cut off from the rest of the etcd cluster keeps a copy that
silently goes stale: its local member has no leader and delivers no events, or its watch
sits on a TCP connection to another member that the cut left half-open (no FIN, and the
kernel's retransmission back-off can hold the first byte after the link returns for
seconds). A gateway following such a replica would keep its last routes long after
every other replica moved on, and again after the link returns, until that watch
resumes. So each replica probes its store with a linearizable read (one that only a
member in touch with the cluster's leader can answer) every ``interval``; a probe that
fails, or is not answered within ``timeout``, ``misses`` times in a row makes the store
unreachable. The control
plane then tells its consumers (the API's snapshot streams, ``/readyz``) to stop vouching,
so gateways fail over to a replica that is current, as kube-apiserver's ``/readyz``
reports its etcd check. When a probe is answered again, the control plane lists the
store afresh and restarts its watch before it vouches again: the copy is then current by
construction, whatever became of the old watch stream.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tcpmesh.store import StoreBackend

log = logging.getLogger(__name__)

# How often a replica on a shared store checks that it reaches the store, and how long a
# probe may take: together the longest a cut-off replica goes on vouching for its copy.
# A probe on a loaded host (or during an etcd election) can be slow; three in a row
# unanswered are not.
REACH_INTERVAL = 0.25
REACH_TIMEOUT = 1.0
REACH_MISSES = 3


class StoreReach:
    """Probes a store from a thread of its own; calls ``on_lost`` when it stops answering
    and awaits ``on_back`` when it answers again (the caller catches up before it counts as
    current), both on the caller's loop.

    Its own thread and loop, because the store's calls are synchronous: a controller that
    waits on a hung etcd member holds the mesh's loop for seconds, and a probe on that loop
    would wait with it and report nothing. ``reachable`` turns False from this thread at
    once, so the mesh's loop reads the truth the moment it runs again.
    """

    def __init__(
        self,
        store: StoreBackend,
        on_lost: Callable[[], None],
        on_back: Callable[[], Awaitable[None]],
        *,
        interval: float = REACH_INTERVAL,
        timeout: float = REACH_TIMEOUT,
        misses: int = REACH_MISSES,
    ) -> None:
        self._store = store
        self._on_lost = on_lost
        self._on_back = on_back
        self._interval = interval
        self._timeout = timeout
        self._misses = misses
        self.reachable = True
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Probes run here, one at a time: one that outlived its timeout is awaited again
        # rather than piling up another beside it, and is not waited for at shutdown.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store probe")
        self._pending: asyncio.Future[int] | None = None

    def start(self) -> None:
        """Probe from now on, reporting to the running loop."""
        caller = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run(caller)), name="store reach", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + self._timeout + 1)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def probe(self) -> bool:
        """One linearizable read, bounded by the timeout: whether the store answered."""
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(self._executor, lambda: self._store.revision)
        done, _ = await asyncio.wait({self._pending}, timeout=self._timeout)
        if not done:
            return False
        future, self._pending = self._pending, None
        return future.exception() is None

    async def _run(self, caller: asyncio.AbstractEventLoop) -> None:
        """Probe until stopped, reporting each change of reach once."""
        missed = 0
        while not self._stopping.is_set():
            answered = await self.probe()
            missed = 0 if answered else missed + 1
            if self.reachable and missed >= self._misses:
                self.reachable = False
                log.warning("the store does not answer: not vouching for this copy")
                caller.call_soon_threadsafe(self._on_lost)
            elif not self.reachable and answered:
                await self._catch_up(caller)
            await asyncio.sleep(self._interval)

    async def _catch_up(self, caller: asyncio.AbstractEventLoop) -> None:
        caught_up = asyncio.run_coroutine_threadsafe(_awaited(self._on_back), caller)
        try:
            await asyncio.wrap_future(caught_up)
        except Exception as exc:  # gone again while catching up: probe on
            log.warning("catching up with the store failed: %s", exc)
        else:
            self.reachable = True
            log.warning("the store answers again; the copy is current")


async def _awaited(call: Callable[[], Awaitable[None]]) -> None:
    await call()


class StoreCurrency(Protocol):
    """What a consumer of the control plane asks before it vouches for a replica's copy
    (the API's snapshot streams and readiness; the xDS server may too)."""

    @property
    def store_current(self) -> bool:
        """Whether the copy is current (or the store is this host's own)."""
        ...

    async def store_lost(self) -> None:
        """Returns once the copy can no longer be vouched for."""
        ...
