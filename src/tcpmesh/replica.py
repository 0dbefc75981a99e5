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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tcpmesh.runtime import Runtime
    from tcpmesh.store import Election

log = logging.getLogger("tcpmesh.replica")

# The one election the writing controllers share.
RUNTIME_ELECTION = "runtime"


class LeaderGate:
    """Starts ``runtime`` whenever ``election`` is won and stops it whenever it is lost."""

    def __init__(self, election: Election, runtime: Runtime) -> None:
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
        campaign = asyncio.create_task(self.election.run(), name="leader election")
        try:
            while True:
                await self._until(campaign, self.election.elected)
                await self.runtime.start()
                await self._until(campaign, self.election.deposed)
                log.warning("deposed: stopping the runtime")
                await self.runtime.stop()
        finally:
            await self.runtime.stop()
            campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await campaign

    @staticmethod
    async def _until(campaign: asyncio.Task[None], event: asyncio.Event) -> None:
        """Wait for ``event``; should the campaign itself die, re-raise its error."""
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({campaign, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if campaign.done():
            campaign.result()
            raise RuntimeError("the leader election ended")

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
