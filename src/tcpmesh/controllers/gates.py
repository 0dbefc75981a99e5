"""Built-in TCP gates, as pure functions over samples of the proxies' Istio metrics.

The proxies already count what a TCP canary needs (``istio_tcp_connections_opened``,
``istio_tcp_connections_closed`` by ``response_flags``, and the connection-duration
histogram, on each proxy pod's ``:15020/stats/prometheus``); a gate never keeps counters
of its own. A ``Tally`` sums the series of one version over every scraped proxy; a step's
window is the difference between the tally now and the one taken when the step began
(``Tally.since``, which treats a counter that went down as restarted, as Prometheus'
``increase`` does). ``evaluate`` turns the canary's and the stable's windows into one
verdict with the measured values, so the status can say *why* a canary was rolled back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tcpmesh.api.rollouts import DEFAULT_MIN_SAMPLES, Analysis
from tcpmesh.control import ResponseFlag
from tcpmesh.controllers.steps import Verdict
from tcpmesh.telemetry import (
    NO_FLAGS,
    TCP_CONNECTION_DURATION,
    TCP_CONNECTIONS_CLOSED,
    TCP_CONNECTIONS_OPENED,
)

# The sample names of the families the proxies declare (counters gain ``_total``).
OPENED = f"{TCP_CONNECTIONS_OPENED.name}_total"
CLOSED = f"{TCP_CONNECTIONS_CLOSED.name}_total"
DURATION_BUCKET = f"{TCP_CONNECTION_DURATION.name}_bucket"
# A connection that never reached a healthy upstream: connect failure, no healthy
# endpoint, no cluster. Every other flag on a close is an error close (UO, DT, ...).
CONNECT_FAILURE_FLAGS = frozenset(
    {
        ResponseFlag.UPSTREAM_CONNECT_FAILURE,
        ResponseFlag.NO_HEALTHY_UPSTREAM,
        ResponseFlag.NO_CLUSTER,
    }
)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (ValueError if it is not one)."""
    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


