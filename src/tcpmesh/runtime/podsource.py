"""Pods connect from their own IP: the node proxy tells them apart by source address.

Linux gives a connection to any 127.x address the source 127.0.0.1, whatever address the
process's pod has, so every pod would look alike to the node proxy and Istio's
``sourceLabels``/``sourceNamespace`` rules could not work. The kubelet therefore starts
every pod process that is not on the host's network with a small ``LD_PRELOAD`` library
(``podsource.c``) that binds an unbound TCP socket to the pod's IP just before it
connects to a loopback address. It is compiled once per state directory and source
version with the system's C compiler; without one the pods keep 127.0.0.1, the mesh
works, and only routes by source match no pod (the kubelet says so once in its log).
Statically linked programs (which do not use the C library's ``connect``) keep the
kernel's choice too.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_IP_VARIABLE = "TCPMESH_POD_SOURCE_IP"
COMPILE_TIMEOUT = 60.0


def _source() -> bytes:
    return resources.files("tcpmesh.runtime").joinpath("podsource.c").read_bytes()


@functools.cache
def source_library(state_dir: Path) -> Path | None:
    """The compiled library in ``state_dir/lib``, built on first use; None without a
    C compiler (logged once)."""
    code = _source()
    target = state_dir / "lib" / f"podsource-{hashlib.sha256(code).hexdigest()[:12]}.so"
    if target.is_file():
        return target
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler: pods connect from 127.0.0.1, so no route by source fits them")
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    command = [compiler, "-shared", "-fPIC", "-O2", "-x", "c", "-", "-o", str(partial), "-ldl"]
    try:
        subprocess.run(
            command, input=code, capture_output=True, check=True, timeout=COMPILE_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log.warning(
            "building %s failed (%s %s): pods connect from 127.0.0.1",
            target,
            exc,
            detail.decode(errors="replace").strip(),
        )
        partial.unlink(missing_ok=True)
        return None
    partial.replace(target)
    return target


def with_pod_source(env: Mapping[str, str], pod_ip: str, library: Path | None) -> dict[str, str]:
    """``env`` for a pod process that should connect from ``pod_ip``."""
    out = dict(env)
    if library is None:
        return out
    preload = out.get("LD_PRELOAD", "").strip()
    out["LD_PRELOAD"] = f"{library} {preload}".strip()
    out[SOURCE_IP_VARIABLE] = pod_ip
    return out
