"""A running mesh keeps its state private and its pod count within the cap."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import SAMPLES, MeshHarness

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.161"
MAX_PODS = 4  # the gateway, the node proxy and the two tcp-echo versions


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[MeshHarness]:
    state_dir = tmp_path / "state"
    # As an older tcpmesh left it: world-readable directory, store and log.
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    (state_dir / "mesh.log").write_text("old log\n")
    (state_dir / "mesh.log").chmod(0o644)
    harness = MeshHarness(state_dir, ADDRESS, workers=1)
    try:
        harness.tcpmesh(
            "up", "--detach", "--address", ADDRESS, "--workers", "1", "--max-pods", str(MAX_PODS)
        )
        harness.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
        harness.wait_for(
            "both versions", lambda: harness.deployments_ready("tcp-echo-v1", "tcp-echo-v2")
        )
        yield harness
    finally:
        harness.down()


def test_the_state_directory_and_every_file_in_it_are_private(mesh: MeshHarness) -> None:
    state_dir = mesh.state_dir
    seen = {"store.db": False, "apiserver.json": False, "mesh.log": False, ".log": False}
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for root, dirs, files in os.walk(state_dir):
        for name in dirs:
            mode = stat.S_IMODE(Path(root, name).stat().st_mode)
            assert mode == 0o700, f"{Path(root, name)}: {mode:o}"
        for name in files:
            path = Path(root, name)
            if path.is_symlink() or path.is_socket():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path}: {mode:o}"
            for key in seen:
                seen[key] = seen[key] or name == key or (key == ".log" and root != str(state_dir))
    # The files that matter were there to be checked: the store, the token, the logs.
    assert all(seen.values()), seen


def test_a_deployment_above_the_pod_cap_is_refused_at_apply(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    manifest = tmp_path / "more.yaml"
    manifest.write_text(
        (SAMPLES / "tcp-echo-deployments.yaml").read_text().replace("replicas: 1", "replicas: 2", 1)
    )
    result = mesh.tcpmesh("apply", "-f", str(manifest), check=False)
    assert result.code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        'Error from server (Invalid): Deployment "tcp-echo-v1" is invalid: spec.replicas: '
        "Invalid value: 2: with the 3 pods of the other Deployments, more than the mesh's "
        "limit of 4 pods; start the mesh with `tcpmesh up --max-pods N` to raise it"
    )
    assert mesh.get_json("deployment", "tcp-echo-v1")["spec"]["replicas"] == 1
    assert len(mesh.pods()) == 2
