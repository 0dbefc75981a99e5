"""Pod volumes, as the kubelet sets them up: secret, configMap, emptyDir and hostPath.

Where the files are. Each pod has a directory of its own, named by its uid as the
kubelet names it (``<state>/kubelet/pods/<uid>/volumes/kubernetes.io~secret/<volume>``;
``kubernetes.io~configmap``, ``kubernetes.io~empty-dir``), removed with the pod.
Secret and configMap volumes are written the way the kubelet's AtomicWriter writes
them: the files go into a fresh hidden directory ``..<timestamp>``, the symlink
``..data`` is swapped to it with one rename, and each visible name is a symlink through
``..data`` (``crt -> ..data/crt``), so a reader sees the old set of files or the new set,
never a mix. The kubelet rewrites them when the Secret or ConfigMap changes: here on
every runtime pass, which the store's watch starts at once and which runs every few
seconds regardless (the bound on the delay). A subPath mount of such a volume is a copy
taken when the container starts (the kubelet bind-mounts it: it gets no updates either).

How a process finds them. A pod here is a process on the host, with no root of its own
to mount into, so the kubelet maps paths instead: in a container's ``command``,
``args``, ``env`` values and ``workingDir`` (after ``$(VAR)`` expansion), a value that
is a volumeMount's ``mountPath`` or lies below it, whole or after the ``=`` of a
``--flag=value``, is replaced by the real directory (the longest mountPath wins).
``TLS_SERVER_CERT=/etc/secret-volume/crt`` with the volume mounted at
``/etc/secret-volume`` becomes ``.../kubernetes.io~secret/secret-volume/crt``. A path
written into a program's own code or its config files is not seen and not mapped.
hostPath volumes map to the host path itself. Mounts are always read-only in effect
for secret and configMap (as in Kubernetes); ``readOnly`` is not enforced otherwise.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpmesh.runtime.storeapi import StoreLike

DATA_LINK = "..data"
DEFAULT_MODE = 0o644
PLUGINS = {
    "secret": "kubernetes.io~secret",
    "configMap": "kubernetes.io~configmap",
    "emptyDir": "kubernetes.io~empty-dir",
}


class MountError(Exception):
    """A volume cannot be set up now; the message is the kubelet's reason."""


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int


Payload = dict[str, File]  # relative path -> content


@dataclass(frozen=True)
class Mount:
    """One volumeMount of a container: the path it asks for and the real one."""

    container_path: str
    host_path: str


def pod_dir(state_dir: Path, uid: str) -> Path:
    return state_dir / "kubelet" / "pods" / uid


def volume_path(state_dir: Path, uid: str, volume: Mapping[str, Any]) -> Path:
    """The real directory of a volume (hostPath: the host's own path)."""
    host = volume.get("hostPath")
    if host is not None:
        return Path(str(host.get("path") or "/"))
    source = next((s for s in PLUGINS if volume.get(s) is not None), None)
    if source is None:
        raise MountError(f"tcpmesh's kubelet does not provide {_source(volume)} volumes")
    return pod_dir(state_dir, uid) / "volumes" / PLUGINS[source] / str(volume["name"])


def _source(volume: Mapping[str, Any]) -> str:
    return next((k for k in volume if k != "name"), "unknown")


# ---------------------------------------------------------------- what a volume holds


def payload(volume: Mapping[str, Any], namespace: str, store: StoreLike) -> Payload | None:
    """The files of a secret or configMap volume now; None for a plain directory.

    Raises :class:`MountError` with the kubelet's words when a required object or key
    is missing (``secret "x" not found``).
    """
    if (secret := volume.get("secret")) is not None:
        name = str(secret.get("secretName") or "")
        obj = store.get("Secret", namespace, name)
        data = None if obj is None else _decoded(obj.get("data"))
        return _files(secret, data, f'secret "{name}" not found', "secret key")
    if (config := volume.get("configMap")) is not None:
        name = str(config.get("name") or "")
        obj = store.get("ConfigMap", namespace, name)
        data = None
        if obj is not None:
            text = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            data = {**text, **_decoded(obj.get("binaryData"))}
        return _files(config, data, f'configmap "{name}" not found', "config key")
    return None


def _decoded(data: Any) -> dict[str, bytes]:
    return {str(k): base64.b64decode(str(v)) for k, v in (data or {}).items()}


def _files(
    source: Mapping[str, Any], data: dict[str, bytes] | None, missing: str, what: str
) -> Payload:
    optional = bool(source.get("optional"))
    if data is None:
        if optional:
            return {}
        raise MountError(missing)
    mode = int(source.get("defaultMode", DEFAULT_MODE))
    items = source.get("items") or []
    if not items:
        return {key: File(value, mode) for key, value in data.items()}
    files: Payload = {}
    for item in items:
        key = str(item.get("key"))
        if key not in data:
            if optional:
                continue
            prefix = "configmap references" if what == "config key" else "references"
            raise MountError(f"{prefix} non-existent {what}: {key}")
        files[str(item["path"])] = File(data[key], int(item.get("mode", mode)))
    return files


# ---------------------------------------------------------------- the atomic writer


