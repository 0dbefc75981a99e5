"""Control-plane push fan-out: how long until N gateways all have a route change?

``python benchmarks/fanout.py [--gateways 3 --gateways 20] [--rounds N] [--store URL]``

It starts one mesh (its own state directory and gateway address; ``--store`` as for
``up``), runs the seed's tcp-echo v1/v2 and connects N simulated gateways: N snapshot
feeds (``tcpmesh.dataplane.SnapshotFeed``, the built-in gateway's own client, in this
process) following the gateway pod's snapshots, as N joined gateway hosts would. Then it
flips the VirtualService between 100/0 and 80/20 (API applies), and for every flip
records, per simulated gateway, the time from the sending of the apply request to that
gateway's receipt of a snapshot carrying the new weights (from the sending: the push
often overtakes the apply's own answer). Reported: the last gateway's delay (the
push is "in effect everywhere" then) and the spread between the first and the last.
Prints numbers; asserts nothing. Loopback only; every loop bounded; the mesh is stopped
at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tcpmesh.api import load_documents
from tcpmesh.apiserver.client import ApiClient
from tcpmesh.control.snapshot import Snapshot
from tcpmesh.dataplane import SnapshotFeed

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "src" / "tcpmesh" / "samples" / "tcp-echo"
PORT = 31400
PUSH_TIMEOUT = 30.0


def tcpmesh(state_dir: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "tcpmesh", "--state-dir", str(state_dir), *args],
        check=True,
        capture_output=True,
        timeout=180,
    )


def weights(snapshot: Snapshot) -> tuple[int, ...]:
    for listener in snapshot.listeners:
        if listener.port == PORT and listener.routes:
            return tuple(sorted(d.weight for d in listener.routes[0].destinations))
    return ()


def split(documents: list[dict[str, Any]], v1: int, v2: int) -> list[dict[str, Any]]:
    """The all-v1 documents with the VirtualService's route set to v1/v2 weights."""
    docs = copy.deepcopy(documents)
    for doc in docs:
        if doc["kind"] == "VirtualService":
            route = doc["spec"]["tcp"][0]["route"]
            base = route[0]["destination"]
            route[:] = [
                {"destination": {**base, "subset": "v1"}, "weight": v1},
                {"destination": {**base, "subset": "v2"}, "weight": v2},
            ]
    return docs


class Gateways:
    """N feeds of one node; each remembers when it first saw each weight tuple."""

    def __init__(self, state_dir: Path, node: str, count: int) -> None:
        self.feeds = [SnapshotFeed(None, None, node, state_dir=state_dir) for _ in range(count)]
        self.seen: list[dict[tuple[int, ...], float]] = [{} for _ in range(count)]
        self._tasks: list[asyncio.Task[None]] = []

    async def _follow(self, index: int) -> None:
        async for snapshot in self.feeds[index]:
            self.seen[index].setdefault(weights(snapshot), time.monotonic())

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow(i)) for i in range(len(self.feeds))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_all(self, wanted: tuple[int, ...], after: float) -> list[float]:
        """Per gateway, the delay from ``after`` to its first snapshot with ``wanted``."""
        deadline = time.monotonic() + PUSH_TIMEOUT
        while time.monotonic() < deadline:
            times = [seen.get(wanted) for seen in self.seen]
            if all(t is not None and t >= after for t in times):
                return [t - after for t in times if t is not None]
            await asyncio.sleep(0.001)
        raise TimeoutError(f"{wanted} not on every gateway after {PUSH_TIMEOUT}s")


async def measure(state_dir: Path, node: str, count: int, rounds: int) -> list[list[float]]:
    client = ApiClient.from_state_dir(state_dir)
    base = load_documents((SAMPLES / "tcp-echo-all-v1.yaml").read_text(), "all-v1")
    gateways = Gateways(state_dir, node, count)
    gateways.start()
    try:
        await gateways.wait_all((100,), 0.0)
        delays: list[list[float]] = []
        for i in range(rounds):
            v1, v2 = ((80, 20), (100, 0))[i % 2]
            wanted = (20, 80) if v2 else (100,)
            docs = split(base, v1, v2) if v2 else base
            for seen in gateways.seen:
                seen.pop(wanted, None)
            # From the sending of the apply: the push may overtake the apply's own answer.
            sent = time.monotonic()
            await asyncio.to_thread(client.apply, docs)
            delays.append(await gateways.wait_all(wanted, sent))
            await asyncio.sleep(0.2)
        return delays
    finally:
        await gateways.stop()


def ms(values: list[float]) -> str:
    v = sorted(x * 1000 for x in values)
    p90 = v[min(len(v) - 1, round(0.9 * (len(v) - 1)))]
    return f"median {statistics.median(v):7.1f}  p90 {p90:7.1f}  max {v[-1]:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--store", default=None, help="as `up --store` (default: SQLite)")
    parser.add_argument("--address", default="127.0.0.43", help="gateway address (loopback)")
    args = parser.parse_args()
    counts = args.gateways or [3, 20]
    state_dir = Path(tempfile.mkdtemp(prefix="tcpmesh-fanout-"))
    up = ["up", "--detach", "--address", args.address, "--workers", "1"]
    try:
        tcpmesh(state_dir, *up, *(["--store", args.store] if args.store else []))
        tcpmesh(state_dir, "apply", "-f", str(SAMPLES / "tcp-echo-deployments.yaml"))
        tcpmesh(state_dir, "apply", "-f", str(SAMPLES / "tcp-echo-service.yaml"))
        tcpmesh(state_dir, "apply", "-f", str(SAMPLES / "tcp-echo-all-v1.yaml"))
        pods = ApiClient.from_state_dir(state_dir).status()["pods"]
        [gateway] = [p for p in pods if p["namespace"] == "istio-system"]
        node = f"istio-system/{gateway['name']}"
        store = args.store.split("?")[0] if args.store else "sqlite"
        print(
            f"push fan-out, {args.rounds} flips 100/0 <-> 80/20, store {store}, "
            f"{os.cpu_count()} cores"
        )
        for count in counts:
            delays = asyncio.run(measure(state_dir, node, count, args.rounds))
            last = [max(d) for d in delays]
            spread = [max(d) - min(d) for d in delays]
            print(f"{count:>4} gateways  apply sent → on every gateway      {ms(last)}")
            print(f"{count:>4} gateways  first → last gateway (spread)      {ms(spread)}")
        return 0
    finally:
        subprocess.run(
            [sys.executable, "-m", "tcpmesh", "--state-dir", str(state_dir), "down"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
