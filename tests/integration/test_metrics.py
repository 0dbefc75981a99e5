"""Istio's TCP metrics on the gateway pod's :15020, on both data planes, read three ways:
by scraping the text format, by a real Prometheus, and against what the client counted.

The counts must be exact: every connection ``tcpmesh send`` opened is one
``istio_tcp_connections_opened_total`` increment on the version that answered it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration.addresses import idle_gateway_address
from tests.integration.harness import SAMPLES, MeshHarness, first_word

pytestmark = pytest.mark.integration

PORT = 31400
FIRST_ADDRESS = {"python": "127.0.45.1", "envoy": "127.0.46.1"}
MESSAGE = "metrics-check"
VERSION_OF = {"one": "v1", "two": "v2"}

Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshHarness]:
    dataplane: str = request.param
    if dataplane == "envoy" and (missing := missing_envoy_support()) is not None:
        pytest.skip(f"Envoy data plane: {missing}")
    address = idle_gateway_address(FIRST_ADDRESS[dataplane])
    state_dir = tmp_path_factory.mktemp(f"metrics-{dataplane}")
    harness = MeshHarness(state_dir, address, workers=2, dataplane=dataplane)
    try:
        harness.up()
        harness.apply(
            SAMPLES / "tcp-echo-deployments.yaml",
            SAMPLES / "tcp-echo-service.yaml",
            SAMPLES / "tcp-echo-all-v1.yaml",
        )
        harness.wait_for(
            "tcp-echo v1 and v2",
            lambda: harness.deployments_ready("tcp-echo-v1", "tcp-echo-v2"),
            90.0,
        )
        harness.apply(SAMPLES / "tcp-echo-20-v2.yaml")
        harness.wait_for(
            "the 80/20 route",
            lambda: "two" in {_word(address) for _ in range(40)},
            60.0,
        )
        harness.wait_for("the metrics port", lambda: _scrape_or_none(address) is not None)
        yield harness
    finally:
        harness.down()


def _word(address: str) -> str:
    try:
        return first_word(address, PORT)
    except OSError:
        return ""


def _scrape_or_none(address: str) -> Samples | None:
    try:
        return scrape(address)
    except OSError:
        return None


def scrape(address: str) -> Samples:
    url = f"http://{address}:15020/stats/prometheus"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def settle(address: str, done: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until ``done`` holds (the last connections may still be closing)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(address)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_pod_carries_istios_scrape_annotations(mesh: MeshHarness) -> None:
    pods = mesh.pods("istio-system")
    assert len(pods) == 1
    annotations = pods[0]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "15020"
    assert annotations["prometheus.io/path"] == "/stats/prometheus"
    assert pods[0]["status"]["podIP"] == mesh.address


def test_a_thousand_connections_are_counted_exactly(mesh: MeshHarness) -> None:
    address = mesh.address
    before = settle(
        address,
        lambda s: (
            total(s, "istio_tcp_connections_opened_total")
            == total(s, "istio_tcp_connections_closed_total")
        ),
    )
    n = 1000
    report = json.loads(
        mesh.tcpmesh(
            "send",
            f"{address}:{PORT}",
            "-c",
            str(n),
            "--concurrency",
            "20",
            "--message",
            MESSAGE,
            "-o",
            "json",
        ).stdout
    )
    assert sum(report["failures"].values()) == 0
    groups = report["groups"]
    assert set(groups) == {"one", "two"} and sum(groups.values()) == n

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return total(samples, name, **labels) - total(before, name, **labels)

    after = settle(address, lambda s: delta(s, "istio_tcp_connections_closed_total") >= n)
    for word, version in VERSION_OF.items():
        opened = delta(after, "istio_tcp_connections_opened_total", destination_version=version)
        closed = delta(after, "istio_tcp_connections_closed_total", destination_version=version)
        assert (opened, closed) == (groups[word], groups[word]), version
        # Each client sent "MESSAGE\n" and got "one MESSAGE\n" (or "two ...") back.
        received = delta(after, "istio_tcp_received_bytes_total", destination_version=version)
        sent = delta(after, "istio_tcp_sent_bytes_total", destination_version=version)
        assert received == groups[word] * (len(MESSAGE) + 1), version
        assert sent == groups[word] * (len(MESSAGE) + 5), version
    series = [lab for name, lab, _ in after if name == "istio_tcp_connections_opened_total"]
    v2 = next(lab for lab in series if lab["destination_version"] == "v2")
    assert v2 == {
        "reporter": "source",
        "source_workload": "istio-ingressgateway",
        "source_workload_namespace": "istio-system",
        "source_app": "istio-ingressgateway",
        "source_version": "unknown",
        "source_principal": "unknown",
        "source_cluster": "Kubernetes",
        "destination_workload": "tcp-echo-v2",
        "destination_workload_namespace": "default",
        "destination_app": "tcp-echo",
        "destination_version": "v2",
        "destination_service": "tcp-echo.default.svc.cluster.local",
        "destination_service_name": "tcp-echo",
        "destination_service_namespace": "default",
        "destination_principal": "unknown",
        "destination_cluster": "Kubernetes",
        "request_protocol": "tcp",
        "response_flags": "-",
        "connection_security_policy": "unknown",
    }


def test_active_gauge_follows_forty_held_connections(mesh: MeshHarness) -> None:
    address = mesh.address
    active = "tcpmesh_tcp_connections_active"
    base = total(settle(address, lambda s: total(s, active) == 0), active)
    assert base == 0
    socks: list[socket.socket] = []
    try:
        for i in range(40):
            sock = socket.create_connection((address, PORT), timeout=5)
            socks.append(sock)
            sock.sendall(b"held %d\n" % i)
            assert sock.recv(100).split(b" ", 1)[0] in (b"one", b"two")
        held = settle(address, lambda s: total(s, active) == 40)
        assert total(held, active) == 40
        # Bytes of open connections are reported while they are open.
        assert total(held, "istio_tcp_received_bytes_total") > 0
        for sock in socks[:25]:
            sock.close()
        assert total(settle(address, lambda s: total(s, active) == 15), active) == 15
    finally:
        for sock in socks:
            sock.close()
    assert total(settle(address, lambda s: total(s, active) == 0), active) == 0


def test_bytes_of_an_open_connection_are_reported_before_it_closes(mesh: MeshHarness) -> None:
    address = mesh.address
    name = "istio_tcp_received_bytes_total"
    before = total(scrape(address), name)
    with socket.create_connection((address, PORT), timeout=5) as sock:
        line = b"x" * 999 + b"\n"
        sock.sendall(line)
        assert sock.recv(2000).endswith(b"x\n")
        # Envoy counts bytes as they move; the built-in workers fold open connections'
        # bytes in at every scrape.
        during = settle(address, lambda s: total(s, name) - before >= len(line), 10.0)
        assert total(during, name) - before == len(line)


@pytest.fixture
def prometheus(mesh: MeshHarness, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the gateway every 500 ms; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (scripts/system-deps/metrics.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
        "scrape_configs:\n  - job_name: tcpmesh-gateway\n"
        "    metrics_path: /stats/prometheus\n"
        f"    static_configs:\n      - targets: ['{mesh.address}:15020']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(url: str, promql: str) -> dict[str, float]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=5
    ) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", doc
    return {
        r["metric"].get("destination_version", ""): float(r["value"][1])
        for r in doc["data"]["result"]
    }


def test_prometheus_answers_the_split_by_version(mesh: MeshHarness, prometheus: str) -> None:
    address = mesh.address
    mesh.tcpmesh("send", f"{address}:{PORT}", "-c", "200", "--concurrency", "10")
    ours = settle(
        address,
        lambda s: (
            total(s, "istio_tcp_connections_opened_total")
            == total(s, "istio_tcp_connections_closed_total")
        ),
    )
    expected = {
        version: total(ours, "istio_tcp_connections_opened_total", destination_version=version)
        for version in ("v1", "v2")
    }
    assert expected["v1"] > 0 and expected["v2"] > 0
    promql = "sum by (destination_version) (istio_tcp_connections_opened_total)"
    deadline = time.monotonic() + 30
    answer: dict[str, float] = {}
    while time.monotonic() < deadline:
        answer = query(prometheus, promql)
        if answer == expected:
            break
        time.sleep(0.5)
    assert answer == expected


def test_top_once_json_reports_the_split_under_load(mesh: MeshHarness) -> None:
    """Shares ``top`` observes during 80/20 load pass an exact binomial test."""
    from scipy.stats import binomtest

    stop = threading.Event()
    done = [0]

    def load() -> None:
        # Bounded in count and time; stopped as soon as top has its reading.
        deadline = time.monotonic() + 120
        while not stop.is_set() and done[0] < 50_000 and time.monotonic() < deadline:
            if _word(mesh.address) in ("one", "two"):
                done[0] += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        mesh.wait_for("the load to run", lambda: done[0] >= 30)
        document = json.loads(
            mesh.tcpmesh("top", "vs/tcp-echo", "--once", "-o", "json", "--window", "2").stdout
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert document["errors"] == []
    (route,) = document["routes"]
    assert route["route"] == "VirtualService default/tcp-echo tcp[0]"
    rows = {row["subset"]: row for row in route["destinations"]}
    assert (rows["v1"]["weightPercent"], rows["v2"]["weightPercent"]) == (80.0, 20.0)
    n = route["opened"]
    assert n >= 50, document  # the load ran during the window
    assert n == rows["v1"]["opened"] + rows["v2"]["opened"]
    assert binomtest(rows["v2"]["opened"], n, 0.2).pvalue >= 1e-6
    assert rows["v2"]["share"] == round(rows["v2"]["opened"] / n, 4)
    assert rows["v1"]["openedPerSecond"] > 0 and rows["v1"]["receivedBytesPerSecond"] > 0
    assert rows["v1"]["failures"] == {} and rows["v2"]["failures"] == {}


def test_top_rejects_what_is_not_a_virtual_service(mesh: MeshHarness) -> None:
    result = mesh.tcpmesh("top", "svc/tcp-echo", "--once", check=False)
    assert (
        result.code == 1 and result.stderr.strip() == "error: top takes vs/NAME, not 'svc/tcp-echo'"
    )
    result = mesh.tcpmesh("top", "vs/nope", "--once", check=False)
    assert result.code == 1
    assert result.stderr.strip() == (
        'error: no proxy serves a route of VirtualService "nope" in namespace "default"'
    )
