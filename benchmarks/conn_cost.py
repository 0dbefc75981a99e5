"""What one short connection costs the built-in data plane: CPU and system calls.

    .venv/bin/python benchmarks/conn_cost.py [--conns 2000] [--reps 3] [--workers 1] [--no-strace]
        [--engine auto|native|python] [--envoy PATH]

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

With ``--envoy PATH`` it measures Envoy the same way in the same run, right after: one
worker (``--concurrency 1``, the benchmark's setting), a ``tcp_proxy`` listener to the same
backend, on the same core.

Every process it starts is stopped by its pid; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import relay_paths as rp
import report

PORT = 20030
ENVOY_PORT = 20031
ENVOY_CONFIG = """\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: echo
    address: {{socket_address: {{address: {host}, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: echo
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 10s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {backend}, port_value: {bport}}}}}}}
"""


def ticks(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` so far."""
    user = system = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11]) / rp.TICK
        system += int(fields[12]) / rp.TICK
    return user, system


def start_plane(
    snapshot_file: Path, workers: int, relay: str, engine: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TCPMESH_RELAY": relay, "TCPMESH_ENGINE": engine}
    env["TCPMESH_LOG_LEVEL"] = "WARNING"
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


def start_envoy(envoy: str, backend_port: int, tmp: Path) -> subprocess.Popen[bytes]:
    config = tmp / "envoy.yaml"
    config.write_text(
        ENVOY_CONFIG.format(host=rp.HOST, port=ENVOY_PORT, backend=rp.BACKEND, bport=backend_port)
    )
    cmd = [envoy, "-c", str(config), "--concurrency", "1", "--log-level", "warning"]
    cmd.append("--disable-hot-restart")  # no shared memory with other Envoys on the host
    if len(os.sched_getaffinity(0)) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    """Until the proxy answers on ``port`` (a loaded machine starts Python slowly)."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((rp.HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {rp.HOST}:{port} after {seconds:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(
    pids: list[int], traced: list[int], port: int, args: argparse.Namespace, tmp: Path
) -> dict[str, object]:
    """CPU per connection of ``pids`` over ``args.reps`` passes; syscalls of ``traced``."""
    rp.connections(pids[0], port, 200)  # warm
    user, system = [], []
    for _ in range(args.reps):
        before = ticks(pids)
        rp.connections(pids[0], port, args.conns)
        after = ticks(pids)
        user.append((after[0] - before[0]) / args.conns * 1e6)
        system.append((after[1] - before[1]) / args.conns * 1e6)
    result: dict[str, object] = {
        "user_us_per_conn": [round(x, 1) for x in user],
        "system_us_per_conn": [round(x, 1) for x in system],
        "median_cpu_us_per_conn": round(
            statistics.median(u + s for u, s in zip(user, system, strict=True)), 1
        ),
    }
    if not args.no_strace and shutil.which("strace"):
        calls = syscalls(traced, port, min(args.conns, 1000), tmp / f"strace-{port}")
        result["syscalls_per_conn"] = calls
        result["syscalls_per_conn_total"] = round(sum(calls.values()), 1)
    return result


def syscalls(pids: list[int], port: int, conns: int, out: Path) -> dict[str, float]:
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
        rp.connections(pids[0], port, conns)
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
    p.add_argument("--engine", default="auto", choices=("auto", "native", "python"))
    p.add_argument("--no-strace", action="store_true")
    p.add_argument("--envoy", default=None, help="also measure this Envoy binary")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = p.parse_args(argv)
    rp.pin(1)
    backend = rp.EchoBackend()
    result: dict[str, object] = {"loadavg": os.getloadavg(), "workers": args.workers}
    result["engine"] = args.engine
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "snapshot.json"
        snap.write_text(rp.snapshot(PORT, backend.port).to_json())
        try:
            plane = start_plane(snap, args.workers, args.relay, args.engine)
            try:
                wait_listening(PORT, plane)
                workers = worker_pids(plane.pid, args.workers)
                result["tcpmesh"] = measure([plane.pid, *workers], workers, PORT, args, Path(tmp))
            finally:
                stop(plane)
            if args.envoy:
                envoy = start_envoy(args.envoy, backend.port, Path(tmp))
                try:
                    wait_listening(ENVOY_PORT, envoy)
                    result["envoy"] = measure([envoy.pid], [envoy.pid], ENVOY_PORT, args, Path(tmp))
                finally:
                    stop(envoy)
        finally:
            backend.close()
    return report.finish(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