@dataclass(frozen=True)
class Tally:
    """One version's totals over all proxies; ``buckets`` are cumulative (le, count)."""

    opened: float = 0.0
    closed: float = 0.0
    connect_failed: float = 0.0
    error_closed: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def durations(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def since(self, base: Tally) -> Tally:
        """The increase from ``base``; a total that went down restarted from zero."""

        def inc(now: float, then: float) -> float:
            return now - then if now >= then else now

        before = dict(base.buckets)
        return Tally(
            inc(self.opened, base.opened),
            inc(self.closed, base.closed),
            inc(self.connect_failed, base.connect_failed),
            inc(self.error_closed, base.error_closed),
            tuple((le, inc(n, before.get(le, 0.0))) for le, n in self.buckets),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "closed": self.closed,
            "connectFailed": self.connect_failed,
            "errorClosed": self.error_closed,
            "buckets": [["+Inf" if math.isinf(le) else le, n] for le, n in self.buckets],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Tally:
        buckets = tuple(
            (float("inf") if le == "+Inf" else float(le), float(n))
            for le, n in doc.get("buckets") or []
        )
        return cls(
            float(doc.get("opened", 0)),
            float(doc.get("closed", 0)),
            float(doc.get("connectFailed", 0)),
            float(doc.get("errorClosed", 0)),
            buckets,
        )


@dataclass(frozen=True)
class VersionSelector:
    """The series of one version: its service's FQDN and the ``destination_version``
    values it may carry (the endpoints' version label, or the subset name when a
    connection had no endpoint)."""

    service: str
    versions: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (
            labels.get("destination_service") == self.service
            and labels.get("destination_version") in self.versions
        )


def _flags(labels: Mapping[str, str]) -> set[str]:
    return {flag for flag in labels.get("response_flags", NO_FLAGS).split(",") if flag}


def tally(samples: Iterable[Sample], version: VersionSelector) -> Tally:
    opened = closed = connect_failed = error_closed = 0.0
    buckets: dict[float, float] = {}
    for sample in samples:
        if not version.matches(sample.labels):
            continue
        if sample.name == OPENED:
            opened += sample.value
        elif sample.name == CLOSED:
            closed += sample.value
            flags = _flags(sample.labels) - {NO_FLAGS}
            if flags & CONNECT_FAILURE_FLAGS:
                connect_failed += sample.value
            elif flags:
                error_closed += sample.value
        elif sample.name == DURATION_BUCKET:
            le = float(sample.labels.get("le", "+Inf"))
            buckets[le] = buckets.get(le, 0.0) + sample.value
    return Tally(opened, closed, connect_failed, error_closed, tuple(sorted(buckets.items())))


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative buckets (None when empty)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound  # the highest finite bound, as Prometheus answers
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


@dataclass(frozen=True)
class GateResult:
    name: str
    verdict: Verdict
    value: float | None
    message: str


@dataclass(frozen=True)
class Report:
    verdict: Verdict
    results: tuple[GateResult, ...]

    @property
    def message(self) -> str:
        worst = [r.message for r in self.results if r.verdict is self.verdict]
        return "; ".join(worst or [r.message for r in self.results])

    def values(self) -> dict[str, float | None]:
        return {r.name: r.value for r in self.results}


_ORDER = (Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.PENDING, Verdict.SUCCESSFUL)


def evaluate(
    analysis: Analysis,
    canary: Tally,
    stable: Tally,
    prometheus: float | str | None = None,
) -> Report:
    """Every configured gate over one window; the report's verdict is the worst one.

    ``prometheus`` is the number the query returned, or a sentence saying why there is
    none (the query's I/O happens in the controller).
    """
    minimum = analysis.min_samples if analysis.min_samples is not None else DEFAULT_MIN_SAMPLES
    gates = analysis.gates
    results = [_sample_size(canary, minimum)]
    enough = results[0].verdict is Verdict.SUCCESSFUL
    if gates.connect_failure_rate is not None:
        results.append(_connect_failures(canary, gates.connect_failure_rate.max, enough))
    if gates.close_error_rate is not None:
        results.append(_close_errors(canary, gates.close_error_rate.max, minimum))
    if gates.duration_p99_ratio is not None:
        results.append(_duration_ratio(canary, stable, gates.duration_p99_ratio.max, minimum))
    if gates.prometheus is not None:
        results.append(_prometheus(gates.prometheus.min, gates.prometheus.max, prometheus))
    verdict = next(v for v in _ORDER if any(r.verdict is v for r in results))
    return Report(verdict, tuple(results))


def _sample_size(canary: Tally, minimum: int) -> GateResult:
    n = canary.opened
    if n < minimum:
        return GateResult("samples", Verdict.PENDING, n, f"{n:.0f} of {minimum} canary connections")
    return GateResult("samples", Verdict.SUCCESSFUL, n, f"{n:.0f} canary connections")


def _connect_failures(canary: Tally, limit: float, enough: bool) -> GateResult:
    if canary.opened <= 0:
        return GateResult("connectFailureRate", Verdict.PENDING, None, "no canary connections")
    rate = canary.connect_failed / canary.opened
    text = (
        f"connect-failure rate {rate:.3f} (UF/UH/NC {canary.connect_failed:.0f} of "
        f"{canary.opened:.0f})"
    )
    if rate > limit and enough:
        return GateResult("connectFailureRate", Verdict.FAILED, rate, f"{text} > {limit:g}")
    verdict = Verdict.SUCCESSFUL if enough else Verdict.PENDING
    return GateResult("connectFailureRate", verdict, rate, f"{text} <= {limit:g}")


def _close_errors(canary: Tally, limit: float, minimum: int) -> GateResult:
    if canary.closed < max(minimum, 1):
        return GateResult(
            "closeErrorRate",
            Verdict.PENDING,
            None,
            f"{canary.closed:.0f} of {minimum} closed canary connections",
        )
    rate = canary.error_closed / canary.closed
    counts = f"{canary.error_closed:.0f} of {canary.closed:.0f}"
    text = f"reset-or-error close rate {rate:.3f} ({counts})"
    if rate > limit:
        return GateResult("closeErrorRate", Verdict.FAILED, rate, f"{text} > {limit:g}")
    return GateResult("closeErrorRate", Verdict.SUCCESSFUL, rate, f"{text} <= {limit:g}")


def _duration_ratio(canary: Tally, stable: Tally, limit: float, minimum: int) -> GateResult:
    name = "durationP99Ratio"
    if canary.durations < max(minimum, 1):
        text = f"{canary.durations:.0f} of {minimum} canary connection durations"
        return GateResult(name, Verdict.PENDING, None, text)
    if stable.durations < max(minimum, 1):
        text = f"only {stable.durations:.0f} stable connection durations to compare with"
        return GateResult(name, Verdict.INCONCLUSIVE, None, text)
    mine, theirs = quantile(0.99, canary.buckets), quantile(0.99, stable.buckets)
    if mine is None or theirs is None or theirs <= 0:
        return GateResult(name, Verdict.INCONCLUSIVE, None, "stable p99 duration is 0")
    ratio = mine / theirs
    text = f"p99 connection duration ratio {ratio:.2f} ({mine:.4g}s / {theirs:.4g}s)"
    if ratio > limit:
        return GateResult(name, Verdict.FAILED, ratio, f"{text} > {limit:g}")
    return GateResult(name, Verdict.SUCCESSFUL, ratio, f"{text} <= {limit:g}")


def _prometheus(low: float | None, high: float | None, value: float | str | None) -> GateResult:
    if value is None or isinstance(value, str) or math.isnan(value):
        why = value if isinstance(value, str) else "the query returned no number"
        return GateResult("prometheus", Verdict.INCONCLUSIVE, None, f"prometheus: {why}")
    text = f"prometheus query = {value:g}"
    if high is not None and value > high:
        return GateResult("prometheus", Verdict.FAILED, value, f"{text} > {high:g}")
    if low is not None and value < low:
        return GateResult("prometheus", Verdict.FAILED, value, f"{text} < {low:g}")
    return GateResult("prometheus", Verdict.SUCCESSFUL, value, f"{text} within bounds")
