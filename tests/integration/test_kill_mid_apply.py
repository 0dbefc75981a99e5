"""kill -9 the whole mesh in the middle of a large apply: after ``up``, all or none.

One ``tcpmesh apply`` of ``COUNT`` VirtualServices (one request, one store transaction)
is started, and the mesh process (API server, store, control plane) is killed with
SIGKILL at several points while the apply runs. After the next ``up`` the store holds
every one of the documents or none of them, never a part, and stays writable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import MeshHarness

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

ADDRESS = "127.0.0.1"
COUNT = 800
LABEL = "fuzz.tcpmesh.io/batch"
# When the mesh dies, as a share of how long a whole apply of the batch took: while the
# client validates and uploads, and while the server validates and writes.
KILL_AT = (0.6, 0.9)
TCPMESH = (sys.executable, "-m", "tcpmesh")


def batch(tag: str) -> str:
    docs = [
        f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs-{tag}-{i}
  namespace: default
  labels: {{{LABEL}: "{tag}"}}
spec:
  hosts: [svc-{i}.example.internal]
  tcp:
  - route:
    - destination: {{host: svc-{i}.example.internal, port: {{number: 9000}}}}
"""
        for i in range(COUNT)
    ]
    return "---\n".join(docs)


def stored(mesh: MeshHarness, tag: str) -> int:
    found = mesh.get_json("virtualservice")["items"]
    return sum(1 for vs in found if vs["metadata"].get("labels", {}).get(LABEL) == tag)


def test_a_killed_apply_leaves_all_or_none(tmp_path: Path) -> None:
    mesh = MeshHarness(tmp_path / "state", ADDRESS, workers=1)
    outcomes: list[int] = []
    try:
        mesh.up()
        whole = tmp_path / "whole.yaml"
        whole.write_text(batch("whole"))
        started = time.monotonic()
        mesh.tcpmesh("apply", "-f", str(whole))
        took = time.monotonic() - started
        assert stored(mesh, "whole") == COUNT
        for round_, share in enumerate(KILL_AT):
            tag = f"r{round_}"
            manifest = tmp_path / f"{tag}.yaml"
            manifest.write_text(batch(tag))
            pid = json.loads((mesh.state_dir / "apiserver.json").read_text())["pid"]
            argv = [*TCPMESH, "--state-dir", str(mesh.state_dir), "apply", "-f", str(manifest)]
            apply = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(share * took)
                os.kill(pid, signal.SIGKILL)
                apply.wait(60)
            finally:
                if apply.poll() is None:
                    apply.kill()
                    apply.wait()
            mesh.wait_for(
                "the API to go away", lambda: mesh.tcpmesh("status", check=False).code != 0
            )
            mesh.up()
            count = stored(mesh, tag)
            outcomes.append(count)
            assert count in (0, COUNT), f"killed at {share:.0%} of the apply: {count} of {COUNT}"
            # What was stored before is still there, and the store is writable.
            assert stored(mesh, "whole") == COUNT
        print(json.dumps({"count": COUNT, "apply_s": round(took, 2), "stored": outcomes}))
        mesh.tcpmesh("apply", "-f", str(tmp_path / "r0.yaml"))
        assert stored(mesh, "r0") == COUNT
    finally:
        mesh.down()
