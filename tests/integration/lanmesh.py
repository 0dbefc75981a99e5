"""What the multi-host tests share: a mesh on a ``tests.netns.Lan``, driven from its switch.

test_multihost, test_envoy_join and test_envoy_failover each build their own topology
(replicas, etcd members, joined gateways and workloads on different hosts), but talk to
it the same way: API clients of a replica over the LAN, applies, ``tcpmesh up`` and
``tcpmesh ROLE join`` command lines, waits that end with every log the test wrote, and
tcp-echo words counted through a gateway. ``LanMesh`` holds those; a module's own
dataclass adds its topology.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpmesh.apiserver.client import ApiClient, ApiError, Unreachable
from tcpmesh.apiserver.credentials import read_credentials
from tcpmesh.cli.inputs import load_manifests
from tcpmesh.cli.send import run as send_run
from tests.netns import Lan

API_PORT = 6443
XDS_PORT = 15012
GATEWAY_PORT = 31400
# A WorkloadGroup per tcp-echo version (VERSION replaced), probed every second.
WORKLOAD_GROUP = """
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: tcp-echo-VERSION, namespace: default}
spec:
  metadata: {labels: {app: tcp-echo, version: VERSION}}
  template: {ports: {tcp: 9000}}
  probe: {periodSeconds: 1, failureThreshold: 1, tcpSocket: {port: 9000}}
"""
# `gateway join` flags for an Envoy gateway of istio-ingressgateway, its ADS on XDS_PORT.
ENVOY_GATEWAY = (
    "--gateway",
    "istio-ingressgateway",
    "--dataplane",
    "envoy",
    "--xds-port",
    str(XDS_PORT),
)
# What a check may raise while the thing it waits for is not there yet.
_NOT_YET = (OSError, ApiError, Unreachable, AssertionError, KeyError, ValueError)


def python_module(*args: str) -> list[str]:
    """``python -m ARGS`` with this interpreter (the tcpmesh under test)."""
    return [sys.executable, "-m", *args]


def workload_groups(*versions: str) -> str:
    return "---".join(WORKLOAD_GROUP.replace("VERSION", v) for v in versions)


def etcd_argv(etcd: str, name: str, data_dir: Path, address: str, cluster: str) -> list[str]:
    """One etcd member on ``address``; ``cluster`` is its --initial-cluster."""
    return [
        etcd,
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls=http://{address}:2379",
        f"--advertise-client-urls=http://{address}:2379",
        f"--listen-peer-urls=http://{address}:2380",
        f"--initial-advertise-peer-urls=http://{address}:2380",
        f"--initial-cluster={cluster}",
    ]


@dataclass
class LanMesh:
    net: Lan
    base: Path
    token: str = ""
    ca_hash: str = ""

    def client_of(self, state: Path, host: int) -> ApiClient:
        """A client of the replica on ``host`` whose state is ``state`` (use from the switch)."""
        creds = read_credentials(state)
        assert creds is not None and creds.ca_file is not None
        url = f"https://{self.net.address(host)}:{API_PORT}"
        return ApiClient(url, creds.token, ca_file=Path(creds.ca_file), timeout=10)

    def on_switch(self, func: Callable[[], Any], timeout: float = 60.0) -> Any:
        return self.net.run_in(self.net.switch, func, timeout)

    def apply_with(self, client: Callable[[], ApiClient], *paths: Path, text: str = "") -> Any:
        """Apply the manifests in ``paths`` and in ``text`` through ``client()``."""
        objects = [o for path in paths for o in load_manifests([str(path)], None)[0]]
        if text:
            source = self.base / f"apply-{time.monotonic_ns()}.yaml"
            source.write_text(text)
            objects += load_manifests([str(source)], None)[0]
        return self.on_switch(lambda: client().apply(objects))

    def up_argv(self, state: Path, host: int, *flags: str) -> list[str]:
        """``tcpmesh up`` serving its API on ``host``'s address, with no local gateway."""
        address = self.net.address(host)
        return python_module(
            "tcpmesh",
            "--state-dir",
            str(state),
            "up",
            *flags,
            "--address",
            address,
            "--bind-address",
            address,
            "--secure-port",
            str(API_PORT),
            "--gateway-replicas",
            "0",
            "--workers",
            "1",
        )

    def join(
        self, host: int, role: str, state: Path, servers: str, *flags: str
    ) -> subprocess.Popen[bytes]:
        """``tcpmesh ROLE join`` on ``host`` with this mesh's token; logs to STATE.log."""
        argv = python_module(
            "tcpmesh",
            "--state-dir",
            str(state),
            role,
            "join",
            "--server",
            servers,
            "--token",
            self.token,
            "--ca-cert-hash",
            self.ca_hash,
            "--address",
            self.net.address(host),
            "--node-name",
            f"h{host}",
            *flags,
        )
        return self.net.popen(host, argv, self.base / f"{state.name}.log")

    def take_token(self, client: ApiClient, ca_file: Path, description: str) -> None:
        """A bootstrap token and the CA's public-key hash, as `tcpmesh token create` prints."""
        from cryptography import x509

        from tcpmesh.apiserver.pki import ca_public_key_hash
        from tcpmesh.cli.join import token_create

        self.token = self.on_switch(lambda: token_create(client, "1h", description))[0]
        self.ca_hash = ca_public_key_hash(x509.load_pem_x509_certificate(ca_file.read_bytes()))

    def start_echo(self, host: int, word: str, log: Path) -> None:
        """tcp-echo on port 9000 of ``host``, answering ``word``."""
        echo = python_module("tcpmesh.runtime.tcpecho", "9000", word)
        env = {**os.environ, "POD_IP": self.net.address(host)}
        self.net.popen(host, echo, log, env=env)

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Until ``check()`` holds; on timeout, fail with the end of every log written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except _NOT_YET:
                pass
            time.sleep(0.1)
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.base.rglob("*.log"))
        )
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def words(
        self, host: int, count: int, namespace: str | None = None, timeout: float = 120.0
    ) -> dict[str, int]:
        """tcp-echo's answers to ``count`` connections through the gateway on ``host``,
        from the switch (or ``namespace``); failures counted as ``failed:REASON``."""
        address = self.net.address(host)

        def send() -> dict[str, int]:
            result = asyncio.run(
                send_run(address, GATEWAY_PORT, count=count, concurrency=1, timeout=5)
            )
            return {**result.groups, **{f"failed:{k}": v for k, v in result.failures.items()}}

        found: dict[str, int] = self.net.run_in(namespace or self.net.switch, send, timeout)
        return found
