"""``tcpmesh top``: per route and destination, the configured split against the observed one.

Routes and numbers are read by ``telemetry.Sampler`` (the proxies' Snapshots and their
:15020 metrics). Observed share, opened/s and bytes/s are differences between two
readings ``--window`` seconds apart; active is the last reading. Metrics are per
destination, not per route: two routes that send to the same destination show the same
numbers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tcpmesh.telemetry import Reading, Sampler, view


def table(document: Mapping[str, Any], errors: Iterable[str] = ()) -> Table:
    """The live view of a ``view`` document."""
    grid = Table(
        title=f"tcpmesh top — window {document['windowSeconds']:.1f}s",
        caption="\n".join(errors) or None,
    )
    for name, justify in (
        ("ROUTE", "left"),
        ("DESTINATION", "left"),
        ("WEIGHT", "right"),
        ("SHARE", "right"),
        ("ACTIVE", "right"),
        ("OPENED/S", "right"),
        ("IN B/S", "right"),
        ("OUT B/S", "right"),
        ("FAILURES", "left"),
    ):
        grid.add_column(name, justify=justify)  # type: ignore[arg-type]
    for route in document["routes"]:
        for i, row in enumerate(route["destinations"]):
            share = row["share"]
            host = row["service"].split(".", 1)[0]
            grid.add_row(
                route["route"].removeprefix("VirtualService ") if i == 0 else "",
                f"{host} {row['subset'] or '(all)'}",
                f"{row['weightPercent']:.0f}%",
                "-" if share is None else f"{100 * share:.1f}%",
                str(row["active"]),
                f"{row['openedPerSecond']:.1f}",
                f"{row['receivedBytesPerSecond']:.0f}",
                f"{row['sentBytesPerSecond']:.0f}",
                " ".join(f"{flag}={n}" for flag, n in row["failures"].items()) or "-",
            )
    return grid


def once(
    sampler: Sampler, window: float, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """One document over ``window`` seconds: two readings that far apart."""
    _, first = sampler.read()
    sleep(window)
    routes, last = sampler.read()
    document = view(routes, first, last)
    document["errors"] = list(sampler.errors)
    return document


def live(sampler: Sampler, window: float, interval: float, console: Console) -> None:
    """Refresh every ``interval`` seconds until interrupted; shares over ``window``."""
    readings: deque[Reading] = deque()
    with Live(console=console, auto_refresh=False) as screen:
        while True:
            routes, reading = sampler.read()
            readings.append(reading)
            while len(readings) > 2 and reading.at - readings[1].at >= window:
                readings.popleft()
            screen.update(table(view(routes, readings[0], reading), sampler.errors), refresh=True)
            time.sleep(interval)
