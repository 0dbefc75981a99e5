"""Leader election through an etcd lease, and the fence that keeps a deposed leader silent.

Replicas of the control plane share one etcd; the controllers that write (the runtime's
Deployment, pod and Endpoints controllers) must run in one replica at a time. Each
replica campaigns for a key under the store's prefix, ``PREFIX/leader/NAME``, created
only if absent and attached to the replica's lease (etcd's own election recipe): the key
lives as long as the lease is kept alive, and etcd deletes it when the holder dies.

"A replica that loses its lease stops writing at once" holds twice over:
- locally, the leader counts its lease from the moment it *sent* the last successful
  keep-alive; once that TTL (less a margin) has run out without a newer one it is no longer
  leader, without waiting to hear from etcd, and every fenced write fails with NotLeader
  before it is sent;
- in etcd, every fenced write carries a compare on the leader key's create_revision, so
  a write from a paused or partitioned ex-leader cannot land after the key has moved on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tcpmesh.store.contract import StoreBackend
from tcpmesh.store.etcd import EtcdStore
from tcpmesh.store.etcdconn import EtcdConnection
from tcpmesh.store.objects import NotLeader, StoreError

log = logging.getLogger("tcpmesh.store.election")

DEFAULT_TTL = 2  # seconds; etcd's minimum is about 1.5 election timeouts
_POLL = 0.2  # how often a follower looks for a vacant key


class LeaderElection:
    """One replica's candidacy for ``name``; drive it with ``run()`` (a task)."""

    def __init__(
        self,
        connection: EtcdConnection,
        prefix: str,
        name: str,
        identity: str,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self._conn = connection
        self.key = f"{prefix.rstrip('/')}/leader/{name}"
        self.identity = identity
        self.ttl = ttl
        self._term = 0  # create_revision of our key while we lead, else 0
        self._valid_until = 0.0  # monotonic; past it we are not leader, whatever etcd says
        self._lease: Any = None
        self._owns_connection = False
        self.elected = asyncio.Event()
        self.deposed = asyncio.Event()
        self.deposed.set()

    @classmethod
    def for_store(cls, store: EtcdStore, name: str, identity: str) -> LeaderElection:
        """A candidacy on its own connection, whose calls give up after a quarter TTL.

        A member that hangs (rather than dies) holds a call until its timeout; with the
        store's 5 s the leader would lose its lease waiting. A quarter TTL leaves time to
        fail over to another member and renew within the TTL.
        """
        connection = EtcdConnection(store.config, rpc_timeout=DEFAULT_TTL / 4)
        election = cls(connection, store.config.prefix, name, identity)
        election._owns_connection = True
        return election

    @property
    def endpoint(self) -> str:
        """The member this candidacy talks to now (HOST:PORT)."""
        return self._conn.endpoint

    def fenced_store(self, store: EtcdStore) -> StoreBackend:
        """``store`` for the leader's controllers: no write lands unless we lead."""
        return store.fenced(self)

    # ------------------------------------------------------------------ state

    @property
    def lease_id(self) -> int | None:
        """The etcd lease our candidacy (and, while we lead, the leader key) lives on."""
        return None if self._lease is None else int(self._lease.id)

    @property
    def is_leader(self) -> bool:
        return self._term != 0 and time.monotonic() < self._valid_until

    def holder(self) -> str | None:
        """The identity of the current leader as etcd has it (one read), or None."""
        key = self.key
        response = self._conn.run(lambda c: c.get_response(key))
        return response.kvs[0].value.decode() if response.kvs else None

    # ------------------------------------------------------------------ fence

    def fence_compare(self) -> Any:
        """The compare a fenced write carries; NotLeader at once when we do not lead."""
        if not self.is_leader:
            raise NotLeader(f"{self.identity} does not hold {self.key}; write refused")
        return self._conn.client.transactions.create(self.key) == self._term

    def still_held(self) -> bool:
        """Whether etcd still has our key (after a fenced write failed its compares)."""
        key = self.key
        response = self._conn.run(lambda c: c.get_response(key))
        return bool(response.kvs) and int(response.kvs[0].create_revision) == self._term

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Campaign, lead while the lease holds, campaign again; until cancelled."""
        try:
            while True:
                await self._campaign()
                self.deposed.clear()
                self.elected.set()
                log.info("%s leads %s (term %d)", self.identity, self.key, self._term)
                try:
                    await self._lead()
                finally:
                    self._step_down()
                # Free the key now (if etcd still has it) rather than after the TTL.
                await asyncio.to_thread(self._resign)
        finally:
            await asyncio.to_thread(self._resign)
            if self._owns_connection:
                self._conn.close()

    def _step_down(self) -> None:
        if self._term:
            log.warning("%s no longer leads %s", self.identity, self.key)
        self._term = 0
        self.elected.clear()
        self.deposed.set()

    async def _campaign(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self._try_acquire):
                    return
            except StoreError as exc:
                log.warning("election %s: %s", self.key, exc)
            await asyncio.sleep(_POLL)

    def _try_acquire(self) -> bool:
        """Take the key if it is vacant, on a fresh lease; True when we hold it."""
        key, value = self.key, self.identity
        if self._lease is None:
            sent = time.monotonic()
            self._lease = self._conn.run(lambda c: c.lease(self.ttl))
            self._valid_until = sent + self.ttl * 0.75
        lease = self._lease
        t = self._conn.client.transactions

        def txn(client: Any) -> tuple[bool, int]:
            succeeded, responses = client.transaction(
                compare=[t.create(key) == 0],
                success=[t.put(key, value, lease=lease)],
                failure=[],
            )
            if not succeeded:
                return False, 0
            return True, int(responses[0].response_put.header.revision)

        sent = time.monotonic()
        acquired, revision = self._conn.run(txn)
        if not acquired:
            # Keep the lease fresh while we wait; a lost lease is replaced next round.
            if not self._keep_alive(sent):
                self._lease = None
            return False
        self._term = revision
        self._valid_until = max(self._valid_until, sent + self.ttl * 0.75)
        return True

    def _keep_alive(self, sent: float) -> bool:
        """One keep-alive of our lease; True (and a new deadline) when etcd renewed it."""
        lease = self._lease
        try:
            responses = self._conn.run(lambda c: list(c.refresh_lease(lease.id)))
        except StoreError as exc:
            log.warning("election %s: keep-alive failed: %s", self.key, exc)
            return False
        if not responses or int(responses[0].TTL) <= 0:
            return False
        self._valid_until = sent + self.ttl * 0.75
        return True

    async def _lead(self) -> None:
        """Keep the lease alive; return as soon as leadership is (or may be) lost."""
        period = self.ttl / 4
        while True:
            remaining = self._valid_until - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(period, remaining))
            if not self.is_leader:
                return
            sent = time.monotonic()
            try:
                renewed = await asyncio.wait_for(
                    asyncio.to_thread(self._keep_alive, sent), max(0.05, self._valid_until - sent)
                )
            except TimeoutError:
                renewed = False
            if not renewed and not self.is_leader:
                return
            if renewed and not await asyncio.to_thread(self.still_held):
                return

    def _resign(self) -> None:
        """Give the key up at once (revoke the lease) so a successor need not wait the TTL."""
        lease, self._lease = self._lease, None
        self._term = 0
        if lease is None:
            return
        try:
            self._conn.run(lambda c: c.revoke_lease(lease.id))
        except StoreError as exc:
            log.warning("election %s: could not revoke the lease: %s", self.key, exc)
