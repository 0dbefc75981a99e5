"""`up --bind-address 0.0.0.0`: the address other hosts reach the API at, picked as
kube-apiserver picks its --advertise-address, and what the serving certificate names."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tcpmesh.cli import lifecycle
from tcpmesh.cli.main import cli
from tcpmesh.mesh import serving_names

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""


def test_the_default_route_names_its_gateway() -> None:
    assert lifecycle.default_gateway(ROUTES) == "10.0.0.1"
    assert lifecycle.default_gateway(ROUTES.splitlines()[0] + "\n") is None
    down = ROUTES.replace("\t0003\t", "\t0002\t")  # not RTF_UP
    assert lifecycle.default_gateway(down) is None


def test_a_specific_bind_address_is_advertised_and_a_given_one_wins() -> None:
    assert lifecycle.advertise_address("10.0.0.7", None) == "10.0.0.7"
    assert lifecycle.advertise_address("0.0.0.0", "10.0.0.9") == "10.0.0.9"


def test_the_certificate_names_the_advertised_address_never_0000() -> None:
    assert serving_names("0.0.0.0", "10.0.0.9") == ["127.0.0.1", "localhost", "10.0.0.9"]
    assert serving_names("::", None) == ["127.0.0.1", "localhost"]
    assert serving_names("10.0.0.7", "10.0.0.7") == ["127.0.0.1", "localhost", "10.0.0.7"]


def _up(tmp_path: Path, *flags: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["--state-dir", str(tmp_path / "state"), "up", *flags])
    return result.exit_code, result.output.strip().splitlines()


def test_0000_without_a_default_route_asks_for_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "route"
    routes.write_text(ROUTES.splitlines()[0] + "\n")
    monkeypatch.setattr(lifecycle, "_ROUTES", routes)
    code, lines = _up(tmp_path, "--bind-address", "0.0.0.0")
    assert code == 1 and len(lines) == 1
    assert lines[0] == (
        "error: --bind-address 0.0.0.0: this host has no default route to take the address "
        "other hosts reach it at from; give --advertise-address"
    )
    code, lines = _up(tmp_path, "--bind-address", "0.0.0.0", "--advertise-address", "0.0.0.0")
    assert code == 1 and lines[0].startswith("error: --advertise-address 0.0.0.0: ")
    code, lines = _up(tmp_path, "--advertise-address", "10.0.0.9")
    assert code == 1 and lines == [
        "error: --advertise-address: needs --bind-address (the API listens on loopback)"
    ]
    assert not (tmp_path / "state" / "store.db").exists()
