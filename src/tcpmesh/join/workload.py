"""``tcpmesh workload join``: a workload on another host, auto-registered from its group.

Like Istio's VM auto-registration: the WorkloadEntry is made from the WorkloadGroup
(labels, ports, the host's address) and health-checked by the group's ``probe``, run here
on the workload's host as the Istio agent runs it on a VM: ``tcpSocket`` (a connect),
``httpGet`` (a 2xx or 3xx answer) or ``exec`` (exit 0), every ``periodSeconds``, with
``successThreshold``/``failureThreshold`` consecutive results needed to change state
(Kubernetes' defaults: 10 s, 1 s timeout, 1, 3). The entry is Healthy only while the
probe passes; without a probe it is always ready.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aiohttp

from tcpmesh.join.agent import PeerAgent
from tcpmesh.join.run import keep_registered, stop_on_signals


@dataclass
class ProbeState:
    """Consecutive results and the verdict, as the kubelet's prober counts them."""

    probe: dict[str, Any] | None
    address: str
    healthy: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0

    def _int(self, key: str, default: int) -> int:
        value = (self.probe or {}).get(key)
        return int(value) if value else default

    def record(self, passed: bool) -> None:
        if passed:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self._int("successThreshold", 1):
                self.healthy = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self._int("failureThreshold", 3):
                self.healthy = False

    async def check(self, now: float) -> bool:
        """The verdict now, probing first when a period has passed."""
        if self.probe is None:
            return True
        if now >= self.next_at:
            delay = self._int("initialDelaySeconds", 0) if self.next_at == 0.0 else 0
            if delay:
                self.next_at = now + delay
                return self.healthy
            self.next_at = now + self._int("periodSeconds", 10)
            timeout = self._int("timeoutSeconds", 1)
            self.record(await run_probe(self.probe, self.address, timeout))
        return self.healthy


async def run_probe(probe: dict[str, Any], address: str, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(_probe_once(probe, address), timeout)
    except (TimeoutError, OSError, aiohttp.ClientError):
        return False


async def _probe_once(probe: dict[str, Any], address: str) -> bool:
    if "tcpSocket" in probe:
        tcp = probe["tcpSocket"]
        _, writer = await asyncio.open_connection(tcp.get("host") or address, int(tcp["port"]))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    if "httpGet" in probe:
        http = probe["httpGet"]
        scheme = (http.get("scheme") or "HTTP").lower()
        url = (
            f"{scheme}://{http.get('host') or address}:{int(http['port'])}{http.get('path') or '/'}"
        )
        headers = {h["name"]: h.get("value", "") for h in http.get("httpHeaders") or [] if h}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers, ssl=False) as resp,
        ):
            return 200 <= resp.status < 400
    command = (probe.get("exec") or {}).get("command") or []
    process = await asyncio.create_subprocess_exec(*command)
    return await process.wait() == 0


async def run_workload(agent: PeerAgent) -> int:
    stop = stop_on_signals()
    await agent.bootstrap()
    state = ProbeState(None, agent.address)
    # The first heartbeat (not ready) registers the entry and brings the group's probe.
    answer = await agent.heartbeat(False)
    state.probe = answer.get("probe")
    print(f"workload {agent.identity.node_id} joined at {agent.address}", flush=True)
    loop = asyncio.get_running_loop()

    def follow(reply: dict[str, Any]) -> None:
        state.probe = reply.get("probe")  # the group may have changed its probe

    await keep_registered(agent, lambda: state.check(loop.time()), stop, follow)
    return 0
