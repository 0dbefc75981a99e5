"""The control plane at size: 10 to 10,000 VirtualServices, each with its own Service,
DestinationRule (subsets v1, v2), two pods and Endpoints; each VirtualService routes a TCP
server of the gateway and the sidecars' traffic to its Service (``gateways: [gw, mesh]``).

    .venv/bin/python benchmarks/control_scale.py [--sizes 10,100,1000,10000] [--flips 20]
        [--envoy [--envoy-sizes 10,100,1000] | --envoy-only]

For each size N it measures, in this process:

- typing: the stored dicts → typed resources (``api.from_dict``), per object, and the
  memory the typed objects hold (tracemalloc), per object;
- ``build_snapshot`` for the ingress gateway (N listeners) and for the node proxy
  (N cluster-IP listeners), and the Snapshot's JSON (what a built-in worker fetches);
- Envoy's side: ``xds.translate`` plus the protobuf ``Any`` encoding the ADS server sends;
- wall and CPU time of each (this process's CPU: on a machine shared with other load the
  CPU figures show the cost, the wall figures what a user waited);
- apply → in effect: a ``ControlPlane`` following a SQLite store, and for each proxy the
  flip touches (the gateway and the node proxy) what the mesh does with its Snapshots:
  the API server writes each one's JSON on the proxy's stream (here a pipe; the HTTP
  hop is not in it), and the proxy, a process of its own with a built-in ``Proxy`` (one
  worker), parses and applies it. One VirtualService's weights are flipped ``--flips``
  times with ``store.apply``, timing each from the write until both proxies serve their
  new Snapshot, with the CPU of each phase: the control plane's builds and JSON (this
  process), each proxy's parse and apply (its own), and their sum;
- apply → Envoy ACK (``--envoy``): the same flips through the ADS server and a real
  Envoy gateway.

With ``--envoy`` (``--envoy-only``: nothing else), apply → Envoy ACK: the same flips
through the ADS server and a real Envoy gateway, and Envoy's first push (wall, the
control plane's and Envoy's CPU, how often the server resent a type it got no answer for).

Prints one JSON document (and writes it with ``--out``); asserts nothing. The gateway's
listeners bind 127.0.0.88 from port 40000, the node proxy's the cluster IPs
127.240.0.0/12 (N ≤ 10,000).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import report

from tcpmesh.api import from_dict
from tcpmesh.control import ControlPlane, MeshResources, ProxyNode, Snapshot, build_snapshot
from tcpmesh.control.plane import FREEZE_DELAY
from tcpmesh.dataplane import Proxy
from tcpmesh.store import open_store

GATEWAY_ADDRESS = "127.0.0.88"
BASE_PORT = 40000
NS = "bench"
GATEWAY_NODE = ("istio-system", "istio-ingressgateway-0")
GATEWAY_LABELS = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
NODE_PROXY = ("kube-system", "tcpmesh-node-proxy")
NODE_PROXY_LABELS = {"app": "tcpmesh-node-proxy", "tcpmesh.io/component": "node-proxy"}
# Every proxy a flip touches: its rule is the gateway's route and the node proxy's.
PROXY_NODES = ("/".join(GATEWAY_NODE), "/".join(NODE_PROXY))
CREATED = "2026-01-01T00:00:00Z"
# Envoy creating 40,000 clusters on a loaded machine takes minutes.
FIRST_PUSH_TIMEOUT = 1800.0


def meta(name: str, namespace: str = NS, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "creationTimestamp": CREATED, **extra}


def ip(i: int, base: int) -> str:
    return f"{base}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def cluster_ip(i: int) -> str:
    """In the mesh's cluster-IP range (127.240.0.0/12), so the node proxy can bind it."""
    return f"127.{240 + ((i >> 16) & 15)}.{(i >> 8) & 255}.{i & 255}"


def virtual_service(i: int, v1_weight: int) -> dict[str, Any]:
    """The gateway's port BASE_PORT + i and the sidecars' (node proxy's) traffic to
    svc-i, both to svc-i's v1 and v2 by weight (Istio's usual ``gateways: [gw, mesh]``)."""
    host = f"svc-{i}"
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": meta(f"vs-{i}"),
        "spec": {
            "hosts": [host],
            "gateways": [f"{NS}/gw", "mesh"],
            "tcp": [
                {
                    "match": [
                        {"port": BASE_PORT + i, "gateways": [f"{NS}/gw"]},
                        {"gateways": ["mesh"]},
                    ],
                    "route": [
                        {
                            "destination": {"host": host, "subset": "v1", "port": {"number": 9000}},
                            "weight": v1_weight,
                        },
                        {
                            "destination": {"host": host, "subset": "v2", "port": {"number": 9000}},
                            "weight": 100 - v1_weight,
                        },
                    ],
                }
            ],
        },
    }


