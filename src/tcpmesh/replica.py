"""A control-plane replica on a shared (etcd) store: the writing controllers run only in the leader.

Every replica serves the API and xDS from the same state and builds the same snapshots;
those only read, so any number may run. The runtime (Deployment, pod and Endpoints
controllers, and the pods themselves) writes, so it runs in the one replica that holds
the leadership, with a store whose writes are fenced by it: the moment the lease is gone,
its writes fail before they reach etcd, and the runtime is stopped. A replica elected
later starts the runtime again (pods on its own host; the Deployment controller
reschedules nothing, the same Pod objects simply run there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tcpmesh.store import Election

log = logging.getLogger("tcpmesh.replica")

# The one election the writing controllers share.
RUNTIME_ELECTION = "runtime"


class CampaignThread:
    """The election's own event loop, in a thread of its own.

    The store's calls are synchronous: one that waits on a slow or hung etcd member holds
    the mesh's event loop for up to its timeout, longer than the lease lives. Here the
    keep-alives go on regardless. ``notify`` is called (from this thread) on every change.
    """

    def __init__(self, election: Election, notify: Callable[[], None]) -> None:
        self._election = election
        self._notify = notify
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="leader election", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=10)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._election.run(), name="leader election")
        self._started.set()
        watcher = asyncio.create_task(self._watch())
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.error = exc
        finally:
            watcher.cancel()
            self.done.set()
            self._notify()

    async def _watch(self) -> None:
        while True:
            await self._election.elected.wait()
            self._notify()
            await self._election.deposed.wait()
            self._notify()

    def stop(self) -> None:
        """Cancel the campaign (it resigns) and wait for its thread; blocking."""
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=15)


class Writers(Protocol):
    """What a gate starts and stops: the runtime, or the runtime with other writers."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LeaderGate:
    """Starts ``runtime`` whenever ``election`` is won and stops it whenever it is lost."""

    def __init__(self, election: Election, runtime: Writers) -> None:
        self.election = election
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leader gate")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the mesh's loop is closed
                loop.call_soon_threadsafe(wake.set)

        campaign = CampaignThread(self.election, notify)
        campaign.start()
        running = False
        try:
            while True:
                await wake.wait()
                wake.clear()
                if campaign.done.is_set():
                    raise RuntimeError(f"the leader election ended: {campaign.error}")
                if self.election.is_leader and not running:
                    await self.runtime.start()
                    running = True
                elif not self.election.is_leader and running:
                    log.warning("deposed: stopping the runtime")
                    await self.runtime.stop()
                    running = False
        finally:
            await self.runtime.stop()
            await asyncio.to_thread(campaign.stop)

    def status(self) -> dict[str, Any]:
        """For `tcpmesh status`: who leads, and whether it is us."""
        try:
            holder = self.election.holder()
        except Exception as exc:  # status must answer even when etcd does not
            holder = f"unknown ({exc})"
        return {
            "key": self.election.key,
            "identity": self.election.identity,
            "leading": self.election.is_leader,
            "holder": holder,
        }
