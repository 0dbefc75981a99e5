"""The ``Rollout`` kind (``rollouts.tcpmesh.io/v1alpha1``): progressive delivery for TCP.

The vocabulary is Argo Rollouts' canary strategy (``setWeight``, ``pause``, ``analysis``,
``failureLimit``, ``consecutiveSuccessLimit``) so users recognise it, but a Rollout owns
no pods: it drives the seed's shape, one VirtualService ``tcp`` route whose destinations
are a stable and a canary DestinationRule subset. Its gates are TCP ones, measured from
the proxies' Istio metrics (see ``tcpmesh.controllers``).

This module holds the model and the per-object checks; whether the named VirtualService
and route exist is only known against the store, so the controller reports that in the
Rollout's status instead of rejecting the apply.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from tcpmesh.api.durations import parse_duration_ns
from tcpmesh.api.models import Model, Resource
from tcpmesh.api.names import validate_port

GROUP = "rollouts.tcpmesh.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Defaults of an analysis (Argo's failureLimit default is 0: the first failure aborts).
DEFAULT_INTERVAL = "10s"
DEFAULT_MIN_SAMPLES = 20
DEFAULT_CONSECUTIVE_SUCCESS = 1


class RouteSelector(Model):
    """Which ``tcp`` route of the VirtualService: by index, or by its match port."""

    name: str = ""
    route: int | None = None
    port: int | None = None


class VersionRef(Model):
    """A destination of the route: its host and DestinationRule subset."""

    host: str = ""
    subset: str = ""


class ThresholdGate(Model):
    """A built-in gate: the measured value fails the step when above ``max``."""

    max: float


class PrometheusGate(Model):
    """A PromQL query evaluated on the user's Prometheus; one number is expected.

    ``max``/``min`` bound it; a query that returns no number is inconclusive.
    """

    address: str
    query: str
    max: float | None = None
    min: float | None = None


class Gates(Model):
    connect_failure_rate: ThresholdGate | None = None
    close_error_rate: ThresholdGate | None = None
    duration_p99_ratio: ThresholdGate | None = None
    prometheus: PrometheusGate | None = None


class Analysis(Model):
    interval: str | None = None
    min_samples: int | None = None
    failure_limit: int | None = None
    consecutive_success_limit: int | None = None
    gates: Gates = Field(default_factory=Gates)


class Pause(Model):
    duration: str | None = None


class Step(Model):
    set_weight: int | None = None
    pause: Pause | None = None
    analysis: Analysis | None = None


class RolloutSpec(Model):
    virtual_service: RouteSelector = Field(default_factory=RouteSelector)
    stable: VersionRef = Field(default_factory=VersionRef)
    canary: VersionRef = Field(default_factory=VersionRef)
    steps: list[Step] = Field(default_factory=list)
    analysis: Analysis | None = None
    paused: bool = False
    rebalance: bool = False


class Rollout(Resource):
    spec: RolloutSpec = Field(default_factory=RolloutSpec)


def rollout_problems(spec: RolloutSpec) -> Iterator[tuple[str, str]]:
    """(field path, message) for every problem of a Rollout spec, in field order."""
    yield from _route_selector("spec.virtualService", spec.virtual_service)
    for field, ref in (("stable", spec.stable), ("canary", spec.canary)):
        if not ref.host:
            yield f"spec.{field}.host", "Required value: host is required"
        if not ref.subset:
            yield f"spec.{field}.subset", "Required value: subset is required"
    if spec.stable.host and spec.stable == spec.canary:
        yield "spec.canary", "canary must differ from stable"
    if not spec.steps:
        yield "spec.steps", "Required value: at least one step is required"
    for index, step in enumerate(spec.steps):
        yield from _step(f"spec.steps[{index}]", step)
        if step.analysis is not None and not (
            _has_gates(step.analysis) or (spec.analysis and _has_gates(spec.analysis))
        ):
            yield f"spec.steps[{index}].analysis.gates", "Required value: no gate to evaluate"
    if spec.analysis is not None:
        yield from _analysis("spec.analysis", spec.analysis)
        if not _has_gates(spec.analysis):
            yield "spec.analysis.gates", "Required value: no gate to evaluate"


def _has_gates(analysis: Analysis) -> bool:
    return any(value is not None for value in analysis.gates.__dict__.values())


def _route_selector(path: str, selector: RouteSelector) -> Iterator[tuple[str, str]]:
    if not selector.name:
        yield f"{path}.name", "Required value: name is required"
    if selector.route is not None and selector.port is not None:
        yield path, "route and port are mutually exclusive"
    if selector.route is not None and selector.route < 0:
        yield f"{path}.route", f"route index {selector.route} < 0"
    if selector.port is not None:
        problem = validate_port(selector.port)
        if problem:
            yield f"{path}.port", problem


def _step(path: str, step: Step) -> Iterator[tuple[str, str]]:
    given = [
        name
        for name, value in (
            ("setWeight", step.set_weight),
            ("pause", step.pause),
            ("analysis", step.analysis),
        )
        if value is not None
    ]
    if len(given) != 1:
        what = ", ".join(given) if given else "none"
        yield path, f"exactly one of setWeight, pause, analysis is required (got {what})"
    if step.set_weight is not None and not 0 <= step.set_weight <= 100:
        yield f"{path}.setWeight", f"weight {step.set_weight} is not in range 0..100"
    if step.pause is not None and step.pause.duration is not None:
        yield from _duration(f"{path}.pause.duration", step.pause.duration)
    if step.analysis is not None:
        yield from _analysis(f"{path}.analysis", step.analysis)


def _analysis(path: str, analysis: Analysis) -> Iterator[tuple[str, str]]:
    if analysis.interval is not None:
        yield from _duration(f"{path}.interval", analysis.interval)
    for field, value in (
        ("minSamples", analysis.min_samples),
        ("failureLimit", analysis.failure_limit),
    ):
        if value is not None and value < 0:
            yield f"{path}.{field}", f"{field} {value} < 0"
    limit = analysis.consecutive_success_limit
    if limit is not None and limit < 1:
        yield f"{path}.consecutiveSuccessLimit", f"consecutiveSuccessLimit {limit} < 1"
    gates = analysis.gates
    for field, gate in (
        ("connectFailureRate", gates.connect_failure_rate),
        ("closeErrorRate", gates.close_error_rate),
    ):
        if gate is not None and not 0 <= gate.max <= 1:
            yield f"{path}.gates.{field}.max", f"rate {gate.max} is not in range 0..1"
    ratio = gates.duration_p99_ratio
    if ratio is not None and ratio.max <= 0:
        yield f"{path}.gates.durationP99Ratio.max", f"ratio {ratio.max} must be > 0"
    prom = gates.prometheus
    if prom is not None:
        if not prom.address.startswith(("http://", "https://")):
            yield f"{path}.gates.prometheus.address", "must be an http:// or https:// URL"
        if not prom.query.strip():
            yield f"{path}.gates.prometheus.query", "Required value: query is required"
        if prom.max is None and prom.min is None:
            yield f"{path}.gates.prometheus", "at least one of max, min is required"


def _duration(path: str, value: str) -> Iterator[tuple[str, str]]:
    try:
        nanos = parse_duration_ns(value)
    except ValueError as exc:
        yield path, str(exc)
        return
    if nanos < 1_000_000:
        yield path, "duration must be greater than 1ms"
