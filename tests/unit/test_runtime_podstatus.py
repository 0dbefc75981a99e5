"""Pod status in Kubernetes shape, from the kubelet's container records."""

from __future__ import annotations

from tcpmesh.runtime.kubelet import format_duration, should_run
from tcpmesh.runtime.podstatus import ContainerRecord, pod_phase, pod_status


def record(name: str = "c") -> ContainerRecord:
    return ContainerRecord(name=name, image="istio/tcp-echo-server:1.3")


def test_a_container_goes_from_creating_to_running_to_crash_loop() -> None:
    c = record()
    assert c.to_status()["state"] == {"waiting": {"reason": "ContainerCreating"}}
    c.running(pid=4242)
    status = c.to_status()
    assert "startedAt" in status["state"]["running"]
    assert status["started"] is True
    assert status["containerID"] == "pid://4242"

    c.terminated(-9)
    terminated = c.to_status()["state"]["terminated"]
    assert terminated["exitCode"] == 137
    assert terminated["signal"] == 9
    assert terminated["reason"] == "Error"
    assert terminated["containerID"] == "pid://4242"
    c.waiting("CrashLoopBackOff", "back-off 500ms restarting failed container=c")
    status = c.to_status()
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["ready"] is False
    assert "containerID" not in status


def test_exit_codes_name_their_reason() -> None:
    c = record()
    c.terminated(0)
    assert c.state["terminated"]["reason"] == "Completed"
    c.terminated(3)
    assert c.state["terminated"]["reason"] == "Error"
    c.terminated(128, "StartError", "no such file")
    assert c.state["terminated"]["message"] == "no such file"


def test_phase_follows_the_kubelet_rules() -> None:
    waiting, running, crashed = record(), record(), record()
    running.running(1)
    crashed.terminated(1)
    crashed.waiting("CrashLoopBackOff")
    assert pod_phase([waiting], "Always") == "Pending"
    assert pod_phase([running, waiting], "Always") == "Pending"
    assert pod_phase([running], "Always") == "Running"
    assert pod_phase([crashed], "Always") == "Running"  # restarting counts as running
    done = record()
    done.terminated(0)
    assert pod_phase([done], "Never") == "Succeeded"
    failed = record()
    failed.terminated(2)
    assert pod_phase([failed], "Never") == "Failed"
    assert pod_phase([failed], "OnFailure") == "Running"


def test_pod_status_shape_and_readiness_conditions() -> None:
    a, b = record("a"), record("b")
    a.running(1)
    a.ready = True
    b.running(2)
    status = pod_status(
        [a, b],
        restart_policy="Always",
        pod_ip="127.1.0.3",
        host_ip="127.0.0.1",
        start_time="2026-01-01T00:00:00Z",
    )
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.1.0.3"
    assert status["podIPs"] == [{"ip": "127.1.0.3"}]
    assert status["hostIP"] == "127.0.0.1"
    assert status["startTime"] == "2026-01-01T00:00:00Z"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"Initialized", "Ready", "ContainersReady", "PodScheduled"}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["message"] == "containers with unready status: [b]"
    assert [c["name"] for c in status["containerStatuses"]] == ["a", "b"]

    b.ready = True
    again = pod_status(
        [a, b],
        restart_policy="Always",
        pod_ip="127.1.0.3",
        host_ip="127.0.0.1",
        start_time="2026-01-01T00:00:00Z",
        previous=status,
    )
    ready = next(c for c in again["conditions"] if c["type"] == "Ready")
    assert ready == {
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": ready["lastTransitionTime"],
    }
    scheduled = [c for c in again["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled == [conditions["PodScheduled"]]  # unchanged, same transition time


def test_a_pod_stopped_with_the_mesh_is_failed_and_will_run_again() -> None:
    c = record()
    c.running(1)
    c.terminated(-15)
    status = pod_status(
        [c], restart_policy="Always", pod_ip="127.1.0.1", host_ip="h", start_time="t", shutdown=True
    )
    assert status["phase"] == "Failed"
    assert status["reason"] == "Terminated"
    assert should_run({"status": status})
    assert not should_run({"status": {"phase": "Failed"}})
    assert not should_run({"status": {"phase": "Succeeded"}})
    assert should_run({})


def test_a_container_resumed_after_a_restart_of_the_node_counts_a_restart() -> None:
    before = {
        "name": "c",
        "restartCount": 2,
        "state": {"terminated": {"exitCode": 143, "reason": "Error"}},
        "lastState": {},
    }
    resumed = ContainerRecord.resume("c", "img", before)
    assert resumed.restart_count == 3
    assert resumed.last_state == {"terminated": {"exitCode": 143, "reason": "Error"}}
    never_ran = {"name": "c", "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}
    assert ContainerRecord.resume("c", "img", never_ran).restart_count == 0
    assert ContainerRecord.resume("c", "img", None).restart_count == 0


def test_durations_are_printed_like_go() -> None:
    assert [format_duration(s) for s in (0.5, 1.0, 2.0, 10.0)] == ["500ms", "1s", "2s", "10s"]
