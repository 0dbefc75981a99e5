"""Network namespaces for multi-host tests: "hosts" on a bridge, every address inside them.

``Lan`` creates a switch namespace holding a Linux bridge (and the test's own client
address, ``CLIENT``) and one namespace per host, each joined to the bridge by a veth pair
with one address. Processes run inside a host with ``Lan.popen`` (``ip netns exec``);
the test's own sockets enter a namespace in a thread of their own (``Lan.run_in``), since
``setns`` moves only the calling thread. Everything is removed on the way out, processes
first (by pid, SIGKILL after a grace period), even when the test failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
IP = shutil.which("ip") or "/usr/sbin/ip"
SUBNET = "10.99.0"
CLIENT = f"{SUBNET}.254"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=10)


def netns_problem() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"tmprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        return f"ip netns add failed: {stderr.decode(errors='replace').strip() or exc}"
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "delete", name)
    return None


@dataclass
class Lan:
    hosts: int
    prefix: str = field(default_factory=lambda: f"tm{os.getpid() % 100000}")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def host(self, index: int) -> str:
        return f"{self.prefix}h{index}"

    def address(self, index: int) -> str:
        return f"{SUBNET}.{index}"

    def _port(self, index: int) -> str:
        return f"{self.prefix}p{index}"

    def create(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "addr", "add", f"{CLIENT}/24", "dev", "br0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index in range(1, self.hosts + 1):
            name, port = self.host(index), self._port(index)
            _ip("netns", "add", name)
            self._made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip(
                "-n",
                self.switch,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                name,
            )
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")

    def cut(self, index: int) -> None:
        """Unplug a host: its bridge port goes down, so nothing passes either way."""
        _ip("-n", self.switch, "link", "set", self._port(index), "down")

    def mend(self, index: int) -> None:
        _ip("-n", self.switch, "link", "set", self._port(index), "up")

    def popen(
        self, index: int, argv: Sequence[str], log: Path, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside host ``index``; stopped by ``close`` if still running."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [IP, "netns", "exec", self.host(index), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **kwargs,
            )
        self.processes.append(process)
        return process

    def run_in(self, namespace: str, func: Callable[[], T], timeout: float = 60.0) -> T:
        """``func()`` in a thread that entered ``namespace``; its result or its exception."""
        results: queue.Queue[tuple[bool, Any]] = queue.Queue()

        def body() -> None:
            try:
                with open(f"/run/netns/{namespace}") as handle:
                    if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {namespace}")
                results.put((True, func()))
            except BaseException as exc:  # handed to the caller
                results.put((False, exc))

        thread = threading.Thread(target=body, name=f"in {namespace}", daemon=True)
        thread.start()
        ok, value = results.get(timeout=timeout)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for name in reversed(self._made):
            self._kill_remaining(name)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "delete", name)
        self._made.clear()

    @staticmethod
    def _kill_remaining(name: str) -> None:
        """SIGKILL what still runs in a namespace this test made: the pods of a replica
        that was killed -9 have no parent left to stop them, and would outlive the test."""
        found = subprocess.run(
            [IP, "netns", "pids", name], capture_output=True, text=True, check=False, timeout=10
        )
        for pid in found.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def lan(hosts: int) -> Iterator[Lan]:
    network = Lan(hosts)
    try:
        network.create()
        yield network
    finally:
        network.close()
