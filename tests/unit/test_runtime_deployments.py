"""The Deployment controller: pod names, ownership, rollouts, status."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.runtime.deployments import (
    HASH_LABEL,
    deployment_status,
    new_pod,
    orphaned_pods,
    plan_rollout,
    sync_deployments,
    template_hash,
)
from tcpmesh.runtime.objects import pod_is_ready
from tcpmesh.store import Store


def deployment(replicas: int = 2, prefix: str = "one", name: str = "tcp-echo-v1") -> dict[str, Any]:
    labels = {"app": "tcp-echo", "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "uid": "d-uid", "generation": 3},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"a": "b"}},
                "spec": {
                    "containers": [
                        {
                            "name": "tcp-echo",
                            "image": "docker.io/istio/tcp-echo-server:1.3",
                            "args": ["9000", prefix],
                            "ports": [{"containerPort": 9000}],
                        }
                    ]
                },
            },
        },
    }


def ready_pod(
    name: str, ready: bool = True, created: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_template_hash_is_stable_ten_safe_characters_and_follows_the_template() -> None:
    d = deployment()
    h = template_hash(d["spec"]["template"])
    assert re.fullmatch(r"[bcdfghjklmnpqrstvwxz2456789]{10}", h)
    assert template_hash(copy.deepcopy(d["spec"]["template"])) == h
    assert template_hash(deployment(prefix="two")["spec"]["template"]) != h


def test_new_pod_is_named_labelled_and_owned_like_a_replica_set_pod() -> None:
    d = deployment()
    pod = new_pod(d, "abcdfghjkl", "x2z4q")
    assert pod["metadata"]["name"] == "tcp-echo-v1-abcdfghjkl-x2z4q"
    assert pod["metadata"]["labels"] == {
        "app": "tcp-echo",
        "version": "v1",
        HASH_LABEL: "abcdfghjkl",
    }
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "tcp-echo-v1",
            "uid": "d-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["spec"] == d["spec"]["template"]["spec"]
    assert pod["spec"] is not d["spec"]["template"]["spec"]


def test_pods_of_a_deployment_that_is_gone_or_recreated_are_orphans() -> None:
    d = deployment()
    mine = new_pod(d, "h", "a")
    of_old_incarnation = new_pod({**d, "metadata": {**d["metadata"], "uid": "old"}}, "h", "b")
    unowned: dict[str, Any] = {"metadata": {"name": "solo", "namespace": "default"}}
    assert orphaned_pods([d], [mine, of_old_incarnation, unowned]) == [of_old_incarnation]
    assert orphaned_pods([], [mine]) == [mine]


def test_scaling_without_a_rollout() -> None:
    assert plan_rollout(3, [ready_pod("a")], []).create == 2
    plan = plan_rollout(1, [ready_pod("a"), ready_pod("b", ready=False)], [])
    assert plan.create == 0
    assert [p["metadata"]["name"] for p in plan.delete] == ["b"]  # the unready one goes


def test_rollout_surges_by_one_and_never_drops_ready_pods_below_replicas() -> None:
    old = [ready_pod("o1"), ready_pod("o2")]
    plan = plan_rollout(2, [], old)
    assert (plan.create, plan.delete) == (1, ())

    plan = plan_rollout(2, [ready_pod("n1", ready=False)], old)
    assert (plan.create, plan.delete) == (0, ())  # wait for the new pod to be ready

    plan = plan_rollout(2, [ready_pod("n1")], old)
    assert plan.create == 0
    assert len(plan.delete) == 1

    plan = plan_rollout(2, [ready_pod("n1")], old[:1])
    assert (plan.create, plan.delete) == (1, ())

    plan = plan_rollout(2, [ready_pod("n1"), ready_pod("n2")], old[:1])
    assert plan.create == 0
    assert [p["metadata"]["name"] for p in plan.delete] == ["o1"]


def test_rollout_removes_unready_old_pods_first() -> None:
    old = [ready_pod("ok"), ready_pod("broken", ready=False)]
    plan = plan_rollout(2, [ready_pod("n1")], old)
    assert [p["metadata"]["name"] for p in plan.delete] == ["broken"]


def test_a_rollout_whose_new_pods_never_get_ready_keeps_the_old_ones() -> None:
    old = [ready_pod("o1"), ready_pod("o2")]
    plan = plan_rollout(2, [ready_pod("n1", ready=False)], old)
    assert plan.delete == ()


def test_recreate_deletes_every_old_pod_before_creating_new_ones() -> None:
    old = [ready_pod("o1"), ready_pod("o2")]
    plan = plan_rollout(2, [], old, recreate=True)
    assert (plan.create, [p["metadata"]["name"] for p in plan.delete]) == (0, ["o1", "o2"])
    assert plan_rollout(2, [], [], recreate=True).create == 2


def test_status_counts_and_conditions() -> None:
    d = deployment(replicas=2)
    h = template_hash(d["spec"]["template"])
    current = [new_pod(d, h, "a"), new_pod(d, h, "b")]
    current[0]["status"] = ready_pod("a")["status"]
    status = deployment_status(d, current, h)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 3,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "unavailableReplicas": 1,
    }
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "ReplicaSetUpdated"

    current[1]["status"] = ready_pod("b")["status"]
    status = deployment_status({**d, "status": status}, current, h)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert status["unavailableReplicas"] == 0


def test_unchanged_conditions_keep_their_transition_time() -> None:
    d = deployment(replicas=0)
    first = deployment_status(d, [], "h")
    first["conditions"][0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    again = deployment_status({**d, "status": first}, [], "h")
    assert again == first


# ---------------------------------------------------------------- the controller, on a store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def _mark_ready(store: Store, names: list[str]) -> None:
    for name in names:
        store.update_status("Pod", "default", name, ready_pod(name)["status"])


def _pod_names(store: Store) -> list[str]:
    return [p["metadata"]["name"] for p in store.list("Pod")]


def test_controller_creates_replicas_and_writes_status_once(store: Store) -> None:
    d = deployment(replicas=2)
    del d["metadata"]["uid"]
    created = store.create(d)
    sync_deployments(store)
    pods = store.list("Pod")
    h = template_hash(d["spec"]["template"])
    assert len(pods) == 2
    for pod in pods:
        assert re.fullmatch(
            rf"tcp-echo-v1-{h}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", pod["metadata"]["name"]
        )
        assert pod["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    status = store.get("Deployment", "default", "tcp-echo-v1")
    assert status is not None
    assert status["status"]["replicas"] == 2
    assert status["status"]["observedGeneration"] == 1

    revision = store.revision
    sync_deployments(store)
    assert store.revision == revision  # settled: nothing to write


def test_controller_replaces_a_deleted_pod_and_rolls_out_a_new_template(store: Store) -> None:
    store.create(deployment(replicas=2))
    sync_deployments(store)
    first = _pod_names(store)
    store.delete("Pod", "default", first[0])
    sync_deployments(store)
    assert len(_pod_names(store)) == 2
    _mark_ready(store, _pod_names(store))
    old = set(_pod_names(store))

    current = store.get("Deployment", "default", "tcp-echo-v1")
    assert current is not None
    changed = copy.deepcopy(current)
    changed["spec"]["template"]["spec"]["containers"][0]["args"] = ["9000", "two"]
    store.replace(changed)
    for _ in range(10):  # bounded: each round makes the new pods ready
        sync_deployments(store)
        names = _pod_names(store)
        assert len(names) <= 3  # maxSurge 1
        assert sum(pod_is_ready(p) for p in store.list("Pod")) >= 2  # maxUnavailable 0
        _mark_ready(store, names)
        if not old & set(names) and len(names) == 2:
            break
    new = store.list("Pod")
    assert len(new) == 2
    assert not old & {p["metadata"]["name"] for p in new}
    assert all(p["spec"]["containers"][0]["args"] == ["9000", "two"] for p in new)


def test_controller_deletes_the_pods_of_a_deleted_deployment(store: Store) -> None:
    store.create(deployment(replicas=2))
    store.create(deployment(replicas=1, name="other"))
    sync_deployments(store)
    store.delete("Deployment", "default", "tcp-echo-v1")
    sync_deployments(store)
    assert [n.split("-")[0] for n in _pod_names(store)] == ["other"]


def test_controller_refuses_a_selector_that_does_not_match_the_template(store: Store) -> None:
    d = deployment()
    d["spec"]["selector"] = {"matchLabels": {"app": "something-else"}}
    store.create(d)
    sync_deployments(store)
    assert store.list("Pod") == []
    current = store.get("Deployment", "default", "tcp-echo-v1")
    assert current is not None
    failure = [c for c in current["status"]["conditions"] if c["type"] == "ReplicaFailure"]
    assert failure[0]["message"] == "`selector` does not match template `labels`"
