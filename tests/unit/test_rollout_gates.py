"""Built-in TCP gates over parsed samples of the proxies' Istio metrics."""

from __future__ import annotations

import math

import pytest

from tcpmesh.api.rollouts import Analysis
from tcpmesh.controllers import (
    Tally,
    Verdict,
    VersionSelector,
    evaluate,
    parse_samples,
    quantile,
    query_number,
    scrape_targets,
    tally,
)

SERVICE = "tcp-echo.default.svc.cluster.local"
V1 = VersionSelector(SERVICE, frozenset({"v1"}))
V2 = VersionSelector(SERVICE, frozenset({"v2"}))


def exposition(v2_uf: int = 0, v2_ok: int = 40, v2_uo: int = 0) -> str:
    """A :15020 scrape as the proxies write it (label subset; extra labels are ignored)."""
    lines = []
    base = f'reporter="source",destination_service="{SERVICE}",request_protocol="tcp"'
    for version, flags, n in (
        ("v1", "-", 160),
        ("v2", "-", v2_ok),
        ("v2", "UF", v2_uf),
        ("v2", "UO", v2_uo),
    ):
        labels = f'{base},destination_version="{version}",response_flags="{flags}"'
        opened = n if flags == "-" else 0
        if flags == "-":
            opened += v2_uf if version == "v2" else 0
        lines.append(f"istio_tcp_connections_opened_total{{{labels}}} {opened}")
        lines.append(f"istio_tcp_connections_closed_total{{{labels}}} {n}")
    for version, durations in (("v1", (150, 160)), ("v2", (v2_ok - 2, v2_ok))):
        labels = f'{base},destination_version="{version}"'
        for le, n in (("0.01", durations[0]), ("0.1", durations[1]), ("+Inf", durations[1])):
            lines.append(
                f'tcpmesh_tcp_connection_duration_seconds_bucket{{{labels},le="{le}"}} {n}'
            )
    head = [
        "# TYPE istio_tcp_connections_opened counter",
        "# TYPE istio_tcp_connections_closed counter",
        "# TYPE tcpmesh_tcp_connection_duration_seconds histogram",
    ]
    return "\n".join(head + lines) + "\n"


def analysis(**gates: object) -> Analysis:
    return Analysis.model_validate({"minSamples": 20, "gates": gates})


def test_tally_sums_by_version_and_classifies_flags() -> None:
    samples = parse_samples(exposition(v2_uf=10, v2_ok=30, v2_uo=2))
    v2 = tally(samples, V2)
    assert (v2.opened, v2.closed, v2.connect_failed, v2.error_closed) == (40, 42, 10, 2)
    v1 = tally(samples, V1)
    assert (v1.opened, v1.connect_failed) == (160, 0)
    assert v1.buckets == ((0.01, 150.0), (0.1, 160.0), (math.inf, 160.0))


def test_other_services_do_not_count() -> None:
    samples = parse_samples(exposition())
    other = VersionSelector("other.default.svc.cluster.local", frozenset({"v2"}))
    assert tally(samples, other) == Tally()


def test_connect_failure_gate_fails_with_the_measured_rate() -> None:
    v2 = tally(parse_samples(exposition(v2_uf=30, v2_ok=10)), V2)
    report = evaluate(analysis(connectFailureRate={"max": 0.05}), v2, Tally())
    assert report.verdict is Verdict.FAILED
    assert report.values()["connectFailureRate"] == pytest.approx(0.75)
    assert "connect-failure rate 0.750 (UF/UH/NC 30 of 40) > 0.05" in report.message


def test_min_samples_before_any_verdict() -> None:
    few = Tally(opened=5, closed=5, connect_failed=5)
    report = evaluate(analysis(connectFailureRate={"max": 0.05}), few, Tally())
    assert report.verdict is Verdict.PENDING
    assert "5 of 20 canary connections" in report.message


def test_healthy_canary_passes_every_gate() -> None:
    samples = parse_samples(exposition())
    gates = analysis(
        connectFailureRate={"max": 0.05},
        closeErrorRate={"max": 0.05},
        durationP99Ratio={"max": 2},
    )
    report = evaluate(gates, tally(samples, V2), tally(samples, V1))
    assert report.verdict is Verdict.SUCCESSFUL, report.message
    assert set(report.values()) == {
        "samples",
        "connectFailureRate",
        "closeErrorRate",
        "durationP99Ratio",
    }


