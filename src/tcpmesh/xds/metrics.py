"""The Envoy gateway pod's :15020: Envoy's stats as Istio's TCP metrics (telemetry.envoy).

Runs in the pod's parent process (``python -m tcpmesh.xds.gateway``), on the metrics
thread: it follows the pod's Snapshots (cluster name -> service, subset, endpoints and
their labels) and, at every scrape, reads Envoy's ``/stats/prometheus`` from the admin
address Envoy wrote to ``--admin-address-path``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp

from tcpmesh.control import Snapshot
from tcpmesh.dataplane import SnapshotFeed
from tcpmesh.telemetry import Counts, envoy_counts, parse_envoy_prometheus

log = logging.getLogger("tcpmesh.xds.metrics")

ADMIN_TIMEOUT = 5.0


class EnvoyMetrics:
    def __init__(self, admin_path: Path, node: str, state_dir: Path) -> None:
        self._admin_path = admin_path
        self._node = node
        self._state_dir = state_dir
        self._snapshot = Snapshot(version="")
        self._session: aiohttp.ClientSession | None = None

    async def follow(self) -> None:
        """Keep the pod's latest Snapshot (the background task of the metrics thread)."""
        async for snapshot in SnapshotFeed(None, None, self._node, state_dir=self._state_dir):
            self._snapshot = snapshot

    async def collect(self) -> Counts:
        try:
            address = self._admin_path.read_text().strip()
        except OSError as exc:
            raise OSError("Envoy has not written its admin address yet") from exc
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=ADMIN_TIMEOUT)
            self._session = aiohttp.ClientSession(timeout=timeout)
        url = f"http://{address}/stats/prometheus"
        async with self._session.get(url, params={"usedonly": ""}) as resp:
            resp.raise_for_status()
            text = await resp.text()
        stats, buckets = parse_envoy_prometheus(text)
        return envoy_counts(stats, buckets, self._snapshot)
