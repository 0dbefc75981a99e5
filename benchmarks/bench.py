"""The tcpmesh benchmark: the built-in data plane against Envoy, HAProxy and nginx stream.

Run it through ``bash benchmarks/run.sh`` (which installs the tools). The benchmark starts
its backends itself, as plain processes on their own loopback addresses; tcpmesh routes to
them through STATIC ServiceEntries, Envoy, HAProxy and nginx through their static configs.
Every proxy gets the same 80/20 split, one worker pinned to one core, and the load pinned
to the other core. Each repetition runs every proxy once, in a rotating order; the report
gives the median and the spread of the repetitions and ratios against Envoy's median of
the same run.

Every load is bounded in time and count and goes to 127.0.0.0/8 only; every process the
benchmark starts is stopped by its pid when it ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIGS = HERE / "configs"

HTTP_BACKEND_PORT = 8080
SOCKPERF_PORT = 11111
IPERF_BACKEND_PORT = 5201
# Listener ports per proxy: (http split, ping-pong, throughput, admin).
PORTS = {
    "tcpmesh": (31400, 31401, 31402, 0),
    "envoy": (32400, 32401, 32402, 32409),
    "haproxy": (32410, 32411, 32412, 0),
    "nginx": (32420, 32421, 32422, 0),
}
PROXIES = ("tcpmesh", "envoy", "haproxy", "nginx")
# Other processes may use at most this share of a core around a run (and the hypervisor
# may steal at most STEAL_LIMIT); more means other load disturbed the run, which is flagged.
BUSY_LIMIT = 0.10
STEAL_LIMIT = 0.02


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------


class Processes:
    """Everything the benchmark starts, stopped by pid (and process group) at the end."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], *, log_path: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        # Children that outlived their leader (same process group).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self._procs)):
            try:
                self.stop(proc)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ({proc.args!r}) did not exit after SIGKILL")


def run_cmd(
    argv: list[str], timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def pinned(core: int | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if core is not None else argv


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(x) for x in (task / "children").read_text().split()]
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def cpu_per_request(ticks: int, requests: int) -> float:
    """Microseconds of the proxy's CPU (user + system) per completed request."""
    if requests <= 0:
        return float("nan")
    return ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6


def pin_tree(pid: int, core: int | None) -> None:
    if core is None:
        return
    for p in descendants(pid):
        run_cmd(["taskset", "-a", "-p", "-c", str(core), str(p)], 10, check=False)


def check_free(host: str, ports: list[int]) -> None:
    """Refuse to start when something else listens on a port the benchmark needs."""
    for port in ports:
        with socket.socket() as s:
            # As the proxies and backends do: connections of an earlier run in TIME-WAIT
            # do not block the bind, a listening socket still does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                raise SystemExit(
                    f"{host}:{port} is in use ({exc}); pick another --address"
                ) from None


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers on {host}:{port}")
        time.sleep(0.1)


# -- machine load ----------------------------------------------------------------------


def _cpu_times() -> dict[str, list[int]]:
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *vals = line.split()
            out[name] = [int(v) for v in vals]
    return out


def machine_check(ours: Callable[[], list[int]], seconds: float = 1.0) -> dict[str, Any]:
    """Share of each core used over ``seconds`` by processes that are not the benchmark's.

    Busy time of the cores minus the CPU time of the benchmark's own processes (``ours``)
    is what other load on the machine took; steal is what the hypervisor took.
    """
    pids = ours()
    a, mine_a = _cpu_times(), cpu_ticks(pids)
    time.sleep(seconds)
    b, mine_b = _cpu_times(), cpu_ticks(pids)
    cores: dict[str, dict[str, float]] = {}
    busy_total = ticks_total = 0
    steal_share = 0.0
    for name in sorted(b):
        if name == "cpu" or name not in a:
            continue
        d = [y - x for x, y in zip(a[name], b[name], strict=False)]
        total = sum(d) or 1
        idle = d[3] + (d[4] if len(d) > 4 else 0)
        steal = d[7] if len(d) > 7 else 0
        cores[name] = {"busy": round(1 - idle / total, 3), "steal": round(steal / total, 3)}
        busy_total += total - idle - steal
        ticks_total += total
        steal_share = max(steal_share, steal / total)
    ncores = max(1, len(cores))
    foreign = max(0, busy_total - (mine_b - mine_a)) / max(1, ticks_total / ncores)
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    return {
        "cores": cores,
        "foreign_cores": round(foreign, 3),
        "loadavg1": load1,
        "disturbed": foreign > BUSY_LIMIT or steal_share > STEAL_LIMIT,
    }


