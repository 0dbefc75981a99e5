"""When does splicing beat copying? The proxy's own CPU time per exchange, per relay path.

    .venv/bin/python benchmarks/relay_paths.py [--sizes 64,1024,...] [--bulk-mib 512]

Starts one data plane worker per relay path (``TCPMESH_RELAY`` = copy, splice), pinned
to core 0 when there are two, with a blocking echo backend and the client in this process
(pinned to the other core), then measures, from the worker's utime+stime in
/proc/PID/stat (CPU the proxy spent, which other load on the machine changes far less
than wall-clock rates):

- request/response: one connection, ``--exchanges`` round trips of SIZE bytes each way,
  for each size: CPU µs per exchange (the first exchange, where ``auto`` may hand over,
  included);
- bulk: ``--bulk-mib`` MiB one way on one connection: CPU ns per byte;
- connections: ``--conns`` short connections, each one 64-byte exchange: CPU µs each.

The smallest request size at which splice's CPU per exchange drops below copy's is the
threshold ``auto`` uses (``dataplane.splice.AUTO_SPLICE_READ``). Every process it starts
is stopped by its pid; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import report

from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)

HOST = "127.0.0.86"
BACKEND = "127.0.0.87"
TICK = os.sysconf("SC_CLK_TCK")
PATHS = ("copy", "splice", "auto")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pin(cpu: int) -> None:
    if len(os.sched_getaffinity(0)) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


class EchoBackend:
    """Echoes every byte (``mode`` b"e") or discards them (b"d", then answers the total
    at EOF), per connection, in threads with blocking sockets."""

    def __init__(self) -> None:
        self.sock = socket.create_server((BACKEND, 0), backlog=1024)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _handle(conn: socket.socket) -> None:
        with conn:
            mode = conn.recv(1)
            total = 0
            while data := conn.recv(1 << 20):
                total += len(data)
                if mode == b"e":
                    conn.sendall(data)
            if mode == b"d":
                conn.sendall(b"%d" % total)

    def close(self) -> None:
        self.sock.close()


def snapshot(port: int, backend_port: int) -> Snapshot:
    origin = RouteOrigin("VirtualService", "bench", "relay", 0)
    route = TcpRoute(
        destinations=(WeightedCluster("echo", 100),), origin=origin, stat_prefix=str(origin)
    )
    cluster = Cluster(
        name="echo",
        service="echo.bench",
        port=backend_port,
        endpoints=(Endpoint(BACKEND, backend_port),),
    )
    return Snapshot.build((Listener(f"{HOST}_{port}", HOST, port, (route,)),), (cluster,))


class Worker:
    def __init__(self, path: str, snap: Snapshot, tmp: Path) -> None:
        snap_file = tmp / f"snapshot-{path}.json"
        snap_file.write_text(snap.to_json())
        env = {**os.environ, "TCPMESH_RELAY": path, "TCPMESH_LOG_LEVEL": "WARNING"}
        cmd = [sys.executable, "-m", "tcpmesh.dataplane.worker", "--snapshot-file", str(snap_file)]
        if len(os.sched_getaffinity(0)) > 1:
            cmd = ["taskset", "-c", "0", *cmd]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def connect(port: int, mode: bytes) -> socket.socket:
    for _ in range(200):
        try:
            s = socket.create_connection((HOST, port), timeout=30)
            break
        except OSError:
            time.sleep(0.05)
    else:
        raise RuntimeError(f"nothing listens on {HOST}:{port}")
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(mode)
    return s


def exchanges(pid: int, port: int, size: int, count: int) -> float:
    """CPU µs the proxy spends per round trip of ``size`` bytes each way."""
    payload = b"x" * size
    with connect(port, b"e") as s:
        buf = bytearray(size)
        before = cpu_seconds(pid)
        for _ in range(count):
            s.sendall(payload)
            got = 0
            view = memoryview(buf)
            while got < size:
                n = s.recv_into(view[got:])
                if not n:
                    raise RuntimeError("the proxy closed the connection")
                got += n
        return (cpu_seconds(pid) - before) / count * 1e6


def bulk(pid: int, port: int, mib: int) -> float:
    """CPU ns the proxy spends per byte of a one-way bulk transfer."""
    block = b"b" * (1 << 20)
    with connect(port, b"d") as s:
        before = cpu_seconds(pid)
        for _ in range(mib):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(64)
        spent = cpu_seconds(pid) - before
    if int(answer) != mib << 20:
        raise RuntimeError(f"the backend got {answer!r} bytes, not {mib << 20}")
    return spent / (mib << 20) * 1e9


def connections(pid: int, port: int, count: int) -> float:
    before = cpu_seconds(pid)
    for _ in range(count):
        with connect(port, b"e") as s:
            s.sendall(b"y" * 64)
            got = 0
            while got < 64:
                got += len(s.recv(64))
    return (cpu_seconds(pid) - before) / count * 1e6


def measure(
    path: str, args: argparse.Namespace, backend: EchoBackend, tmp: Path
) -> dict[str, object]:
    port = 20000 + PATHS.index(path)
    worker = Worker(path, snapshot(port, backend.port), tmp)
    try:
        connect(port, b"e").close()  # up and routing
        result: dict[str, object] = {
            "exchange_cpu_us": {
                size: round(exchanges(worker.pid, port, size, args.exchanges), 2)
                for size in args.sizes
            },
            "bulk_cpu_ns_per_byte": round(bulk(worker.pid, port, args.bulk_mib), 4),
            "connection_cpu_us": round(connections(worker.pid, port, args.conns), 1),
        }
    finally:
        worker.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="64,1024,16384,65536,262144,1048576")
    p.add_argument("--exchanges", type=int, default=2000)
    p.add_argument("--bulk-mib", type=int, default=1024)
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = p.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(",")]
    pin(1)
    backend = EchoBackend()
    results: dict[str, object] = {"loadavg": os.getloadavg()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for path in PATHS:
                results[path] = measure(path, args, backend, Path(tmp))
    finally:
        backend.close()
    return report.finish(results, args.out)


if __name__ == "__main__":
    sys.exit(main())
