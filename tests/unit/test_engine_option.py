"""``up --engine`` / ``gateway join --engine`` and TCPMESH_ENGINE: which code moves the
built-in plane's bytes, resolved once, carried to every data plane process, shown by
status; and how auto picks (dataplane.native.engine_mode)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from tcpmesh.cli import lifecycle
from tcpmesh.cli.main import ENGINE_CHOICES, cli
from tcpmesh.dataplane import native
from tcpmesh.dataplane.native import EngineMode, engine_mode
from tcpmesh.join.gateway import GatewayOptions, data_plane_env
from tcpmesh.mesh import MeshConfig, default_gateway_objects, node_proxy_objects
from tests.unit.test_relay_option import _container_env


def test_the_cli_offers_exactly_the_engine_modes() -> None:
    assert set(ENGINE_CHOICES) == {mode.value for mode in EngineMode}


def test_auto_is_native_exactly_when_the_extension_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = native.engine_available()
    assert engine_mode(None) is (EngineMode.NATIVE if built else EngineMode.PYTHON)
    assert engine_mode("python") is EngineMode.PYTHON
    monkeypatch.setattr(native, "_ENGINE", None)
    assert engine_mode("auto") is EngineMode.PYTHON
    assert engine_mode("") is EngineMode.PYTHON


def test_native_without_the_extension_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_ENGINE", None)
    with pytest.raises(ValueError, match=r"^TCPMESH_ENGINE=native: the C extension .* not built"):
        engine_mode("native")


def test_a_bad_engine_value_is_named() -> None:
    with pytest.raises(ValueError, match=r"^TCPMESH_ENGINE='c': expected one of auto, native"):
        engine_mode("c")


def test_gateway_and_node_proxy_pods_carry_the_engine_choice(tmp_path: Path) -> None:
    config = MeshConfig(tmp_path, engine="python")
    for objects in (default_gateway_objects(config), node_proxy_objects(config)):
        envs = _container_env(objects)
        assert envs, "no workload container found"
        assert all(env["TCPMESH_ENGINE"] == "python" for env in envs)


def test_a_joined_gateways_data_plane_gets_the_engine() -> None:
    # The attributes of a PeerAgent that data_plane_env reads.
    identity = SimpleNamespace(namespace="istio-system", object_name="gw-host", name="gw")
    agent = SimpleNamespace(identity=identity, address="10.0.0.5", state_dir=Path("state"))
    env = data_plane_env(agent, GatewayOptions(1, engine="native"))  # type: ignore[arg-type]
    assert env["TCPMESH_ENGINE"] == "native"


def test_status_names_the_engine_of_the_built_in_plane_only() -> None:
    status: dict[str, Any] = {
        "pid": 1,
        "api": "https://127.0.0.1:1",
        "stateDir": "/s",
        "dataplane": "python",
        "workers": 1,
        "relay": "auto",
        "engine": "native",
        "address": "127.0.0.1",
    }
    assert "(1 workers, relay auto, engine native)" in lifecycle.summarize(status)[2]
    envoy = lifecycle.summarize({**status, "dataplane": "envoy"})[2]
    assert "engine" not in envoy


def test_engine_with_envoy_is_refused_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--state-dir", str(tmp_path), "up", "--dataplane", "envoy", "--engine", "native"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --engine native: only the built-in data plane has an engine choice"
    )
    assert not (tmp_path / "apiserver.json").exists()


def test_up_engine_native_without_the_extension_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "tcpmesh.dataplane._engine" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    result = CliRunner().invoke(cli, ["--state-dir", str(tmp_path), "up", "--engine", "native"])
    assert result.exit_code == 1
    assert result.output.strip().startswith(
        "error: --engine native: the C extension tcpmesh.dataplane._engine is not built"
    )
    assert not (tmp_path / "apiserver.json").exists()


def test_a_bad_engine_in_the_environment_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--state-dir", str(tmp_path), "up"], env={"TCPMESH_ENGINE": "turbo"}
    )
    assert result.exit_code == 2
    assert "TCPMESH_ENGINE" in result.output and "'turbo'" in result.output
