"""Routing through a real mesh to workloads tcpmesh does not run, via ServiceEntries.

The test runs its own backends (plain asyncio TCP servers standing in for VMs), tells the
mesh about them with a ServiceEntry, and splits connections between them with the
seed's DestinationRule-subset-plus-weights pattern. Its gateway listens on 127.0.0.3 and
it starts no pods with pod IPs, so it can run while another mesh (the seed suite's, on
127.0.0.1 and 127.1.0.x) is up.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scipy.stats import binomtest

from tests.integration.harness import MeshHarness, first_word

pytestmark = pytest.mark.integration

# Every statistical assertion here has a false-failure rate of at most 1e-6.
ALPHA = 1e-6
ADDRESS = "127.0.0.3"
PORT = 31400
HOST = "vm-echo.example.internal"
# Backends: (reply word, address). Ports are picked by the kernel, so nothing collides.
BACKENDS = (("vm1", "127.0.0.4"), ("vm2", "127.0.0.6"), ("dns", "127.0.0.1"))


class Backends:
    """Line-echo servers (``<word> <line>``) on an event loop in a thread of this process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.servers: list[asyncio.Server] = []
        self.ports: dict[str, int] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        for word, address in BACKENDS:
            future = asyncio.run_coroutine_threadsafe(self._serve(word, address), self.loop)
            self.ports[word] = future.result(timeout=10)

    async def _serve(self, word: str, address: str) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await asyncio.wait_for(reader.readline(), 60):
                    if not line.endswith(b"\n"):
                        break  # as tcp-echo: a last line without a newline gets no reply
                    writer.write(word.encode() + b" " + line)
                    await writer.drain()
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, address, 0)
        self.servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        async def close() -> None:
            for server in self.servers:
                server.close()
            for server in self.servers:
                await asyncio.wait_for(server.wait_closed(), 5)

        if self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(timeout=10)
        self.loop.close()


def service_entry(backends: Backends) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "vm-echo"},
        "spec": {
            "hosts": [HOST],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP"}],
            "endpoints": [
                {
                    "address": dict(BACKENDS)[word],
                    "ports": {"tcp": backends.ports[word]},
                    "labels": {"app": "vm-echo", "version": version},
                }
                for word, version in (("vm1", "v1"), ("vm2", "v2"))
            ],
        },
    }


def routing_objects() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "vm-echo"},
            "spec": {
                "host": HOST,
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "vm-gateway"},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {"port": {"number": PORT, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
                ],
            },
        },
    ]


def virtual_service(*routes: tuple[str, str | None, int]) -> dict[str, Any]:
    entries = []
    for host, subset, weight in routes:
        destination: dict[str, Any] = {"host": host}
        if subset is not None:
            destination["subset"] = subset
        entries.append({"destination": destination, "weight": weight})
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "vm-echo"},
        "spec": {
            "hosts": ["*"],
            "gateways": ["vm-gateway"],
            "tcp": [{"match": [{"port": PORT}], "route": entries}],
        },
    }


def apply(mesh: MeshHarness, directory: Path, name: str, *objects: dict[str, Any]) -> None:
    path = directory / name
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    mesh.apply(path)


def probe(word_count: int = 20) -> list[str]:
    words = []
    for _ in range(word_count):
        try:
            words.append(first_word(ADDRESS, PORT))
        except OSError:
            words.append("")
    return words


def route_only_to(mesh: MeshHarness, directory: Path, word: str, *objects: dict[str, Any]) -> None:
    """Apply ``objects`` and wait until 20 connections in a row answer ``word``.

    Under any split that still sends a share elsewhere, 20 in a row is at most 2^-20 likely.
    """
    apply(mesh, directory, f"route-{word}.yaml", *objects)
    mesh.wait_for(f"all connections answered by {word}", lambda: set(probe()) == {word}, 15.0)


