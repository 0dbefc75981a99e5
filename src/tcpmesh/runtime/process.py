"""OS processes of pods: start, stop, and clean up what a crashed mesh left behind.

Each container process leads its own session (so its process group id is its pid): a
signal to the group reaches the children it started, and a Ctrl-C meant for the mesh
does not reach the pods. The pid file of a pod records, per container, the pid and the
argv, so a later mesh can recognise its leftovers and touch nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | None, log_path: Path
) -> asyncio.subprocess.Process:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )


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


def write_pid_file(path: Path, processes: Mapping[str, tuple[int, Sequence[str]]]) -> None:
    """Record ``{container: (pid, argv)}``; an empty mapping removes the file."""
    if not processes:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {name: {"pid": pid, "argv": list(argv)} for name, (pid, argv) in processes.items()}
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _proc_file(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    stat = _proc_file(pid, "stat")
    # The state letter follows the parenthesised command name; zombies count as gone.
    return stat is not None and stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


def is_our_process(pid: int, argv: Sequence[str], identity: Mapping[str, str]) -> bool:
    """Whether ``pid`` runs ``argv`` with the environment entries ``identity``."""
    cmdline = _proc_file(pid, "cmdline")
    environ = _proc_file(pid, "environ")
    if cmdline is None or environ is None or not _alive(pid):
        return False
    if cmdline.rstrip(b"\0").split(b"\0") != [os.fsencode(a) for a in argv]:
        return False
    entries = set(environ.split(b"\0"))
    return all(os.fsencode(f"{k}={v}") in entries for k, v in identity.items())


async def kill_leftovers(pid_file: Path, identity: Mapping[str, str], grace: float) -> int:
    """Stop the processes a pid file names that are still ours; return how many there were.

    ``identity`` are environment entries only a process of this very pod has (its name,
    namespace and state directory), so a reused pid is never mistaken for a pod.
    """
    try:
        data = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return 0
    ours = {
        int(entry["pid"]): list(entry["argv"])
        for entry in data.values()
        if isinstance(entry, dict) and is_our_process(int(entry["pid"]), entry["argv"], identity)
    }
    for pid in ours:
        log.warning("stopping leftover pod process %d (from %s)", pid, pid_file)
        _signal_leftover(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while any(_alive(pid) for pid in ours) and loop.time() < deadline:
        await asyncio.sleep(POLL_INTERVAL)
    for pid, argv in ours.items():
        # Checked again: after the wait the pid may belong to someone else.
        if is_our_process(pid, argv, identity):
            _signal_leftover(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return len(ours)


def _signal_leftover(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
