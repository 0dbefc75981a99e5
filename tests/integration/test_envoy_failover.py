"""A joined Envoy fails over between control-plane replicas (issue 14, remote gateways).

Three hosts in network namespaces: host 1 runs an etcd member and replica A, host 2
replica B (the same etcd), host 3 tcp-echo v1 joined as a workload and
``gateway join --dataplane envoy --server A,B``. The replica its ADS stream is on is
killed with SIGKILL: the Envoy keeps serving what it has, its stream comes back on the
other one, and a change applied through that one reaches it. Skipped only when network
namespaces cannot be made.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.apiserver.client import ApiClient
from tcpmesh.xds import missing_envoy_support
from tests.etcd_cluster import ETCD
from tests.integration.harness import SAMPLES
from tests.integration.lanmesh import API_PORT, ENVOY_GATEWAY, XDS_PORT, LanMesh, etcd_argv
from tests.netns import lan, netns_problem

pytestmark = [pytest.mark.integration]
_PROBLEM = netns_problem() or missing_envoy_support()
if _PROBLEM is not None:
    pytestmark.append(pytest.mark.skip(reason=f"needs network namespaces and Envoy: {_PROBLEM}"))

REPLICAS = (1, 2)
EDGE = 3
NODE = "istio-system/istio-ingressgateway-h3"
# How soon after the kill a change applied through the survivor is ACKed by the Envoy:
# its keepalive notices a dead connection in 1-3 s, its retry comes 0.1-0.5 s later.
FAILOVER_BOUND = 10.0
WORKLOAD_GROUP = """
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: tcp-echo-v1, namespace: default}
spec:
  metadata: {labels: {app: tcp-echo, version: v1}}
  template: {ports: {tcp: 9000}}
"""


@dataclass
class TwoReplicas(LanMesh):
    replicas: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def servers(self) -> str:
        return ",".join(f"https://{self.net.address(h)}:{API_PORT}" for h in REPLICAS)

    def client(self, host: int) -> ApiClient:
        return self.client_of(self.base / f"h{host}", host)

    def apply(self, host: int, *paths: Path, text: str = "") -> Any:
        return self.apply_with(lambda: self.client(host), *paths, text=text)

    def envoy_node(self, host: int) -> dict[str, Any]:
        status = self.on_switch(lambda: self.client(host).status(), 15)
        nodes = {n["node"]: n for n in (status["xds"] or {}).get("nodes", [])}
        return dict(nodes.get(NODE) or {})

    def start_replica(self, host: int) -> None:
        store = ("--store", f"etcd://{self.net.address(1)}:2379", "--xds-port", str(XDS_PORT))
        argv = self.up_argv(self.base / f"h{host}", host, *store)
        self.replicas[host] = self.net.popen(host, argv, self.base / f"h{host}-mesh.log")

    def join_edge(self, role: str, *flags: str) -> None:
        self.join(EDGE, role, self.base / f"h{EDGE}-{role}", self.servers(), *flags)

    def split(self, count: int) -> dict[str, int]:
        return self.words(EDGE, count, timeout=60)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoReplicas]:
    base = tmp_path_factory.mktemp("envoyfailover")
    with lan(3) as net:
        mesh = TwoReplicas(net, base)
        address = net.address(1)
        etcd = etcd_argv(ETCD, "h1", base / "etcd", address, f"h1=http://{address}:2380")
        net.popen(1, etcd, base / "etcd.log")
        for host in REPLICAS:
            mesh.start_replica(host)
        for host in REPLICAS:
            mesh.wait(
                f"replica {host}",
                lambda h=host: mesh.on_switch(mesh.client(h).status, 15)["listen"] is not None,
                90,
            )
        mesh.take_token(mesh.client(1), base / "h1" / "pki" / "ca.crt", "failover test")
        mesh.apply(
            1,
            SAMPLES / "tcp-echo-service.yaml",
            SAMPLES / "tcp-echo-all-v1.yaml",
            text=WORKLOAD_GROUP,
        )
        mesh.start_echo(EDGE, "one", base / "echo.log")
        mesh.join_edge("workload", "--group", "tcp-echo-v1", "-n", "default")
        mesh.join_edge(
            "gateway",
            *ENVOY_GATEWAY,
        )
        mesh.wait("the Envoy gateway answering", lambda: mesh.split(1) == {"one": 1}, 90)
        yield mesh


def test_the_envoy_follows_the_surviving_replica_after_a_kill(replicas: TwoReplicas) -> None:
    mesh = replicas
    # Kill the replica the Envoy's stream is on (round robin picked one of the two).
    [victim] = [h for h in REPLICAS if mesh.envoy_node(h).get("connected")]
    [survivor] = [h for h in REPLICAS if h != victim]
    mesh.replicas[victim].send_signal(signal.SIGKILL)
    mesh.replicas[victim].wait(timeout=10)
    killed = time.monotonic()
    # Envoy goes on serving its last configuration meanwhile.
    assert mesh.split(10) == {"one": 10}
    before = mesh.envoy_node(survivor).get("appliedSnapshot")
    mesh.apply(survivor, SAMPLES / "tcp-echo-20-v2.yaml")

    def taken() -> bool:
        node = mesh.envoy_node(survivor)
        return bool(node["connected"]) and node["appliedSnapshot"] != before

    mesh.wait("the Envoy ACKing a change through the survivor", taken, FAILOVER_BOUND)
    took = time.monotonic() - killed
    print(
        f"failover: kill -9 of replica {victim} -> a change ACKed via {survivor} {took:.2f} s after"
    )
