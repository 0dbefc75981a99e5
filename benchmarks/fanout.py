"""Control-plane push fan-out: how long until N gateways all have a route change?

``python benchmarks/fanout.py [--gateways 3 --gateways 20] [--rounds N] [--store URL]
[--joined | --envoy]``

It starts one mesh (its own state directory and gateway address; ``--store`` as for
``up``), runs the seed's tcp-echo v1/v2 and connects N simulated gateways: N snapshot
feeds (``tcpmesh.dataplane.SnapshotFeed``, the built-in gateway's own client, in this
process) following the gateway pod's snapshots, as N joined gateway hosts would. Then it
flips the VirtualService between 100/0 and 80/20 (API applies), and for every flip
records, per simulated gateway, the time from the sending of the apply request to that
gateway's receipt of a snapshot carrying the new weights (from the sending: the push
often overtakes the apply's own answer). Reported: the last gateway's delay (the
push is "in effect everywhere" then) and the spread between the first and the last.

With ``--joined`` the simulated gateways are joined hosts instead (``tcpmesh gateway
join``'s agent, in this process): the mesh listens with ``--bind-address``, a bootstrap
token buys each one a client certificate, each registers its own Pod (its own node, so
its own snapshot, as separate hosts have), and each feed follows it over mTLS.
With ``--envoy`` they are real Envoys joined the same way (``tcpmesh gateway join
--dataplane envoy``, one process pair per host on its own loopback address, following
its own node over mTLS ADS on the mesh's ``--xds-port``). An Envoy's time of receipt is
its own record of applying the new weights: the ECDS filter's ``update_time`` gauge
(epoch milliseconds), read from its admin interface once ``update_success`` moved.
Prints numbers; asserts nothing. Loopback only; every loop bounded; the mesh and the
Envoys are stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tcpmesh.api import load_documents
from tcpmesh.apiserver.client import ApiClient
from tcpmesh.control.snapshot import Snapshot
from tcpmesh.dataplane import SnapshotFeed
from tcpmesh.join import PeerAgent, PeerIdentity

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

    def __init__(self, followers: list[tuple[Path, str]]) -> None:
        self.feeds = [SnapshotFeed(None, None, node, state_dir=d) for d, node in followers]
        self.seen: list[dict[tuple[int, ...], float]] = [{} for _ in followers]
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


async def join(state_dir: Path, count: int) -> list[PeerAgent]:
    """``count`` joined gateway hosts (agents in this process), registered and ready."""
    from tcpmesh.cli.join import token_create

    client = ApiClient.from_state_dir(state_dir)
    [token] = token_create(client, "1h", "fanout benchmark")
    server = str(client.status()["listen"])
    agents = []
    for i in range(count):
        identity = PeerIdentity("gateway", "istio-system", "istio-ingressgateway", f"bench-{i}")
        agent = PeerAgent(
            (server,),
            identity,
            "127.0.0.1",
            state_dir / "joined" / identity.node,
            token=token,
            ca_file=state_dir / "pki" / "ca.crt",
        )
        await agent.bootstrap()
        await agent.heartbeat(True)
        agents.append(agent)
    return agents


async def measure(
    state_dir: Path, followers: list[tuple[Path, str]], rounds: int
) -> list[list[float]]:
    client = ApiClient.from_state_dir(state_dir)
    base = load_documents((SAMPLES / "tcp-echo-all-v1.yaml").read_text(), "all-v1")
    gateways = Gateways(followers)
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


ECDS_STAT = "extension_config_discovery.network_filter.0.0.0.0_31400~0"
ENVOY_READY_TIMEOUT = 300.0
# Joins started this far apart: N agents importing at once saturate two cores.
ENVOY_START_GAP = 1.0


class Envoys:
    """N joined Envoy gateways (``gateway join --dataplane envoy`` processes)."""

    def __init__(self, state_dir: Path, count: int) -> None:
        self.state_dir = state_dir
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []

    def address(self, index: int) -> str:
        return f"127.0.0.{60 + index}"

    def admin(self, index: int) -> str:
        path = self.state_dir / f"envoy-{index}" / "envoy" / "istio-system"
        return (path / f"istio-ingressgateway-bench-envoy-{index}" / "admin-address").read_text()

    def start(self) -> None:
        client = ApiClient.from_state_dir(self.state_dir)
        from tcpmesh.cli.join import token_create

        [token] = token_create(client, "1h", "fanout benchmark (Envoy)")
        status = client.status()
        xds_port = str(status["xds"]["remote"]).rsplit(":", 1)[1]
        for i in range(self.count):
            argv = [sys.executable, "-m", "tcpmesh", "--state-dir"]
            argv += [str(self.state_dir / f"envoy-{i}"), "gateway", "join"]
            argv += ["--server", str(status["listen"]), "--token", token]
            argv += ["--certificate-authority", str(self.state_dir / "pki" / "ca.crt")]
            argv += ["--address", self.address(i), "--node-name", f"bench-envoy-{i}"]
            argv += ["--gateway", "istio-ingressgateway", "--dataplane", "envoy"]
            argv += ["--xds-port", xds_port, "--workers", "1"]
            log = open(self.state_dir / f"envoy-{i}.log", "ab")  # noqa: SIM115 (the child's)
            self.processes.append(
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            )
            time.sleep(ENVOY_START_GAP)

    def stat(self, index: int, name: str) -> int:
        url = f"http://{self.admin(index).strip()}/stats?filter=^{ECDS_STAT}.{name}$&format=json"
        with urllib.request.urlopen(url, timeout=5) as resp:
            found = json.load(resp)["stats"]
        return int(found[0]["value"]) if found else 0

    def wait_ready(self) -> None:
        deadline = time.monotonic() + ENVOY_READY_TIMEOUT
        for i in range(self.count):
            while True:
                try:
                    if self.stat(i, "update_success") >= 1:
                        break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    log = (self.state_dir / f"envoy-{i}.log").read_text(errors="replace")
                    plane = self.state_dir / f"envoy-{i}" / "dataplane.log"
                    envoy = plane.read_text(errors="replace") if plane.exists() else ""
                    raise TimeoutError(f"Envoy {i} not configured:\n{log[-1500:]}\n{envoy[-1500:]}")
                time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def measure_envoys(state_dir: Path, envoys: Envoys, rounds: int) -> list[list[float]]:
    """Per flip, per Envoy: the delay from the apply's sending to Envoy's ECDS update."""
    client = ApiClient.from_state_dir(state_dir)
    base = load_documents((SAMPLES / "tcp-echo-all-v1.yaml").read_text(), "all-v1")
    delays: list[list[float]] = []
    for i in range(rounds):
        v1, v2 = ((80, 20), (100, 0))[i % 2]
        docs = split(base, v1, v2) if v2 else base
        before = [envoys.stat(e, "update_success") for e in range(envoys.count)]
        sent = time.time()
        client.apply(docs)
        deadline = time.monotonic() + PUSH_TIMEOUT
        flip = []
        for e in range(envoys.count):
            while envoys.stat(e, "update_success") <= before[e]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Envoy {e} did not take flip {i}")
                time.sleep(0.02)
            flip.append(envoys.stat(e, "update_time") / 1000 - sent)
        delays.append(flip)
        time.sleep(0.2)
    return delays


def run_envoys(state_dir: Path, count: int, rounds: int) -> list[list[float]]:
    envoys = Envoys(state_dir, count)
    try:
        envoys.start()
        envoys.wait_ready()
        return measure_envoys(state_dir, envoys, rounds)
    finally:
        envoys.stop()


def ms(values: list[float]) -> str:
    v = sorted(x * 1000 for x in values)
    p90 = v[min(len(v) - 1, round(0.9 * (len(v) - 1)))]
    return f"median {statistics.median(v):7.1f}  p90 {p90:7.1f}  max {v[-1]:7.1f} ms"


async def run_count(
    state_dir: Path, node: str, count: int, args: argparse.Namespace
) -> list[list[float]]:
    if not args.joined:
        return await measure(state_dir, [(state_dir, node)] * count, args.rounds)
    agents = await join(state_dir, count)
    beats = asyncio.create_task(heartbeats(agents))
    try:
        followers = [(a.state_dir, a.identity.node_id) for a in agents]
        return await measure(state_dir, followers, args.rounds)
    finally:
        beats.cancel()
        for agent in agents:
            await agent.leave()


async def heartbeats(agents: list[PeerAgent]) -> None:
    """Keep every joined gateway's lease, as its agent does (a beat per third of it)."""
    while True:
        await asyncio.sleep(agents[0].lease_seconds / 3)
        for agent in agents:
            await agent.heartbeat(True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--store", default=None, help="as `up --store` (default: SQLite)")
    parser.add_argument("--address", default="127.0.0.43", help="gateway address (loopback)")
    parser.add_argument("--joined", action="store_true", help="joined hosts over mTLS")
    parser.add_argument("--envoy", action="store_true", help="joined Envoys over mTLS ADS")
    args = parser.parse_args()
    counts = args.gateways or [3, 20]
    state_dir = Path(tempfile.mkdtemp(prefix="tcpmesh-fanout-"))
    up = ["up", "--detach", "--address", args.address, "--workers", "1"]
    if args.joined or args.envoy:
        up += ["--bind-address", "127.0.0.1", "--secure-port", "0", "--xds-port", "0"]
    try:
        tcpmesh(state_dir, *up, *(["--store", args.store] if args.store else []))
        tcpmesh(state_dir, "apply", "-f", str(SAMPLES / "tcp-echo-deployments.yaml"))
        tcpmesh(state_dir, "apply", "-f", str(SAMPLES / "tcp-echo-service.yaml"))
        tcpmesh(state_dir, "apply", "-f", str(SAMPLES / "tcp-echo-all-v1.yaml"))
        pods = ApiClient.from_state_dir(state_dir).status()["pods"]
        [gateway] = [p for p in pods if p["namespace"] == "istio-system"]
        node = f"istio-system/{gateway['name']}"
        store = args.store.split("?")[0] if args.store else "sqlite"
        kind = "joined hosts (mTLS, a node each)" if args.joined else "feeds of one node"
        kind = "joined Envoys (mTLS ADS, a node each)" if args.envoy else kind
        print(
            f"push fan-out, {args.rounds} flips 100/0 <-> 80/20, store {store}, "
            f"{os.cpu_count()} cores, {kind}"
        )
        for count in counts:
            if args.envoy:
                delays = run_envoys(state_dir, count, args.rounds)
            else:
                delays = asyncio.run(run_count(state_dir, node, count, args))
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
