"""Real etcd members for tests: Debian's etcd-server, own 127.x addresses, own data dirs.

Every process is started here and stopped here by its pid (SIGTERM, then SIGKILL), and
its data directory lives under the test's temporary directory.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
START_TIMEOUT = 30.0


def free_address() -> str:
    """A loopback address of its own, so concurrent suites never share one."""
    return f"127.{random.randint(100, 199)}.{random.randint(1, 254)}.{random.randint(1, 254)}"


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Member:
    name: str
    address: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    scheme: str = "http"
    tls_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.client_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            ETCD,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=tcpmesh-test",
            # Fast elections: these members share one machine.
            "--heartbeat-interval=50",
            "--election-timeout=500",
            *self.tls_args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Cluster:
    """One or more members on their own addresses; ``url`` is the store's ``--store``."""

    def __init__(
        self, members: Sequence[Member], query: str = "", ctl_args: Sequence[str] = ()
    ) -> None:
        self.members = list(members)
        # Options of the store URL (TLS files, user) and of etcdctl to match them.
        self.query = query
        self.ctl_args = list(ctl_args)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def url(self, prefix: str = "") -> str:
        return f"etcd://{self.endpoints}{prefix}{('?' + self.query) if self.query else ''}"

    def etcdctl(self, *args: str, env: dict[str, str] | None = None) -> str:
        """etcdctl (the real client) against the running members; its output, or AssertionError."""
        alive = [m for m in self.members if m.process is not None] or self.members
        cmd = [ETCDCTL, f"--endpoints={','.join(m.client_url for m in alive)}"]
        cmd += self.ctl_args
        completed = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "ETCDCTL_API": "3", **(env or {})},
        )
        if completed.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)}: {completed.stderr}")
        return completed.stdout

    def wait_healthy(self, members: Sequence[Member] | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        targets = list(members or self.members)
        while True:
            for member in targets:
                if member.process is not None and member.process.poll() is not None:
                    log = member.log_path.read_text(errors="replace")[-2000:]
                    raise AssertionError(f"etcd {member.name} exited: {log}")
            try:
                self.etcdctl("endpoint", "health", "--cluster")
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def make_members(base: Path, count: int) -> list[Member]:
    members = []
    for index in range(count):
        address = free_address()
        members.append(
            Member(
                name=f"m{index}",
                address=address,
                client_port=free_port(address),
                peer_port=free_port(address),
                data_dir=base / f"m{index}",
                log_path=base / f"m{index}.log",
            )
        )
    return members


@contextmanager
def etcd_cluster(base: Path, count: int = 1) -> Iterator[Cluster]:
    """``count`` fresh members forming one cluster, stopped (by pid) on the way out."""
    cluster = Cluster(make_members(base, count))
    try:
        for member in cluster.members:
            member.start(cluster.initial_cluster)
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
