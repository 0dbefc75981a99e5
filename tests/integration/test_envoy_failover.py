"""A joined Envoy fails over between control-plane replicas (issue 14, remote gateways).

Three hosts in network namespaces: host 1 runs an etcd member and replica A, host 2
replica B (the same etcd), host 3 tcp-echo v1 joined as a workload and
``gateway join --dataplane envoy --server A,B``. The replica its ADS stream is on is
killed with SIGKILL: the Envoy keeps serving what it has, its stream comes back on the
other one, and a change applied through that one reaches it. Skipped only when network
namespaces cannot be made.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.apiserver.client import ApiClient, ApiError, Unreachable
from tcpmesh.apiserver.credentials import read_credentials
from tcpmesh.cli.inputs import load_manifests
from tcpmesh.cli.send import run as send_run
from tcpmesh.xds import missing_envoy_support
from tests.etcd_cluster import ETCD
from tests.integration.harness import SAMPLES
from tests.netns import Lan, lan, netns_problem

pytestmark = [pytest.mark.integration]
_PROBLEM = netns_problem() or missing_envoy_support()
if _PROBLEM is not None:
    pytestmark.append(pytest.mark.skip(reason=f"needs network namespaces and Envoy: {_PROBLEM}"))

API_PORT = 6443
XDS_PORT = 15012
GATEWAY_PORT = 31400
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


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@dataclass
class TwoReplicas:
    net: Lan
    base: Path
    replicas: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def state(self, name: str) -> Path:
        return self.base / name

    def servers(self) -> str:
        return ",".join(f"https://{self.net.address(h)}:{API_PORT}" for h in REPLICAS)

    def client(self, host: int) -> ApiClient:
        creds = read_credentials(self.state(f"h{host}"))
        assert creds is not None and creds.ca_file is not None
        url = f"https://{self.net.address(host)}:{API_PORT}"
        return ApiClient(url, creds.token, ca_file=Path(creds.ca_file), timeout=10)

    def on_switch(self, func: Callable[[], Any], timeout: float = 60.0) -> Any:
        return self.net.run_in(self.net.switch, func, timeout)

    def apply(self, host: int, *paths: Path, text: str = "") -> Any:
        objects = [o for path in paths for o in load_manifests([str(path)], None)[0]]
        if text:
            source = self.base / f"apply-{time.monotonic_ns()}.yaml"
            source.write_text(text)
            objects += load_manifests([str(source)], None)[0]
        return self.on_switch(lambda: self.client(host).apply(objects))

    def envoy_node(self, host: int) -> dict[str, Any]:
        status = self.on_switch(lambda: self.client(host).status(), 15)
        nodes = {n["node"]: n for n in (status["xds"] or {}).get("nodes", [])}
        return dict(nodes.get(NODE) or {})

    def start_replica(self, host: int) -> None:
        address = self.net.address(host)
        argv = _python(
            "tcpmesh",
            "--state-dir",
            str(self.state(f"h{host}")),
            "up",
            "--store",
            f"etcd://{self.net.address(1)}:2379",
            "--address",
            address,
            "--bind-address",
            address,
            "--secure-port",
            str(API_PORT),
            "--xds-port",
            str(XDS_PORT),
            "--gateway-replicas",
            "0",
            "--workers",
            "1",
        )
        self.replicas[host] = self.net.popen(host, argv, self.base / f"h{host}-mesh.log")

    def join(self, role: str, token: str, ca_hash: str, *flags: str) -> None:
        argv = _python(
            "tcpmesh",
            "--state-dir",
            str(self.state(f"h{EDGE}-{role}")),
            role,
            "join",
            "--server",
            self.servers(),
            "--token",
            token,
            "--ca-cert-hash",
            ca_hash,
            "--address",
            self.net.address(EDGE),
            "--node-name",
            f"h{EDGE}",
            *flags,
        )
        self.net.popen(EDGE, argv, self.base / f"h{EDGE}-{role}.log")


def _wait(what: str, check: Callable[[], bool], timeout: float, mesh: TwoReplicas) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ApiError, Unreachable, AssertionError, KeyError):
            pass
        time.sleep(0.1)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
        for p in sorted(mesh.base.rglob("*.log"))
    )
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def _words(mesh: TwoReplicas, count: int) -> dict[str, int]:
    address = mesh.net.address(EDGE)

    def words() -> dict[str, int]:
        result = asyncio.run(send_run(address, GATEWAY_PORT, count=count, concurrency=1, timeout=5))
        return {**result.groups, **{f"failed:{k}": v for k, v in result.failures.items()}}

    found: dict[str, int] = mesh.on_switch(words, 60)
    return found


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoReplicas]:
    from cryptography import x509

    from tcpmesh.apiserver.pki import ca_public_key_hash
    from tcpmesh.cli.join import token_create

    base = tmp_path_factory.mktemp("envoyfailover")
    with lan(3) as net:
        mesh = TwoReplicas(net, base)
        address = net.address(1)
        etcd = [ETCD, "--name=h1", f"--data-dir={base / 'etcd'}"]
        etcd += [f"--listen-client-urls=http://{address}:2379"]
        etcd += [f"--advertise-client-urls=http://{address}:2379"]
        etcd += [f"--listen-peer-urls=http://{address}:2380"]
        etcd += [f"--initial-advertise-peer-urls=http://{address}:2380"]
        etcd += [f"--initial-cluster=h1=http://{address}:2380"]
        net.popen(1, etcd, base / "etcd.log")
        for host in REPLICAS:
            mesh.start_replica(host)
        for host in REPLICAS:
            _wait(
                f"replica {host}",
                lambda h=host: mesh.on_switch(mesh.client(h).status, 15)["listen"] is not None,
                90,
                mesh,
            )
        token = mesh.on_switch(lambda: token_create(mesh.client(1), "1h", "failover test"))[0]
        ca = x509.load_pem_x509_certificate((mesh.state("h1") / "pki" / "ca.crt").read_bytes())
        ca_hash = ca_public_key_hash(ca)
        mesh.apply(
            1,
            SAMPLES / "tcp-echo-service.yaml",
            SAMPLES / "tcp-echo-all-v1.yaml",
            text=WORKLOAD_GROUP,
        )
        echo = _python("tcpmesh.runtime.tcpecho", "9000", "one")
        env = {**os.environ, "POD_IP": net.address(EDGE)}
        net.popen(EDGE, echo, base / "echo.log", env=env)
        mesh.join("workload", token, ca_hash, "--group", "tcp-echo-v1", "-n", "default")
        mesh.join(
            "gateway",
            token,
            ca_hash,
            "--gateway",
            "istio-ingressgateway",
            "--dataplane",
            "envoy",
            "--xds-port",
            str(XDS_PORT),
        )
        _wait("the Envoy gateway answering", lambda: _words(mesh, 1) == {"one": 1}, 90, mesh)
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
    assert _words(mesh, 10) == {"one": 10}
    before = mesh.envoy_node(survivor).get("appliedSnapshot")
    mesh.apply(survivor, SAMPLES / "tcp-echo-20-v2.yaml")

    def taken() -> bool:
        node = mesh.envoy_node(survivor)
        return bool(node["connected"]) and node["appliedSnapshot"] != before

    _wait("the Envoy ACKing a change through the survivor", taken, FAILOVER_BOUND, mesh)
    took = time.monotonic() - killed
    print(
        f"failover: kill -9 of replica {victim} -> a change ACKed via {survivor} {took:.2f} s after"
    )
