"""Run the real kubectl clients against a mesh: the image's (1.27-1.33) and Debian's 1.20."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.integration.harness import REPO, Result

OLD_KUBECTL = REPO / ".cache" / "kubectl-1.20" / "usr" / "bin" / "kubectl"
FETCH_SCRIPT = REPO / "scripts" / "system-deps" / "kubectl.sh"


def current_kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise AssertionError("kubectl is not on the PATH (the image ships it)")
    return found


def old_kubectl() -> str:
    """Debian's kubectl 1.20, unpacked (never installed) into .cache/ on first use."""
    if not OLD_KUBECTL.exists():
        subprocess.run(["bash", str(FETCH_SCRIPT)], check=True, timeout=300)
    return str(OLD_KUBECTL)


def kubectl(
    binary: str,
    kubeconfig: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 60,
) -> Result:
    # A private cache dir: discovery cached by one test (or one mesh's port) is not
    # another's, and nothing is written to the user's ~/.kube.
    cache = kubeconfig.parent / "kubectl-cache"
    completed = subprocess.run(
        [binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})},
    )
    result = Result(completed.returncode, completed.stdout, completed.stderr)
    if check and result.code != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {result.code}: {result.stderr}")
    return result
