"""Istio's merged metrics port: ``GET http://<pod IP>:15020/stats/prometheus``.

The process that serves it is not the one that relays connections (the built-in plane's
supervisor, or the Envoy pod's parent process); both are synchronous programs, so the
endpoint runs its own event loop in a daemon thread. Every scrape calls ``collect`` for
fresh numbers: nothing is cached between scrapes, so a scrape right after a burst of
connections sees every one of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from tcpmesh.telemetry.counts import Counts
from tcpmesh.telemetry.exposition import render
from tcpmesh.telemetry.labels import Source

log = logging.getLogger("tcpmesh.telemetry")

PROMETHEUS_PORT = 15020
PROMETHEUS_PATH = "/stats/prometheus"
BIND_RETRY = 1.0

Collect = Callable[[], Awaitable[Counts]]


def make_app(collect: Collect, source: Source) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        try:
            counts = await collect()
        except Exception as exc:  # a broken scrape must never take the port down
            log.warning("cannot collect metrics: %s", exc)
            return web.Response(status=503, text=f"cannot collect metrics: {exc}\n")
        return web.Response(
            body=render(counts, source), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get(PROMETHEUS_PATH, metrics)
    return app


async def serve(
    host: str,
    port: int,
    collect: Collect,
    source: Source,
    started: Callable[[], None] = lambda: None,
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Serve until cancelled; a port that is taken is retried every second."""
    runner = web.AppRunner(make_app(collect, source), access_log=None)
    await runner.setup()
    task = asyncio.get_running_loop().create_task(background()) if background else None

    try:
        warned = False
        while True:
            try:
                await web.TCPSite(runner, host, port, reuse_address=True).start()
                break
            except OSError as exc:
                if not warned:
                    log.warning("cannot serve metrics on %s:%d: %s; retrying", host, port, exc)
                    warned = True
                await asyncio.sleep(BIND_RETRY)
        log.info("metrics on http://%s:%d%s", host, port, PROMETHEUS_PATH)
        started()
        await asyncio.Event().wait()
    finally:
        if task is not None:
            task.cancel()
        await runner.cleanup()


class MetricsThread:
    """``serve`` on a daemon thread: it ends with the process, as the endpoint should."""

    def __init__(
        self,
        host: str,
        port: int,
        collect: Collect,
        source: Source,
        background: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.listening = threading.Event()
        self._args = (host, port, collect, source)
        self._background = background
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        host, port, collect, source = self._args
        try:
            asyncio.run(serve(host, port, collect, source, self.listening.set, self._background))
        except Exception:
            log.exception("the metrics endpoint stopped")