def service_objects(i: int) -> list[dict[str, Any]]:
    """A Service with its pods, Endpoints, DestinationRule and VirtualService."""
    name = f"svc-{i}"
    pods = [(f"{name}-{v}", v, ip(2 * i + k, 10)) for k, v in enumerate(("v1", "v2"))]
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name),
            "spec": {
                "clusterIP": cluster_ip(i),
                "selector": {"app": name},
                "ports": [{"name": "tcp", "port": 9000}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta(name),
            "subsets": [
                {
                    "addresses": [
                        {"ip": pip, "targetRef": {"kind": "Pod", "name": pod, "namespace": NS}}
                        for pod, _, pip in pods
                    ],
                    "ports": [{"name": "tcp", "port": 9000}],
                }
            ],
        },
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": meta(name),
            "spec": {
                "host": name,
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
        virtual_service(i, 80),
    ]
    for pod, version, pip in pods:
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": meta(pod, labels={"app": name, "version": version}),
                "spec": {"containers": [{"name": "app", "image": "bench"}]},
                "status": {"podIP": pip, "phase": "Running"},
            }
        )
    return objs


def mesh_objects(n: int) -> list[dict[str, Any]]:
    """Everything for N VirtualServices, plus the gateway, its Service and the proxies' pods."""
    gateway_ns, gateway_pod = GATEWAY_NODE
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta(gateway_pod, gateway_ns, labels=GATEWAY_LABELS),
            "spec": {"containers": [{"name": "proxy", "image": "tcpmesh"}]},
            "status": {"podIP": GATEWAY_ADDRESS, "phase": "Running"},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta(NODE_PROXY[1], NODE_PROXY[0], labels=NODE_PROXY_LABELS),
            "spec": {"containers": [{"name": "proxy", "image": "tcpmesh"}]},
            "status": {"podIP": "127.0.0.89", "phase": "Running"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("istio-ingressgateway", gateway_ns),
            "spec": {
                "type": "LoadBalancer",
                "selector": GATEWAY_LABELS,
                "ports": [{"name": f"tcp-{i}", "port": BASE_PORT + i} for i in range(n)],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "Gateway",
            "metadata": meta("gw"),
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {
                        "port": {"number": BASE_PORT + i, "name": f"tcp-{i}", "protocol": "TCP"},
                        "hosts": ["*"],
                    }
                    for i in range(n)
                ],
            },
        },
    ]
    for i in range(n):
        objs.extend(service_objects(i))
    return objs


CPU_MS: dict[str, float] = {}


def timed(func: Callable[[], Any], repeat: int, name: str = "") -> tuple[float, Any]:
    """The median wall time of ``repeat`` calls (ms), and the last result; the median CPU
    time of this process (ms) goes to ``CPU_MS[name]``: on a machine shared with other
    load, CPU time shows the cost, wall time what a user waited."""
    times, cpu = [], []
    result = None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = func()
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    if name:
        CPU_MS[name] = round(statistics.median(cpu), 2)
    return statistics.median(times), result


def node(pod_ns: str, pod_name: str, resources: MeshResources) -> ProxyNode:
    pod = next(p for p in resources.pods if p.namespace == pod_ns and p.name == pod_name)
    return ProxyNode.from_pod(pod)


def pure_costs(n: int, objs: list[dict[str, Any]]) -> dict[str, Any]:
    """Typing, building and encoding, without I/O."""
    repeat = 3 if n <= 1000 else 1
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    typed = [from_dict(o) for o in objs]
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    typing_ms, _ = timed(lambda: [from_dict(o) for o in objs], repeat, "typing_ms")
    collect_ms, resources = timed(lambda: MeshResources.from_resources(typed), repeat)
    gateway = node(*GATEWAY_NODE, resources)
    node_proxy = node(*NODE_PROXY, resources)

    def full(proxy: ProxyNode) -> Any:
        """A full build: fresh resources, so no step of an earlier build is reused."""
        return build_snapshot(MeshResources.from_resources(typed), proxy)

    gw_ms, gw_snap = timed(lambda: full(gateway), repeat, "build_gateway")
    np_ms, np_snap = timed(lambda: full(node_proxy), repeat, "build_node")
    # The JSON of Snapshots no one serialised yet (a part keeps its text once made).
    unserialised = iter([full(gateway) for _ in range(repeat)])
    json_ms, text = timed(lambda: next(unserialised).to_json(), repeat, "snapshot_json")
    envoy = envoy_costs(gw_snap, repeat)
    return {
        "objects": len(objs),
        "typing_us_per_object": round(typing_ms * 1000 / len(objs), 1),
        "typing_cpu_us_per_object": round(CPU_MS["typing_ms"] * 1000 / len(objs), 1),
        "typed_bytes_per_object": round(held / len(objs)),
        "collect_ms": round(collect_ms, 2),
        "build_gateway_ms": round(gw_ms, 2),
        "build_gateway_cpu_ms": CPU_MS["build_gateway"],
        "build_node_proxy_ms": round(np_ms, 2),
        "build_node_proxy_cpu_ms": CPU_MS["build_node"],
        "gateway_listeners": len(gw_snap.listeners),
        "node_proxy_listeners": len(np_snap.listeners),
        "snapshot_json_ms": round(json_ms, 2),
        "snapshot_json_cpu_ms": CPU_MS["snapshot_json"],
        "snapshot_json_bytes": len(text),
        **envoy,
    }


