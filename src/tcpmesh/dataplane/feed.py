"""Snapshots from the API server's watch stream, with reconnects that never give up.

The stream is NDJSON: one full Snapshot JSON per line, the current one first. While the
API is away the proxy keeps serving the last snapshot it got; the feed retries with
back-off (0.2s doubling to 5s) and re-reads the credentials file before each attempt,
because a restarted API server may listen on another port with another token (or a
joined gateway renewed its client certificate). A joined gateway's credentials list
several API servers (the control plane's replicas): each failed attempt tries the next.
The server sends an empty line every second on an idle stream; a stream silent for
``read_timeout`` is dead (a cut link sends no FIN) and the feed moves on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tcpmesh.apiserver.credentials import Credentials, read_credentials
from tcpmesh.control import Snapshot

log = logging.getLogger("tcpmesh.dataplane.feed")

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
        self._attempt = 0
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
                    urls = creds.urls
                    url = urls[self._attempt % len(urls)]
                    try:
                        async for snapshot in self._stream(session, creds, url):
                            delivered = True
                            yield snapshot
                    except (aiohttp.ClientError, OSError, ValueError, TimeoutError) as exc:
                        log.info("snapshot stream from %s ended: %s", url, exc)
                    self._attempt += 1  # the next attempt goes to the next server
                if delivered:
                    delay = self._backoff_initial
                    self.failures = 0
                else:
                    self.failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)

    async def _stream(
        self, session: aiohttp.ClientSession, creds: Credentials, server: str
    ) -> AsyncIterator[Snapshot]:
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
                    if not line.strip():
                        continue
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
