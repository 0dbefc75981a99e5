"""The Rollout kind: registry, validation messages (file, resource, field), traffic edits."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tcpmesh.api import InvalidInput, kinds, load_documents
from tcpmesh.api.rollouts import RolloutSpec
from tcpmesh.controllers import RouteProblem, current_weight, version_selector, weighted

GOOD = """
apiVersion: rollouts.tcpmesh.io/v1alpha1
kind: Rollout
metadata: {name: tcp-echo}
spec:
  virtualService: {name: tcp-echo, port: 31400}
  stable: {host: tcp-echo, subset: v1}
  canary: {host: tcp-echo, subset: v2}
  analysis:
    interval: 2s
    minSamples: 10
    gates:
      connectFailureRate: {max: 0.05}
  steps:
  - setWeight: 20
  - pause: {duration: 10s}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        load_documents(text, "ro.yaml")
    return list(caught.value.messages)


def edited(change: dict[str, Any]) -> str:
    doc = yaml.safe_load(GOOD)
    doc["spec"].update(change)
    return yaml.safe_dump(doc)


def test_kind_is_registered_with_group_and_short_name() -> None:
    info = kinds.resolve("ro")
    assert (info.kind, info.group, info.versions, info.plural) == (
        "Rollout",
        "rollouts.tcpmesh.io",
        ("v1alpha1",),
        "rollouts",
    )
    assert kinds.resolve("rollouts.rollouts.tcpmesh.io") is info
    assert info.api_path("default", "x") == (
        "/apis/rollouts.tcpmesh.io/v1alpha1/namespaces/default/rollouts/x"
    )


def test_good_rollout_loads() -> None:
    (obj,) = load_documents(GOOD, "ro.yaml")
    assert obj["spec"]["steps"][1] == {"pause": {"duration": "10s"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"steps": [{"setWeight": 101}]},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.steps[0].setWeight: '
            "weight 101 is not in range 0..100",
        ),
        (
            {"steps": [{"setWeight": -1}]},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.steps[0].setWeight: '
            "weight -1 is not in range 0..100",
        ),
        (
            {"steps": [{"setWeight": 10, "pause": {}}]},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.steps[0]: exactly one of '
            "setWeight, pause, analysis is required (got setWeight, pause)",
        ),
        (
            {"steps": []},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.steps: Required value: '
            "at least one step is required",
        ),
        (
            {"steps": [{"pause": {"duration": "soon"}}]},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.steps[0].pause.duration: '
            'invalid duration "soon": expected a number with a unit, such as "10s", '
            '"0.5s", "500ms", "1m30s" or "1h"',
        ),
        (
            {"virtualService": {"name": "tcp-echo", "route": 0, "port": 31400}},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.virtualService: '
            "route and port are mutually exclusive",
        ),
        (
            {"virtualService": {"name": "tcp-echo", "route": -2}},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.virtualService.route: route index -2 < 0',
        ),
        (
            {"canary": {"host": "tcp-echo", "subset": "v1"}},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.canary: canary must differ from stable',
        ),
        (
            {"analysis": {"gates": {"connectFailureRate": {"max": 5}}}},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.analysis.gates.connectFailureRate.max: '
            "rate 5.0 is not in range 0..1",
        ),
        (
            {"analysis": None, "steps": [{"analysis": {"interval": "1s"}}]},
            'ro.yaml: Rollout "tcp-echo" is invalid: spec.steps[0].analysis.gates: '
            "Required value: no gate to evaluate",
        ),
    ],
)
def test_validation_names_file_resource_and_field(change: dict[str, Any], message: str) -> None:
    assert message in errors_of(edited(change))


def test_unknown_field_is_a_shape_error() -> None:
    errors = errors_of(edited({"steps": [{"setWieght": 20}]}))
    assert any("spec.steps[0].setWieght" in e for e in errors), errors


VS: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1alpha3",
    "kind": "VirtualService",
    "metadata": {"name": "tcp-echo", "namespace": "default", "resourceVersion": "7"},
    "spec": {
        "hosts": ["*"],
        "gateways": ["tcp-echo-gateway"],
        "tcp": [
            {
                "match": [{"port": 31400}],
                "route": [
                    {"destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": "v1"}}
                ],
            }
        ],
    },
}


def rollout_spec(**selector: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "virtualService": {"name": "tcp-echo", **selector},
            "stable": {"host": "tcp-echo.default.svc.cluster.local", "subset": "v1"},
            "canary": {"host": "tcp-echo", "subset": "v2"},
            "steps": [{"setWeight": 20}],
        }
    )


def test_weighted_adds_the_canary_beside_stable() -> None:
    new, _ = weighted(VS, rollout_spec(port=31400), 20)
    assert new is not None
    route = new["spec"]["tcp"][0]["route"]
    assert route == [
        {
            "destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": "v1"},
            "weight": 80,
        },
        {
            "destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": "v2"},
            "weight": 20,
        },
    ]
    assert new["metadata"]["resourceVersion"] == "7", "written with optimistic concurrency"
    assert VS["spec"]["tcp"][0]["route"][0].get("weight") is None, "input is not mutated"
    assert current_weight(new, rollout_spec()) == 20
    assert weighted(new, rollout_spec(), 20) == (None, "unchanged")


def test_unknown_routes_are_problems() -> None:
    with pytest.raises(RouteProblem, match="no tcp route matching port 9999"):
        weighted(VS, rollout_spec(port=9999), 20)
    with pytest.raises(RouteProblem, match=r"no tcp route 3 \(1 tcp routes\)"):
        weighted(VS, rollout_spec(route=3), 20)
    foreign = copy.deepcopy(VS)
    foreign["spec"]["tcp"][0]["route"][0]["destination"]["subset"] = "v0"
    with pytest.raises(RouteProblem, match="no destination"):
        weighted(foreign, rollout_spec(), 20)


def test_version_selector_reads_the_subset_labels() -> None:
    rule = {
        "metadata": {"namespace": "default"},
        "spec": {"host": "tcp-echo", "subsets": [{"name": "canary", "labels": {"version": "v2"}}]},
    }
    selector = version_selector(
        RolloutSpec.model_validate({"canary": {"host": "tcp-echo", "subset": "canary"}}).canary,
        "default",
        [rule],
    )
    assert selector.service == "tcp-echo.default.svc.cluster.local"
    assert selector.versions == {"canary", "v2"}
