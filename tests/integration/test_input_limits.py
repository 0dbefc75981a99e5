"""Hostile input costs the CLI and the API server next to nothing: measured, not assumed.

Each measurement runs in a process of its own and reads that process's resource usage
(``getrusage``: peak RSS and CPU seconds), so neither the test runner's memory nor the
load of the machine's other work enters the numbers. The bounds are the issue's: under
1 s of CPU and under 50 MiB of growth per rejected input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import REPO
from tests.integration.limits_server import TOKEN
from tests.unit.test_api_limits import alias_bomb, nested

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
CPU_BOUND = 1.0
MEMORY_BOUND = 50 * MIB

MEASURE = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'code': done.returncode, 'stderr': done.stderr,\n"
    "    'maxrss': usage.ru_maxrss * 1024, 'cpu': usage.ru_utime + usage.ru_stime}))\n"
)


def cli_usage(state_dir: Path, manifest: Path) -> dict[str, Any]:
    """``tcpmesh apply -f manifest`` in a fresh process: exit code, stderr, peak RSS, CPU."""
    argv = [sys.executable, "-m", "tcpmesh", "--state-dir", str(state_dir), "apply"]
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv, "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (alias_bomb(9), "more than 250,000 values with aliases expanded"),
        (nested(100), "document nests deeper than 64 levels"),
    ],
    ids=["alias-bomb-9-levels", "100-levels-deep"],
)
def test_the_cli_refuses_hostile_yaml_cheaply(tmp_path: Path, document: str, message: str) -> None:
    baseline_file = tmp_path / "typo.yaml"
    baseline_file.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: 1}\n"
    )
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(document)
    baseline = cli_usage(tmp_path / "state", baseline_file)
    measured = cli_usage(tmp_path / "state", hostile)
    assert baseline["code"] == measured["code"] == 1
    lines = measured["stderr"].strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{hostile}: error parsing YAML: line ")
    assert lines[0].endswith(message)
    print(
        f"CLI {message!r}: +{(measured['maxrss'] - baseline['maxrss']) / MIB:.1f} MiB, "
        f"+{measured['cpu'] - baseline['cpu']:.2f} s CPU over a one-line typo"
    )
    assert measured["maxrss"] - baseline["maxrss"] < MEMORY_BOUND
    assert measured["cpu"] - baseline["cpu"] < CPU_BOUND


class Server:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process, self.port = process, port

    def usage(self) -> dict[str, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        result: dict[str, float] = json.loads(self.process.stdout.readline())
        return result

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.limits_server", str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        yield Server(process, int(process.stdout.readline()))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def deep_json(levels: int) -> bytes:
    obj = json.loads(json.dumps({"apiVersion": "apps/v1", "kind": "Deployment"}))
    return json.dumps(obj)[:-1].encode() + b', "x": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize(
    ("body", "content_type", "code", "message"),
    [
        (alias_bomb(9).encode(), "application/yaml", 400, "aliases expanded"),
        (nested(100).encode(), "application/yaml", 400, "deeper than 64 levels"),
        (deep_json(100), "application/json", 400, "nests deeper than 64 levels"),
        (deep_json(1_000_000), "application/json", 400, "nests deeper than 64 levels"),
        (b" " * (4 * MIB), "application/json", 413, "more than the limit of 3 MiB"),
    ],
    ids=["yaml-alias-bomb", "yaml-100-deep", "json-100-deep", "json-million-deep", "4-mib-body"],
)
def test_the_api_server_refuses_hostile_bodies_cheaply(
    server: Server, body: bytes, content_type: str, code: int, message: str
) -> None:
    # Warm up the path a real request takes, so the baseline includes it.
    assert server.post(DEPLOYMENTS, b"{}", "application/json")[0] == 422
    before = server.usage()
    status, reply = server.post(DEPLOYMENTS, body, content_type)
    after = server.usage()
    assert status == code
    assert reply["kind"] == "Status"
    assert message in reply["message"]
    assert "\n" not in reply["message"]
    growth = (after["maxrss_kib"] - before["maxrss_kib"]) * 1024
    cpu = after["cpu_seconds"] - before["cpu_seconds"]
    print(f"API server {message!r}: +{growth / MIB:.1f} MiB, {cpu:.3f} s CPU")
    assert growth < MEMORY_BOUND
    assert cpu < CPU_BOUND
