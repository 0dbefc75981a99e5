"""A joined gateway's snapshot feed over several API servers: it asks them all at once and
follows the first that answers, so neither a replica that refuses (503: it cannot reach
its store) nor one that accepts and then stalls (its loop waiting on its store) delays it."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from tcpmesh.apiserver.credentials import write_credentials
from tcpmesh.control import Snapshot
from tcpmesh.dataplane.feed import SnapshotFeed

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT = 2.0


async def _site(handler: web.RequestHandler) -> tuple[web.AppRunner, str]:  # type: ignore[type-arg]
    app = web.Application()
    app.router.add_get("/tcpmesh/v1/snapshots/{namespace}/{pod}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_the_feed_follows_the_replica_that_answers_first(tmp_path: Path) -> None:
    snapshot = Snapshot.build((), ())
    finished = asyncio.Event()

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=503, text="cannot reach its store")

    async def serve(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(snapshot.to_json().encode() + b"\n")
        await asyncio.wait_for(finished.wait(), 30)
        return resp

    async def body() -> float:
        refusing, refused_url = await _site(refuse)
        serving, served_url = await _site(serve)
        # Accepts connections (the kernel's backlog) and never answers.
        stalled = socket.socket()
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        stalled_url = f"http://127.0.0.1:{stalled.getsockname()[1]}"
        servers = (stalled_url, refused_url, served_url)
        write_credentials(tmp_path, servers[0], "t", 0, servers=servers[1:])
        feed = SnapshotFeed(
            None,
            None,
            "istio-system/gw",
            state_dir=tmp_path,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=CONNECT_TIMEOUT,
        )
        started = time.monotonic()
        iterator = feed.__aiter__()
        try:
            got = await asyncio.wait_for(anext(iterator), 10)
            assert got.version == snapshot.version
            return time.monotonic() - started
        finally:
            finished.set()
            await iterator.aclose()  # type: ignore[attr-defined]
            stalled.close()
            await refusing.cleanup()
            await serving.cleanup()

    took = asyncio.run(body())
    assert took < CONNECT_TIMEOUT / 2, f"{took:.2f} s: it waited for the stalled server"
