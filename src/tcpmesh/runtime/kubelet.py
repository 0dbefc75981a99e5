"""Kubelet: every Pod object becomes OS processes, one per container, on the pod's IP.

A container that exits is started again with exponential back-off (restartPolicy
Always, or OnFailure after a failure); readiness is a TCP connect to each of its
containerPorts. The pod's status is written back to the store whenever it changes.

Pod processes outlive the mesh (each leads its own session), so after a crash the next
kubelet adopts them, as a restarted kubelet adopts its running containers: a process
that is provably this pod's (:func:`tcpmesh.runtime.process.is_ours`) and runs what its
container would run now keeps running, with its sockets and its open connections; only
processes that no longer match a desired pod are stopped.

A gateway started by an older build of tcpmesh (an upgrade) is handed over rather than
cut: the new gateway starts beside the old one (both bind their ports with SO_REUSEPORT),
and once it listens on every port the old one does, the old one gets SIGUSR1: it stops
accepting, serves its open connections until they end (at most TCPMESH_DRAIN_SECONDS,
an hour by default), and exits. Should the mesh crash during a drain, the draining
gateway is no longer tracked but still ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tcpmesh.registry import FIRST_POD_IP
from tcpmesh.runtime import logs, process, volumes
from tcpmesh.runtime.envvars import links_enabled, service_variables
from tcpmesh.runtime.events import WARNING, EventRecorder, Happening, pod_happenings
from tcpmesh.runtime.images import ImageNotRunnable, builtin_image, container_argv
from tcpmesh.runtime.ipam import allocate_ip, is_pod_ip
from tcpmesh.runtime.launch import (
    BUILD_VARIABLE,
    build_id,
    expand,
    pod_identity,
    pod_variables,
    process_environment,
)
from tcpmesh.runtime.objects import Obj, key_of, meta, now_rfc3339
from tcpmesh.runtime.podsource import source_library, with_pod_source
from tcpmesh.runtime.podstatus import (
    ContainerRecord,
    pod_status,
    previous_containers,
    stopped_by_shutdown,
)
from tcpmesh.runtime.process import TOKEN_VARIABLE, PodProcess
from tcpmesh.runtime.storeapi import StoreLike

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
BACKOFF_RESET_AFTER = 10.0
GRACE_DEFAULT = 30.0
GRACE_CAP = 5.0
PROBE_INTERVAL_UNREADY = 0.5
PROBE_INTERVAL_READY = 2.0
PROBE_TIMEOUT = 1.0
# How long a hand-over waits for the new gateway to listen on every port of the old one.
HAND_OVER_WAIT = 10.0
# Retries of a volume that cannot be set up yet (the kubelet's are 0.5 s doubling to 2 min;
# shorter here, as a local Secret appears within seconds).
MOUNT_RETRY_BASE = 0.5
MOUNT_RETRY_CAP = 8.0


def format_duration(seconds: float) -> str:
    """Go's duration style, as kubelet messages print it: 500ms, 1s, 10s."""
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


async def tcp_ready(host: str, ports: list[int]) -> bool:
    """Whether every port accepts a TCP connection."""
    for port in ports:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return True