def test_error_closes_fail_the_close_error_gate() -> None:
    v2 = tally(parse_samples(exposition(v2_ok=30, v2_uo=10)), V2)
    report = evaluate(analysis(closeErrorRate={"max": 0.1}), v2, Tally())
    assert report.verdict is Verdict.FAILED
    assert report.values()["closeErrorRate"] == pytest.approx(0.25)


def test_duration_ratio_is_inconclusive_without_stable_samples() -> None:
    v2 = tally(parse_samples(exposition()), V2)
    report = evaluate(analysis(durationP99Ratio={"max": 2}), v2, Tally())
    assert report.verdict is Verdict.INCONCLUSIVE
    assert "stable" in report.message


def test_duration_ratio_fails_a_slow_canary() -> None:
    stable = Tally(opened=100, buckets=((0.01, 100.0), (1.0, 100.0), (math.inf, 100.0)))
    slow = Tally(opened=100, buckets=((0.01, 10.0), (1.0, 100.0), (math.inf, 100.0)))
    report = evaluate(analysis(durationP99Ratio={"max": 3}), slow, stable)
    assert report.verdict is Verdict.FAILED
    assert report.values()["durationP99Ratio"] == pytest.approx(0.989 / 0.0099, rel=1e-6)


def test_window_is_the_increase_and_survives_a_counter_reset() -> None:
    base = Tally(opened=100, closed=90, connect_failed=3, buckets=((1.0, 90.0),))
    later = Tally(opened=150, closed=140, connect_failed=3, buckets=((1.0, 140.0),))
    assert later.since(base) == Tally(50, 50, 0, 0, ((1.0, 50.0),))
    restarted = Tally(opened=7, closed=6, connect_failed=1, buckets=((1.0, 6.0),))
    assert restarted.since(base) == restarted
    assert Tally.from_json(later.to_json()) == later


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.25, 0.005), (0.5, 0.01), (0.99, 0.0982), (1.0, 0.1)],
)
def test_quantile_interpolates_like_prometheus(q: float, expected: float) -> None:
    buckets = ((0.01, 100.0), (0.1, 200.0), (math.inf, 200.0))
    assert quantile(q, buckets) == pytest.approx(expected)


def test_quantile_in_the_inf_bucket_is_the_highest_bound() -> None:
    assert quantile(0.99, ((1.0, 1.0), (math.inf, 100.0))) == 1.0
    assert quantile(0.5, ()) is None


def test_prometheus_gate() -> None:
    gates = analysis(prometheus={"address": "http://127.0.0.1:9090", "query": "x", "max": 1})
    enough = Tally(opened=100)
    assert evaluate(gates, enough, Tally(), 0.5).verdict is Verdict.SUCCESSFUL
    failed = evaluate(gates, enough, Tally(), 2.0)
    assert failed.verdict is Verdict.FAILED and "prometheus query = 2 > 1" in failed.message
    empty = evaluate(gates, enough, Tally(), "the query returned 0 series, not one number")
    assert empty.verdict is Verdict.INCONCLUSIVE


def test_query_number_reads_scalar_and_single_vector() -> None:
    vector = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]},
    }
    assert query_number(vector) == 0.25
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
    assert query_number(scalar) == 3.0
    two = {"status": "success", "data": {"resultType": "vector", "result": [{}, {}]}}
    assert query_number(two) == "the query returned 2 series, not one number"
    assert "bad_data" in str(query_number({"status": "error", "error": "bad_data"}))


def test_scrape_targets_are_annotated_running_pods() -> None:
    def pod(scrape: str, phase: str = "Running", ip: str = "127.0.0.5") -> dict[str, object]:
        return {
            "metadata": {"annotations": {"prometheus.io/scrape": scrape}},
            "status": {"phase": phase, "podIP": ip},
        }

    pods = [pod("true"), pod("false"), pod("true", phase="Pending"), pod("true", ip="")]
    assert scrape_targets(pods) == ["http://127.0.0.5:15020/stats/prometheus"]
