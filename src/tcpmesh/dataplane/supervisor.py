"""The parent of the worker processes: start them, restart the dead, pass signals on.

``python -m tcpmesh.dataplane [--snapshot-file PATH] [--workers N]``

Workers are separate interpreters (``python -m tcpmesh.dataplane.worker``), each with its
own event loop and listening sockets bound with SO_REUSEPORT, so the kernel spreads
new connections over them. SIGTERM/SIGINT are forwarded as SIGTERM and the parent
exits once every worker is gone; SIGHUP is forwarded (workers serving a snapshot file
re-read it). SIGUSR1 asks for a drain, the hand-over to a newer gateway: workers stop
accepting, relay their open connections until they end (at most TCPMESH_DRAIN_SECONDS,
default an hour, the default idle timeout), then exit, and so does the parent.

With TCPMESH_PROMETHEUS_PORT (15020 in the gateway pod) the supervisor serves Istio's
merged metrics on ``POD_IP:PORT/stats/prometheus``: the sum over its workers, asked
for at every scrape (telemetry.channel).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tcpmesh.dataplane.counters import SHARED_STATE_ENV, SharedCounters
from tcpmesh.telemetry import Counts, MetricsThread, Source, WorkerTotals

log = logging.getLogger("tcpmesh.dataplane")

RESTART_INITIAL = 0.2
RESTART_MAX = 5.0
# A worker that lived this long before dying is restarted without delay growth.
STABLE_AFTER = 10.0
STOP_TIMEOUT = 10.0
DRAIN_SECONDS = 3600.0
POLL_INTERVAL = 0.05


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0
    delay: float = RESTART_INITIAL


class Supervisor:
    def __init__(
        self, workers: int, worker_args: list[str], counters: SharedCounters | None = None
    ) -> None:
        self._slots = [_Slot(i) for i in range(max(1, workers))]
        self._worker_args = worker_args
        self._counters = counters
        self._stopping = False
        self._stop_deadline = 0.0
        self._pending_signals: list[int] = []

    def worker_pids(self) -> list[tuple[int, int | None]]:
        """(index, pid or None) per slot; read by the metrics thread."""
        return [(s.index, s.process.pid if s.process else None) for s in self._slots]

    def serve_metrics(self, host: str, port: int) -> None:
        totals = WorkerTotals(os.getpid())

        async def collect() -> Counts:
            return await totals.collect(self.worker_pids())

        MetricsThread(host, port, collect, Source.from_env(os.environ)).start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._pending_signals.append(signum)

    def _spawn(self, slot: _Slot) -> None:
        env = dict(os.environ)
        env["TCPMESH_WORKER_INDEX"] = str(slot.index)
        env["TCPMESH_SUPERVISOR_PID"] = str(os.getpid())
        fds: tuple[int, ...] = ()
        if self._counters is not None:
            env[SHARED_STATE_ENV] = str(self._counters.fd)
            fds = (self._counters.fd,)
        cmd = [sys.executable, "-m", "tcpmesh.dataplane.worker", "--index", str(slot.index)]
        slot.process = subprocess.Popen([*cmd, *self._worker_args], env=env, pass_fds=fds)
        slot.started = time.monotonic()
        log.info("started worker %d (pid %d)", slot.index, slot.process.pid)

    def _signal_workers(self, signum: int) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signum)

    def _handle_signals(self) -> None:
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            if signum == signal.SIGHUP:
                self._signal_workers(signal.SIGHUP)
            elif signum == signal.SIGUSR1 and not self._stopping:
                log.info("draining: no new connections; exiting when the open ones end")
                self._stopping = True
                self._stop_deadline = time.monotonic() + drain_seconds() + STOP_TIMEOUT
                self._signal_workers(signal.SIGUSR1)
            elif not self._stopping:
                log.info("stopping workers (signal %d)", signum)
                self._stopping = True
                self._stop_deadline = time.monotonic() + STOP_TIMEOUT
                self._signal_workers(signal.SIGTERM)

    def _reap(self, now: float) -> None:
        for slot in self._slots:
            proc = slot.process
            if proc is None or proc.poll() is None:
                continue
            slot.process = None
            if self._stopping:
                continue
            lived = now - slot.started
            slot.delay = RESTART_INITIAL if lived >= STABLE_AFTER else slot.delay
            slot.restart_at = now + slot.delay
            log.warning(
                "worker %d (pid %d) exited with %s; restarting in %.1fs",
                slot.index,
                proc.pid,
                proc.returncode,
                slot.delay,
            )
            slot.delay = min(slot.delay * 2, RESTART_MAX)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        for slot in self._slots:
            self._spawn(slot)
        while True:
            self._handle_signals()
            now = time.monotonic()
            self._reap(now)
            alive = [s for s in self._slots if s.process is not None]
            if self._stopping:
                if not alive:
                    return 0
                if now > self._stop_deadline:
                    log.warning("workers did not stop in %.0fs; killing them", STOP_TIMEOUT)
                    self._signal_workers(signal.SIGKILL)
                    self._stop_deadline = now + STOP_TIMEOUT
            else:
                for slot in self._slots:
                    if slot.process is None and now >= slot.restart_at:
                        self._spawn(slot)
            time.sleep(POLL_INTERVAL)


def drain_seconds() -> float:
    """How long a drain waits for open connections (``TCPMESH_DRAIN_SECONDS``)."""
    text = os.environ.get("TCPMESH_DRAIN_SECONDS", "").strip()
    try:
        return float(text) if text else DRAIN_SECONDS
    except ValueError:
        return DRAIN_SECONDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcpmesh.dataplane")
    parser.add_argument("--snapshot-file", type=Path, default=None, help="serve this snapshot")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    # The istio/proxyv2 image's arguments (proxy router ...) mean nothing here.
    args, ignored = parser.parse_known_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, os.environ.get("TCPMESH_LOG_LEVEL", "INFO").upper(), logging.INFO),
        format="%(asctime)s dataplane %(levelname)s %(message)s",
    )
    if ignored:
        log.info("ignoring arguments %s", " ".join(ignored))
    workers = args.workers
    if workers is None:
        env_workers = os.environ.get("TCPMESH_WORKERS", "")
        workers = int(env_workers) if env_workers.strip() else (os.cpu_count() or 1)
    worker_args: list[str] = []
    if args.snapshot_file is not None:
        worker_args += ["--snapshot-file", str(args.snapshot_file.resolve())]
    # One counter table for all workers, so breakers and outlier state are per proxy. A
    # single worker shares with no one: its own counters spare it a lock (two fcntl
    # calls) per count, four counts per connection.
    counters = SharedCounters.create() if workers > 1 else None
    supervisor = Supervisor(workers, worker_args, counters)
    prometheus_port = os.environ.get("TCPMESH_PROMETHEUS_PORT", "").strip()
    if prometheus_port:
        supervisor.serve_metrics(os.environ.get("POD_IP") or "127.0.0.1", int(prometheus_port))
    try:
        return supervisor.run()
    finally:
        if counters is not None:
            counters.close()
