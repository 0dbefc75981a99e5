"""The numbers behind Istio's TCP metrics, as plain data that adds up across processes.

A data plane counts into a ``Counts`` (dictionaries of ints: a counter increment is one
dictionary lookup on the connection path, where a prometheus-client ``Counter`` would
take a lock and several lookups). Worker processes hand their ``Counts`` to the process
that serves :15020 as JSON; that process adds them up (``merge``) and renders the sum
once per scrape. The Envoy plane fills the same structure from Envoy's own stats.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tcpmesh.telemetry.labels import Destination

# Envoy's default histogram buckets (source/common/stats/histogram_impl.h), in seconds:
# the Envoy plane's upstream_cx_length_ms maps onto these exactly.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

OPENED, CLOSED, RECEIVED, SENT = range(4)


@dataclass
class Counts:
    """Everything a proxy reports; every field is a sum over connections (or, for
    ``active``, a current value) and adding two Counts adds the fields."""

    # (destination, response_flags) -> [opened, closed, received bytes, sent bytes]
    connections: dict[tuple[Destination, str], list[int]] = field(default_factory=dict)
    # destination -> open connections
    active: dict[Destination, int] = field(default_factory=dict)
    # destination -> [count per bucket (not cumulative) ... , +Inf bucket, sum of seconds]
    durations: dict[Destination, list[float]] = field(default_factory=dict)
    # (stat_prefix, event) -> count: Envoy tcp_proxy stats (TcpProxyStat)
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    # (cluster name, event) -> count: Envoy cluster stats (ClusterStat: connect failures)
    cluster_events: dict[tuple[str, str], int] = field(default_factory=dict)

    def row(self, dest: Destination, flags: str) -> list[int]:
        key = (dest, flags)
        row = self.connections.get(key)
        if row is None:
            row = self.connections[key] = [0, 0, 0, 0]
        return row

    def observe_duration(self, dest: Destination, seconds: float) -> None:
        hist = self.durations.get(dest)
        if hist is None:
            hist = self.durations[dest] = [0.0] * (len(DURATION_BUCKETS) + 2)
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                hist[i] += 1
                break
        else:
            hist[len(DURATION_BUCKETS)] += 1
        hist[-1] += seconds

    def event(self, stat_prefix: str, name: str) -> None:
        key = (stat_prefix, name)
        self.events[key] = self.events.get(key, 0) + 1

    def cluster_event(self, cluster_name: str, name: str) -> None:
        key = (cluster_name, name)
        self.cluster_events[key] = self.cluster_events.get(key, 0) + 1

    # -- adding up -----------------------------------------------------------------------

    def merge(self, other: Counts, *, gauges: bool = True) -> None:
        """Add ``other`` into this one (``gauges=False``: counters only, for the last
        numbers of a worker that is gone, whose connections are gone with it)."""
        for key, row in other.connections.items():
            mine = self.row(*key)
            for i, n in enumerate(row):
                mine[i] += n
        if gauges:
            for dest, n in other.active.items():
                self.active[dest] = self.active.get(dest, 0) + n
        for dest, hist in other.durations.items():
            have = self.durations.setdefault(dest, [0.0] * len(hist))
            for i, value in enumerate(hist):
                have[i] += value
        for mine_events, theirs in (
            (self.events, other.events),
            (self.cluster_events, other.cluster_events),
        ):
            for event, n in theirs.items():
                mine_events[event] = mine_events.get(event, 0) + n

    def copy(self) -> Counts:
        total = Counts()
        total.merge(self)
        return total

    # -- the wire between processes ------------------------------------------------------

    def to_json(self) -> bytes:
        doc = {
            "connections": [[*d, f, *row] for (d, f), row in self.connections.items()],
            "active": [[*d, n] for d, n in self.active.items()],
            "durations": [[*d, *h] for d, h in self.durations.items()],
            "events": [[*k, n] for k, n in self.events.items()],
            "clusterEvents": [[*k, n] for k, n in self.cluster_events.items()],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Counts:
        """The inverse of ``to_json``; ValueError for anything else."""
        try:
            doc: dict[str, Any] = json.loads(data)
            counts = cls()
            for row in doc.get("connections", []):
                counts.connections[(_dest(row[:9]), str(row[9]))] = [int(v) for v in row[10:14]]
            for row in doc.get("active", []):
                counts.active[_dest(row[:9])] = int(row[9])
            for row in doc.get("durations", []):
                counts.durations[_dest(row[:9])] = [float(v) for v in row[9:]]
            for row in doc.get("events", []):
                counts.events[(str(row[0]), str(row[1]))] = int(row[2])
            for row in doc.get("clusterEvents", []):
                counts.cluster_events[(str(row[0]), str(row[1]))] = int(row[2])
        except (TypeError, IndexError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a Counts document: {exc}") from exc
        return counts


def _dest(values: Iterable[Any]) -> Destination:
    row = tuple(str(v) for v in values)
    if len(row) != 9:
        raise ValueError("a destination has 9 labels")
    return row  # type: ignore[return-value]


def total(parts: Iterable[Counts]) -> Counts:
    result = Counts()
    for part in parts:
        result.merge(part)
    return result
