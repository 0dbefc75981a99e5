"""The runtime end to end: real store, real pod processes on their own loopback IPs."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tcpmesh.runtime import Runtime
from tcpmesh.store import Store

pytestmark = pytest.mark.integration

T = TypeVar("T")
NODE = "127.0.0.1"
Obj = dict[str, Any]


def _first_pod_ip() -> str:
    # Away from 127.1.0.1, so a mesh someone runs on this machine is not disturbed.
    return f"127.{random.randint(100, 230)}.{random.randint(0, 255)}.1"


def _nth_ip(first: str, n: int) -> str:
    return str(ipaddress.IPv4Address(first) + n)


def service() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tcp-echo", "namespace": "default"},
        "spec": {"selector": {"app": "tcp-echo"}, "ports": [{"name": "tcp", "port": 9000}]},
    }


def deployment(name: str, replicas: int, container: Obj, **pod_spec: Any) -> Obj:
    labels = {"app": "tcp-echo", "deploy": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", **container}], **pod_spec},
            },
        },
    }


def echo(prefix: str, port: int = 9000) -> Obj:
    return {
        "image": "docker.io/istio/tcp-echo-server:1.3",
        "args": [str(port), prefix],
        "ports": [{"containerPort": port}],
    }


def pods_of(store: Store, deploy: str) -> list[Obj]:
    return [p for p in store.list("Pod") if p["metadata"]["labels"].get("deploy") == deploy]


def is_ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def container_status(pod: Obj) -> Obj:
    status: Obj = pod["status"]["containerStatuses"][0]
    return status


def pid_of(pod: Obj) -> int:
    return int(container_status(pod)["containerID"].removeprefix("pid://"))


async def wait_for(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ready_pods(store: Store, deploy: str, count: int) -> list[Obj] | None:
    pods = pods_of(store, deploy)
    return pods if len(pods) == count and all(is_ready(p) for p in pods) else None


async def ask(ip: str, port: int, line: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
    try:
        writer.write(line)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _kill_recorded_pods(state_dir: Path) -> None:
    """Safety net for a failed test: stop every pod process the pid files still name."""
    for pid_file in state_dir.glob("pods/*/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            for entry in json.loads(pid_file.read_text()).values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(entry["pid"]), signal.SIGKILL)


@asynccontextmanager
async def mesh(tmp_path: Path, first_ip: str) -> AsyncIterator[tuple[Store, Runtime]]:
    store = Store(tmp_path / "store.db")
    runtime = Runtime(store, tmp_path / "state", NODE, first_pod_ip=first_ip)
    try:
        await runtime.start()
        yield store, runtime
    finally:
        try:
            await runtime.stop()
        finally:
            _kill_recorded_pods(tmp_path / "state")
            store.close()


def test_replicas_serve_restart_get_replaced_and_are_listed_in_endpoints(tmp_path: Path) -> None:
    first = _first_pod_ip()

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, _):
            store.create(service())
            store.create(deployment("v1", 2, echo("one")))
            pods = await wait_for(lambda: ready_pods(store, "v1", 2), "2 ready pods")
            ips = sorted(p["status"]["podIP"] for p in pods)
            assert ips == [first, _nth_ip(first, 1)]
            for ip in ips:
                assert await ask(ip, 9000, b"hi\n") == b"one hi\n"

            def endpoint_ips() -> list[str] | None:
                ep = store.get("Endpoints", "default", "tcp-echo")
                subsets = ep["subsets"] if ep else []
                found = sorted(a["ip"] for s in subsets for a in s.get("addresses", []))
                return found if found == ips else None

            await wait_for(endpoint_ips, "both pods in the Endpoints")

            # A pod process that dies is started again.
            victim = pods[0]
            name = victim["metadata"]["name"]
            os.killpg(pid_of(victim), signal.SIGKILL)

            def restarted() -> Obj | None:
                pod = store.get("Pod", "default", name)
                assert pod is not None
                return pod if container_status(pod)["restartCount"] >= 1 and is_ready(pod) else None

            pod = await wait_for(restarted, "the killed pod to be restarted")
            assert container_status(pod)["lastState"]["terminated"]["signal"] == signal.SIGKILL
            assert pod["status"]["podIP"] == victim["status"]["podIP"]
            assert await ask(pod["status"]["podIP"], 9000, b"back\n") == b"one back\n"

            # A pod deleted by a user is replaced by a new one, ready within 10 s.
            doomed = pods[1]
            started = time.monotonic()
            store.delete("Pod", "default", doomed["metadata"]["name"])

            def replaced() -> list[Obj] | None:
                current = ready_pods(store, "v1", 2)
                names = {p["metadata"]["name"] for p in current or []}
                return current if current and doomed["metadata"]["name"] not in names else None

            current = await wait_for(replaced, "a replacement pod", timeout=10)
            assert time.monotonic() - started < 10
            await wait_for(lambda: _gone(pid_of(doomed)), "the deleted pod's process to end")
            for pod in current:
                assert await ask(pod["status"]["podIP"], 9000, b"x\n") == b"one x\n"
            ips = sorted(p["status"]["podIP"] for p in current)
            await wait_for(endpoint_ips, "the Endpoints to follow the replacement")

    asyncio.run(scenario())


def test_stop_then_start_runs_the_same_pods_on_the_same_ips(tmp_path: Path) -> None:
    first = _first_pod_ip()

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, runtime):
            store.create(service())
            store.create(deployment("v1", 2, echo("one")))
            before = await wait_for(lambda: ready_pods(store, "v1", 2), "2 ready pods")
            await runtime.stop()

            stopped = pods_of(store, "v1")
            assert {p["metadata"]["name"] for p in stopped} == {
                p["metadata"]["name"] for p in before
            }
            for pod in stopped:
                assert pod["status"]["phase"] == "Failed"
                assert pod["status"]["reason"] == "Terminated"
                assert not is_ready(pod)
                assert _gone(pid_of(before[0])) and _gone(pid_of(before[1]))
                with pytest.raises(OSError):
                    await ask(pod["status"]["podIP"], 9000, b"anyone?\n")
            endpoints = store.get("Endpoints", "default", "tcp-echo")
            assert endpoints is not None
            assert all("addresses" not in s for s in endpoints["subsets"])

            again = Runtime(store, tmp_path / "state", NODE, first_pod_ip=first)
            await again.start()
            try:
                after = await wait_for(lambda: ready_pods(store, "v1", 2), "pods back")
                old = {p["metadata"]["name"]: p for p in before}
                for pod in after:
                    previous = old[pod["metadata"]["name"]]
                    assert pod["status"]["podIP"] == previous["status"]["podIP"]
                    assert (
                        container_status(pod)["restartCount"]
                        == container_status(previous)["restartCount"] + 1
                    )
                    assert await ask(pod["status"]["podIP"], 9000, b"hi\n") == b"one hi\n"
            finally:
                await again.stop()

    asyncio.run(scenario())


def test_a_bad_image_waits_in_err_image_pull_and_the_rest_keeps_working(tmp_path: Path) -> None:
    first = _first_pod_ip()

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, _):
            store.create(deployment("bad", 1, {"image": "nginx:1.25"}))
            store.create(deployment("v1", 1, echo("one")))

            def pulling() -> Obj | None:
                pods = pods_of(store, "bad")
                waiting = container_status(pods[0])["state"].get("waiting", {}) if pods else {}
                return pods[0] if waiting.get("reason") == "ErrImagePull" else None

            bad = await wait_for(pulling, "ErrImagePull")
            assert (
                "tcpmesh runs only its built-in images"
                in (container_status(bad)["state"]["waiting"]["message"])
            )
            assert bad["status"]["phase"] == "Pending"
            good = await wait_for(lambda: ready_pods(store, "v1", 1), "the good pod")
            assert await ask(good[0]["status"]["podIP"], 9000, b"ok\n") == b"one ok\n"
            deploy = store.get("Deployment", "default", "bad")
            assert deploy is not None
            assert deploy["status"]["readyReplicas"] == 0

    asyncio.run(scenario())


def test_a_crashing_command_backs_off_and_its_output_is_in_the_pod_log(tmp_path: Path) -> None:
    first = _first_pod_ip()
    script = "import os; print('hi from', os.environ['POD_NAME'], os.environ['POD_IP']); exit(3)"

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, runtime):
            container = {"image": "python", "command": [sys.executable, "-c", script]}
            store.create(deployment("crash", 1, container))

            def crash_looping() -> Obj | None:
                pods = pods_of(store, "crash")
                if not pods or "containerStatuses" not in pods[0]["status"]:
                    return None
                status = container_status(pods[0])
                waiting = status["state"].get("waiting", {})
                return (
                    pods[0]
                    if status["restartCount"] >= 2 and waiting.get("reason") == "CrashLoopBackOff"
                    else None
                )

            pod = await wait_for(crash_looping, "CrashLoopBackOff after 2 restarts")
            status = container_status(pod)
            assert status["lastState"]["terminated"]["exitCode"] == 3
            assert status["state"]["waiting"]["message"].startswith("back-off ")
            assert pod["status"]["phase"] == "Running"
            name = pod["metadata"]["name"]
            log_path = runtime.pod_log_path("default", name)
            assert log_path == tmp_path / "state" / "pods" / "default" / f"{name}.log"
            lines = log_path.read_text().splitlines()
            assert lines.count(f"hi from {name} {pod['status']['podIP']}") >= 2
            assert runtime.pod_log_path("default", "no-such-pod") is None

    asyncio.run(scenario())


def test_rolling_update_and_deleting_the_deployment(tmp_path: Path) -> None:
    first = _first_pod_ip()

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, _):
            store.create(deployment("v1", 2, echo("one")))
            before = await wait_for(lambda: ready_pods(store, "v1", 2), "2 ready pods")
            current = store.get("Deployment", "default", "v1")
            assert current is not None
            changed = copy.deepcopy(current)
            changed["spec"]["template"]["spec"]["containers"][0]["args"] = ["9000", "two"]
            store.replace(changed)

            def rolled_out() -> list[Obj] | None:
                pods = ready_pods(store, "v1", 2)
                old = {p["metadata"]["name"] for p in before}
                return pods if pods and not old & {p["metadata"]["name"] for p in pods} else None

            after = await wait_for(rolled_out, "the new template's pods", timeout=30)
            for pod in after:
                assert await ask(pod["status"]["podIP"], 9000, b"v\n") == b"two v\n"
            status = store.get("Deployment", "default", "v1")
            assert status is not None
            assert status["status"]["updatedReplicas"] == 2

            store.delete("Deployment", "default", "v1")
            await wait_for(lambda: not pods_of(store, "v1"), "the pods to be deleted")
            pids = [pid_of(pod) for pod in after]
            await wait_for(lambda: all(_gone(pid) for pid in pids), "processes to end")

    asyncio.run(scenario())


def test_containers_of_one_pod_run_side_by_side_on_the_pod_ip(tmp_path: Path) -> None:
    first = _first_pod_ip()

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, _):
            d = deployment("duo", 1, echo("left", 9000))
            second = {"name": "second", **echo("right", 9001)}
            d["spec"]["template"]["spec"]["containers"].append(second)
            store.create(d)
            pods = await wait_for(lambda: ready_pods(store, "duo", 1), "the two-container pod")
            statuses = pods[0]["status"]["containerStatuses"]
            assert [(s["name"], s["ready"]) for s in statuses] == [
                ("main", True),
                ("second", True),
            ]
            ip = pods[0]["status"]["podIP"]
            assert await ask(ip, 9000, b"a\n") == b"left a\n"
            assert await ask(ip, 9001, b"b\n") == b"right b\n"

    asyncio.run(scenario())


def test_host_network_pods_run_on_the_node_address(tmp_path: Path) -> None:
    first = _first_pod_ip()

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, _):
            with contextlib.closing(__import__("socket").socket()) as probe:
                probe.bind((NODE, 0))
                port = probe.getsockname()[1]
            store.create(deployment("gw", 1, echo("gw", port), hostNetwork=True))
            pods = await wait_for(lambda: ready_pods(store, "gw", 1), "the host network pod")
            assert pods[0]["status"]["podIP"] == NODE
            assert await ask(NODE, port, b"in\n") == b"gw in\n"

    asyncio.run(scenario())


RUN_RUNTIME = """
import asyncio, sys
from pathlib import Path
from tcpmesh.runtime import Runtime
from tcpmesh.store import Store

