"""How worker processes hand their ``Counts`` to the process that serves :15020.

Each worker listens on a Linux abstract unix socket named after its supervisor's pid and
its index (no file to clean up, nothing reachable over the network); a connection to it
gets the worker's ``Counts`` as JSON, then EOF. The supervisor asks every worker at each
scrape, so the merged numbers are as fresh as the scrape.

Chosen over prometheus-client's multiprocess mode: that mode writes an mmap'ed file on
every increment (several per connection, on the relay's hot path) and leaves files of
dead workers behind, where this costs a dictionary increment per event and nothing at
all between scrapes.

A worker that dies takes the counts since the last scrape with it; the last counts the
supervisor got from it are kept (counters only), so the sums never go backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from tcpmesh.telemetry.counts import Counts

FETCH_TIMEOUT = 2.0
MAX_DOCUMENT = 256 * 1024 * 1024


def channel_name(supervisor_pid: int, index: int) -> str:
    return f"\0tcpmesh-stats/{supervisor_pid}/{index}"


async def serve_counts(name: str, dump: Callable[[], bytes]) -> asyncio.AbstractServer:
    """Answer every connection to ``name`` with ``dump()`` (called on this loop)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(dump())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    return await asyncio.start_unix_server(answer, path=name)


async def fetch_counts(name: str, timeout: float = FETCH_TIMEOUT) -> Counts:
    """One worker's ``Counts``; OSError or ValueError when it cannot say."""

    async def read() -> bytes:
        reader, writer = await asyncio.open_unix_connection(path=name, limit=MAX_DOCUMENT)
        try:
            return await reader.read(-1)
        finally:
            writer.close()

    try:
        data = await asyncio.wait_for(read(), timeout)
    except TimeoutError as exc:
        raise OSError(f"no answer from {name[1:]} in {timeout}s") from exc
    return Counts.from_json(data)


class WorkerTotals:
    """The sum over a supervisor's workers, surviving worker restarts."""

    def __init__(self, supervisor_pid: int) -> None:
        self._supervisor = supervisor_pid
        self._retired = Counts()
        # index -> (pid, its last Counts)
        self._last: dict[int, tuple[int, Counts]] = {}
        self._lock = asyncio.Lock()

    async def collect(self, workers: Sequence[tuple[int, int | None]]) -> Counts:
        """``workers``: (index, pid or None) of every slot, read when the scrape came."""

        async def one(index: int, pid: int | None) -> None:
            last = self._last.get(index)
            if last is not None and last[0] != pid:
                # That worker is gone: its counters stay in the sums, its gauges do not.
                self._retired.merge(last[1], gauges=False)
                del self._last[index]
            if pid is None:
                return
            try:
                counts = await fetch_counts(channel_name(self._supervisor, index))
            except (OSError, ValueError):
                return  # starting up, or busy: its last known counts stand in
            self._last[index] = (pid, counts)

        async with self._lock:  # two scrapes at once must not retire a worker twice
            await asyncio.gather(*(one(index, pid) for index, pid in workers))
            result = self._retired.copy()
            for _, counts in self._last.values():
                result.merge(counts)
            return result
