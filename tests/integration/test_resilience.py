"""Nothing is lost when the mesh process itself dies."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from tests.integration.harness import SAMPLES, MeshHarness, first_word, seeded_mesh

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.21"
PORT = 31400


@pytest.fixture
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    with seeded_mesh(
        tmp_path_factory.mktemp("state"), ADDRESS, SAMPLES / "tcp-echo-all-v1.yaml"
    ) as harness:
        yield harness


def _word() -> str:
    try:
        return first_word(ADDRESS, PORT)
    except OSError:
        return ""


def test_gateway_keeps_serving_its_last_snapshot_when_the_mesh_is_killed(
    mesh: MeshHarness,
) -> None:
    credentials = json.loads((mesh.state_dir / "apiserver.json").read_text())
    os.kill(credentials["pid"], signal.SIGKILL)
    mesh.wait_for("the API to go away", lambda: mesh.tcpmesh("status", check=False).code != 0)
    assert [_word() for _ in range(20)] == ["one"] * 20

    # A new mesh takes over the same state: objects, routes and traffic come back.
    mesh.up()
    mesh.wait_for("routes after restart", lambda: _word() == "one", 30.0)
    assert (
        mesh.get_json("virtualservice", "tcp-echo")["spec"]["tcp"][0]["route"][0]["destination"][
            "subset"
        ]
        == "v1"
    )
    mesh.apply(SAMPLES / "tcp-echo-all-v2.yaml")
    mesh.wait_for("the new route", lambda: _word() == "two", 5.0)
