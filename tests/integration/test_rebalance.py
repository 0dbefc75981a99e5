"""Rebalancing open connections through the real gateway (two worker processes).

100 long-lived clients all on v1; the split becomes 80/20; ``tcpmesh rebalance
vs/tcp-echo --over 10s`` must close 20 +- 1 of them (not 100), spread over the window,
with no other connection touched, and the clients that reconnect split by 80/20.
"""

from __future__ import annotations

import re
import selectors
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tests.integration.addresses import idle_gateway_address
from tests.integration.harness import SAMPLES, MeshHarness, exchange

pytestmark = pytest.mark.integration

PORT = 31400
CLIENTS = 100
OVER = 10.0
ALPHA = 1e-6


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    address = idle_gateway_address("127.0.14.1")
    harness = MeshHarness(tmp_path_factory.mktemp("state"), address, workers=2)
    try:
        harness.up()
        harness.apply(
            SAMPLES / "tcp-echo-deployments.yaml",
            SAMPLES / "tcp-echo-service.yaml",
            SAMPLES / "tcp-echo-all-v1.yaml",
        )
        harness.wait_for("routes to v1", lambda: _word(address) == "one")
        yield harness
    finally:
        harness.down()


def _word(address: str) -> str:
    try:
        return exchange(address, PORT, "probe", timeout=2).split(" ", 1)[0]
    except OSError:
        return ""


def _ask(sock: socket.socket, line: str) -> str:
    """One line on an open connection; the reply's first word."""
    sock.sendall(line.encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        data = sock.recv(4096)
        if not data:
            return ""
        reply += data
    return reply.decode().split(" ", 1)[0]


class Clients:
    """Long-lived clients; each one the proxy closes reconnects once and says hello."""

    def __init__(self, address: str, count: int = CLIENTS) -> None:
        self.address = address
        self.socks = [socket.create_connection((address, PORT), timeout=5) for _ in range(count)]
        self.closed_at: list[float] = []
        self.resets = 0
        self.reconnected: Counter[str] = Counter()
        self.reconnect = True

    def watch(self, seconds: float) -> None:
        """Until ``seconds`` pass: note each close (EOF or reset) and reconnect it."""
        selector = selectors.DefaultSelector()
        for sock in self.socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(min(left, 0.5)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    self.resets += 1
                    data = b""
                if data:
                    continue  # nothing is expected unasked; ignore
                self.closed_at.append(time.monotonic())
                selector.unregister(sock)
                sock.close()
                self.socks.remove(sock)
                self._reconnect()
        selector.close()

    def _reconnect(self) -> None:
        if not self.reconnect:
            return
        with socket.create_connection((self.address, PORT), timeout=5) as sock:
            self.reconnected[_ask(sock, "back again")] += 1

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_rebalance_closes_the_fewest_needed_spread_over_the_window(mesh: MeshHarness) -> None:
    clients = Clients(mesh.address)
    try:
        assert Counter(_ask(s, f"hello {i}") for i, s in enumerate(clients.socks)) == {
            "one": CLIENTS
        }
        mesh.apply(SAMPLES / "tcp-echo-20-v2.yaml")
        mesh.wait_for("the 80/20 split", lambda: "two" in {_word(mesh.address) for _ in range(10)})
        clients.watch(2.0)
        assert clients.closed_at == [], "a weight change alone closes nothing (hitless)"

        out = mesh.tcpmesh("rebalance", "vs/tcp-echo", "--over", "10s").stdout
        assert out.startswith("virtualservice.networking.istio.io/tcp-echo rebalance requested")
        started = time.monotonic()
        clients.watch(OVER + 3.0)
        described = mesh.tcpmesh("describe", "vs", "tcp-echo").stdout
        assert re.search(r"rebalance request r-\S+: over 10s, at most 100% of open", described)
        # The 80 left open still answer on v1: nothing else was reset or moved.
        survivors = Counter(_ask(s, "still here") for s in clients.socks)
    finally:
        clients.close()

    closed = len(clients.closed_at)
    assert 19 <= closed <= 21, f"{closed} closed, expected 20 +- 1"
    assert survivors == {"one": CLIENTS - closed}
    assert clients.resets == 0
    offsets = [t - started for t in clients.closed_at]
    assert max(offsets) <= OVER + 1.5, offsets
    per_second = Counter(int(t) for t in offsets)
    assert max(per_second.values()) <= closed / 3, sorted(offsets)
    # In any one-second window, not only whole seconds.
    worst = max(sum(1 for u in offsets if t <= u < t + 1) for t in offsets)
    assert worst <= closed / 3, sorted(offsets)
    back = clients.reconnected
    assert set(back) <= {"one", "two"} and sum(back.values()) == closed
    assert binomtest(back["two"], closed, 0.2).pvalue >= ALPHA, back


ROLLBACK = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo
  annotations:
    traffic.tcpmesh.io/rebalance: on-weight-change
    traffic.tcpmesh.io/rebalance-over: 1s
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
"""


def test_a_rollback_with_on_weight_change_moves_the_canarys_connections_back(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    """80/20, then back to all-v1 on a route that rebalances after every weight change:
    exactly the connections on v2 close; those on v1 stay open."""
    mesh.apply(SAMPLES / "tcp-echo-20-v2.yaml")
    mesh.wait_for("the 80/20 split", lambda: "two" in {_word(mesh.address) for _ in range(10)})
    clients = Clients(mesh.address, count=20)
    clients.reconnect = False
    try:
        words = {s: _ask(s, "which") for s in clients.socks}
        on_v2 = {s for s, w in words.items() if w == "two"}
        # Two workers, each 80/20 exactly: one of them took at least 5 of the 20.
        assert on_v2 and set(words.values()) == {"one", "two"}, words
        path = tmp_path / "rollback.yaml"
        path.write_text(ROLLBACK)
        mesh.apply(path)
        clients.watch(4.0)
        assert len(clients.closed_at) == len(on_v2), (len(clients.closed_at), len(on_v2))
        assert not on_v2 & set(clients.socks), "every v2 connection was closed"
        assert {_ask(s, "still") for s in clients.socks} == {"one"}
        assert clients.resets == 0
    finally:
        clients.close()