# -- the proxies -----------------------------------------------------------------------


@dataclass
class Backends:
    """The backend processes' addresses; every proxy in the benchmark routes to them."""

    v1: str
    v2: str
    sockperf: str
    iperf: str

    @classmethod
    def after(cls, address: str) -> Backends:
        """The four addresses after the proxies' listen address."""
        first = int(ipaddress.IPv4Address(address))
        v1, v2, sockperf, iperf = (str(ipaddress.IPv4Address(first + i)) for i in range(1, 5))
        return cls(v1, v2, sockperf, iperf)

    def listens(self) -> list[tuple[str, int]]:
        return [
            (self.v1, HTTP_BACKEND_PORT),
            (self.v2, HTTP_BACKEND_PORT),
            (self.sockperf, SOCKPERF_PORT),
            (self.iperf, IPERF_BACKEND_PORT),
        ]

    def start(self, procs: Processes, work: Path, core: int | None) -> None:
        """Start the backends, pinned to ``core``; ``procs`` stops them by pid."""
        argvs: list[tuple[str, list[str]]] = []
        for version, ip, word in (("v1", self.v1, "one"), ("v2", self.v2, "two")):
            d = work / f"backend-http-{version}"
            d.mkdir()
            cfg = d / "nginx.conf"
            cfg.write_text(
                render("http-backend.conf.tmpl", dir=d, ip=ip, port=HTTP_BACKEND_PORT, word=word)
            )
            argvs.append(
                (f"http-{version}", ["nginx", "-e", "stderr", "-p", str(d), "-c", str(cfg)])
            )
        argvs.append(
            (
                "sockperf",
                ["sockperf", "server", "--tcp", "-i", self.sockperf, "-p", str(SOCKPERF_PORT)],
            )
        )
        argvs.append(
            (
                "iperf3",
                ["iperf3", "--server", "--bind", self.iperf, "--port", str(IPERF_BACKEND_PORT)],
            )
        )
        started = [
            (name, procs.start(pinned(core, argv), log_path=work / f"backend-{name}.log"))
            for name, argv in argvs
        ]
        for (name, proc), (host, port) in zip(started, self.listens(), strict=True):
            deadline = time.monotonic() + 30
            while not _answers(host, port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (work / f"backend-{name}.log").read_text(errors="replace")
                    raise RuntimeError(
                        f"backend {name} does not listen on {host}:{port}: {log_text[-1000:]}"
                    )
                time.sleep(0.1)

    def template_vars(self) -> dict[str, Any]:
        return {
            "v1_ip": self.v1,
            "v2_ip": self.v2,
            "sockperf_ip": self.sockperf,
            "iperf_ip": self.iperf,
            "http_backend_port": HTTP_BACKEND_PORT,
            "sockperf_port": SOCKPERF_PORT,
            "iperf_backend_port": IPERF_BACKEND_PORT,
        }


def render(name: str, **values: Any) -> str:
    return Template((CONFIGS / name).read_text()).substitute(**values)


@dataclass
class Proxy:
    name: str
    address: str
    proc_root: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_port(self) -> int:
        return PORTS[self.name][0]

    @property
    def pingpong_port(self) -> int:
        return PORTS[self.name][1]

    @property
    def iperf_port(self) -> int:
        return PORTS[self.name][2]

    def pids(self) -> list[int]:
        return descendants(self.proc_root) if self.proc_root else []


class Mesh:
    """``tcpmesh up --workers 1``, routing to the benchmark's backends via ServiceEntries."""

    def __init__(
        self, work: Path, address: str, cores: tuple[int, int] | None, backends: Backends
    ) -> None:
        self.state = work / "mesh-state"
        self.address = address
        self.cores = cores
        self.tcpmesh = [sys.executable, "-m", "tcpmesh", "--state-dir", str(self.state)]
        self.backends = backends
        self.gateway_pid = 0
        self.pid = 0

    def routes_yaml(self, v1: int, v2: int) -> str:
        ports = PORTS["tcpmesh"]
        return render(
            "routes.yaml.tmpl",
            http_port=ports[0],
            pingpong_port=ports[1],
            iperf_port=ports[2],
            v1_weight=v1,
            v2_weight=v2,
            http_backend_port=HTTP_BACKEND_PORT,
            sockperf_port=SOCKPERF_PORT,
            iperf_backend_port=IPERF_BACKEND_PORT,
        )

    def apply_text(self, text: str) -> float:
        """Apply YAML; the seconds the command took."""
        started = time.monotonic()
        done = subprocess.run(
            [*self.tcpmesh, "apply", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tcpmesh apply failed: {done.stderr}")
        return time.monotonic() - started

    def up(self) -> None:
        load_core = self.cores[1] if self.cores else None
        argv = [*self.tcpmesh, "up", "--detach", "--workers", "1", "--address", self.address]
        # Everything the mesh starts inherits the load core; the gateway moves to the
        # proxy core below.
        run_cmd(pinned(load_core, argv), 180)
        ports = PORTS["tcpmesh"]
        self.apply_text(
            render(
                "mesh.yaml.tmpl",
                **self.backends.template_vars(),
                http_port=ports[0],
                pingpong_port=ports[1],
                iperf_port=ports[2],
            )
        )
        self.apply_text(self.routes_yaml(80, 20))
        for port in ports[:3]:
            wait_port(self.address, port, 60)
        # A listening gateway may not route yet: wait for an answer from a backend.
        deadline = time.monotonic() + 60
        answer = ""
        while answer not in ("one", "two"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway does not route to the backends: {answer!r}")
            time.sleep(0.2)
            try:
                answer = asyncio.run(_probe(self.address, ports[0]))
            except (OSError, TimeoutError) as exc:
                answer = str(exc)
        self.gateway_pid = self._gateway_pid()
        self.pid = int(json.loads((self.state / "apiserver.json").read_text())["pid"])
        self.pin_gateway()

    def _gateway_pid(self) -> int:
        for pid_file in (self.state / "pods" / "istio-system").glob("*.pid"):
            data = json.loads(pid_file.read_text())
            for entry in data.values():
                return int(entry["pid"])
        raise RuntimeError("no gateway pid file")

    def pin_gateway(self) -> None:
        if self.cores:
            pin_tree(self.gateway_pid, self.cores[0])

    def worker_pids(self) -> list[int]:
        return [p for p in descendants(self.gateway_pid) if p != self.gateway_pid]

    def restart_worker(self) -> None:
        """A fresh worker process, so memory figures do not reuse an earlier run's heap."""
        old = self.worker_pids()
        for pid in old:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while True:
            now = self.worker_pids()
            if now and not set(now) & set(old):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway worker did not come back")
            time.sleep(0.1)
        self.pin_gateway()
        for port in PORTS["tcpmesh"][:3]:
            wait_port(self.address, port, 30)
        time.sleep(0.5)

    def down(self) -> None:
        with contextlib.suppress(Exception):
            run_cmd([*self.tcpmesh, "down"], 60, check=False)
        # Pods whose pid files remain (a failed ``down``): stop them by pid.
        for pid_file in (self.state / "pods").glob("*/*.pid"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                for entry in json.loads(pid_file.read_text()).values():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(entry["pid"]), signal.SIGKILL)


def start_anchor(
    name: str, procs: Processes, work: Path, address: str, backends: Backends, envoy: str
) -> Proxy:
    http, pingpong, iperf, admin = PORTS[name]
    values = {
        **backends.template_vars(),
        "address": address,
        "http_port": http,
        "pingpong_port": pingpong,
        "iperf_port": iperf,
        "admin_port": admin,
    }
    d = work / name
    d.mkdir(exist_ok=True)
    if name == "envoy":
        cfg = d / "envoy.yaml"
        cfg.write_text(render("envoy.yaml.tmpl", **values))
        argv = [envoy, "-c", str(cfg), "--concurrency", "1", "--base-id", "4711"]
        argv += ["--disable-hot-restart", "--log-level", "error"]
    elif name == "haproxy":
        cfg = d / "haproxy.cfg"
        cfg.write_text(render("haproxy.cfg.tmpl", **values))
        argv = ["haproxy", "-db", "-f", str(cfg)]
    elif name == "nginx":
        cfg = d / "nginx.conf"
        cfg.write_text(render("nginx-stream.conf.tmpl", dir=str(d), **values))
        argv = ["nginx", "-e", "stderr", "-p", str(d), "-c", str(cfg)]
    else:
        raise ValueError(name)
    return Proxy(name, address, proc=procs.start(argv, log_path=d / "log.txt"))


# -- measurements ----------------------------------------------------------------------

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(text)
    return float(m[1]) * _UNIT[m[2]]


def wrk(url: str, core: int | None, duration: float, conns: int, close: bool) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = run_cmd(pinned(core, [*argv, url]), duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "requests": int(requests[1]) if requests else 0,
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "errors": errors + (int(non2xx[1]) if non2xx else 0),
    }


def sockperf(host: str, port: int, core: int | None, duration: float) -> dict[str, float]:
    argv = ["sockperf", "ping-pong", "--tcp", "-i", host, "-p", str(port), "-m", "64"]
    argv += ["-t", str(int(max(1, duration))), "--full-rtt"]
    out = run_cmd(pinned(core, argv), duration + 60)
    text = out.stdout + out.stderr
    pct = {float(a): float(b) for a, b in re.findall(r"percentile\s+([\d.]+)\s+=\s+([\d.]+)", text)}
    return {"p50_us": pct[50.0], "p99_us": pct[99.0]}


def iperf3(host: str, port: int, core: int | None, duration: float) -> dict[str, float]:
    argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(int(max(1, duration))), "-J", "-Z"]
    last: Exception | None = None
    for _ in range(3):
        # A readiness probe can hold the iperf3 server for an instant ("server is busy").
        try:
            out = run_cmd(pinned(core, argv), duration + 60).stdout
            data = json.loads(out)
            bps = float(data["end"]["sum_received"]["bits_per_second"])
            return {"gbit_s": bps / 1e9}
        except (RuntimeError, KeyError, ValueError) as exc:
            last = exc
            time.sleep(1.0)
    raise RuntimeError(f"iperf3 failed: {last}")


def established_to(ips: list[str], port: int) -> int:
    """Connections in ESTABLISHED state to ``ips`` on ``port`` (IPv4, any process)."""
    wanted = {f"{struct.unpack('<I', socket.inet_aton(ip))[0]:08X}:{port:04X}" for ip in ips}
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "01" and parts[2] in wanted:
                count += 1
    return count


def idle_memory(
    proxy: Proxy, backends: list[str], n: int, timeout: float = 60.0
) -> dict[str, float]:
    """RSS of the proxy's processes before and after ``n`` idle connections through it."""
    base_conns = established_to(backends, HTTP_BACKEND_PORT)
    time.sleep(0.5)
    before = rss_bytes(proxy.pids())
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    try:
        pending = 0
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((proxy.address, proxy.http_port))
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
            # Keep the listen backlog from overflowing: at most 512 connects in flight.
            while pending >= 512 and time.monotonic() < deadline:
                for key, _ in sel.select(1.0):
                    sel.unregister(key.fileobj)
                    pending -= 1
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                sel.unregister(key.fileobj)
                pending -= 1
        if pending:
            raise RuntimeError(f"{pending} of {n} idle connections did not connect")
        # The proxy has connected upstream for each one (backends hold them open).
        while established_to(backends, HTTP_BACKEND_PORT) - base_conns < n:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not open every upstream connection")
            time.sleep(0.2)
        time.sleep(1.0)
        after = rss_bytes(proxy.pids())
        alive = 0
        for s in socks:
            try:
                alive += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return {
            "connections": n,
            "open_at_end": alive,
            "rss_before_mib": before / 2**20,
            "rss_after_mib": after / 2**20,
            "kib_per_conn": (after - before) / n / 1024,
        }
    finally:
        sel.close()
        for s in socks:
            s.close()
        end = time.monotonic() + 30
        while established_to(backends, HTTP_BACKEND_PORT) > base_conns and time.monotonic() < end:
            time.sleep(0.2)


async def _split_async(host: str, port: int, n: int, concurrency: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

    async def one() -> None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, TimeoutError):
                counts["error"] = counts.get("error", 0) + 1
                return
            try:
                writer.write(request)
                data = await asyncio.wait_for(reader.read(), 10)
                body = data.rsplit(b"\r\n\r\n", 1)[-1].strip().decode() or "empty"
            except (OSError, TimeoutError):
                body = "error"
            finally:
                writer.close()
            counts[body] = counts.get(body, 0) + 1

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 300)
    return counts


def split_accuracy(proxy: Proxy, n: int) -> dict[str, Any]:
    from scipy.stats import chisquare

    counts = asyncio.run(_split_async(proxy.address, proxy.http_port, n, 32))
    one, two = counts.get("one", 0), counts.get("two", 0)
    total = one + two
    share = one / total if total else 0.0
    pvalue = float(chisquare([one, two], [0.8 * total, 0.2 * total]).pvalue) if total else 0.0
    return {
        "connections": n,
        "v1": one,
        "v2": two,
        "other": n - total,
        "v1_share": share,
        "deviation_pct": abs(share - 0.8) * 100,
        "chi2_p": pvalue,
    }


async def _probe(host: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        return data.rsplit(b"\r\n\r\n", 1)[-1].strip().decode()
    finally:
        writer.close()


def apply_latency(mesh: Mesh, samples: int) -> dict[str, Any]:
    """Seconds from ``tcpmesh apply`` returning until new connections get the new split.

    The weights flip between all-v1 and all-v2, so the first answer from the other
    version marks the change; the probe loop is bounded in count and time.
    """
    after_return: list[float] = []
    after_start: list[float] = []
    address, port = mesh.address, PORTS["tcpmesh"][0]
    target = "one"
    mesh.apply_text(mesh.routes_yaml(100, 0))
    time.sleep(1.0)
    for _ in range(samples):
        target = "two" if target == "one" else "one"
        weights = (100, 0) if target == "one" else (0, 100)
        started = time.monotonic()
        took = mesh.apply_text(mesh.routes_yaml(*weights))
        returned = started + took
        seen = None
        for _ in range(20000):
            if asyncio.run(_probe(address, port)) == target:
                seen = time.monotonic()
                break
            if time.monotonic() - returned > 10:
                break
        if seen is None:
            raise RuntimeError("the route change did not take effect in 10 s")
        after_return.append(max(0.0, seen - returned))
        after_start.append(seen - started)
        time.sleep(0.3)
    mesh.apply_text(mesh.routes_yaml(80, 20))
    time.sleep(1.0)
    return {
        "samples": samples,
        "after_return_ms": [round(x * 1000, 1) for x in after_return],
        "after_start_ms": [round(x * 1000, 1) for x in after_start],
        "median_after_return_ms": statistics.median(after_return) * 1000,
        "max_after_return_ms": max(after_return) * 1000,
        "median_after_start_ms": statistics.median(after_start) * 1000,
    }


# -- one run ---------------------------------------------------------------------------


@dataclass
class Settings:
    reps: int
    duration: float
    conns: int
    idle_conns: int
    split_conns: int
    apply_samples: int
    cores: tuple[int, int] | None
    address: str
    only: tuple[str, ...]
    envoy: str
    out: Path
    docs: Path | None


@dataclass
class Run:
    proxy: str
    rep: int
    before: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def disturbed(self) -> bool:
        return bool(self.before.get("disturbed") or self.after.get("disturbed"))


def measure(
    proxy: Proxy, s: Settings, rep: int, ours: Callable[[], list[int]], backends: Backends
) -> Run:
    load = s.cores[1] if s.cores else None
    run = Run(proxy.name, rep, machine_check(ours))
    url = f"http://{proxy.address}:{proxy.http_port}/"
    m = run.metrics
    try:
        m["split"] = split_accuracy(proxy, s.split_conns)
        m["idle_memory"] = idle_memory(proxy, [backends.v1, backends.v2], s.idle_conns)
        time.sleep(1.0)
        before = cpu_ticks(proxy.pids())
        m["new_conns"] = wrk(url, load, s.duration, s.conns, close=True)
        m["new_conns"]["cpu_us_per_conn"] = cpu_per_request(
            cpu_ticks(proxy.pids()) - before, m["new_conns"]["requests"]
        )
        time.sleep(1.0)
        m["keepalive"] = wrk(url, load, s.duration, s.conns, close=False)
        m["pingpong"] = sockperf(proxy.address, proxy.pingpong_port, load, s.duration)
        m["throughput"] = iperf3(proxy.address, proxy.iperf_port, load, s.duration)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        log(f"{proxy.name} rep {rep}: {run.error}")
    time.sleep(1.0)
    run.after = machine_check(ours, 1.0)
    return run


# -- report ----------------------------------------------------------------------------

# (key, label, path into a run's metrics, higher is better)
METRICS: list[tuple[str, str, tuple[str, str], bool]] = [
    ("new_conns_rps", "new connections/s", ("new_conns", "rps"), True),
    ("new_conns_p50", "  p50 (ms)", ("new_conns", "p50_ms"), False),
    ("new_conns_p99", "  p99 (ms)", ("new_conns", "p99_ms"), False),
    ("new_conns_cpu", "  proxy CPU per connection (µs)", ("new_conns", "cpu_us_per_conn"), False),
    ("keepalive_rps", "keep-alive requests/s", ("keepalive", "rps"), True),
    ("keepalive_p50", "  p50 (ms)", ("keepalive", "p50_ms"), False),
    ("keepalive_p99", "  p99 (ms)", ("keepalive", "p99_ms"), False),
    ("rtt_p50", "64 B ping-pong RTT p50 (µs)", ("pingpong", "p50_us"), False),
    ("rtt_p99", "64 B ping-pong RTT p99 (µs)", ("pingpong", "p99_us"), False),
    ("throughput", "single-stream throughput (Gbit/s)", ("throughput", "gbit_s"), True),
    ("idle_kib", "memory per idle connection (KiB)", ("idle_memory", "kib_per_conn"), False),
    ("split_dev", "split: abs(v1 share - 80%) (pp)", ("split", "deviation_pct"), False),
    ("split_p", "split: χ² p-value vs 80/20", ("split", "chi2_p"), True),
]


def summarize(runs: list[Run], s: Settings) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in s.only:
        mine = [r for r in runs if r.proxy == name and not r.error]
        entry: dict[str, Any] = {}
        for key, _, (group, metric), _ in METRICS:
            vals = [r.metrics[group][metric] for r in mine if group in r.metrics]
            if not vals:
                continue
            entry[key] = {
                "median": statistics.median(vals),
                "min": min(vals),
                "max": max(vals),
                "values": vals,
            }
        summary[name] = entry
    base = summary.get("envoy", {})
    for entry in summary.values():
        for key, val in entry.items():
            ref = base.get(key, {}).get("median")
            val["vs_envoy"] = val["median"] / ref if ref else None
    return summary


def _fmt(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.01:
        return f"{x:.2f}"
    return f"{x:.1e}" if x else "0"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    names = [n for n in PROXIES if n in result["summary"]]
    lines = [
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, _, _ in METRICS:
        cells = []
        for n in names:
            v = result["summary"][n].get(key)
            if v is None:
                cells.append("—")
                continue
            spread = f" ({_fmt(v['min'])}-{_fmt(v['max'])})" if len(v["values"]) > 1 else ""
            ratio = (
                f" **{v['vs_envoy']:.2f}x**"
                if v.get("vs_envoy") is not None and n != "envoy" and key != "split_p"
                else ""
            )
            cells.append(f"{_fmt(v['median'])}{spread}{ratio}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    al = result.get("apply_latency")
    if al:
        med = statistics.median(a["median_after_return_ms"] for a in al)
        worst = max(a["max_after_return_ms"] for a in al)
        start = statistics.median(a["median_after_start_ms"] for a in al)
        lines.append("")
        lines.append(
            f"tcpmesh `apply` → new split in effect on every worker: median {med:.1f} ms after "
            f"`apply` returns (worst {worst:.1f} ms over {sum(a['samples'] for a in al)} "
            f"changes); {start:.0f} ms from the start of the `apply` command (a Python CLI)."
        )
    lines.append("")
    lines.append(
        f"Median of {s['reps']} runs (spread min-max in brackets); **bold**: ratio to Envoy's "
        f"median in the same run. {s['duration']:g} s per load test, {s['conns']} wrk "
        f"connections, {s['idle_conns']} idle connections, {s['split_conns']} connections "
        "for the split."
    )
    flagged = [f"{r['proxy']} run {r['rep']}" for r in result["runs"] if r["disturbed"]]
    failed = [f"{r['proxy']} run {r['rep']}: {r['error']}" for r in result["runs"] if r["error"]]
    lines.append(
        "Runs disturbed by other load on the machine: " + (", ".join(flagged) or "none") + "."
    )
    if failed:
        lines.append("Failed runs (left out): " + "; ".join(failed) + ".")
    return "\n".join(lines) + "\n"


def machine_info(s: Settings, envoy: str) -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "?"

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": version([envoy, "--version"]).split("version:")[-1].strip(),
        "haproxy": version(["haproxy", "-v"]),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "iperf3": version(["iperf3", "--version"]),
        "sockperf": version(["sockperf", "--version"]),
    }


def write_docs(path: Path, result: dict[str, Any], table: str) -> None:
    info = result["machine"]
    text = Template((CONFIGS / "benchmarks.md.tmpl").read_text()).substitute(
        date=result["date"],
        table=table,
        cpu=info["cpu"] or "unknown",
        cores=info["cores"],
        kernel=info["kernel"],
        python=info["python"],
        envoy=info["envoy"],
        haproxy=info["haproxy"],
        nginx=info["nginx"],
        tools=f"{info['wrk']}; {info['iperf3']}; {info['sockperf']}",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- main ------------------------------------------------------------------------------


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, max(need, 65536)))
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < need:
        raise SystemExit(f"open-file limit {soft} < {need}: raise `ulimit -n` (hard limit {hard})")


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(prog="benchmarks/run.sh", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3, help="repetitions per proxy (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load test")
    p.add_argument("--conns", type=int, default=64, help="wrk connections")
    p.add_argument("--idle-conns", type=int, default=5000, help="idle connections held open")
    p.add_argument("--split-conns", type=int, default=10000, help="connections for the split")
    p.add_argument("--apply-samples", type=int, default=5, help="route changes timed per run")
    p.add_argument("--only", default=",".join(PROXIES), help="comma-separated proxies")
    # Not 127.0.0.1: tests of a mesh elsewhere on the machine bind 127.0.0.1:31400 with
    # SO_REUSEPORT, and the kernel would share the benchmark's connections with them.
    p.add_argument(
        "--address",
        default="127.0.0.77",
        help="the proxies' listen address (127.0.0.0/8); the backends take the next four",
    )
    p.add_argument("--envoy", default=shutil.which("envoy") or "envoy", help="envoy binary")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--quick", action="store_true", help="1 run, 2 s tests: for development")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    a = p.parse_args(argv)
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    try:
        first, last = ipaddress.IPv4Address(a.address), ipaddress.IPv4Address(a.address) + 4
    except ValueError:
        p.error("--address must be an IPv4 address in 127.0.0.0/8")
    if first not in loopback or last not in loopback:
        p.error("--address and the four addresses after it must be in 127.0.0.0/8")
    if a.quick:
        a.reps, a.duration, a.apply_samples = 1, 2.0, 3
    only = tuple(n for n in PROXIES if n in a.only.split(","))
    cores = None
    if not a.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        cores = (0, 1)
    return Settings(
        reps=a.reps,
        duration=a.duration,
        conns=a.conns,
        idle_conns=a.idle_conns,
        split_conns=a.split_conns,
        apply_samples=a.apply_samples,
        cores=cores,
        address=a.address,
        only=only,
        envoy=a.envoy,
        out=a.out,
        docs=None if a.no_docs or a.quick else REPO / "docs" / "benchmarks.md",
    )


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    raise_nofile(2 * s.idle_conns + 1000)
    if s.cores is None:
        log("warning: not pinned to cores (fewer than 2 cores, no taskset, or --no-pin)")
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="tcpmesh-bench."))
    backends = Backends.after(s.address)
    mesh = Mesh(work, s.address, s.cores, backends)
    runs: list[Run] = []
    applies: list[dict[str, Any]] = []
    started = time.time()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)

    def ours() -> list[int]:
        return descendants(os.getpid()) + (descendants(mesh.pid) if mesh.pid else [])

    try:
        check_free(s.address, [p for n in s.only for p in PORTS[n] if p])
        for host, port in backends.listens():
            check_free(host, [port])
        log(f"starting the backends: {backends}")
        backends.start(procs, work, s.cores[1] if s.cores else None)
        log(f"starting the mesh (state in {work})")
        mesh.up()
        for rep in range(1, s.reps + 1):
            # Rotate the order so no proxy always runs first (or right after another).
            order = list(s.only[rep - 1 :] + s.only[: rep - 1])
            for name in order:
                log(f"run {rep}/{s.reps}: {name}")
                if name == "tcpmesh":
                    mesh.restart_worker()
                    proxy = Proxy("tcpmesh", s.address, proc_root=mesh.gateway_pid)
                    runs.append(measure(proxy, s, rep, ours, backends))
                    log(f"run {rep}/{s.reps}: tcpmesh apply latency")
                    try:
                        applies.append(apply_latency(mesh, s.apply_samples))
                    except Exception as exc:
                        log(f"apply latency failed: {exc}")
                    continue
                proxy = start_anchor(name, procs, work, s.address, backends, s.envoy)
                assert proxy.proc is not None
                try:
                    proxy.proc_root = proxy.proc.pid
                    if s.cores:
                        pin_tree(proxy.proc.pid, s.cores[0])
                    for port in (proxy.http_port, proxy.pingpong_port, proxy.iperf_port):
                        wait_port(s.address, port, 30)
                    pin_tree(proxy.proc.pid, s.cores[0] if s.cores else None)
                    runs.append(measure(proxy, s, rep, ours, backends))
                finally:
                    procs.stop(proxy.proc)
                log(f"run {rep}/{s.reps}: {name} done{_brief(runs[-1])}")
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        try:
            mesh.down()
        finally:
            # The anchors and the backends, by pid.
            procs.stop_all()
            shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started),
        "settings": {
            "reps": s.reps,
            "duration": s.duration,
            "conns": s.conns,
            "idle_conns": s.idle_conns,
            "split_conns": s.split_conns,
            "pinned": {"proxy_core": s.cores[0], "load_core": s.cores[1]} if s.cores else None,
            "address": s.address,
        },
        "machine": machine_info(s, s.envoy),
        "summary": {},
        "apply_latency": applies,
        "runs": [
            {
                "proxy": r.proxy,
                "rep": r.rep,
                "disturbed": r.disturbed,
                "error": r.error,
                "machine_before": r.before,
                "machine_after": r.after,
                "metrics": r.metrics,
            }
            for r in runs
        ],
    }
    result["summary"] = summarize(runs, s)
    table = markdown(result)
    s.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    (s.out / f"{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (s.out / f"{stamp}.md").write_text(table)
    (s.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    (s.out / "latest.md").write_text(table)
    if s.docs is not None:
        write_docs(s.docs, result, table)
    print(table)
    log(f"results in {s.out}/{stamp}.json and .md ({result['seconds']} s)")
    return 0 if not any(r.error for r in runs) else 1


def _brief(run: Run) -> str:
    m = run.metrics
    try:
        return (
            f": {m['new_conns']['rps']:.0f} conn/s, {m['keepalive']['rps']:.0f} req/s, "
            f"rtt p99 {m['pingpong']['p99_us']:.0f} µs, {m['throughput']['gbit_s']:.1f} Gbit/s, "
            f"{m['idle_memory']['kib_per_conn']:.1f} KiB/conn, "
            f"split {m['split']['v1_share'] * 100:.2f}%" + (" [disturbed]" if run.disturbed else "")
        )
    except KeyError:
        return f" (incomplete: {run.error})"


if __name__ == "__main__":
    sys.exit(main())
