"""The pod cap: refused at apply, and never exceeded by the Deployment controller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.runtime import DEFAULT_MAX_PODS, replica_cap_errors
from tcpmesh.runtime.deployments import sync_deployments
from tcpmesh.store import Store
from tests.unit.test_runtime_deployments import deployment


def named(name: str, replicas: int, namespace: str = "default") -> dict[str, Any]:
    deploy = deployment(replicas=replicas, name=name)
    deploy["metadata"] = {"name": name, "namespace": namespace}
    return deploy


def test_the_default_is_the_kubelets_max_pods() -> None:
    assert DEFAULT_MAX_PODS == 110


def test_a_deployment_above_the_cap_is_refused_with_how_to_raise_it() -> None:
    assert replica_cap_errors([named("web", 10)], [], 10) == []
    assert replica_cap_errors([named("web", 11, "shop")], [], 10) == [
        'Deployment "shop/web" is invalid: spec.replicas: Invalid value: 11: more than the '
        "mesh's limit of 10 pods; start the mesh with `tcpmesh up --max-pods N` to raise it"
    ]


def test_the_cap_counts_the_other_deployments_as_they_will_be_after_the_apply() -> None:
    stored = [named("a", 6), named("web", 4)]
    # web goes from 4 to 5: 6 + 5 > 10.
    (error,) = replica_cap_errors([named("web", 5)], stored, 10)
    assert "Invalid value: 5: with the 6 pods of the other Deployments, more than" in error
    # web shrinking while a grows in the same apply: 8 + 2 fits.
    assert replica_cap_errors([named("web", 2), named("a", 8)], stored, 10) == []
    # Only the Deployments that grow are blamed; one already over the cap may shrink.
    (error,) = replica_cap_errors([named("web", 5), named("a", 6)], stored, 10)
    assert error.startswith('Deployment "web" is invalid')
    assert replica_cap_errors([named("a", 5)], [named("a", 20)], 10) == []
    # Objects of other kinds do not count.
    assert replica_cap_errors([{"kind": "Service", "metadata": {"name": "a"}}], stored, 1) == []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def test_the_controller_creates_no_pod_beyond_the_cap_and_says_why(store: Store) -> None:
    store.apply([named("a", 3), named("b", 3)])
    sync_deployments(store, max_pods=4)
    assert len(store.list("Pod")) == 4
    statuses = {d["metadata"]["name"]: d["status"] for d in store.list("Deployment")}
    failures = [
        c
        for status in statuses.values()
        for c in status["conditions"]
        if c["type"] == "ReplicaFailure"
    ]
    assert len(failures) == 1
    (failure,) = failures
    assert failure["status"] == "True" and failure["reason"] == "FailedCreate"
    assert (
        "is forbidden: exceeded the mesh's pod limit: requested: pods=1, used: pods=4"
        in (failure["message"])
    )
    assert "limited: pods=4" in failure["message"]
    # Another pass changes nothing: the cap holds, no pod is killed to make room.
    sync_deployments(store, max_pods=4)
    assert len(store.list("Pod")) == 4


def test_the_condition_clears_once_there_is_room(store: Store) -> None:
    store.apply([named("a", 3)])
    sync_deployments(store, max_pods=2)
    sync_deployments(store, max_pods=3)
    (deploy,) = store.list("Deployment")
    assert len(store.list("Pod")) == 3
    assert "ReplicaFailure" not in {c["type"] for c in deploy["status"]["conditions"]}
