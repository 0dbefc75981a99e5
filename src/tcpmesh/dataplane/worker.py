"""One data plane worker process: its own event loop, snapshot source and listeners.

``python -m tcpmesh.dataplane.worker [--snapshot-file PATH] [--index N]``

Environment: POD_NAMESPACE, POD_NAME (the node whose snapshots to follow),
TCPMESH_STATE_DIR (where ``apiserver.json`` lives), TCPMESH_METRICS_PORT (serve
Prometheus metrics on ``127.0.0.1:PORT+index``), TCPMESH_WORKER_INDEX,
TCPMESH_FEED_RETRY_SECONDS (a joined gateway: the longest wait between attempts to reach
an API server, and the connect timeout), TCPMESH_SUPERVISOR_PID (exit when that parent
is gone, and hand it this worker's counts
over telemetry.channel), TCPMESH_LOG_LEVEL, TCPMESH_STATUS_PORT (Istio's
15021: ``GET /healthz/ready`` on ``POD_IP`` or 127.0.0.1, shared by all workers with
SO_REUSEPORT, opened once the first snapshot is applied so that a TCP readiness probe
means "has its configuration"), TCPMESH_RELAY (``auto``, ``copy`` or ``splice``: how bytes
are moved, see ``dataplane.splice``), TCPMESH_ENGINE (``auto``, ``native`` or ``python``: which
code moves them, see ``dataplane.native``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tcpmesh.control import Snapshot
from tcpmesh.dataplane.counters import store_from_env
from tcpmesh.dataplane.feed import SnapshotFeed
from tcpmesh.dataplane.proxy import Proxy
from tcpmesh.dataplane.splice import RelayMode, relay_mode
from tcpmesh.dataplane.supervisor import drain_seconds
from tcpmesh.telemetry import channel_name, serve_counts

log = logging.getLogger("tcpmesh.dataplane")

PARENT_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkerConfig:
    index: int = 0
    node: str = "default/tcpmesh-proxy"
    state_dir: Path | None = None
    snapshot_file: Path | None = None
    metrics_port: int | None = None
    supervisor_pid: int | None = None
    status_port: int | None = None
    pod_ip: str = "127.0.0.1"
    relay: RelayMode = RelayMode.AUTO
    feed_retry: float | None = None

    @classmethod
    def from_env(cls, snapshot_file: Path | None = None, index: int | None = None) -> WorkerConfig:
        env = os.environ
        namespace = env.get("POD_NAMESPACE", "default")
        pod = env.get("POD_NAME", "tcpmesh-proxy")
        state_dir = env.get("TCPMESH_STATE_DIR")
        metrics = env.get("TCPMESH_METRICS_PORT")
        supervisor = env.get("TCPMESH_SUPERVISOR_PID")
        status = env.get("TCPMESH_STATUS_PORT")
        return cls(
            index=index if index is not None else int(env.get("TCPMESH_WORKER_INDEX", "0")),
            node=f"{namespace}/{pod}",
            state_dir=Path(state_dir) if state_dir else None,
            snapshot_file=snapshot_file,
            metrics_port=int(metrics) if metrics else None,
            supervisor_pid=int(supervisor) if supervisor else None,
            status_port=int(status) if status else None,
            pod_ip=env.get("POD_IP") or "127.0.0.1",
            relay=relay_mode(env.get("TCPMESH_RELAY")),
            feed_retry=float(env["TCPMESH_FEED_RETRY_SECONDS"])
            if env.get("TCPMESH_FEED_RETRY_SECONDS")
            else None,
        )


# A stream without a byte for this long is dead: the server ticks every second.
FEED_READ_TIMEOUT = 3.5


def _feed(config: WorkerConfig) -> SnapshotFeed:
    """The worker's snapshot feed. A joined gateway (``TCPMESH_FEED_RETRY_SECONDS``, for
    API servers across a network) retries that often at most, and gives a connect no
    longer, so it is back within about that time of the network returning."""
    retry = config.feed_retry
    if retry is None:
        return SnapshotFeed(
            None, None, config.node, state_dir=config.state_dir, read_timeout=FEED_READ_TIMEOUT
        )
    return SnapshotFeed(
        None,
        None,
        config.node,
        state_dir=config.state_dir,
        backoff_initial=min(0.1, retry),
        backoff_max=retry,
        connect_timeout=retry,
        read_timeout=FEED_READ_TIMEOUT,
    )


def load_snapshot_file(path: Path) -> Snapshot | None:
    try:
        return Snapshot.from_json(path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("cannot load snapshot file %s: %s", path, exc)
        return None


async def _follow_feed(proxy: Proxy, feed: SnapshotFeed, configured: asyncio.Event) -> None:
    async for snapshot in feed:
        log.info("applying snapshot %s", snapshot.version)
        proxy.apply(snapshot)
        configured.set()


async def _serve_status(proxy: Proxy, host: str, port: int, configured: asyncio.Event) -> None:
    """Istio's status port: ready once a snapshot is applied; bind failures are retried."""

    async def ready(_: web.Request) -> web.Response:
        version = proxy.snapshot.version
        return web.Response(
            text=f"ready {version}\n" if version else "no snapshot\n",
            status=200 if version else 503,
        )

    await configured.wait()
    app = web.Application()
    app.router.add_get("/healthz/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        warned = False
        while True:
            try:
                await web.TCPSite(runner, host, port, reuse_address=True, reuse_port=True).start()
                log.info("status port %s:%d ready", host, port)
                break
            except OSError as exc:
                if not warned:
                    log.warning("cannot serve the status port %s:%d: %s; retrying", host, port, exc)
                    warned = True
                await asyncio.sleep(1.0)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    while os.getppid() == pid:
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
    log.warning("supervisor %d is gone; exiting", pid)
    stop.set()


async def _start_metrics(proxy: Proxy, port: int) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(proxy.stats.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.info("metrics on http://127.0.0.1:%d/metrics", port)
    return runner


async def serve(config: WorkerConfig, proxy: Proxy | None = None) -> None:
    """Run until SIGTERM/SIGINT (or the supervisor disappears)."""
    loop = asyncio.get_running_loop()
    if proxy is None:
        # The supervisor's shared counters (one circuit breaker and outlier state per
        # cluster for every worker), or this process's own when run alone.
        proxy = Proxy(counters=store_from_env(), relay=config.relay)
    # auto resolves to native when the C extension imports (dataplane.native).
    log.info("worker %d: engine %s, relay %s", config.index, proxy.engine, proxy.relay)
    stop = asyncio.Event()
    draining = False

    def drain() -> None:
        nonlocal draining
        draining = True
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, drain)
    tasks: list[asyncio.Task[None]] = []
    configured = asyncio.Event()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(loop.create_task(coro))

    if config.snapshot_file is not None:
        path = config.snapshot_file

        def reload() -> None:
            snapshot = load_snapshot_file(path)
            if snapshot is not None:
                log.info("applying snapshot %s from %s", snapshot.version, path)
                proxy.apply(snapshot)
                configured.set()

        reload()
        loop.add_signal_handler(signal.SIGHUP, reload)
        await proxy.settled()
    else:
        spawn(_follow_feed(proxy, _feed(config), configured))
    if config.supervisor_pid is not None:
        spawn(_watch_parent(config.supervisor_pid, stop))
    if config.status_port is not None:
        spawn(_serve_status(proxy, config.pod_ip, config.status_port, configured))
    channel = None
    if config.supervisor_pid is not None:
        # The supervisor asks for this worker's counts at every scrape of :15020.
        try:
            channel = await serve_counts(
                channel_name(config.supervisor_pid, config.index), proxy.counts_json
            )
        except OSError as exc:
            log.error("cannot hand counts to the supervisor: %s", exc)
    runner = None
    if config.metrics_port is not None:
        try:
            runner = await _start_metrics(proxy, config.metrics_port + config.index)
        except OSError as exc:
            log.error("cannot serve metrics: %s", exc)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.cleanup()
        if channel is not None:
            channel.close()
        # A drain (the hand-over to a newer gateway) lets open connections finish.
        await proxy.close(grace=drain_seconds() if draining else 0.0)


def setup_logging(index: int) -> None:
    level = os.environ.get("TCPMESH_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format=f"%(asctime)s dataplane[{index}] %(levelname)s %(message)s",
    )


def run(config: WorkerConfig) -> None:
    """Run one worker on uvloop when it is installed, else on the default loop."""
    # What the imports made lives as long as the process: out of the collector's sight,
    # a full collection no longer walks it (perf: 7% of a busy worker was the collector).
    gc.freeze()
    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio")
        asyncio.run(serve(config))
        return
    log.info("event loop: uvloop %s", getattr(uvloop, "__version__", ""))
    uvloop.run(serve(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcpmesh.dataplane.worker")
    parser.add_argument("--snapshot-file", type=Path, default=None)
    parser.add_argument("--index", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        config = WorkerConfig.from_env(args.snapshot_file, args.index)
    except ValueError as exc:
        print(f"dataplane worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.index)
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
