"""What one short connection costs the built-in data plane: CPU and system calls.

    .venv/bin/python benchmarks/conn_cost.py [--conns 2000] [--reps 3] [--workers 1] [--no-strace]

Starts the data plane as ``tcpmesh up`` runs it (``python -m tcpmesh.dataplane``: the
supervisor and ``--workers`` workers, pinned to core 0 when there are two) with the
blocking echo backend of ``relay_paths.py``, then opens ``--conns`` connections one after
another from this process (pinned to the other core), each one 64-byte exchange, and
reports per connection:

- the proxy's user and system CPU time (utime, stime from /proc/PID/stat of every
  process of the data plane): load from other processes changes these far less than it
  changes a wall-clock rate, which is why this is the number to compare before/after;
- with ``strace`` on the path, the system calls of the workers by name (``strace -c -f``
  attached to each worker for one extra pass, whose CPU numbers are not used: tracing
  slows every call down).

Every process it starts is stopped by its pid; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import relay_paths as rp

PORT = 20030


def ticks(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` so far."""
    user = system = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11]) / rp.TICK
        system += int(fields[12]) / rp.TICK
    return user, system


def start_plane(snapshot_file: Path, workers: int, relay: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TCPMESH_RELAY": relay, "TCPMESH_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "tcpmesh.dataplane", "--snapshot-file", str(snapshot_file)]
    cmd += ["--workers", str(workers)]
    if len(os.sched_getaffinity(0)) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)


def worker_pids(supervisor: int, workers: int) -> list[int]:
    for _ in range(200):
        kids = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        if len(kids) >= workers:
            return [int(k) for k in kids]
        time.sleep(0.05)
    raise RuntimeError(f"the supervisor (pid {supervisor}) did not start {workers} workers")


def syscalls(pids: list[int], conns: int, out: Path) -> dict[str, float]:
    """System calls per connection by name, from ``strace -c -f`` on every worker."""
    tracers = [
        subprocess.Popen(
            ["strace", "-c", "-f", "-o", f"{out}.{pid}", "-p", str(pid)],
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    try:
        time.sleep(1.0)  # attached
        rp.connections(pids[0], PORT, conns)
        time.sleep(0.3)
    finally:
        for tracer in tracers:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
    counts: dict[str, float] = {}
    for pid in pids:
        for line in Path(f"{out}.{pid}").read_text().splitlines():
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = counts.get(parts[-1], 0) + int(parts[3])
    return {name: round(n / conns, 2) for name, n in sorted(counts.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--relay", default="auto", choices=rp.PATHS)
    p.add_argument("--no-strace", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = p.parse_args(argv)
    rp.pin(1)
    backend = rp.EchoBackend()
    result: dict[str, object] = {"loadavg": os.getloadavg(), "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "snapshot.json"
        snap.write_text(rp.snapshot(PORT, backend.port).to_json())
        plane = start_plane(snap, args.workers, args.relay)
        try:
            rp.connect(PORT, b"e").close()  # up and routing
            pids = [plane.pid, *worker_pids(plane.pid, args.workers)]
            rp.connections(pids[1], PORT, 200)  # warm
            user, system = [], []
            for _ in range(args.reps):
                before = ticks(pids)
                rp.connections(pids[1], PORT, args.conns)
                after = ticks(pids)
                user.append((after[0] - before[0]) / args.conns * 1e6)
                system.append((after[1] - before[1]) / args.conns * 1e6)
            result["user_us_per_conn"] = [round(x, 1) for x in user]
            result["system_us_per_conn"] = [round(x, 1) for x in system]
            result["median_cpu_us_per_conn"] = round(
                statistics.median(u + s for u, s in zip(user, system, strict=True)), 1
            )
            if not args.no_strace and shutil.which("strace"):
                calls = syscalls(pids[1:], min(args.conns, 1000), Path(tmp) / "strace")
                result["syscalls_per_conn"] = calls
                result["syscalls_per_conn_total"] = round(sum(calls.values()), 1)
        finally:
            plane.terminate()
            try:
                plane.wait(10)
            except subprocess.TimeoutExpired:
                plane.kill()
                plane.wait()
            backend.close()
    result["loadavg_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