def envoy_costs(snapshot: Any, repeat: int) -> dict[str, Any]:
    from tcpmesh.xds import translate

    # Once: a part keeps its translation (control.derived), so a repeat would cost nothing.
    translate_ms, config = timed(lambda: translate(snapshot), 1, "translate")
    out: dict[str, Any] = {
        "xds_translate_ms": round(translate_ms, 2),
        "xds_translate_cpu_ms": CPU_MS["translate"],
    }
    try:
        from tcpmesh.xds.server import to_any
    except ImportError:  # the envoy extra is not installed
        return out
    resources = [r for by_name in config.resources.values() for r in by_name.values()]
    encode_ms, _ = timed(lambda: [to_any(r) for r in resources], repeat, "encode")
    out["xds_encode_ms"] = round(encode_ms, 2)
    out["xds_encode_cpu_ms"] = CPU_MS["encode"]
    out["xds_resources"] = len(resources)
    return out


class TimedPlane(ControlPlane):
    """The control plane, with the CPU of its builds counted (ms, this process)."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.build_cpu_ms = 0.0

    def snapshot(self, node_id: str) -> Any:
        started = time.process_time()
        try:
            return super().snapshot(node_id)
        finally:
            self.build_cpu_ms += (time.process_time() - started) * 1000


class DataPlane:
    """One built-in proxy in a process of its own (``--data-plane``), fed as the API
    server feeds a proxy's worker: one Snapshot JSON per line. It answers each line with
    the version it applied and the CPU its parse and apply took."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.json_cpu_ms = 0.0

    @classmethod
    async def start(cls) -> DataPlane:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--data-plane",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        return cls(process)

    async def follow(self, plane: ControlPlane, node_id: str) -> None:
        """The API server's side of the stream: each new Snapshot's JSON, one line."""
        assert self.process.stdin is not None
        async for snapshot in plane.watch(node_id):
            started = time.process_time()
            line = snapshot.to_json().encode() + b"\n"
            self.json_cpu_ms += (time.process_time() - started) * 1000
            self.process.stdin.write(line)
            await self.process.stdin.drain()

    async def applied(self) -> dict[str, Any]:
        """The next Snapshot this proxy applied: its version, parse and apply CPU."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 600)
        if not line:
            raise RuntimeError(f"the data plane exited ({await self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def serve_as_data_plane() -> None:
    """``--data-plane``: parse and apply each Snapshot line from stdin (as
    ``dataplane.feed`` and the worker do), answer on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _raise_fd_limit(10000 + 1024)
    proxy = Proxy(access_log=lambda record: None)
    try:
        while line := await reader.readline():
            started = time.process_time()
            snapshot = Snapshot.from_json(line)
            parsed = time.process_time()
            proxy.apply(snapshot)
            done = time.process_time()
            answer = {
                "version": snapshot.version,
                "parse_cpu_ms": (parsed - started) * 1000,
                "apply_cpu_ms": (done - parsed) * 1000,
            }
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        await proxy.close()


