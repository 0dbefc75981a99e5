"""Bad input and a missing mesh give one readable line and a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import MeshHarness


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("up", "--address", "999.1.1.1"), "error: --address 999.1.1.1: not an IP address"),
        (
            ("up", "--address", "192.0.2.1"),
            "error: --address 192.0.2.1: cannot listen there (Cannot assign requested address)",
        ),
        (("apply", "-f", "missing.yaml"), 'error: the path "missing.yaml" does not exist'),
        (("get", "vs", "-o", "jsonpath={.items["), "error parsing jsonpath {.items[, "),
        (("get", "frobs"), 'error: the server doesn\'t have a resource type "frobs"'),
        (("get", "vs"), "error: the mesh is not running"),
        (("status",), "tcpmesh is not running"),
    ],
)
def test_one_line_error(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = MeshHarness(tmp_path / "state", "127.0.0.1").tcpmesh(*args, check=False)
    assert result.code != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(message)
