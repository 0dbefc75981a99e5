"""Events the runtime records: derived from status transitions, aggregated, expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tcpmesh.runtime.deployments import sync_deployments
from tcpmesh.runtime.events import EventRecorder, Happening, pod_happenings
from tcpmesh.store import Store


def status(**state: Any) -> dict[str, Any]:
    restarts = state.pop("restarts", 0)
    return {"containerStatuses": [{"name": "c", "state": state, "restartCount": restarts}]}


def happened(previous: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str]]:
    return [(h.type, h.reason) for h in pod_happenings("p", "ns", "u", previous, current)]


def test_a_container_that_starts_or_restarts_is_started() -> None:
    assert happened({}, status(running={"startedAt": "t"})) == [("Normal", "Started")]
    running = status(running={"startedAt": "t"})
    assert happened(running, running) == []
    assert happened(running, status(running={"startedAt": "t2"}, restarts=1)) == [
        ("Normal", "Started")
    ]


def test_back_off_and_images_that_cannot_run_are_warnings() -> None:
    crashing = status(waiting={"reason": "CrashLoopBackOff", "message": "back-off 10s"})
    assert happened(status(running={}), crashing) == [("Warning", "BackOff")]
    pull = status(waiting={"reason": "ErrImagePull", "message": 'image "x" is not runnable'})
    events = list(pod_happenings("p", "ns", "u", {}, pull))
    assert events == [Happening("Warning", "Failed", 'image "x" is not runnable')]


def pod(store: Store) -> dict[str, Any]:
    return store.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )


def test_a_repeat_is_counted_on_the_same_event(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    recorder = EventRecorder(store, "kubelet", "127.0.0.1")
    obj = pod(store)
    recorder.record(obj, Happening("Normal", "Started", "Started container c"))
    recorder.record(obj, Happening("Normal", "Started", "Started container c"))
    recorder.record(obj, Happening("Warning", "BackOff", "Back-off"))
    events = store.list("Event", "default")
    assert sorted((e["reason"], e["count"]) for e in events) == [("BackOff", 1), ("Started", 2)]
    started = next(e for e in events if e["reason"] == "Started")
    assert started["involvedObject"] == {
        "kind": "Pod",
        "namespace": "default",
        "name": "p",
        "uid": obj["metadata"]["uid"],
        "apiVersion": "v1",
        "resourceVersion": obj["metadata"]["resourceVersion"],
    }
    assert started["source"] == {"component": "kubelet", "host": "127.0.0.1"}


def test_events_expire_after_an_hour(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    recorder = EventRecorder(store, "kubelet")
    recorder.record(pod(store), Happening("Normal", "Started", "x"))
    recorder.prune(datetime.now(UTC) + timedelta(minutes=59))
    assert len(store.list("Event")) == 1
    recorder.prune(datetime.now(UTC) + timedelta(minutes=61))
    assert store.list("Event") == []


def test_the_deployment_controller_reports_scaling(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    labels = {"app": "a"}
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    store.create(deploy)
    recorder = EventRecorder(store, "deployment-controller")
    sync_deployments(store, events=recorder)
    sync_deployments(store, events=recorder)  # nothing to do: no second event
    messages = [e["message"] for e in store.list("Event")]
    assert len(messages) == 1 and messages[0].startswith("Scaled up replica set a-")
    assert messages[0].endswith(" from 0 to 2")
    current = store.get("Deployment", "default", "a")
    assert current is not None
    store.replace({**current, "spec": {**current["spec"], "replicas": 1}})
    sync_deployments(store, events=recorder)
    assert any(
        e["message"].endswith(" from 2 to 1") and "Scaled down" in e["message"]
        for e in store.list("Event")
    )


def test_the_service_controller_reports_the_load_balancer(tmp_path: Path) -> None:
    from tcpmesh.runtime.endpoints import sync_services

    store = Store(tmp_path / "db")
    store.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        }
    )
    recorder = EventRecorder(store, "service-controller")
    sync_services(store, "127.0.0.9", recorder)
    sync_services(store, "127.0.0.9", recorder)
    (event,) = store.list("Event")
    assert (event["reason"], event["involvedObject"]["name"]) == ("EnsuredLoadBalancer", "lb")