def write_atomically(target: Path, files: Payload) -> bool:
    """Make ``target`` hold exactly ``files``, switched in one rename; False if it did."""
    target.mkdir(parents=True, exist_ok=True)
    link = target / DATA_LINK
    old = os.readlink(link) if link.is_symlink() else None
    if old is not None and _contents(target / old) == files:
        return False
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S.", time.gmtime())
    fresh = Path(tempfile.mkdtemp(prefix=f"..{stamp}", dir=target))
    fresh.chmod(0o755)
    for relative, file in files.items():
        path = fresh / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.data)
        path.chmod(file.mode)
    staged = target / f"{DATA_LINK}_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(fresh.name)
    staged.rename(link)
    visible = {relative.split("/", 1)[0] for relative in files}
    for name in visible:
        entry = target / name
        if not entry.is_symlink():
            entry.symlink_to(f"{DATA_LINK}/{name}")
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in visible:
            entry.unlink()
    if old is not None:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def _contents(directory: Path) -> Payload | None:
    if not directory.is_dir():
        return None
    found: Payload = {}
    for path in directory.rglob("*"):
        if path.is_file():
            relative = path.relative_to(directory).as_posix()
            found[relative] = File(path.read_bytes(), path.stat().st_mode & 0o777)
    return found


def set_up(
    state_dir: Path, uid: str, namespace: str, volume: Mapping[str, Any], store: StoreLike
) -> bool:
    """Create or refresh one volume; True when its files changed. Raises MountError."""
    path = volume_path(state_dir, uid, volume)
    host = volume.get("hostPath")
    if host is not None:
        _check_host_path(path, str(host.get("type") or ""))
        return False
    files = payload(volume, namespace, store)
    if files is None:
        path.mkdir(parents=True, exist_ok=True)
        return False
    return write_atomically(path, files)


_HOST_TYPES = {"Directory": Path.is_dir, "File": Path.is_file, "Socket": Path.is_socket}


def _check_host_path(path: Path, kind: str) -> None:
    """hostPath ``type``: the ...OrCreate kinds create, the others must already be so."""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    elif kind in _HOST_TYPES and not _HOST_TYPES[kind](path):
        raise MountError(f"hostPath type check failed: {path} is not a {kind.lower()}")
    elif kind in ("CharDevice", "BlockDevice") and not (
        path.is_char_device() or path.is_block_device()
    ):
        raise MountError(f"hostPath type check failed: {path} is not a {kind}")


def remove(state_dir: Path, uid: str) -> None:
    """The pod is gone: its volumes go with it (hostPath directories are the host's)."""
    shutil.rmtree(pod_dir(state_dir, uid), ignore_errors=True)


def remove_all_but(state_dir: Path, uids: set[str]) -> None:
    """Volumes of pods that no longer exist (a crashed mesh left them)."""
    pods = state_dir / "kubelet" / "pods"
    if pods.is_dir():
        for entry in pods.iterdir():
            if entry.name not in uids:
                shutil.rmtree(entry, ignore_errors=True)


# ---------------------------------------------------------------- mounts and paths


def container_mounts(
    state_dir: Path, uid: str, pod: Mapping[str, Any], container: Mapping[str, Any]
) -> list[Mount]:
    """The container's mounts with their real directories; subPath copies are made here."""
    volumes = {str(v.get("name")): v for v in (pod.get("spec") or {}).get("volumes") or []}
    mounts = []
    for index, mount in enumerate(container.get("volumeMounts") or []):
        volume = volumes[str(mount["name"])]
        real = volume_path(state_dir, uid, volume)
        sub_path = str(mount.get("subPath") or "")
        if sub_path:
            real = _sub_path(state_dir, uid, volume, real, sub_path, container, index)
        mounts.append(Mount(str(mount["mountPath"]), str(real)))
    return mounts


def _sub_path(
    state_dir: Path,
    uid: str,
    volume: Mapping[str, Any],
    real: Path,
    sub_path: str,
    container: Mapping[str, Any],
    index: int,
) -> Path:
    """A live path for a directory volume; a copy taken now for secret and configMap."""
    source = real / sub_path
    if volume.get("secret") is None and volume.get("configMap") is None:
        if not source.exists():
            source.mkdir(parents=True)
        return source
    copy = pod_dir(state_dir, uid) / "volume-subpaths" / str(volume["name"])
    copy = copy / str(container.get("name")) / str(index)
    shutil.rmtree(copy, ignore_errors=True)
    copy.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, copy)
    elif source.exists():
        shutil.copy2(source, copy)
    else:
        copy.mkdir()
    return copy


def map_path(text: str, mounts: Sequence[Mount]) -> str:
    """``text`` with a mountPath prefix replaced by its real directory (see the module)."""
    flag, equals, value = text.partition("=")
    if equals and flag.startswith("-") and "/" not in flag:
        return f"{flag}={_mapped(value, mounts)}"
    return _mapped(text, mounts)


def _mapped(text: str, mounts: Sequence[Mount]) -> str:
    for mount in sorted(mounts, key=lambda m: len(m.container_path), reverse=True):
        base = mount.container_path.rstrip("/") or "/"
        if text == base:
            return mount.host_path
        prefix = base if base.endswith("/") else f"{base}/"
        if text.startswith(prefix):
            return f"{mount.host_path}/{text[len(prefix) :]}"
    return text
