"""Pod volumes and volume mounts, validated as Kubernetes validates them.

The checks and their words are ``ValidateVolumes``, ``validateVolumeSource``,
``validateSecretVolumeSource``, ``validateConfigMapVolumeSource``, ``validateKeyToPath``
and ``ValidateVolumeMounts`` of kubernetes ``pkg/apis/core/validation``, so a manifest
the API server rejects is rejected here with the same message. On top of them, a warning
for a volume source the local kubelet does not provide (its pod would wait in
ContainerCreating), said at apply time rather than discovered later.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence

from tcpmesh.api import models, names
from tcpmesh.api.findings import Finding, error, warning
from tcpmesh.api.names import quote

# The volume sources tcpmesh's kubelet provides (tcpmesh.runtime.volumes).
PROVIDED_SOURCES = ("secret", "configMap", "emptyDir", "hostPath")
FILE_MODE_MESSAGE = "must be a number between 0 and 0777 (octal), both inclusive"


def volume_source(volume: models.Volume) -> list[str]:
    """The camelCase names of the sources a volume sets (exactly one when valid)."""
    fields = models.Volume.model_fields
    return [
        str(info.alias or name)
        for name, info in fields.items()
        if name != "name" and getattr(volume, name) is not None
    ]


def pod_volumes(path: str, spec: models.PodSpec) -> Iterator[Finding]:
    """Every problem with a pod spec's ``volumes`` and its containers' ``volumeMounts``."""
    valid: set[str] = set()
    for i, volume in enumerate(spec.volumes):
        problems = list(_volume(f"{path}.volumes[{i}]", volume, valid))
        if not any(not p.warning for p in problems):
            valid.add(volume.name)
        yield from problems
    groups = (("initContainers", spec.init_containers), ("containers", spec.containers))
    for group, containers in groups:
        for i, container in enumerate(containers):
            where = f"{path}.{group}[{i}].volumeMounts"
            yield from _mounts(where, container.volume_mounts, valid)


def _volume(path: str, volume: models.Volume, taken: set[str]) -> Iterator[Finding]:
    sources = volume_source(volume)
    if not sources:
        yield error(path, "Required value: must specify a volume type")
    for extra in sources[1:]:
        yield error(f"{path}.{extra}", "Forbidden: may not specify more than 1 volume type")
    if volume.secret is not None and sources[0] == "secret":
        yield from _secret(f"{path}.secret", volume.secret)
    if volume.config_map is not None and sources[0] == "configMap":
        yield from _config_map(f"{path}.configMap", volume.config_map)
    if not volume.name:
        yield error(f"{path}.name", "Required value")
    else:
        for problem in names.k8s_label_problems(volume.name):
            yield error(f"{path}.name", f"Invalid value: {quote(volume.name)}: {problem}")
    if volume.name in taken:
        yield error(f"{path}.name", f"Duplicate value: {quote(volume.name)}")
    if sources and sources[0] not in PROVIDED_SOURCES:
        yield warning(
            f"{path}.{sources[0]}",
            f"tcpmesh's kubelet does not provide {sources[0]} volumes (only "
            f"{', '.join(PROVIDED_SOURCES)}): the pod will wait in ContainerCreating",
        )


def _secret(path: str, source: models.SecretVolumeSource) -> Iterator[Finding]:
    if not source.secret_name:
        yield error(f"{path}.secretName", "Required value")
    yield from _mode(f"{path}.defaultMode", source.default_mode)
    yield from _items(f"{path}.items", source.items)


def _config_map(path: str, source: models.ConfigMapVolumeSource) -> Iterator[Finding]:
    if not source.name:
        yield error(f"{path}.name", "Required value")
    yield from _mode(f"{path}.defaultMode", source.default_mode)
    yield from _items(f"{path}.items", source.items)


def _mode(path: str, mode: int | None) -> Iterator[Finding]:
    if mode is not None and not 0 <= mode <= 0o777:
        yield error(path, f"Invalid value: {mode}: {FILE_MODE_MESSAGE}")


def _items(path: str, items: Sequence[models.KeyToPath]) -> Iterator[Finding]:
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not item.key:
            yield error(f"{where}.key", "Required value")
        if not item.path:
            yield error(f"{where}.path", "Required value")
        yield from _local_path(f"{where}.path", item.path)
        if item.path.startswith(".."):
            yield error(
                f"{where}.path", f"Invalid value: {quote(item.path)}: must not start with '..'"
            )
        yield from _mode(f"{where}.mode", item.mode)


def _local_path(path: str, value: str) -> Iterator[Finding]:
    """``validateLocalDescendingPath``: relative, and no ``..`` element."""
    if posixpath.isabs(value):
        yield error(path, f"Invalid value: {quote(value)}: must be a relative path")
    if ".." in value.split("/"):
        yield error(path, f"Invalid value: {quote(value)}: must not contain '..'")


def _mounts(
    path: str, mounts: Sequence[models.VolumeMount], volumes: set[str]
) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, mount in enumerate(mounts):
        where = f"{path}[{i}]"
        if not mount.name:
            yield error(f"{where}.name", "Required value")
        elif mount.name not in volumes:
            yield error(f"{where}.name", f"Not found: {quote(mount.name)}")
        if not mount.mount_path:
            yield error(f"{where}.mountPath", "Required value")
        elif mount.mount_path in seen:
            yield error(
                f"{where}.mountPath", f"Invalid value: {quote(mount.mount_path)}: must be unique"
            )
        elif not posixpath.isabs(mount.mount_path):
            # Kubernetes leaves this to the runtime; a local process has no container root,
            # so a relative mount path would mean nothing here.
            yield error(
                f"{where}.mountPath",
                f"Invalid value: {quote(mount.mount_path)}: must be an absolute path",
            )
        seen.add(mount.mount_path)
        if mount.sub_path:
            yield from _local_path(f"{where}.subPath", mount.sub_path)
        if mount.sub_path_expr:
            if mount.sub_path:
                yield error(
                    f"{where}.subPathExpr",
                    f"Invalid value: {quote(mount.sub_path_expr)}: "
                    "subPathExpr and subPath are mutually exclusive",
                )
            yield from _local_path(f"{where}.subPathExpr", mount.sub_path_expr)
