"""OS processes of pods: start, stop, and adopt what a crashed mesh left running.

Each container process leads its own session (so its process group id is its pid): a
signal to the group reaches the children it started, and a Ctrl-C meant for the mesh
does not reach the pods, nor does the mesh's death. The pid file of a pod records, per
container, what identifies the process (:class:`PodProcess`), so a later mesh can adopt
its processes, as a restarted kubelet adopts its running containers, and touch nothing
else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpmesh.runtime import logs

log = logging.getLogger(__name__)

# The environment variable holding a container process's token (see PodProcess).
TOKEN_VARIABLE = "TCPMESH_POD_TOKEN"


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | None, log_path: Path
) -> asyncio.subprocess.Process:
    """Start ``argv`` in a new session, stdout and stderr through its log writer.

    The writer (:mod:`tcpmesh.runtime.logs`) leads a session of its own, so a signal to
    the container's group leaves it to take the container's last words; it ends when
    the pipe closes.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    try:
        writer = await asyncio.create_subprocess_exec(
            *logs.writer_argv(log_path),
            stdin=read_end,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        _reap(writer)
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
        os.close(write_end)


_writers: set[asyncio.Task[int]] = set()


def _reap(writer: asyncio.subprocess.Process) -> None:
    """Collect the writer's exit in the background, so it leaves no zombie behind."""
    task = asyncio.ensure_future(writer.wait())
    _writers.add(task)
    task.add_done_callback(_writers.discard)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads; quiet when it is gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def terminate(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the group, SIGKILL it after ``grace`` seconds; return once the leader exited."""
    signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), grace)
    except TimeoutError:
        signal_group(process.pid, signal.SIGKILL)
        await process.wait()


@dataclass(frozen=True)
class PodProcess:
    """What identifies a container's process across meshes, as its pid file records it.

    A pid alone can be reused; with the kernel's start time of the process, its argv
    and a random token only its environment holds (``/proc/PID/environ`` is readable by
    its owner alone), a later mesh adopts exactly the processes it started and nothing
    else.
    """

    pid: int
    argv: tuple[str, ...]
    start_ticks: int
    token: str
    pod_uid: str

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "argv": list(self.argv),
            "startTicks": self.start_ticks,
            "token": self.token,
            "podUID": self.pod_uid,
        }

    @classmethod
    def from_json(cls, data: Any) -> PodProcess | None:
        try:
            return cls(
                pid=int(data["pid"]),
                argv=tuple(str(a) for a in data["argv"]),
                start_ticks=int(data["startTicks"]),
                token=str(data["token"]),
                pod_uid=str(data.get("podUID") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None


def new_token() -> str:
    return secrets.token_hex(16)


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (``/proc/PID/stat`` field 22)."""
    stat = _proc_file(pid, "stat")
    if stat is None:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def write_pid_file(path: Path, processes: Mapping[str, PodProcess]) -> None:
    """Record ``{container: process}`` (mode 0600); an empty mapping removes the file."""
    if not processes:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {name: process.to_json() for name, process in processes.items()}
    tmp = path.with_suffix(".pid.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    tmp.replace(path)


def read_pid_file(path: Path) -> dict[str, PodProcess]:
    """The processes a pid file records; entries that cannot be read are left out."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    entries = {name: PodProcess.from_json(entry) for name, entry in data.items()}
    return {name: entry for name, entry in entries.items() if entry is not None}


def _proc_file(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    stat = _proc_file(pid, "stat")
    # The state letter follows the parenthesised command name; zombies count as gone.
    return stat is not None and stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


def is_ours(process: PodProcess, identity: Mapping[str, str]) -> bool:
    """Whether ``process`` still runs as recorded, with the environment ``identity``."""
    pid = process.pid
    if not _alive(pid) or start_ticks(pid) != process.start_ticks:
        return False
    cmdline = _proc_file(pid, "cmdline")
    environ = _proc_file(pid, "environ")
    if cmdline is None or environ is None:
        return False
    if cmdline.rstrip(b"\0").split(b"\0") != [os.fsencode(a) for a in process.argv]:
        return False
    entries = set(environ.split(b"\0"))
    wanted = {**identity, TOKEN_VARIABLE: process.token}
    return all(os.fsencode(f"{k}={v}") in entries for k, v in wanted.items())


async def wait_exit(pid: int) -> None:
    """Return once ``pid`` (not necessarily our child) has exited.

    A pidfd becomes readable when its process exits, so waiting costs no polling; the
    exit status of a process we did not start is not ours to collect.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, on_exit)
    try:
        if _alive(pid):
            await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def stop_adopted(process: PodProcess, identity: Mapping[str, str], grace: float) -> None:
    """SIGTERM an adopted process's group, SIGKILL it after ``grace`` seconds."""
    if not is_ours(process, identity):
        return
    log.info("stopping pod process %d (%s)", process.pid, " ".join(process.argv))
    _signal_leftover(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wait_exit(process.pid), grace)
    # Checked again: after the wait the pid may belong to someone else.
    if is_ours(process, identity):
        _signal_leftover(process.pid, signal.SIGKILL)
        await wait_exit(process.pid)


def _is_legacy_process(pid: int, argv: Sequence[str], identity: Mapping[str, str]) -> bool:
    cmdline = _proc_file(pid, "cmdline")
    environ = _proc_file(pid, "environ")
    if cmdline is None or environ is None or not _alive(pid):
        return False
    if cmdline.rstrip(b"\0").split(b"\0") != [os.fsencode(a) for a in argv]:
        return False
    entries = set(environ.split(b"\0"))
    return all(os.fsencode(f"{k}={v}") in entries for k, v in identity.items())


async def kill_legacy_leftovers(pid_file: Path, identity: Mapping[str, str], grace: float) -> None:
    """Stop processes a pid file of an older tcpmesh (pid and argv, no token) names.

    Such a process cannot be proven ours beyond its argv and environment, so it is
    stopped as before rather than adopted.
    """
    try:
        data = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict):
        return
    ours = {
        int(entry["pid"]): list(entry.get("argv") or [])
        for entry in data.values()
        if isinstance(entry, dict) and "token" not in entry and "pid" in entry
    }
    ours = {pid: argv for pid, argv in ours.items() if _is_legacy_process(pid, argv, identity)}
    for pid in ours:
        log.warning("stopping leftover pod process %d (from %s)", pid, pid_file)
        _signal_leftover(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(wait_exit(pid) for pid in ours)), grace)
    for pid, argv in ours.items():
        # Checked again: after the wait the pid may belong to someone else.
        if _is_legacy_process(pid, argv, identity):
            _signal_leftover(pid, signal.SIGKILL)


def environment_value(pid: int, name: str) -> str | None:
    """One variable of the environment ``pid`` started with."""
    environ = _proc_file(pid, "environ")
    if environ is None:
        return None
    prefix = os.fsencode(f"{name}=")
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return os.fsdecode(entry[len(prefix) :])
    return None


def signal_adopted(process: PodProcess, identity: Mapping[str, str], sig: signal.Signals) -> None:
    """Signal an adopted process's group, if it is still that process."""
    if is_ours(process, identity):
        _signal_leftover(process.pid, sig)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports that ``pid`` and its descendants listen on (read from /proc).

    With SO_REUSEPORT an old and a new gateway listen on the same ports, so connecting
    tells them apart not; their sockets do.
    """
    inodes: set[bytes] = set()
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{member}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{member}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1].encode())
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        text = _proc_file(pid, f"net/{table}") or b""
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == b"0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(b":", 1)[1], 16))
    return ports


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(child) for child in task.read_text().split()]
    return found


def _signal_leftover(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
