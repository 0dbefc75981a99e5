"""The numbers behind the console's split editor and chart: per VirtualService tcp route
and destination, the configured weight and the connections opened so far (from the
proxies' metrics, read as ``tcpmesh top`` reads them). The page turns successive
readings into new connections per interval."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tcpmesh.apiserver.client import ApiClient
from tcpmesh.telemetry import Route, Sampler, destination_totals

Obj = dict[str, Any]
_SOURCE = re.compile(r"^VirtualService (?P<namespace>[^/]+)/(?P<name>\S+) tcp\[(?P<rule>\d+)\]$")


def traffic_document(routes: list[Route], reading: Any) -> list[Obj]:
    result = []
    for route in routes:
        match = _SOURCE.match(route.name)
        if match is None:
            continue
        weights = sum(d.weight for d in route.destinations)
        result.append(
            {
                "namespace": match["namespace"],
                "name": match["name"],
                "rule": int(match["rule"]),
                "listener": route.listener,
                "destinations": [
                    {
                        "service": d.service,
                        "subset": d.subset,
                        "weight": d.weight,
                        "weightPercent": round(100.0 * d.weight / weights, 2) if weights else 0,
                        "opened": int(destination_totals(reading, d).opened),
                        "active": int(destination_totals(reading, d).active),
                    }
                    for d in route.destinations
                ],
            }
        )
    return result


def traffic_source(state_dir: Path) -> Callable[[str], Awaitable[list[Obj]]]:
    """Reads in a thread: the sampler is the CLI's synchronous one."""

    def read(namespace: str) -> list[Obj]:
        sampler = Sampler(ApiClient.from_state_dir(state_dir), None, namespace)
        routes, reading = sampler.read()
        return traffic_document(routes, reading)

    async def source(namespace: str) -> list[Obj]:
        return await asyncio.to_thread(read, namespace)

    return source
