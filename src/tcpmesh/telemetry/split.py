"""What a proxy's split looks like from outside: its Snapshot's routes and its metrics.

The routes come from the proxies' own Snapshots (what control/ decided: each tcp route,
its weighted destinations, their clusters and endpoints), the numbers from the proxies'
``:15020/stats/prometheus`` (found by the pods' ``prometheus.io/*`` annotations, as a
Prometheus would find them). A destination is matched to the series whose
``destination_service`` is its cluster's service and whose ``destination_version`` is
one of its endpoints' versions: the labels the proxies put on them (``destination``),
so ``tcpmesh top`` and the console show what a dashboard would.

Metrics are per destination, not per route: two routes that send to the same
destination show the same numbers.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tcpmesh.apiserver.client import ApiClient
from tcpmesh.control import Cluster, Snapshot, WeightedCluster
from tcpmesh.telemetry.labels import UNKNOWN, destination

SCRAPE_TIMEOUT = 5.0
NO_FLAGS = "-"

Key = tuple[str, str]  # (destination_service, destination_version)


@dataclass
class Totals:
    """One destination's counters at one moment (summed over proxies)."""

    opened: float = 0.0
    received: float = 0.0
    sent: float = 0.0
    active: float = 0.0
    failures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Reading:
    at: float
    totals: dict[Key, Totals]


def totals_by_destination(
    samples: Iterable[tuple[str, Mapping[str, str], float]],
) -> dict[Key, Totals]:
    """Istio's TCP series, added up per (destination_service, destination_version)."""
    result: dict[Key, Totals] = {}
    for name, labels, value in samples:
        key = (
            labels.get("destination_service", UNKNOWN),
            labels.get("destination_version", UNKNOWN),
        )
        if name == "istio_tcp_connections_opened_total":
            result.setdefault(key, Totals()).opened += value
        elif name == "istio_tcp_received_bytes_total":
            result.setdefault(key, Totals()).received += value
        elif name == "istio_tcp_sent_bytes_total":
            result.setdefault(key, Totals()).sent += value
        elif name == "tcpmesh_tcp_connections_active":
            result.setdefault(key, Totals()).active += value
        elif name == "istio_tcp_connections_closed_total":
            flags = labels.get("response_flags", NO_FLAGS)
            if flags != NO_FLAGS:
                failures = result.setdefault(key, Totals()).failures
                failures[flags] = failures.get(flags, 0.0) + value
    return result


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


@dataclass(frozen=True)
class RouteDestination:
    cluster: str
    service: str
    subset: str
    weight: int
    versions: frozenset[str]


@dataclass(frozen=True)
class Route:
    name: str  # "VirtualService default/tcp-echo tcp[0]"
    listener: str
    destinations: tuple[RouteDestination, ...]


def _versions(weighted: WeightedCluster, cluster: Cluster | None) -> frozenset[str]:
    """The destination_version values the proxies give connections to this share."""
    if cluster is None or not cluster.endpoints:
        return frozenset({destination(weighted, cluster, None)[3]})
    return frozenset(destination(weighted, cluster, e)[3] for e in cluster.endpoints)


def routes_of(snapshot: Snapshot, virtual_service: str | None, namespace: str) -> list[Route]:
    """The tcp routes of ``snapshot``, those of ``namespace/virtual_service`` if given."""
    routes: list[Route] = []
    for listener in snapshot.listeners:
        for route in listener.routes:
            origin = route.origin
            if origin.kind != "VirtualService" or origin.namespace != namespace:
                continue
            if virtual_service is not None and origin.name != virtual_service:
                continue
            dests = []
            for weighted in route.destinations:
                cluster = snapshot.cluster(weighted.cluster_name)
                service = destination(weighted, cluster, None)
                dests.append(
                    RouteDestination(
                        weighted.cluster_name,
                        service[4],
                        service[3] if service[3] != UNKNOWN else "",
                        weighted.weight,
                        _versions(weighted, cluster),
                    )
                )
            routes.append(Route(route.source, listener.name, tuple(dests)))
    return routes


