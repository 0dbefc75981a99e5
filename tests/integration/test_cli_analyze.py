"""``tcpmesh analyze -f`` on files, without a running mesh."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import SAMPLES, MeshHarness


def test_the_seed_files_are_clean(tmp_path: Path) -> None:
    cli = MeshHarness(tmp_path / "state", "127.0.0.1")
    result = cli.tcpmesh(
        "analyze",
        "-f", str(SAMPLES / "tcp-echo-deployments.yaml"),
        "-f", str(SAMPLES / "tcp-echo-service.yaml"),
        "-f", str(SAMPLES / "tcp-echo-all-v1.yaml"),
    )  # fmt: skip
    assert result.stdout == "\u2714 No validation issues found when analyzing all namespaces.\n"


def test_a_route_to_a_missing_subset_fails_with_ist0101(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        (SAMPLES / "tcp-echo-all-v1.yaml").read_text().replace("subset: v1", "subset: v3")
    )
    cli = MeshHarness(tmp_path / "state", "127.0.0.1")
    result = cli.tcpmesh(
        "analyze",
        "-f", str(SAMPLES / "tcp-echo-deployments.yaml"),
        "-f", str(SAMPLES / "tcp-echo-service.yaml"),
        "-f", str(routes),
        check=False,
    )  # fmt: skip
    assert result.code == 1
    assert result.stdout.splitlines() == [
        f"Error [IST0101] (VirtualService default/tcp-echo {routes}) Referenced "
        'host+subset in destinationrule not found: "tcp-echo+v3"'
    ]


def test_nothing_to_analyze_is_an_error(tmp_path: Path) -> None:
    result = MeshHarness(tmp_path / "state", "127.0.0.1").tcpmesh("analyze", check=False)
    assert result.code == 1
    assert "nothing to analyze" in result.stderr
