"""Which program a container runs: images tcpmesh has built in, or the container's command.

tcpmesh pulls no images. A built-in image maps to a Python module; any other container
runs its ``command`` as a local program. The mapping follows Kubernetes: ``command``
replaces the image's entrypoint (and drops its default CMD), ``args`` replace the CMD.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BuiltinImage:
    name: str  # the last path component of the image reference, e.g. "tcp-echo-server"
    module: str
    default_args: tuple[str, ...]
    # The entrypoint of the real image: a manifest that spells it out as `command`
    # still means the built-in program.
    entrypoint: str
    owner: str = "istio"  # the image repository's owner, for messages
    # SIGUSR1 makes it drain (stop accepting, finish open connections, exit), so a newer
    # build can take over without cutting connections (see tcpmesh.runtime.kubelet).
    drains: bool = False

    def argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", self.module, *args]


BUILTIN_IMAGES: tuple[BuiltinImage, ...] = (
    BuiltinImage("tcp-echo-server", "tcpmesh.runtime.tcpecho", ("9000", "hello"), "/bin/tcp-echo"),
    BuiltinImage("proxyv2", "tcpmesh.dataplane", (), "/usr/local/bin/pilot-agent", drains=True),
    # Envoy fed by the mesh's xDS server (`up --dataplane envoy`); args go to Envoy.
    BuiltinImage("envoy", "tcpmesh.xds.gateway", (), "/docker-entrypoint.sh", "envoyproxy"),
    # The cloud load balancer that enforces bandwidth caps (tcpmesh.runtime.cloudlb).
    BuiltinImage(
        "tcpmesh-slb", "tcpmesh.dataplane.slb", (), "/usr/local/bin/tcpmesh-slb", "tcpmesh"
    ),
    # The Gateway API conformance backend (registry.k8s.io/gateway-api/conformance/echo-basic).
    BuiltinImage(
        "echo-basic", "tcpmesh.runtime.echobasic", (), "/echo-basic", "gateway-api/conformance"
    ),
)


class ImageNotRunnable(Exception):
    """The container names an image tcpmesh cannot run and gives no command."""


def image_name(image: str) -> str:
    """The repository's last path component: registry, path, tag and digest removed.

    ``registry.istio.io/release/tcp-echo-server:1.3`` → ``tcp-echo-server``;
    ``localhost:5000/istio/proxyv2@sha256:...`` → ``proxyv2``.
    """
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def builtin_image(image: str) -> BuiltinImage | None:
    name = image_name(image)
    return next((b for b in BUILTIN_IMAGES if b.name == name), None)


def container_argv(container: Mapping[str, Any]) -> list[str]:
    """The argv a container runs, or `ImageNotRunnable` with the reason as message."""
    image = str(container.get("image") or "")
    command: list[str] | None = container.get("command")
    args: list[str] | None = container.get("args")
    builtin = builtin_image(image)
    if builtin is not None and not command:
        return builtin.argv(args or builtin.default_args)
    if builtin is not None and command == [builtin.entrypoint]:
        return builtin.argv(args or ())
    if command:
        return [*command, *(args or [])]
    known = ", ".join(f"{b.owner}/{b.name}" for b in BUILTIN_IMAGES)
    raise ImageNotRunnable(
        f'image "{image}" is not built into tcpmesh: tcpmesh runs only its built-in images '
        f"({known}, under any registry and tag) or containers that set `command`"
    )