def destination_totals(reading: Reading, dest: RouteDestination) -> Totals:
    """A destination's counters in ``reading``, over the versions it stands for."""
    total = Totals()
    for version in dest.versions:
        part = reading.totals.get((dest.service, version))
        if part is None:
            continue
        total.opened += part.opened
        total.received += part.received
        total.sent += part.sent
        total.active += part.active
        for flag, n in part.failures.items():
            total.failures[flag] = total.failures.get(flag, 0.0) + n
    return total


def view(routes: Iterable[Route], first: Reading, last: Reading) -> dict[str, Any]:
    """The ``-o json`` document: one entry per route, one per destination (a contract)."""
    seconds = max(last.at - first.at, 1e-9)
    out_routes = []
    for route in routes:
        weights = sum(d.weight for d in route.destinations)
        rows: list[dict[str, Any]] = []
        counts: list[int] = []
        for dest in route.destinations:
            now, then = destination_totals(last, dest), destination_totals(first, dest)
            opened = now.opened - then.opened
            failures = {
                flag: int(n - then.failures.get(flag, 0.0))
                for flag, n in sorted(now.failures.items())
                if n - then.failures.get(flag, 0.0) > 0
            }
            counts.append(int(opened))
            rows.append(
                {
                    "cluster": dest.cluster,
                    "service": dest.service,
                    "subset": dest.subset,
                    "versions": sorted(dest.versions),
                    "weight": dest.weight,
                    "weightPercent": round(100.0 * dest.weight / weights, 2) if weights else 0.0,
                    "opened": int(opened),
                    "active": int(now.active),
                    "openedPerSecond": round(opened / seconds, 2),
                    "receivedBytesPerSecond": round((now.received - then.received) / seconds, 1),
                    "sentBytesPerSecond": round((now.sent - then.sent) / seconds, 1),
                    "failures": failures,
                }
            )
        total = sum(counts)
        for row, n in zip(rows, counts, strict=True):
            row["share"] = round(n / total, 4) if total else None
        out_routes.append(
            {"route": route.name, "listener": route.listener, "opened": total, "destinations": rows}
        )
    return {"windowSeconds": round(seconds, 3), "routes": out_routes}


# ---------------------------------------------------------------- I/O


def _proxies(client: ApiClient) -> list[tuple[str, str]]:
    """(node, metrics URL) of every pod annotated for scraping that has a Snapshot."""
    proxies = []
    for pod in client.list("Pod"):
        annotations = pod["metadata"].get("annotations") or {}
        ip = (pod.get("status") or {}).get("podIP")
        if annotations.get("prometheus.io/scrape") != "true" or not ip:
            continue
        port = annotations.get("prometheus.io/port", "15020")
        path = annotations.get("prometheus.io/path", "/metrics")
        node = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        proxies.append((node, f"http://{ip}:{port}{path}"))
    return proxies


def _scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=SCRAPE_TIMEOUT) as resp:
        return parse_metrics(resp.read().decode())


class Sampler:
    """Reads routes and metrics of every proxy; keeps what could not be read in ``errors``."""

    def __init__(self, client: ApiClient, virtual_service: str | None, namespace: str) -> None:
        self._client = client
        self._vs = virtual_service
        self._namespace = namespace
        self.errors: list[str] = []

    def read(self) -> tuple[list[Route], Reading]:
        self.errors = []
        routes: dict[tuple[str, str], Route] = {}
        samples: list[tuple[str, dict[str, str], float]] = []
        for node, url in _proxies(self._client):
            doc = self._client.snapshot(node)
            if doc is None:
                continue
            snapshot = Snapshot.from_json(json.dumps(doc))
            for route in routes_of(snapshot, self._vs, self._namespace):
                routes.setdefault((route.name, route.listener), route)
            try:
                samples.extend(_scrape(url))
            except (OSError, ValueError) as exc:
                self.errors.append(f"{node}: cannot read {url}: {exc}")
        return list(routes.values()), Reading(time.monotonic(), totals_by_destination(samples))