def should_run(pod: Mapping[str, Any]) -> bool:
    """Pods that finished for good stay finished; pods stopped with the mesh start again."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") or stopped_by_shutdown(pod)


class PodWorker:
    """The processes of one pod, their restarts, probes and status."""

    def __init__(
        self,
        kubelet: Kubelet,
        pod: Obj,
        pod_ip: str,
        adopted: Mapping[str, PodProcess] | None = None,
    ) -> None:
        self._kubelet = kubelet
        self.pod = pod
        self.pod_ip = pod_ip
        self.namespace, self.name = key_of(pod)
        self.uid = meta(pod).get("uid")
        spec = pod.get("spec") or {}
        self._restart_policy: str = spec.get("restartPolicy") or "Always"
        grace = spec.get("terminationGracePeriodSeconds")
        self._grace = min(GRACE_DEFAULT if grace is None else float(grace), GRACE_CAP)
        status = pod.get("status") or {}
        self._start_time: str = status.get("startTime") or now_rfc3339()
        self._previous_status: Obj = dict(status)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._hand_overs: list[asyncio.Task[None]] = []
        self._pids: dict[str, PodProcess] = {}
        self._adopted = dict(adopted or {})
        # A process of this pod, on any IP (to stop it) and on this pod's IP (to adopt it).
        self._pod_identity = pod_identity(self.namespace, self.name, kubelet.state_dir)
        self._volumes: list[Mapping[str, Any]] = list(spec.get("volumes") or [])
        self._mounted = asyncio.Event()
        self._volumes_changed = asyncio.Event()
        self._mount_error = ""
        self._identity = {**self._pod_identity, "POD_IP": pod_ip}
        before = previous_containers(pod)
        self.containers = [
            (self._record(c, before.get(c["name"])), c) for c in spec.get("containers") or []
        ]

    def _record(self, spec: Mapping[str, Any], before: Mapping[str, Any] | None) -> ContainerRecord:
        name, image = spec["name"], str(spec.get("image", ""))
        adopted = self._adopted.get(name)
        if adopted is not None:
            return ContainerRecord.adopt(name, image, before, adopted.pid)
        return ContainerRecord.resume(name, image, before)

    def start(self) -> None:
        self.publish()
        if self._volumes:
            self._tasks.append(asyncio.create_task(self._mount(), name=f"volumes {self.name}"))
        else:
            self._mounted.set()
        self._tasks += [
            asyncio.create_task(self._run_container(record, spec), name=f"pod {self.name}")
            for record, spec in self.containers
        ]

    async def stop(self, *, shutdown: bool) -> None:
        """Stop every process; ``shutdown`` records the mesh going down in the status."""
        self._stop.set()
        await asyncio.gather(*self._tasks, *self._hand_overs, return_exceptions=True)
        process.write_pid_file(self._kubelet.pid_path(self.namespace, self.name), {})
        if shutdown:
            self.publish(shutdown=True)

    def status(self, *, shutdown: bool = False) -> Obj:
        return pod_status(
            [record for record, _ in self.containers],
            restart_policy=self._restart_policy,
            pod_ip=self.pod_ip,
            host_ip=self._kubelet.node_address,
            start_time=self._start_time,
            previous=self._previous_status,
            shutdown=shutdown,
        )

    def publish(self, *, shutdown: bool = False) -> None:
        """Write the status if it changed and the pod (this very one) still exists."""
        status = self.status(shutdown=shutdown)
        if status == self._previous_status:
            return
        store = self._kubelet.store
        try:
            current = store.get("Pod", self.namespace, self.name)
            if current is None or meta(current).get("uid") != self.uid:
                return
            store.update_status("Pod", self.namespace, self.name, status)
        except Exception:
            log.exception("pod %s/%s: status update failed", self.namespace, self.name)
            return
        for happening in pod_happenings(
            self.name, self.namespace, str(self.uid), self._previous_status, status
        ):
            self._kubelet.events.record(current, happening)
        self._previous_status = status
        self._kubelet.changed()

    def _set_up_volumes(self) -> None:
        """Create or refresh every volume; MountError names the first that fails."""
        for volume in self._volumes:
            try:
                volumes.set_up(
                    self._kubelet.state_dir,
                    str(self.uid),
                    self.namespace,
                    volume,
                    self._kubelet.store,
                )
            except (volumes.MountError, OSError) as exc:
                raise volumes.MountError(
                    f'MountVolume.SetUp failed for volume "{volume.get("name")}" : {exc}'
                ) from exc

    def _mount_failed(self, message: str) -> None:
        """A FailedMount Event, once per distinct reason (the recorder counts repeats)."""
        if message != self._mount_error:
            self._mount_error = message
            self._kubelet.events.record(self.pod, Happening(WARNING, "FailedMount", message))

    async def _mount(self) -> None:
        """Set up the volumes before any container starts, retrying while they cannot be."""
        delay = MOUNT_RETRY_BASE
        while not self._stop.is_set():
            self._volumes_changed.clear()
            try:
                self._set_up_volumes()
            except volumes.MountError as exc:
                self._mount_failed(str(exc))
            else:
                self._mount_error = ""
                self._mounted.set()
                return
            changed = asyncio.ensure_future(self._volumes_changed.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({changed, stop}, timeout=delay)
            changed.cancel()
            stop.cancel()
            delay = min(delay * 2, MOUNT_RETRY_CAP)

    def refresh_volumes(self) -> None:
        """The Secrets or ConfigMaps may have changed: rewrite what differs."""
        if not self._volumes:
            return
        if not self._mounted.is_set():
            self._volumes_changed.set()
            return
        try:
            self._set_up_volumes()
        except volumes.MountError as exc:
            # As the kubelet: the files stay as they were, and an Event says why.
            self._mount_failed(str(exc))
        else:
            self._mount_error = ""

    async def _wait_mounted(self) -> bool:
        mounted = asyncio.ensure_future(self._mounted.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({mounted, stop}, return_when=asyncio.FIRST_COMPLETED)
        mounted.cancel()
        stop.cancel()
        return self._mounted.is_set() and not self._stop.is_set()

    async def _run_container(self, record: ContainerRecord, spec: Mapping[str, Any]) -> None:
        adopted = self._adopted.pop(record.name, None)
        # An adopted process runs already, on the files an earlier mesh set up.
        if adopted is None and not await self._wait_mounted():
            return
        try:
            argv = container_argv(spec)
        except ImageNotRunnable as exc:
            # Like an image that cannot be pulled: the pod waits, nothing crashes.
            record.waiting("ErrImagePull", str(exc))
            self.publish()
            return
        host_ip = self._kubelet.node_address
        variables = pod_variables(
            self.pod, spec, self.pod_ip, host_ip, self._kubelet.state_dir, self._service_links()
        )
        mounts = volumes.container_mounts(self._kubelet.state_dir, str(self.uid), self.pod, spec)
        argv = [volumes.map_path(expand(arg, variables), mounts) for arg in argv]
        variables = {k: volumes.map_path(v, mounts) for k, v in variables.items()}
        cwd = spec.get("workingDir")
        cwd = volumes.map_path(str(cwd), mounts) if cwd else None
        env = process_environment(variables)
        if not (self.pod.get("spec") or {}).get("hostNetwork"):
            env = with_pod_source(env, self.pod_ip, source_library(self._kubelet.state_dir))
        ports = [int(p["containerPort"]) for p in spec.get("ports") or [] if "containerPort" in p]
        backoff = BACKOFF_BASE
        first = True
        if adopted is not None:
            await self._resume(record, spec, adopted, argv, ports)
            first = False  # whatever runs next is a restart
        while not self._stop.is_set():
            if not first:
                record.restart_count += 1
            first = False
            started = time.monotonic()
            await self._run_once(record, argv, env, cwd, ports)
            if self._stop.is_set():
                return
            exit_code = (record.state.get("terminated") or {}).get("exitCode")
            if self._restart_policy == "Never" or (
                self._restart_policy == "OnFailure" and exit_code == 0
            ):
                return
            if time.monotonic() - started >= BACKOFF_RESET_AFTER:
                backoff = BACKOFF_BASE
            record.waiting(
                "CrashLoopBackOff",
                f"back-off {format_duration(backoff)} restarting failed container={record.name} "
                f"pod={self.name}_{self.namespace}({self.uid})",
            )
            self.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_CAP)

    def _service_links(self) -> dict[str, str]:
        """The Service variables of the pod's namespace now (none if the pod opts out)."""
        if not links_enabled(self.pod):
            return {}
        try:
            return service_variables(self._kubelet.store.list("Service", self.namespace))
        except Exception:
            log.exception("pod %s/%s: cannot read the Services", self.namespace, self.name)
            return {}

    async def _run_once(
        self,
        record: ContainerRecord,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str | None,
        ports: list[int],
    ) -> None:
        """Run the container's process until it exits or the pod is stopped."""
        log_path = self._kubelet.log_path(self.namespace, self.name)
        token = process.new_token()
        try:
            proc = await process.spawn(argv, {**env, TOKEN_VARIABLE: token}, cwd, log_path)
        except OSError as exc:
            record.terminated(128, "StartError", f"failed to start {argv[0]!r}: {exc}")
            self.publish()
            return
        record.running(proc.pid)
        record.ready = not ports
        ticks = process.start_ticks(proc.pid) or 0
        self._pids[record.name] = PodProcess(proc.pid, tuple(argv), ticks, token, self.uid or "")
        process.write_pid_file(self._kubelet.pid_path(self.namespace, self.name), self._pids)
        self.publish()
        waiter = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        probe = asyncio.ensure_future(self._probe(record, ports)) if ports else None
        try:
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if proc.returncode is None:
                await process.terminate(proc, self._grace)
        finally:
            for task in (waiter, stop, probe):
                if task is not None:
                    task.cancel()
            # Like a container's cgroup: what the process started goes with it (and if
            # this task was cancelled, the process itself goes too).
            process.signal_group(proc.pid, signal.SIGKILL)
        self._pids.pop(record.name, None)
        process.write_pid_file(self._kubelet.pid_path(self.namespace, self.name), self._pids)
        record.terminated(proc.returncode)
        self.publish()

    async def _resume(
        self,
        record: ContainerRecord,
        spec: Mapping[str, Any],
        adopted: PodProcess,
        argv: list[str],
        ports: list[int],
    ) -> None:
        """Take over the process an earlier mesh left running for this container."""
        if adopted.argv != tuple(argv) or not process.is_ours(adopted, self._identity):
            # What the container runs has changed (its command, or the pod's IP): the old
            # process goes before the new one starts.
            await process.stop_adopted(adopted, self._pod_identity, self._grace)
        elif _upgraded(spec, adopted):
            self._hand_overs.append(asyncio.create_task(self._hand_over(record.name, adopted)))
        else:
            await self._run_adopted(record, adopted, ports)

    async def _run_adopted(
        self, record: ContainerRecord, adopted: PodProcess, ports: list[int]
    ) -> None:
        """Follow a process an earlier mesh started until it exits or the pod is stopped."""
        log.info(
            "pod %s/%s: adopted %s (pid %d)", self.namespace, self.name, record.name, adopted.pid
        )
        self._pids[record.name] = adopted
        process.write_pid_file(self._kubelet.pid_path(self.namespace, self.name), self._pids)
        self.publish()
        exited = asyncio.ensure_future(process.wait_exit(adopted.pid))
        stop = asyncio.ensure_future(self._stop.wait())
        probe = asyncio.ensure_future(self._probe(record, ports)) if ports else None
        try:
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await process.stop_adopted(adopted, self._identity, self._grace)
        finally:
            for task in (exited, stop, probe):
                if task is not None:
                    task.cancel()
        self._pids.pop(record.name, None)
        process.write_pid_file(self._kubelet.pid_path(self.namespace, self.name), self._pids)
        # Not our child: its exit status went to whoever reaped it.
        record.terminated(
            None, "ContainerStatusUnknown", "adopted from an earlier mesh; exit status unknown"
        )
        self.publish()

    async def _hand_over(self, container: str, old: PodProcess) -> None:
        """Drain ``old`` once this container's new process listens on all its ports."""
        wanted = process.listening_ports(old.pid)
        log.info("pod %s/%s: a new build replaces pid %d", self.namespace, self.name, old.pid)
        deadline = asyncio.get_running_loop().time() + HAND_OVER_WAIT
        try:
            while not self._stop.is_set():
                new = self._pids.get(container)
                serving = set() if new is None else process.listening_ports(new.pid)
                late = asyncio.get_running_loop().time() > deadline
                # A port the new build cannot share (not SO_REUSEPORT) must not keep the
                # old one running for ever: after a while, serving anything is enough.
                if wanted <= serving or (late and serving):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), PROBE_INTERVAL_UNREADY)
            else:
                return
            log.info("pod %s/%s: draining pid %d", self.namespace, self.name, old.pid)
            process.signal_adopted(old, self._pod_identity, signal.SIGUSR1)
            stop = asyncio.ensure_future(self._stop.wait())
            exited = asyncio.ensure_future(process.wait_exit(old.pid))
            await asyncio.wait({stop, exited}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stop, exited):
                task.cancel()
        finally:
            # The pod is stopping, or the old process is gone already (then a no-op).
            await process.stop_adopted(old, self._pod_identity, self._grace)

    async def _probe(self, record: ContainerRecord, ports: list[int]) -> None:
        while True:
            ready = await tcp_ready(self.pod_ip, ports)
            if ready != record.ready:
                record.ready = ready
                self.publish()
            await asyncio.sleep(PROBE_INTERVAL_READY if ready else PROBE_INTERVAL_UNREADY)