async def apply_to_effect(n: int, objs: list[dict[str, Any]], flips: int) -> dict[str, Any]:
    """Write → every proxy the apply touches serves the new Snapshot, per flip of one
    VirtualService's weights (its rule is the gateway's and the node proxy's route).

    This process runs the control plane and the API server's JSON for each proxy's
    stream; each proxy runs in a process of its own, as in a mesh (one worker each)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(None, Path(tmp))
        store.apply(objs)
        gc.collect()
        rss_before = _rss_bytes()
        plane = TimedPlane(store)
        started = time.perf_counter()
        await plane.start()
        start_ms = (time.perf_counter() - started) * 1000
        proxies = {node: await DataPlane.start() for node in PROXY_NODES}
        loop = asyncio.get_running_loop()
        followers = [loop.create_task(proxy.follow(plane, node)) for node, proxy in proxies.items()]
        try:
            first = time.perf_counter()
            for proxy in proxies.values():
                await proxy.applied()
            first_ms = (time.perf_counter() - first) * 1000
            # The control plane freezes its heap a second after a bulk load
            # (ControlPlane._freeze); a user's next apply comes later than that.
            await asyncio.sleep(FREEZE_DELAY + 1.0)
            rss_loaded = _rss_bytes()
            flipped = await _flip(n, store, plane, list(proxies.values()), flips)
        finally:
            for task in followers:
                task.cancel()
            await plane.stop()
            for proxy in proxies.values():
                await proxy.stop()
            store.close()
    return {
        "control_plane_rss_bytes_per_object": round((rss_loaded - rss_before) / len(objs)),
        "control_plane_start_ms": round(start_ms, 1),
        "first_snapshot_served_ms": round(first_ms, 1),
        **flipped,
    }


async def _flip(
    n: int, store: Any, plane: TimedPlane, proxies: list[DataPlane], flips: int
) -> dict[str, Any]:
    """Each flip timed from the write until both proxies applied their new Snapshot; CPU
    by phase: the control plane's builds and JSON (this process), each proxy's parse
    and apply (its own), and all of it together."""
    phases: dict[str, list[float]] = {}
    for k in range(flips):
        changed = virtual_service(n // 2, 60 if k % 2 == 0 else 80)
        plane.build_cpu_ms = 0.0
        for proxy in proxies:
            proxy.json_cpu_ms = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        store.apply([changed])
        answers = [await proxy.applied() for proxy in proxies]
        wall = (time.perf_counter() - t0) * 1000
        control = (time.process_time() - c0) * 1000
        spent = {
            "apply_to_effect_ms": wall,
            "control_plane_cpu_ms": control,
            "build_cpu_ms": plane.build_cpu_ms,
            "api_json_cpu_ms": sum(p.json_cpu_ms for p in proxies),
            "dataplane_parse_cpu_ms": sum(a["parse_cpu_ms"] for a in answers),
            "dataplane_apply_cpu_ms": sum(a["apply_cpu_ms"] for a in answers),
        }
        spent["apply_to_effect_cpu_ms"] = (
            control + spent["dataplane_parse_cpu_ms"] + spent["dataplane_apply_cpu_ms"]
        )
        for phase, value in spent.items():
            phases.setdefault(phase, []).append(value)
    out: dict[str, Any] = {"apply_to_effect_ms_max": round(max(phases["apply_to_effect_ms"]), 2)}
    for phase, values in phases.items():
        out.update(_percentiles(phase, values))
    return out


def _percentiles(name: str, values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {f"{name}_p50": round(statistics.median(ordered), 2), f"{name}_p99": round(p99, 2)}


def _raise_fd_limit(need: int) -> None:
    """Two proxies bind N listeners each: raise the open-file limit to fit, or say why not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"open-file limit {soft} < {need} and cannot be raised: {exc}") from None


async def apply_to_envoy(n: int, objs: list[dict[str, Any]], flips: int) -> dict[str, Any]:
    """Write → Envoy ACKed the new Snapshot, per flip: the same control plane, followed by
    the ADS server and a real Envoy gateway (``python -m tcpmesh.xds.gateway``, one worker)
    binding the N listeners. A flip is in effect when Envoy ACKed every step of its push
    (the weights travel in ECDS: one update of one resource per flip)."""
    from tcpmesh.xds import write_xds_address
    from tcpmesh.xds.server import XdsServer

    node_id = "/".join(GATEWAY_NODE)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(None, Path(tmp))
        store.apply(objs)
        plane = ControlPlane(store)
        await plane.start()
        server = XdsServer(plane)
        write_xds_address(Path(tmp), "127.0.0.1", await server.start())
        env = {
            **os.environ,
            "TCPMESH_STATE_DIR": tmp,
            "POD_NAMESPACE": GATEWAY_NODE[0],
            "POD_NAME": GATEWAY_NODE[1],
            "POD_IP": GATEWAY_ADDRESS,
            "TCPMESH_WORKERS": "1",
        }
        log = open(Path(tmp) / "envoy.log", "wb")  # noqa: SIM115 (closed below)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tcpmesh.xds.gateway"],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            return await _flip_envoy(n, plane, server.node_state(node_id), store, flips, gateway)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gateway.pid, signal.SIGTERM)
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
            log.close()
            await server.stop()
            await plane.stop()
            store.close()


