"""Starting and stopping the local mesh: ``up``, ``down`` and the readiness wait."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcpmesh.apiserver.client import ApiClient, ApiError, Unreachable
from tcpmesh.apiserver.credentials import read_credentials
from tcpmesh.statedir import make_private, private_umask

if TYPE_CHECKING:
    from tcpmesh.mesh import Mesh, MeshConfig

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def default_state_dir() -> Path:
    explicit = os.environ.get("TCPMESH_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "tcpmesh"


def unusable_address(address: str) -> str | None:
    """Why the gateway could not listen on ``address``, or None when it can."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return "not an IP address"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            return f"cannot listen there ({exc.strerror or exc})"
    return None


def is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_ROUTES = Path("/proc/net/route")
_RTF_UP = 0x1


def default_gateway(routes: str) -> str | None:
    """The IPv4 gateway of the default route in ``/proc/net/route``'s text, if any."""
    for line in routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[1] != "00000000" or not int(fields[3], 16) & _RTF_UP:
            continue
        gateway = socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
        if gateway != "0.0.0.0":
            return gateway
    return None


def advertise_address(bind: str, given: str | None) -> str | None:
    """The address other hosts reach the API at, as kube-apiserver picks its
    ``--advertise-address``: the one given, else ``--bind-address``, else (bound to every
    address: 0.0.0.0 or ::) this host's address on its default route. None when there
    is none to take (no default route): the caller asks for the flag."""
    if given is not None:
        return given
    if not ipaddress.ip_address(bind).is_unspecified:
        return bind
    try:
        gateway = default_gateway(_ROUTES.read_text())
    except OSError:
        return None
    if gateway is None:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((gateway, 9))  # a UDP connect sends nothing: it picks the route
        except OSError:
            return None
        return str(probe.getsockname()[0])


def running_client(state_dir: Path) -> ApiClient | None:
    """A client for the mesh of this state directory, or None when none answers."""
    try:
        client = ApiClient.from_state_dir(state_dir)
        return client if client.healthz() else None
    except Unreachable:
        return None


def wait_until_ready(state_dir: Path, deadline: float, alive: Callable[[], bool]) -> ApiClient:
    """Poll until the API answers and the ingress gateway and node proxy pods are ready."""
    last_problem = "the API server did not start"
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the mesh process exited during start-up")
        client = running_client(state_dir)
        if client is not None:
            try:
                state = client.status()
                gateway = state.get("gatewayReady") or state.get("gatewayReplicas") == 0
                if gateway and state.get("nodeProxyReady"):
                    return client
                last_problem = (
                    "the node proxy is not ready" if gateway else "the ingress gateway is not ready"
                )
            except (ApiError, Unreachable) as exc:
                last_problem = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"the mesh did not become ready in {READY_TIMEOUT:.0f}s: {last_problem}")


def start_detached(config: MeshConfig) -> tuple[ApiClient, int]:
    """Start ``tcpmesh up`` in its own session and return once it is ready."""
    private_umask()  # the mesh's log, and everything the mesh creates, are private
    make_private(config.state_dir)
    log_path = config.state_dir / "mesh.log"
    argv = [
        sys.executable,
        "-m",
        "tcpmesh",
        "--state-dir",
        str(config.state_dir),
        "up",
        "--address",
        config.address,
        "--dataplane",
        config.dataplane,
    ]
    if config.workers:
        argv += ["--workers", str(config.workers)]
    argv += ["--relay", config.relay, "--engine", config.engine]
    argv += ["--max-pods", str(config.max_pods)]
    if config.store:
        argv += ["--store", config.store]
    if config.bind_address:
        argv += ["--bind-address", config.bind_address, "--secure-port", str(config.secure_port)]
        argv += ["--xds-port", str(config.xds_port)]
    if config.advertise_address:
        argv += ["--advertise-address", config.advertise_address]
    argv += ["--gateway-replicas", str(config.gateway_replicas)]
    argv += ["--cluster-signing-duration", f"{config.signing_seconds}s"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = wait_until_ready(
            config.state_dir,
            time.monotonic() + READY_TIMEOUT,
            lambda: process.poll() is None,
        )
    except (RuntimeError, TimeoutError) as exc:
        if process.poll() is None:
            process.terminate()
        raise RuntimeError(f"{exc}; see {log_path}:\n{tail(log_path)}") from None
    return client, process.pid


def run_foreground(config: MeshConfig, on_ready: Callable[[Mesh], list[str]] | None = None) -> None:
    """Run the mesh in this process until SIGTERM/SIGINT."""
    from tcpmesh.mesh import run_mesh

    async def main() -> None:
        ready = asyncio.Event()
        mesh_task = asyncio.create_task(run_mesh(config, ready, on_ready))
        await asyncio.wait(
            [mesh_task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        await mesh_task

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def stop_mesh(state_dir: Path) -> int | None:
    """SIGTERM the mesh process of this state directory and wait for it; its pid or None."""
    credentials = read_credentials(state_dir)
    if credentials is None or not _is_tcpmesh_process(credentials.pid):
        return None
    os.kill(credentials.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _is_alive(credentials.pid):
        time.sleep(0.05)
    if _is_alive(credentials.pid):
        raise TimeoutError(f"tcpmesh (pid {credentials.pid}) did not stop in {STOP_TIMEOUT:.0f}s")
    return credentials.pid


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A zombie has exited; only its parent's wait() is missing.
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def _is_tcpmesh_process(pid: int) -> bool:
    """Never signal a pid that was reused by an unrelated program."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"tcpmesh" in cmdline


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _relay_text(status: dict[str, Any]) -> str:
    """The built-in plane's relay and engine (``up --relay``, ``--engine``); Envoy has
    neither to show."""
    if status.get("dataplane") != "python":
        return ""
    relay, engine = status.get("relay"), status.get("engine")
    return (f", relay {relay}" if relay else "") + (f", engine {engine}" if engine else "")


def summarize(status: dict[str, Any]) -> list[str]:
    listeners = ", ".join(f"{x['address']}:{x['port']}" for x in status.get("listeners", []))
    if status.get("gatewayReplicas") == 0:
        readiness = "no local gateway (--gateway-replicas 0)"
    else:
        readiness = "ready" if status.get("gatewayReady") else "NOT ready"
    lines = [
        f"tcpmesh is running (pid {status['pid']}), API {status['api']}",
        f"state directory: {status['stateDir']}, store: {status.get('store', 'sqlite')}",
        f"data plane: {status['dataplane']} ({status['workers']} workers{_relay_text(status)}), "
        f"gateway address {status['address']}, {readiness}, "
        f"node proxy {'ready' if status.get('nodeProxyReady') else 'NOT ready'}",
        f"listeners: {listeners or 'none'}",
    ]
    if status.get("listen"):
        lines.insert(1, f"API for other hosts: {status['listen']} (gateway join, workload join)")
    return lines