def _upgraded(spec: Mapping[str, Any], adopted: PodProcess) -> bool:
    """Whether an adopted process is a gateway of an older build that can hand over."""
    image = builtin_image(str(spec.get("image") or ""))
    if image is None or not image.drains:
        return False
    return process.environment_value(adopted.pid, BUILD_VARIABLE) != build_id()


class Kubelet:
    """Keeps one `PodWorker` per Pod object in the store."""

    def __init__(
        self,
        store: StoreLike,
        state_dir: Path,
        node_address: str,
        on_change: Callable[[], None] = lambda: None,
        first_pod_ip: str = FIRST_POD_IP,
    ) -> None:
        self.store = store
        self.events = EventRecorder(store, "kubelet", node_address)
        self.first_pod_ip = first_pod_ip
        self.state_dir = state_dir
        self.node_address = node_address
        self.changed = on_change
        self.workers: dict[tuple[str, str], PodWorker] = {}
        # Processes of a crashed mesh that may be adopted, until the first sync decides.
        self._leftovers: dict[tuple[str, str], dict[str, PodProcess]] = {}
        # Pods being stopped keep their IP reserved until their processes are gone.
        self._stopping: dict[PodWorker, asyncio.Task[None]] = {}
        self._unclaimed: set[asyncio.Task[None]] = set()

    def log_path(self, namespace: str, name: str) -> Path:
        return self.state_dir / "pods" / namespace / f"{name}.log"

    def pid_path(self, namespace: str, name: str) -> Path:
        return self.state_dir / "pods" / namespace / f"{name}.pid"

    async def clean_up(self, pods: list[Obj]) -> None:
        """Find the processes a crashed mesh left running; drop logs of pods now gone.

        Processes of pods that still exist (same uid) and should run are kept for the
        next :meth:`sync` to adopt; the others are stopped now.
        """
        volumes.remove_all_but(self.state_dir, {str(meta(p).get("uid")) for p in pods})
        pods_dir = self.state_dir / "pods"
        if not pods_dir.is_dir():
            return
        by_key = {key_of(p): p for p in pods}
        stops = []
        for pid_file in pods_dir.glob("*/*.pid"):
            key = self._file_key(pid_file)
            identity = pod_identity(*key, self.state_dir)
            ours = {
                name: proc
                for name, proc in process.read_pid_file(pid_file).items()
                if process.is_ours(proc, identity)
            }
            pod = by_key.get(key)
            if pod is not None and should_run(pod):
                uid = meta(pod).get("uid") or ""
                kept = {n: p for n, p in ours.items() if p.pod_uid == uid}
                if kept:
                    self._leftovers[key] = kept
                ours = {n: p for n, p in ours.items() if n not in kept}
            stops += [process.stop_adopted(p, identity, GRACE_CAP) for p in ours.values()]
            stops.append(process.kill_legacy_leftovers(pid_file, identity, GRACE_CAP))
        await asyncio.gather(*stops)
        for pid_file in pods_dir.glob("*/*.pid"):
            if self._file_key(pid_file) not in self._leftovers:
                pid_file.unlink(missing_ok=True)
        known = set(by_key)
        for log_file in pods_dir.glob("*/*.log"):
            if self._file_key(log_file) not in known:
                logs.remove(log_file)

    @staticmethod
    def _file_key(path: Path) -> tuple[str, str]:
        return path.parent.name, path.stem

    def used_ips(self, pods: list[Obj]) -> set[str]:
        used = {w.pod_ip for w in (*self.workers.values(), *self._stopping)}
        used.update(str((p.get("status") or {}).get("podIP") or "") for p in pods)
        used.add(self.node_address)
        return used

    def _pod_ip(self, pod: Obj, pods: list[Obj]) -> str:
        """The pod's IP: the one it had (a restarted node keeps them), else a free one."""
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self.node_address
        kept = str((pod.get("status") or {}).get("podIP") or "")
        taken = self.used_ips([p for p in pods if key_of(p) != key_of(pod)])
        if is_pod_ip(kept, self.first_pod_ip) and kept not in taken:
            return kept
        ports = [
            int(p["containerPort"])
            for c in (pod.get("spec") or {}).get("containers") or []
            for p in c.get("ports") or []
            if "containerPort" in p and p.get("protocol", "TCP") == "TCP"
        ]
        return allocate_ip(taken, self.first_pod_ip, ports)

    def sync(self, pods: list[Obj]) -> None:
        """Start workers for new pods, stop workers whose pod is gone or replaced."""
        current = {key_of(p): p for p in pods}
        for key, worker in list(self.workers.items()):
            pod = current.get(key)
            if pod is None or meta(pod).get("uid") != worker.uid:
                del self.workers[key]
                self._stop_worker(worker, remove_files=pod is None)
        for key, pod in current.items():
            if key in self.workers:
                self.workers[key].refresh_volumes()
                continue
            if not should_run(pod):
                continue
            if any(key_of(w.pod) == key for w in self._stopping):
                continue  # a pod re-created under the same name waits for the old one
            try:
                adopted = self._leftovers.pop(key, {})
                worker = PodWorker(self, pod, self._pod_ip(pod, pods), adopted)
                self.workers[key] = worker
                worker.start()
                log.info("pod %s/%s: started on %s", *key, worker.pod_ip)
            except Exception:
                log.exception("pod %s/%s: cannot start", *key)
        self._stop_unclaimed()

    def _stop_unclaimed(self) -> None:
        """Leftovers no worker took (their pod went, or will not run) are stopped."""
        leftovers, self._leftovers = self._leftovers, {}
        for (namespace, name), processes in leftovers.items():
            identity = pod_identity(namespace, name, self.state_dir)
            for proc in processes.values():
                task = asyncio.create_task(process.stop_adopted(proc, identity, GRACE_CAP))
                self._unclaimed.add(task)
                task.add_done_callback(self._unclaimed.discard)

    def _stop_worker(self, worker: PodWorker, *, remove_files: bool) -> None:
        async def stop() -> None:
            try:
                await worker.stop(shutdown=False)
                if remove_files:
                    logs.remove(self.log_path(worker.namespace, worker.name))
                # Gone or replaced by a pod of another uid: its volumes go.
                volumes.remove(self.state_dir, str(worker.uid))
            finally:
                self._stopping.pop(worker, None)
                log.info("pod %s/%s: stopped", worker.namespace, worker.name)
                self.changed()

        self._stopping[worker] = asyncio.create_task(stop())

    async def shutdown(self) -> None:
        """Stop every pod process; pods stay in the store, marked as stopped with the node."""
        workers, self.workers = list(self.workers.values()), {}
        self._stop_unclaimed()
        await asyncio.gather(
            *(w.stop(shutdown=True) for w in workers),
            *self._stopping.values(),
            *self._unclaimed,
            return_exceptions=True,
        )