async def main() -> None:
    runtime = Runtime(Store(Path(sys.argv[1])), Path(sys.argv[2]), "127.0.0.1",
                      first_pod_ip=sys.argv[3])
    await runtime.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_after_a_crash_of_the_mesh_its_pods_are_adopted_and_nothing_else_is_touched(
    tmp_path: Path,
) -> None:
    first = _first_pod_ip()
    state = tmp_path / "state"
    store = Store(tmp_path / "store.db")
    store.create(deployment("v1", 2, echo("one")))
    store.close()
    crashed = subprocess.Popen(
        [sys.executable, "-c", RUN_RUNTIME, str(tmp_path / "store.db"), str(state), first]
    )
    bystander_argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    bystander = subprocess.Popen(bystander_argv, start_new_session=True)
    try:

        async def scenario() -> None:
            ips = [first, _nth_ip(first, 1)]

            async def serving() -> bool:
                try:
                    return all([await ask(ip, 9000, b"a\n") == b"one a\n" for ip in ips])
                except OSError:
                    return False

            deadline = time.monotonic() + 20
            while not await serving():
                assert time.monotonic() < deadline, "the first mesh never served"
                await asyncio.sleep(0.1)
            crashed.kill()
            crashed.wait(timeout=10)
            pid_files = sorted(state.glob("pods/default/*.pid"))
            assert len(pid_files) == 2
            leftovers = [e["pid"] for f in pid_files for e in json.loads(f.read_text()).values()]
            assert not any(_gone(pid) for pid in leftovers)  # pods outlive a crashed mesh
            # Same argv as recorded, but not that pod's environment: it must be left alone.
            (state / "pods" / "default" / "gone-pod.pid").write_text(
                json.dumps({"main": {"pid": bystander.pid, "argv": bystander_argv}})
            )

            async with mesh(tmp_path, first) as (store, _):
                pods = await wait_for(lambda: ready_pods(store, "v1", 2), "pods back")
                assert sorted(p["status"]["podIP"] for p in pods) == ips
                # The very processes serve on: adopted, as a kubelet adopts its containers.
                assert not any(_gone(pid) for pid in leftovers)
                assert {pid_of(p) for p in pods} == set(leftovers)
                assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in pods)
                assert await serving()
                assert bystander.poll() is None

        asyncio.run(scenario())
    finally:
        crashed.kill()
        crashed.wait(timeout=10)
        bystander.kill()
        bystander.wait(timeout=10)
        _kill_recorded_pods(state)
