"""Which program a container runs."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tcpmesh.runtime.images import ImageNotRunnable, container_argv, image_name

ECHO = [sys.executable, "-m", "tcpmesh.runtime.tcpecho"]
PROXY = [sys.executable, "-m", "tcpmesh.dataplane"]


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("istio/tcp-echo-server", "tcp-echo-server"),
        ("docker.io/istio/tcp-echo-server:1.1", "tcp-echo-server"),
        ("registry.istio.io/release/tcp-echo-server:1.3", "tcp-echo-server"),
        ("localhost:5000/istio/proxyv2:1.22.0", "proxyv2"),
        ("gcr.io/istio-release/proxyv2@sha256:" + "a" * 64, "proxyv2"),
        ("busybox", "busybox"),
    ],
)
def test_image_name_drops_registry_path_tag_and_digest(image: str, name: str) -> None:
    assert image_name(image) == name


@pytest.mark.parametrize(
    "image",
    [
        "istio/tcp-echo-server",
        "docker.io/istio/tcp-echo-server:1.1",
        "registry.istio.io/release/tcp-echo-server:1.3",
    ],
)
def test_tcp_echo_image_runs_the_bundled_server_with_its_args(image: str) -> None:
    container = {"name": "c", "image": image, "args": ["9000,9001,9002", "one"]}
    assert container_argv(container) == [*ECHO, "9000,9001,9002", "one"]


def test_tcp_echo_without_args_uses_the_image_default_cmd() -> None:
    assert container_argv({"name": "c", "image": "istio/tcp-echo-server:1.3"}) == [
        *ECHO,
        "9000",
        "hello",
    ]


def test_proxyv2_runs_the_data_plane_with_its_args() -> None:
    container = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22", "args": ["x"]}
    assert container_argv(container) == [*PROXY, "x"]
    assert container_argv({"name": "p", "image": "istio/proxyv2"}) == PROXY


def test_command_replaces_the_entrypoint_and_drops_the_default_cmd() -> None:
    container = {"name": "c", "image": "istio/tcp-echo-server", "command": ["/bin/echo"]}
    assert container_argv(container) == ["/bin/echo"]
    container["args"] = ["hi"]
    assert container_argv(container) == ["/bin/echo", "hi"]


def test_the_real_image_entrypoint_as_command_still_means_the_builtin() -> None:
    container = {
        "name": "c",
        "image": "istio/tcp-echo-server",
        "command": ["/bin/tcp-echo"],
        "args": ["9000", "x"],
    }
    assert container_argv(container) == [*ECHO, "9000", "x"]


def test_any_image_with_a_command_runs_that_program() -> None:
    container = {"name": "c", "image": "nginx:1.25", "command": ["python3", "-c"], "args": ["1"]}
    assert container_argv(container) == ["python3", "-c", "1"]


@pytest.mark.parametrize(
    "container",
    [
        {"name": "c", "image": "nginx:1.25"},
        {"name": "c", "image": "nginx:1.25", "args": ["-g", "daemon off;"]},
        {"name": "c", "image": ""},
    ],
)
def test_other_images_without_command_cannot_run(container: dict[str, Any]) -> None:
    with pytest.raises(ImageNotRunnable) as info:
        container_argv(container)
    message = str(info.value)
    assert f'image "{container["image"]}" is not built into tcpmesh' in message
    assert "istio/tcp-echo-server" in message
    assert "`command`" in message