def send_json(mesh: MeshHarness, *args: str) -> dict[str, Any]:
    result = mesh.tcpmesh("send", f"{ADDRESS}:{PORT}", "-o", "json", *args)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    servers = Backends()
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("manifests")


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, backends: Backends, manifests: Path
) -> Iterator[MeshHarness]:
    harness = MeshHarness(tmp_path_factory.mktemp("state"), ADDRESS)
    try:
        harness.up()
        apply(harness, manifests, "vm-echo.yaml", service_entry(backends), *routing_objects())
        route_only_to(harness, manifests, "vm1", virtual_service((HOST, "v1", 100)))
        yield harness
    finally:
        harness.down()


def test_get_lists_the_entry_with_istios_columns(mesh: MeshHarness) -> None:
    lines = mesh.tcpmesh("get", "se").stdout.splitlines()
    assert lines[0].split() == ["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"]
    assert lines[1].split()[:4] == ["vm-echo", f'["{HOST}"]', "MESH_INTERNAL", "STATIC"]
    stored = mesh.get_json("serviceentries.networking.istio.io", "vm-echo")
    assert [e["labels"]["version"] for e in stored["spec"]["endpoints"]] == ["v1", "v2"]


def test_all_v1_reaches_only_the_first_backend(mesh: MeshHarness, manifests: Path) -> None:
    route_only_to(mesh, manifests, "vm1", virtual_service((HOST, "v1", 100)))
    report = send_json(mesh, "-c", "200", "--concurrency", "20", "--expect", "vm1=100")
    assert report["groups"] == {"vm1": 200}
    assert report["consistent"] is True


def test_fifty_fifty_split_passes_an_exact_binomial_test(
    mesh: MeshHarness, manifests: Path
) -> None:
    apply(mesh, manifests, "split.yaml", virtual_service((HOST, "v1", 50), (HOST, "v2", 50)))
    mesh.wait_for("the 50/50 route", lambda: set(probe(40)) == {"vm1", "vm2"}, 15.0)
    time.sleep(0.5)  # let every worker of the gateway take the new route
    report = send_json(mesh, "-c", "1000", "--concurrency", "20", "--expect", "vm1=50,vm2=50")
    groups = report["groups"]
    assert sum(report["failures"].values()) == 0
    assert set(groups) == {"vm1", "vm2"}
    assert groups["vm1"] + groups["vm2"] == 1000
    assert binomtest(groups["vm2"], 1000, 0.5).pvalue >= ALPHA
    assert report["consistent"] is True


def test_workload_entry_selected_by_a_service_entry(
    mesh: MeshHarness, manifests: Path, backends: Backends
) -> None:
    pool = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "vm-pool"},
        "spec": {
            "hosts": ["vm-pool.example.internal"],
            "resolution": "STATIC",
            "ports": [{"number": 9000, "name": "tcp"}],
            "workloadSelector": {"labels": {"app": "vm-pool"}},
        },
    }
    workload = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": "vm-pool-2"},
        "spec": {
            "address": dict(BACKENDS)["vm2"],
            "ports": {"tcp": backends.ports["vm2"]},
            "labels": {"app": "vm-pool"},
        },
    }
    apply(mesh, manifests, "pool.yaml", pool, workload)
    route_only_to(mesh, manifests, "vm2", virtual_service(("vm-pool.example.internal", None, 100)))
    table = mesh.tcpmesh("get", "we").stdout.splitlines()
    assert table[1].split()[0] == "vm-pool-2"
    assert table[1].split()[-1] == dict(BACKENDS)["vm2"]


def test_dns_entry_reaches_the_address_its_host_resolves_to(
    mesh: MeshHarness, manifests: Path, backends: Backends
) -> None:
    # "localhost" resolves to 127.0.0.1, where the third backend listens.
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "by-name"},
        "spec": {
            "hosts": ["by-name.example.internal"],
            "resolution": "DNS",
            "ports": [{"number": 9000, "name": "tcp", "targetPort": backends.ports["dns"]}],
            "endpoints": [{"address": "localhost"}],
        },
    }
    apply(mesh, manifests, "by-name.yaml", entry)
    route_only_to(mesh, manifests, "dns", virtual_service(("by-name.example.internal", None, 100)))
