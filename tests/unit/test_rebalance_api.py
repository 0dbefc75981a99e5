"""Rebalance requests as state: annotations (validated), the route field, Envoy's gap."""

from __future__ import annotations

import pytest

from tcpmesh.analysis import analyze
from tcpmesh.api import parse_share, validate_object, with_request
from tcpmesh.control import Rebalance, Snapshot
from tests.unit.test_analysis import gateway_pod, mesh
from tests.unit.test_build_snapshot import build, only_route, route, seed, virtual_service

REQUEST = "traffic.tcpmesh.io/rebalance-request"
AUTO = "traffic.tcpmesh.io/rebalance"


def _split(annotations: dict[str, str]) -> dict:  # type: ignore[type-arg]
    vs = virtual_service([route("v1", 80), route("v2", 20)])
    vs["metadata"]["annotations"] = annotations
    return vs


def test_without_annotations_a_route_has_no_rebalance() -> None:
    assert only_route(build(seed(_split({})))).rebalance is None


def test_a_request_becomes_the_route_field_with_its_settings() -> None:
    vs = with_request(_split({}), "r-1", over="10s", max_share="25%")
    rebalance = only_route(build(seed(vs))).rebalance
    assert rebalance == Rebalance("r-1", 10.0, 0.25)
    snapshot = build(seed(vs))
    assert only_route(Snapshot.from_dict(snapshot.to_dict())).rebalance == rebalance
    default = only_route(build(seed(with_request(_split({}), "r-2")))).rebalance
    assert default == Rebalance("r-2", 30.0, 1.0)


def test_on_weight_change_makes_each_weight_change_a_new_request() -> None:
    def request(v1: int, v2: int, extra: dict[str, str] | None = None) -> str:
        vs = virtual_service([route("v1", v1), route("v2", v2)])
        vs["metadata"]["annotations"] = {AUTO: "on-weight-change", **(extra or {})}
        rebalance = only_route(build(seed(vs))).rebalance
        assert rebalance is not None
        return rebalance.request

    assert request(80, 20) == request(80, 20)
    assert request(80, 20) != request(70, 30)
    assert request(80, 20, {REQUEST: "r-1"}).startswith("r-1+w")
    assert request(80, 20, {REQUEST: "r-1"}) != request(80, 20, {REQUEST: "r-2"})


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        (
            AUTO,
            "always",
            'Unsupported value: "always": supported values: "off", "on-weight-change"',
        ),
        (REQUEST, "-bad-", 'Invalid value: "-bad-": a request id is 1-63 letters'),
        ("traffic.tcpmesh.io/rebalance-over", "2h", "must be between 0s and 1h"),
        ("traffic.tcpmesh.io/rebalance-over", "soon", 'invalid duration "soon"'),
        ("traffic.tcpmesh.io/rebalance-max-share", "0%", "expected a percentage in (0, 100]"),
        ("traffic.tcpmesh.io/rebalance-max-share", "150", "expected a percentage in (0, 100]"),
    ],
)
def test_bad_rebalance_annotations_are_apply_errors_naming_the_field(
    annotation: str, value: str, message: str
) -> None:
    errors, _ = validate_object(_split({annotation: value}))
    assert len(errors) == 1
    assert errors[0].startswith(
        f'VirtualService "tcp-echo" is invalid: metadata.annotations[{annotation}]: '
    ), errors
    assert message in errors[0]


def test_good_rebalance_annotations_validate() -> None:
    vs = _split(
        {
            AUTO: "on-weight-change",
            REQUEST: "r-20261202t010203-abc123",
            "traffic.tcpmesh.io/rebalance-over": "1m30s",
            "traffic.tcpmesh.io/rebalance-max-share": "12.5%",
        }
    )
    assert validate_object(vs) == ([], [])
    assert parse_share("12.5%") == 0.125 and parse_share("100") == 1.0


def test_rebalancing_on_an_envoy_gateway_is_reported_tcm0001() -> None:
    pod = gateway_pod()
    pod["spec"]["containers"][0]["image"] = "docker.io/envoyproxy/envoy:v1.40.0"
    vs = _split({REQUEST: "r-1", "tcpmesh.io/weighted-pick": "random"})
    messages = [m for m in analyze([*seed(vs), pod]) if m.code == "TCM0001"]
    assert len(messages) == 1, messages
    assert "rebalancing is not available on Envoy" in messages[0].text
    assert not [m for m in analyze(mesh(vs)) if m.code == "TCM0001"]
