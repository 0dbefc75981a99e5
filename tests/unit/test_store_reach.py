"""control.reach: a replica stops vouching for its copy while its store does not answer,
and vouches again only after it caught up."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from tcpmesh.control.reach import StoreReach


class _Store:
    """A store whose ``revision`` answers, fails, or hangs until released."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.released = threading.Event()
        self.calls = 0

    @property
    def revision(self) -> int:
        self.calls += 1
        if self.mode == "fail":
            raise OSError("unreachable")
        if self.mode == "hang":
            self.released.wait(5)
        return 7


def _reach(store: _Store, lost: Any, back: Any, timeout: float = 0.05) -> StoreReach:
    return StoreReach(store, lost, back, interval=0.01, timeout=timeout)  # type: ignore[arg-type]


async def _until(check: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_hanging_store_is_lost_and_caught_up_with_before_it_counts_again() -> None:
    store, events = _Store(), []

    async def back() -> None:
        events.append("caught up")

    async def run() -> None:
        reach = _reach(store, lambda: events.append("lost"), back)
        reach.start()
        await asyncio.sleep(0.1)
        assert reach.reachable and events == []
        store.mode = "hang"
        await _until(lambda: not reach.reachable)
        calls = store.calls
        await asyncio.sleep(0.2)
        assert store.calls == calls, "a probe still pending is awaited, not piled up"
        store.mode = "answer"
        store.released.set()
        await _until(lambda: reach.reachable)
        assert events == ["lost", "caught up"]
        await asyncio.to_thread(reach.stop)

    asyncio.run(run())


def test_the_loss_is_seen_while_the_callers_loop_is_blocked() -> None:
    store, events = _Store(), []

    async def back() -> None:
        events.append("caught up")

    async def run() -> None:
        reach = _reach(store, lambda: events.append("lost"), back)
        reach.start()
        store.mode = "fail"
        time.sleep(0.5)  # a synchronous store call holding this loop, as a controller's can
        assert not reach.reachable and events == []
        await _until(lambda: events == ["lost"])
        await asyncio.to_thread(reach.stop)

    asyncio.run(run())


def test_a_failing_store_is_lost_and_a_failed_catch_up_keeps_it_lost() -> None:
    store, tries = _Store(), []

    async def back() -> None:
        tries.append(1)
        if len(tries) == 1:
            raise OSError("gone again while listing")

    async def run() -> None:
        reach = _reach(store, lambda: None, back, timeout=0.5)
        reach.start()
        store.mode = "fail"
        await _until(lambda: not reach.reachable)
        store.mode = "answer"
        await _until(lambda: reach.reachable)
        assert len(tries) == 2
        await asyncio.to_thread(reach.stop)

    asyncio.run(run())