async def _applied(plane: ControlPlane, node: Any, old: str, timeout: float) -> None:
    """Until Envoy ACKed the node's current Snapshot, once it is not ``old``."""
    node_id = node.node
    deadline = time.monotonic() + timeout
    while True:
        current = plane.current(node_id)
        if current is not None and current.version != old and node.applied == current.version:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Envoy did not apply a new snapshot in {timeout}s")
        await asyncio.sleep(0.001)


async def _flip_envoy(
    n: int,
    plane: ControlPlane,
    node: Any,
    store: Any,
    flips: int,
    gateway: subprocess.Popen[bytes],
) -> dict[str, Any]:
    started, started_cpu = time.perf_counter(), time.process_time()
    resends = await _first_push(plane, node)
    first_ms = (time.perf_counter() - started) * 1000
    first_cpu_ms = (time.process_time() - started_cpu) * 1000
    envoy_pid = _child_pid(gateway.pid)
    # Envoy started with the stream: its CPU so far is its start and the first push.
    envoy_first_cpu_ms = _cpu_seconds(envoy_pid) * 1000
    await asyncio.sleep(FREEZE_DELAY + 1.0)
    latencies, cpu, envoy_cpu = [], [], []
    for k in range(flips):
        changed = virtual_service(n // 2, 60 if k % 2 == 0 else 80)
        old = node.applied
        t0, c0, e0 = time.perf_counter(), time.process_time(), _cpu_seconds(envoy_pid)
        store.apply([changed])
        await _applied(plane, node, old, 120)
        latencies.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        envoy_cpu.append((_cpu_seconds(envoy_pid) - e0) * 1000)
    latencies.sort()
    return {
        "envoy_first_snapshot_acked_ms": round(first_ms, 1),
        "envoy_first_push_resends": resends,
        "envoy_first_push_server_cpu_ms": round(first_cpu_ms, 1),
        "envoy_first_push_envoy_cpu_ms": round(envoy_first_cpu_ms, 1),
        "envoy_apply_to_ack_ms_p50": round(statistics.median(latencies), 2),
        "envoy_apply_to_ack_ms_p99": round(latencies[min(flips - 1, int(0.99 * flips))], 2),
        "envoy_apply_to_ack_cpu_ms_p50": round(statistics.median(cpu), 2),
        "envoy_apply_to_ack_cpu_ms_p99": round(sorted(cpu)[min(flips - 1, int(0.99 * flips))], 2),
        # The kernel counts a process's CPU in ticks (10 ms): the mean over the flips.
        "envoy_own_cpu_ms_mean": round(statistics.fmean(envoy_cpu), 2),
    }


async def _first_push(plane: ControlPlane, node: Any) -> int:
    """Until Envoy ACKed a whole first push; how often the server sent a type's state
    again because Envoy had not answered it within the ACK timeout (the server does that
    on its own, so a slow first push converges without another change)."""
    await _applied(plane, node, "", FIRST_PUSH_TIMEOUT)
    resends: int = node.resends
    return resends


def _child_pid(pid: int) -> int:
    """The launcher's child (Envoy); the launcher itself when it has none."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes() -> int:
    """This process's resident memory (/proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10,100,1000,10000")
    p.add_argument("--flips", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--envoy", action="store_true", help="also flip through a real Envoy")
    p.add_argument("--envoy-sizes", default="10,100,1000", help="the sizes Envoy runs at")
    p.add_argument(
        "--envoy-only", action="store_true", help="only the Envoy flips (implies --envoy)"
    )
    p.add_argument("--data-plane", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.data_plane:  # one proxy of apply_to_effect, in its own process
        asyncio.run(serve_as_data_plane())
        return 0
    args.envoy = args.envoy or args.envoy_only
    envoy_sizes = {int(x) for x in args.envoy_sizes.split(",")}
    results: dict[str, Any] = {"loadavg": os.getloadavg(), "sizes": {}}
    for n in (int(x) for x in args.sizes.split(",")):
        objs = mesh_objects(n)
        _raise_fd_limit(n + 1024)
        row: dict[str, Any] = {"objects": len(objs)}
        if not args.envoy_only:
            row.update(pure_costs(n, objs))
            row.update(asyncio.run(apply_to_effect(n, objs, args.flips)))
        if args.envoy and (n in envoy_sizes or args.envoy_only):
            row.update(asyncio.run(apply_to_envoy(n, objs, args.flips)))
        results["sizes"][n] = row
        print(f"N={n}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return report.finish(results, args.out)


if __name__ == "__main__":
    sys.exit(main())
