"""The one contract both backends keep; callers type against it, never against a backend."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from typing import Protocol

from tcpmesh.store.objects import ApplyResult, Obj, WatchEvent


class StoreBackend(Protocol):
    """Versioned, watchable objects keyed by (kind key, namespace, name).

    - A kind key names (API group, kind): ``Kind`` for the groups stored before groups
      joined the key, ``Kind.group`` for the others (``objects.kind_key``); every ``kind``
      parameter and watch filter below is a kind key.

    - ``resourceVersion`` is the store revision of an object's last write; revisions only
      grow, and every write of one call shares one revision only where the backend says so
      (etcd: one transaction, one revision; SQLite: one revision per object).
    - ``apply`` writes all of its objects or none; a stale ``resourceVersion`` is Conflict.
    - ``list_with_revision`` then ``watch(since=revision)`` misses no event and repeats none;
      a ``since`` older than the kept history raises Expired (HTTP 410).
    """

    @property
    def revision(self) -> int: ...

    def close(self) -> None: ...

    def get(self, kind: str, namespace: str, name: str) -> Obj | None: ...

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> builtins.list[Obj]: ...

    def list_with_revision(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> tuple[builtins.list[Obj], int]: ...

    def apply(
        self, objects: Sequence[Obj], *, dry_run: bool = False
    ) -> builtins.list[ApplyResult]: ...

    def create(self, obj: Obj) -> Obj: ...

    def replace(self, obj: Obj, *, expected_resource_version: str | None = None) -> Obj: ...

    def update_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: Obj,
        *,
        expected_resource_version: str | None = None,
    ) -> Obj: ...

    def delete(self, kind: str, namespace: str, name: str) -> Obj: ...

    def watch(
        self, kinds: Collection[str] | None = None, since: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]: ...


class Election(Protocol):
    """One replica's candidacy (etcd: ``store.election.LeaderElection``); drive ``run()``.

    ``elected`` is set while this replica leads and ``deposed`` while it does not; ``holder()``
    reads who leads from the store.
    """

    key: str
    identity: str
    elected: asyncio.Event
    deposed: asyncio.Event

    @property
    def is_leader(self) -> bool: ...

    def holder(self) -> str | None: ...

    async def run(self) -> None: ...
