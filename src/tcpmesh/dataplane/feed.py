"""Snapshots from the API server's watch stream, with reconnects that never give up.

The stream is NDJSON: one full Snapshot JSON per line, the current one first. While the
API is away the proxy keeps serving the last snapshot it got; the feed retries with
back-off (0.2s doubling to 5s) and re-reads the credentials file before each attempt,
because a restarted API server may listen on another port with another token (or a
joined gateway renewed its client certificate). A joined gateway's credentials list
several API servers (the control plane's replicas): each attempt asks them all at once and
follows the first that answers, so a gateway whose own replica refuses (503: it cannot
reach its store) or stalls is on a current one within a connect of the network returning.
The server sends an empty line every second on an idle stream; a stream silent for
``read_timeout`` is dead (a cut link sends no FIN) and the feed moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import aiohttp

from tcpmesh.apiserver.credentials import Credentials, read_credentials
from tcpmesh.control import Snapshot

log = logging.getLogger("tcpmesh.dataplane.feed")

# A joined gateway asks its servers for up to this long before reading its credentials
# again (a renewed certificate, another list of servers).
ROUND_SECONDS = 5.0
# What ends one stream (the feed then tries again); anything else is a bug.
_STREAM_ERRORS = (aiohttp.ClientError, OSError, ValueError, TimeoutError)
# A snapshot line larger than this is treated as a broken stream.
MAX_LINE = 64 * 1024 * 1024


class LineSplitter:
    """Splits a byte stream into lines (sans-IO), refusing lines above ``max_line``."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        lines: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            lines.append(bytes(self._buf[start:nl]))
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > self._max_line:
            raise ValueError(f"line longer than {self._max_line} bytes")
        return lines


class SnapshotFeed:
    """Async iterator of Snapshots for ``node`` ("namespace/pod"); it never ends by itself.

    With ``state_dir`` the URL and token are re-read from ``state_dir/apiserver.json``
    before every attempt; ``url``/``token`` are used until that file exists.
    """

    def __init__(
        self,
        url: str | None,
        token: str | None,
        node: str,
        *,
        state_dir: Path | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
        read_timeout: float | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self.node = node
        self._url = url
        self._token = token
        self._state_dir = state_dir
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._last_version: str | None = None
        # Attempts that failed since the last stream that delivered a snapshot.
        self.failures = 0

    def _credentials(self) -> Credentials | None:
        if self._state_dir is not None:
            creds = read_credentials(self._state_dir)
            if creds is not None:
                return creds
        if self._url is not None and self._token is not None:
            return Credentials(self._url, self._token, 0)
        return None

    def __aiter__(self) -> AsyncIterator[Snapshot]:
        return self._run()

    async def _run(self) -> AsyncIterator[Snapshot]:
        delay = self._backoff_initial
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._connect_timeout,
            sock_connect=self._connect_timeout,
            sock_read=self._read_timeout,
        )
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                creds = self._credentials()
                delivered = False
                if creds is None:
                    log.debug("no API credentials yet")
                else:
                    opened = await self._first_answer(session, creds)
                    if opened is not None:
                        url, lines = opened
                        try:
                            async for snapshot in self._snapshots(lines):
                                delivered = True
                                yield snapshot
                        except _STREAM_ERRORS as exc:
                            log.info("snapshot stream from %s ended: %s", url, exc)
                        finally:
                            await lines.aclose()
                if delivered:
                    delay = self._backoff_initial
                    self.failures = 0
                else:
                    self.failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)

    async def _first_answer(
        self, session: aiohttp.ClientSession, creds: Credentials
    ) -> tuple[str, AsyncGenerator[bytes, None]] | None:
        """The stream of whichever server answers first, or None after a round without one.

        Every server is asked at once, and each one that fails is asked again as soon as
        ``backoff_max`` has passed since its last try, for up to ROUND_SECONDS (then the
        credentials are read again). Asking one server after another would cost a whole
        timeout for each that does not answer: after a cut link the first packets may be
        lost, and a replica whose loop waits on its store accepts and then stalls. A
        stream's first line is the server's current snapshot, so the first stream with a
        line is live and current (a replica that cannot vouch for its copy answers 503)."""
        urls = creds.urls
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (ROUND_SECONDS if len(urls) > 1 else 0.0)

        async def keep_asking(url: str) -> tuple[str, AsyncGenerator[bytes, None]]:
            while True:
                started = loop.time()
                try:
                    return url, await self._open(session, creds, url)
                except _STREAM_ERRORS as exc:
                    log.info("snapshot stream from %s ended: %s", url, exc)
                    if loop.time() >= deadline:
                        raise
                await asyncio.sleep(max(0.0, started + self._backoff_max - loop.time()))

        asking = [asyncio.ensure_future(keep_asking(url)) for url in urls]
        winner: tuple[str, AsyncGenerator[bytes, None]] | None = None
        try:
            for next_done in asyncio.as_completed(asking):
                with contextlib.suppress(*_STREAM_ERRORS):
                    winner = await next_done
                    return winner
            return None
        finally:
            for attempt in asking:
                attempt.cancel()
            await asyncio.wait(asking)
            for attempt in asking:  # another may have opened just before it was cancelled
                if attempt.cancelled() or attempt.exception() is not None:
                    continue
                if winner is None or attempt.result()[1] is not winner[1]:
                    await attempt.result()[1].aclose()

    async def _open(
        self, session: aiohttp.ClientSession, creds: Credentials, server: str
    ) -> AsyncGenerator[bytes, None]:
        """The stream's lines, once its first one (the current snapshot) has arrived."""
        lines = self._lines(session, creds, server)
        try:
            first = await anext(lines)
        except StopAsyncIteration:
            raise aiohttp.ClientPayloadError(f"{server}: the stream ended at once") from None
        except BaseException:
            await lines.aclose()
            raise
        return _prepend(first, lines)

    async def _lines(
        self, session: aiohttp.ClientSession, creds: Credentials, server: str
    ) -> AsyncGenerator[bytes, None]:
        namespace, _, pod = self.node.partition("/")
        url = f"{server.rstrip('/')}/tcpmesh/v1/snapshots/{namespace}/{pod}"
        headers = {"Accept": "application/x-ndjson"}
        if creds.token:  # a joined gateway authenticates with its certificate instead
            headers["Authorization"] = f"Bearer {creds.token}"
        # https: verified against the mesh's CA only; plain http has no TLS to configure.
        tls: ssl.SSLContext | bool = creds.ssl_context() or True
        async with session.get(url, params={"watch": "true"}, headers=headers, ssl=tls) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=resp.reason or ""
                )
            splitter = LineSplitter()
            async for chunk in resp.content.iter_any():
                for line in splitter.feed(chunk):
                    if line.strip():  # empty lines are the server's ticks
                        yield line

    async def _snapshots(self, lines: AsyncGenerator[bytes, None]) -> AsyncIterator[Snapshot]:
        async for line in lines:
            snapshot = self._parse(line)
            if snapshot is not None and snapshot.version != self._last_version:
                self._last_version = snapshot.version
                yield snapshot

    @staticmethod
    def _parse(line: bytes) -> Snapshot | None:
        try:
            return Snapshot.from_json(line)
        except (ValueError, KeyError, TypeError) as exc:
            # One bad line must not cost the proxy its last good snapshot.
            log.warning("ignoring an unreadable snapshot: %s", exc)
            return None


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        yield first
        async for line in rest:
            yield line
    finally:
        await rest.aclose()
