"""The half every level-triggered controller shares: watch, mark dirty, reconcile.

A controller here never acts on an event's content: any change to the kinds it watches
only marks the world dirty, and its own ``_loop`` reads the store and reconciles. So a
burst of events is one pass, and a missed event (``Expired``: the store's history no
longer reaches back) costs nothing but a pass from the current revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from typing import Protocol

from tcpmesh.store import Expired

log = logging.getLogger("tcpmesh.controllers")

WATCH_RETRY = 1.0


class _Event(Protocol):
    @property
    def revision(self) -> int: ...


class WatchableStore(Protocol):
    @property
    def revision(self) -> int: ...

    def watch(
        self, kinds: Collection[str] | None = None, since: int | None = None
    ) -> AsyncIterator[_Event]: ...


class Reconciler:
    """``start`` runs the watch of ``watched`` and the subclass's ``_loop``; ``stop`` ends both.

    ``_dirty`` is set at start and on every change; ``syncs`` counts reconciling passes
    (subclasses bump it), which tests use to see that a burst coalesced.
    """

    name = "controller"

    def __init__(self, store: WatchableStore, watched: Collection[str]) -> None:
        self._watchable = store
        self._watched = tuple(watched)
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.syncs = 0

    async def start(self) -> None:
        self._dirty.set()
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _loop(self) -> None:
        raise NotImplementedError

    async def _watch(self) -> None:
        since = self._watchable.revision
        while True:
            try:
                async for event in self._watchable.watch(self._watched, since):
                    since = event.revision
                    self._dirty.set()
                return  # the store was closed
            except Expired:
                since = self._watchable.revision
                self._dirty.set()
            except Exception:
                log.exception("%s watch failed; retrying", self.name)
                await asyncio.sleep(WATCH_RETRY)
