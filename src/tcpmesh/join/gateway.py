"""``tcpmesh gateway join``: a gateway host of a gateway Deployment, on another machine.

It joins (agent.PeerAgent), registers its Pod, and runs a data plane with its client
certificate: the built-in one (the supervisor and its workers, as the gateway pod runs
at home) following its own node's Snapshot stream from any of the servers, or Envoy
following its node over ADS (``join.envoy``). Readiness is the data plane's own (its
status port answers once it is configured); the Pod's Ready condition follows it, and
so do the Service's endpoints and load-balancer addresses. When the control plane is
gone the data plane keeps serving its last configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from tcpmesh.join.agent import PeerAgent
from tcpmesh.join.run import keep_registered, stop_on_signals

if TYPE_CHECKING:
    from tcpmesh.join.envoy import EnvoyPlane

log = logging.getLogger("tcpmesh.join")

STATUS_PORT = 15021
# A joined gateway retries the servers this often at most (and connects no longer):
# it is back within about this long of its network returning.
FEED_RETRY_SECONDS = 0.4
STOP_TIMEOUT = 15.0
XDS_PORT = 15012


@dataclass(frozen=True)
class GatewayOptions:
    workers: int
    relay: str = "auto"  # `gateway join --relay`: dataplane.splice.RelayMode
    engine: str = "auto"  # `gateway join --engine`: dataplane.native.EngineMode
    status_port: int = STATUS_PORT
    dataplane: str = "python"
    # Envoy's ADS port on every --server host (the mesh's `up --xds-port`).
    xds_port: int = XDS_PORT


def data_plane_env(agent: PeerAgent, options: GatewayOptions) -> dict[str, str]:
    identity = agent.identity
    return {
        **os.environ,
        "POD_NAMESPACE": identity.namespace,
        "POD_NAME": identity.object_name,
        "POD_IP": agent.address,
        "TCPMESH_STATE_DIR": str(agent.state_dir),
        "TCPMESH_WORKERS": str(options.workers),
        "TCPMESH_RELAY": options.relay,
        "TCPMESH_ENGINE": options.engine,
        "TCPMESH_STATUS_PORT": str(options.status_port),
        "TCPMESH_FEED_RETRY_SECONDS": str(FEED_RETRY_SECONDS),
        "ISTIO_META_WORKLOAD_NAME": identity.name,
    }


def _start(
    agent: PeerAgent, options: GatewayOptions
) -> tuple[subprocess.Popen[bytes], EnvoyPlane | None]:
    """The data plane's process, and the Envoy plane whose certificate to keep current."""
    log_path = agent.state_dir / "dataplane.log"
    with open(log_path, "ab") as out:
        if options.dataplane == "envoy":
            from tcpmesh.join.envoy import EnvoyPlane

            plane = EnvoyPlane(agent, options.xds_port, options.status_port, options.workers)
            return plane.start(out.fileno()), plane
        proxy = subprocess.Popen(
            [sys.executable, "-m", "tcpmesh.dataplane"],
            env=data_plane_env(agent, options),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proxy, None


async def run_gateway(agent: PeerAgent, options: GatewayOptions) -> int:
    stop = stop_on_signals()
    await agent.bootstrap()
    proxy, envoy = _start(agent, options)
    url = f"http://{agent.address}:{options.status_port}/healthz/ready"
    print(
        f"gateway {agent.identity.node_id} joined; {options.dataplane} data plane pid {proxy.pid}",
        flush=True,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:

            async def ready() -> bool:
                if proxy.poll() is not None:
                    stop.set()
                    return False
                if envoy is not None:
                    envoy.publish()  # a renewed certificate, for Envoy's next connection
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url) as resp:
                        return resp.status == 200
                return False

            await keep_registered(agent, ready, stop)
    finally:
        await _stop(proxy)
    return proxy.returncode or 0


async def _stop(proxy: subprocess.Popen[bytes]) -> None:
    if proxy.poll() is None:
        proxy.terminate()
    try:
        await asyncio.to_thread(proxy.wait, STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proxy.kill()
        await asyncio.to_thread(proxy.wait)
