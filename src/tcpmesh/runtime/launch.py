"""What a container process gets besides its program: environment and $(VAR) expansion.

Every pod process sees POD_NAME, POD_NAMESPACE, POD_IP and TCPMESH_STATE_DIR, the
Service variables of its namespace, then the container's own ``env`` (literal values and
the common ``fieldRef`` paths), on top of the mesh's own environment so that PATH and the
Python installation keep working.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tcpmesh

log = logging.getLogger(__name__)

_REFERENCE = re.compile(r"\$\$|\$\(([^()]*)\)")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1), match.group(0))

    return _REFERENCE.sub(substitute, text)


def field_ref(path: str, pod: Mapping[str, Any], pod_ip: str, host_ip: str) -> str | None:
    """The value of a downward-API ``fieldRef``, or None for a path tcpmesh does not know."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace") or "default",
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName") or host_ip,
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    if match := _SUBSCRIPT.match(path):
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    return None


def pod_identity(namespace: str, name: str, state_dir: Path) -> dict[str, str]:
    """Variables that only the processes of this very pod have, across meshes."""
    return {"POD_NAME": name, "POD_NAMESPACE": namespace, "TCPMESH_STATE_DIR": str(state_dir)}


def pod_variables(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    host_ip: str,
    state_dir: Path,
    services: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables a container defines: tcpmesh's, the Services' (``services``, see
    :mod:`tcpmesh.runtime.envvars`), then the container's ``env`` in order, which wins."""
    metadata = pod.get("metadata") or {}
    pod_name = str(metadata.get("name", ""))
    variables = pod_identity(str(metadata.get("namespace") or "default"), pod_name, state_dir)
    variables["POD_IP"] = pod_ip
    variables.update(services or {})
    for var in container.get("env") or []:
        name = var["name"]
        if var.get("value") is not None:
            variables[name] = expand(str(var["value"]), variables)
        elif ref := (var.get("valueFrom") or {}).get("fieldRef"):
            value = field_ref(str(ref.get("fieldPath", "")), pod, pod_ip, host_ip)
            if value is None:
                log.warning("pod %s: env %s: fieldRef %s not supported", pod_name, name, ref)
            else:
                variables[name] = value
        elif var.get("valueFrom"):
            log.warning("pod %s: env %s: only value and fieldRef are supported", pod_name, name)
        else:
            variables[name] = ""
    return variables


BUILD_VARIABLE = "TCPMESH_BUILD"


@functools.cache
def build_id() -> str:
    """An id that changes whenever tcpmesh's code does (an upgrade, an edited checkout).

    A gateway started by an older build is replaced by a draining hand-over when a newer
    mesh adopts it. ``TCPMESH_BUILD`` in the mesh's own environment sets it instead (for
    packagers with their own version scheme, and for tests).
    """
    given = os.environ.get(BUILD_VARIABLE, "").strip()
    if given:
        return given
    root = Path(tcpmesh.__file__).parent
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def process_environment(variables: Mapping[str, str]) -> dict[str, str]:
    # Unbuffered Python output makes a pod's log follow what it does.
    return {**os.environ, "PYTHONUNBUFFERED": "1", BUILD_VARIABLE: build_id(), **variables}
