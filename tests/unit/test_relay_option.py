"""``up --relay`` / ``gateway join --relay``: the built-in data plane's relay choice reaches
its processes as TCPMESH_RELAY, the way the worker count does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tcpmesh.cli import lifecycle
from tcpmesh.cli.main import RELAY_CHOICES, cli
from tcpmesh.dataplane.splice import RelayMode
from tcpmesh.mesh import MeshConfig, default_gateway_objects, node_proxy_objects


def _container_env(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The env of every container of the workloads among ``objects``."""
    found = []
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            found.append({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return found


def test_the_cli_offers_exactly_the_data_planes_relay_modes() -> None:
    assert set(RELAY_CHOICES) == {mode.value for mode in RelayMode}


def test_gateway_and_node_proxy_pods_carry_the_relay_choice(tmp_path: Path) -> None:
    config = MeshConfig(tmp_path, relay="copy")
    for objects in (default_gateway_objects(config), node_proxy_objects(config)):
        envs = _container_env(objects)
        assert envs, "no workload container found"
        assert all(env["TCPMESH_RELAY"] == "copy" for env in envs)


def test_status_names_the_relay_of_the_built_in_plane_only() -> None:
    status: dict[str, Any] = {
        "pid": 1,
        "api": "https://127.0.0.1:1",
        "stateDir": "/s",
        "dataplane": "python",
        "workers": 2,
        "relay": "splice",
        "address": "127.0.0.1",
    }
    assert "(2 workers, relay splice)" in lifecycle.summarize(status)[2]
    envoy = lifecycle.summarize({**status, "dataplane": "envoy"})[2]
    assert "(2 workers)" in envoy and "relay" not in envoy


def test_relay_with_envoy_is_refused_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--state-dir", str(tmp_path), "up", "--dataplane", "envoy", "--relay", "splice"],
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --relay splice: only the built-in data plane has a relay choice"
    )
    assert not (tmp_path / "apiserver.json").exists()


def test_a_bad_relay_in_the_environment_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--state-dir", str(tmp_path), "up"], env={"TCPMESH_RELAY": "zerocopy"}
    )
    assert result.exit_code == 2
    assert "TCPMESH_RELAY" in result.output and "'zerocopy'" in result.output


def test_gateway_join_refuses_a_relay_for_envoy_in_one_line(tmp_path: Path) -> None:
    args = ["--state-dir", str(tmp_path), "gateway", "join", "--server", "https://127.0.0.1:1"]
    args += ["--gateway", "g", "--address", "127.0.0.1", "--dataplane", "envoy"]
    result = CliRunner().invoke(cli, [*args, "--relay", "copy"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --relay copy: only the built-in data plane has a relay choice"
    )
