"""Sticky versions through the real gateway: 10,000 client addresses on 127.13.0.0/16."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from scipy import stats

from tcpmesh.control import WeightedCluster
from tcpmesh.dataplane.affinity import pick_by_address
from tests.integration.harness import SAMPLES, MeshHarness, seeded_mesh

pytestmark = pytest.mark.integration

ADDRESS = "127.0.12.2"
PORT = 31400
N = 10_000
CLIENTS = [
    str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("127.13.0.1")) + i)) for i in range(N)
]
ALPHA = 1e-6

SPLIT = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo
  annotations: {{traffic.tcpmesh.io/version-affinity: source-ip}}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}
      weight: {v1}
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}
      weight: {v2}
"""


@pytest.fixture
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    with seeded_mesh(
        tmp_path_factory.mktemp("state"), ADDRESS, SAMPLES / "tcp-echo-all-v1.yaml"
    ) as harness:
        yield harness


def word_from(source: str) -> str:
    """One connection from ``source``: send a line, read the reply's first word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((ADDRESS, PORT))
        sock.sendall(b"hello\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data.decode().split(" ", 1)[0]


def words(sources: list[str]) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(word_from, sources))


def _pick(weights: tuple[int, int], client: str) -> str:
    split = (WeightedCluster("one", weights[0]), WeightedCluster("two", weights[1]))
    chosen = pick_by_address(split, client)
    return chosen.cluster_name if chosen else ""


def route(mesh: MeshHarness, tmp: Path, weights: tuple[int, int], before: tuple[int, int]) -> None:
    v1, v2 = weights
    path = tmp / f"split-{v1}-{v2}.yaml"
    path.write_text(SPLIT.format(v1=v1, v2=v2))
    mesh.apply(path)
    # A client that this split sends elsewhere than the one before tells when the
    # gateway took the new routes.
    client = next(c for c in CLIENTS if _pick(weights, c) != _pick(before, c))
    expected = _pick(weights, client)
    mesh.wait_for(f"the {v1}/{v2} split", lambda: _try_word(client) == expected, 15)


def _try_word(source: str) -> str:
    try:
        return word_from(source)
    except OSError:
        return ""


def consistent(count: int, share: float) -> bool:
    return stats.binomtest(count, N, share, alternative="two-sided").pvalue >= ALPHA


def test_sticky_versions_over_ten_thousand_client_addresses(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    route(mesh, tmp_path, (80, 20), before=(100, 0))
    before = words(CLIENTS)
    assert set(before) == {"one", "two"}
    assert consistent(before.count("two"), 0.2), before.count("two")

    again = [word_from(CLIENTS[7]) for _ in range(50)]
    assert len(set(again)) == 1 and again[0] == before[7]

    route(mesh, tmp_path, (70, 30), before=(80, 20))
    after = words(CLIENTS)
    assert set(after) == {"one", "two"}
    assert consistent(after.count("two"), 0.3), after.count("two")
    moved = [c for c, b, a in zip(CLIENTS, before, after, strict=True) if b != a]
    print(f"v2 at 80/20: {before.count('two')}, at 70/30: {after.count('two')}, moved {len(moved)}")
    assert len(moved) / N <= 0.105, len(moved)
    assert all(before[CLIENTS.index(c)] == "one" for c in moved[:200]), "only v1 gives up clients"
