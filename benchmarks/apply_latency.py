"""How long after `tcpmesh apply` returns does the new route take effect, per data plane?

``python benchmarks/apply_latency.py [--rounds N] [--dataplane python|envoy ...]``

For each data plane it starts a mesh of its own (own state directory and gateway
address), runs the seed's tcp-echo v1/v2, then flips the VirtualService between all-v1
and all-v2 N times. After each ``tcpmesh apply`` returns, new connections are opened back
to back until one is answered by the new version; the time from the return of apply to
that answer is the apply→effect latency (a 100/0 split is what a single connection can
tell apart; an 80/20 split travels the same path). The same is measured from the answer
of the apply API request (no CLI start-up: the control plane's and the data plane's own
propagation time), and how long the apply itself took. Each probe is a fresh connection,
about 1 ms on loopback, which bounds the resolution. Prints numbers; asserts nothing.

Traffic goes to 127.0.0.0/8 only; every loop is bounded; the meshes are stopped (and
their pods with them) at the end, also on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tcpmesh.api import load_documents
from tcpmesh.apiserver.client import ApiClient

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "src" / "tcpmesh" / "samples" / "tcp-echo"
PORT = 31400
PROBE_TIMEOUT = 2.0
EFFECT_TIMEOUT = 10.0


def tcpmesh(state_dir: Path, *args: str) -> float:
    """Run a tcpmesh command; return how long it took."""
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "tcpmesh", "--state-dir", str(state_dir), *args],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.monotonic() - start


def first_word(address: str) -> str:
    try:
        with socket.create_connection((address, PORT), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"probe\n")
            line = sock.makefile("rb").readline().decode()
    except OSError:
        return ""
    return line.split(" ", 1)[0]


def wait_until(predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.001)
    raise TimeoutError(f"not in effect after {timeout}s")


@dataclass
class Result:
    cli_apply: list[float] = field(default_factory=list)  # the `tcpmesh apply` command
    cli_effect: list[float] = field(default_factory=list)  # from its return to the effect
    api_apply: list[float] = field(default_factory=list)  # the apply API request
    api_effect: list[float] = field(default_factory=list)  # from its response to the effect


def measure(dataplane: str, address: str, rounds: int) -> Result:
    state_dir = Path(tempfile.mkdtemp(prefix=f"tcpmesh-apply-{dataplane}-"))
    try:
        tcpmesh(state_dir, "up", "--detach", "--dataplane", dataplane, "--address", address)
        tcpmesh(
            state_dir,
            "apply",
            "-f",
            str(SAMPLES / "tcp-echo-deployments.yaml"),
            "-f",
            str(SAMPLES / "tcp-echo-service.yaml"),
            "-f",
            str(SAMPLES / "tcp-echo-all-v1.yaml"),
        )
        wait_until(lambda: first_word(address) == "one", 60.0)
        result = Result()
        client = ApiClient.from_state_dir(state_dir)
        routes = {
            v: load_documents((SAMPLES / f"tcp-echo-all-{v}.yaml").read_text(), v)
            for v in ("v1", "v2")
        }
        for i in range(rounds):
            version, word = (("v2", "two"), ("v1", "one"))[i % 2]
            path = str(SAMPLES / f"tcp-echo-all-{version}.yaml")
            result.cli_apply.append(tcpmesh(state_dir, "apply", "-f", path))
            result.cli_effect.append(
                wait_until(lambda w=word: first_word(address) == w, EFFECT_TIMEOUT)
            )
            time.sleep(0.2)
        for i in range(rounds):
            version, word = (("v2", "two"), ("v1", "one"))[i % 2]
            start = time.monotonic()
            client.apply(routes[version])
            result.api_apply.append(time.monotonic() - start)
            result.api_effect.append(
                wait_until(lambda w=word: first_word(address) == w, EFFECT_TIMEOUT)
            )
            time.sleep(0.2)
        return result
    finally:
        subprocess.run(
            [sys.executable, "-m", "tcpmesh", "--state-dir", str(state_dir), "down"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(state_dir, ignore_errors=True)


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return (
        f"median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   "
        f"min {ms[0]:7.1f} ms   max {ms[-1]:7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dataplane", action="append", choices=["python", "envoy"], default=None)
    parser.add_argument("--address", default="127.0.0.41", help="gateway address (loopback)")
    args = parser.parse_args()
    planes = args.dataplane or ["python", "envoy"]
    print(f"apply → effect, {args.rounds} flips all-v1 <-> all-v2, {os.cpu_count()} cores")
    for plane in planes:
        result = measure(plane, args.address, args.rounds)
        print(f"{plane:>6}  `tcpmesh apply` returned → in effect  {summary(result.cli_effect)}")
        print(f"{plane:>6}  `tcpmesh apply` itself took          {summary(result.cli_apply)}")
        print(f"{plane:>6}  API apply answered → in effect       {summary(result.api_effect)}")
        print(f"{plane:>6}  API apply request took               {summary(result.api_apply)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
