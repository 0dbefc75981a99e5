"""The seed walkthrough end to end through the real CLI, on both data planes.

Every test runs against the built-in proxy and against Envoy fed over xDS. Envoy runs
with a 2 s drain time, so that if a route change drained its listener (Istio's stock
behaviour: every open TCP connection closed when the drain ends), the flip test would
see its connections cut.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration.harness import SAMPLES, MeshHarness, exchange, first_word, flip_under_load

pytestmark = pytest.mark.integration

# Every statistical assertion here has a false-failure rate of at most 1e-6.
ALPHA = 1e-6
ADDRESS = "127.0.0.1"
PORT = 31400


ENVOY_DRAIN_TIME = "2"


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshHarness]:
    dataplane: str = request.param
    env = {}
    if dataplane == "envoy":
        missing = missing_envoy_support()
        if missing is not None:
            pytest.skip(f"Envoy data plane: {missing}")
        env["TCPMESH_ENVOY_DRAIN_TIME"] = ENVOY_DRAIN_TIME
    harness = MeshHarness(
        tmp_path_factory.mktemp(f"state-{dataplane}"), ADDRESS, dataplane=dataplane, env=env
    )
    try:
        harness.up()
        harness.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
        harness.wait_for(
            "tcp-echo v1 and v2", lambda: harness.deployments_ready("tcp-echo-v1", "tcp-echo-v2")
        )
        harness.apply(SAMPLES / "tcp-echo-all-v1.yaml")
        harness.wait_for("the 31400 listener", lambda: _answers(PORT))
        yield harness
    finally:
        harness.down()


def _answers(port: int) -> bool:
    try:
        return first_word(ADDRESS, port) in ("one", "two")
    except OSError:
        return False


def route_all_to(mesh: MeshHarness, version: str) -> None:
    mesh.apply(SAMPLES / f"tcp-echo-all-{version}.yaml")
    word = {"v1": "one", "v2": "two"}[version]
    mesh.wait_for(f"all traffic on {version}", lambda: first_word(ADDRESS, PORT) == word, 5.0)


def send_json(mesh: MeshHarness, *args: str, check: bool = True) -> dict:  # type: ignore[type-arg]
    result = mesh.tcpmesh("send", f"{ADDRESS}:{PORT}", "-o", "json", *args, check=check)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_step4_jsonpath_commands_print_the_gateway_address_and_port(mesh: MeshHarness) -> None:
    host = mesh.tcpmesh(
        "-n",
        "istio-system",
        "get",
        "service",
        "istio-ingressgateway",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ).stdout
    port = mesh.tcpmesh(
        "-n",
        "istio-system",
        "get",
        "service",
        "istio-ingressgateway",
        "-o",
        'jsonpath={.spec.ports[?(@.name=="tcp")].port}',
    ).stdout
    assert (host, port) == (ADDRESS, "31400")


def test_date_sleep_nc_client_gets_one_and_its_date(mesh: MeshHarness) -> None:
    route_all_to(mesh, "v1")
    date_line = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    assert exchange(ADDRESS, PORT, date_line, hold=1.0) == f"one {date_line}\n"


def test_twenty_of_twenty_connections_answer_one(mesh: MeshHarness) -> None:
    route_all_to(mesh, "v1")
    replies = [first_word(ADDRESS, PORT) for _ in range(20)]
    assert replies == ["one"] * 20
    report = send_json(mesh, "-c", "20", "--expect", "v1=100")
    assert report["groups"] == {"one": 20}
    assert report["consistent"] is True


def test_eighty_twenty_split_passes_an_exact_binomial_test(mesh: MeshHarness) -> None:
    mesh.apply(SAMPLES / "tcp-echo-20-v2.yaml")
    mesh.wait_for(
        "the 80/20 route", lambda: "two" in {first_word(ADDRESS, PORT) for _ in range(40)}, 10.0
    )
    report = send_json(mesh, "-c", "2000", "--concurrency", "20", "--expect", "v1=80,v2=20")
    groups = report["groups"]
    assert sum(report["failures"].values()) == 0
    assert set(groups) == {"one", "two"}
    assert groups["one"] + groups["two"] == 2000
    assert binomtest(groups["two"], 2000, 0.2).pvalue >= ALPHA
    assert report["consistent"] is True


def test_all_v2_answers_two_only(mesh: MeshHarness) -> None:
    route_all_to(mesh, "v2")
    report = send_json(mesh, "-c", "200", "--concurrency", "20", "--expect", "v2=100")
    assert report["groups"] == {"two": 200}


def test_route_flips_under_load_never_touch_open_connections(mesh: MeshHarness) -> None:
    route_all_to(mesh, "v1")
    routes = {v: SAMPLES / f"tcp-echo-all-{v}.yaml" for v in ("v1", "v2")}
    flip_under_load(mesh, ADDRESS, PORT, routes)


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        (
            "negative-weight.yaml",
            "route:\n    - destination: {host: tcp-echo, subset: v1}\n      weight: -5\n"
            "    - destination: {host: tcp-echo, subset: v2}\n      weight: 105",
            ["VirtualService", "tcp-echo", "weight -5 < 0"],
        ),
        (
            "zero-weights.yaml",
            "route:\n    - destination: {host: tcp-echo, subset: v1}\n      weight: 0\n"
            "    - destination: {host: tcp-echo, subset: v2}\n      weight: 0",
            ["VirtualService", "tcp-echo", "total destination weight = 0"],
        ),
        (
            "unknown-field.yaml",
            "route:\n    - destination: {host: tcp-echo, subset: v1}\n      wieght: 100",
            ["VirtualService", "tcp-echo", "wieght"],
        ),
    ],
)
def test_bad_virtual_service_changes_nothing(
    mesh: MeshHarness, tmp_path: Path, name: str, body: str, expected: list[str]
) -> None:
    route_all_to(mesh, "v1")
    before = mesh.get_json("virtualservice", "tcp-echo")
    bad = tmp_path / name
    bad.write_text(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\n"
        "metadata:\n  name: tcp-echo\nspec:\n  hosts: ['*']\n  gateways: [tcp-echo-gateway]\n"
        f"  tcp:\n  - {body}\n"
    )
    assert_rejected(mesh, bad, expected)
    assert mesh.get_json("virtualservice", "tcp-echo") == before
    assert {first_word(ADDRESS, PORT) for _ in range(20)} == {"one"}


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "unknown-kind.yaml",
            "apiVersion: example.com/v1\nkind: Frobnicator\nmetadata:\n  name: x\n",
            ["Frobnicator"],
        ),
        (
            "malformed.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
            ["line"],
        ),
    ],
)
def test_unreadable_input_changes_nothing(
    mesh: MeshHarness, tmp_path: Path, name: str, text: str, expected: list[str]
) -> None:
    route_all_to(mesh, "v1")
    revision = mesh.get_json("virtualservice", "tcp-echo")["metadata"]["resourceVersion"]
    bad = tmp_path / name
    # A good document first: all documents are checked before any is written.
    bad.write_text((SAMPLES / "tcp-echo-all-v2.yaml").read_text() + "---\n" + text)
    assert_rejected(mesh, bad, expected)
    assert mesh.get_json("virtualservice", "tcp-echo")["metadata"]["resourceVersion"] == revision
    assert {first_word(ADDRESS, PORT) for _ in range(20)} == {"one"}


def assert_rejected(mesh: MeshHarness, bad: Path, expected: list[str]) -> None:
    result = mesh.tcpmesh("apply", "-f", str(bad), check=False)
    assert result.code != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(bad) in lines[0]
    for fragment in expected:
        assert fragment in lines[0]


def test_missing_subset_closes_its_share_with_nc(mesh: MeshHarness, tmp_path: Path) -> None:
    vs = tmp_path / "v3.yaml"
    vs.write_text(
        (SAMPLES / "tcp-echo-all-v1.yaml")
        .read_text()
        .split("---\n")[1]
        .replace("subset: v1", "subset: v3")
    )
    mesh.apply(vs)
    mesh.wait_for("the v3 route", lambda: _closed_without_reply(), 5.0)
    report = send_json(mesh, "-c", "20", check=False)
    assert report["groups"] == {}
    assert sum(report["failures"].values()) == 20
    log = mesh.tcpmesh("logs", "-n", "istio-system", _gateway_pod(mesh)).stdout
    assert " NC " in log


def _closed_without_reply() -> bool:
    try:
        return exchange(ADDRESS, PORT, "probe") == ""
    except OSError:
        return True


def _gateway_pod(mesh: MeshHarness) -> str:
    pods = mesh.pods("istio-system")
    assert len(pods) == 1
    return str(pods[0]["metadata"]["name"])


def test_delete_pod_is_replaced_and_serving_within_ten_seconds(mesh: MeshHarness) -> None:
    route_all_to(mesh, "v2")
    (victim,) = [
        p["metadata"]["name"] for p in mesh.pods() if p["metadata"]["labels"].get("version") == "v2"
    ]
    start = time.monotonic()
    mesh.tcpmesh("delete", "pod", victim)

    def replaced_and_serving() -> bool:
        names = {
            p["metadata"]["name"]
            for p in mesh.pods()
            if p["metadata"]["labels"].get("version") == "v2"
        }
        return victim not in names and bool(names) and _answers_two()

    mesh.wait_for("a serving replacement", replaced_and_serving, 10.0)
    assert time.monotonic() - start < 10.0


def _answers_two() -> bool:
    try:
        return first_word(ADDRESS, PORT) == "two"
    except OSError:
        return False


def test_down_then_up_brings_back_objects_pods_and_routes(mesh: MeshHarness) -> None:
    route_all_to(mesh, "v2")
    vs_before = mesh.get_json("virtualservice", "tcp-echo")
    pods_before = {(p["metadata"]["name"], p["status"]["podIP"]) for p in mesh.pods()}
    mesh.tcpmesh("down")
    with pytest.raises(OSError):
        socket.create_connection((ADDRESS, PORT), timeout=1).close()
    mesh.up()
    mesh.wait_for("routes back", _answers_two, 30.0)
    assert mesh.get_json("virtualservice", "tcp-echo") == vs_before
    pods_after = {(p["metadata"]["name"], p["status"]["podIP"]) for p in mesh.pods()}
    assert pods_after == pods_before


def test_proxy_config_prints_the_same_tables_for_both_data_planes(mesh: MeshHarness) -> None:
    route_all_to(mesh, "v1")
    v1 = "outbound|9000|v1|tcp-echo.default.svc.cluster.local"
    listeners = mesh.tcpmesh("proxy-config", "listeners").stdout.splitlines()
    assert listeners[0].split() == ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    assert [line.split() for line in listeners[1:]] == [[ADDRESS, str(PORT), "ALL", "Cluster:", v1]]
    clusters = [
        line.split() for line in mesh.tcpmesh("proxy-config", "clusters").stdout.splitlines()
    ]
    assert clusters[0] == ["SERVICE", "FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"]
    echo = [row for row in clusters if row[0] == "tcp-echo.default.svc.cluster.local"]
    assert echo == [
        ["tcp-echo.default.svc.cluster.local", port, subset, "outbound", "EDS"]
        for port in ("9000",)
        for subset in ("-", "v1", "v2")
    ]
    pod = _gateway_pod(mesh)
    endpoints = mesh.tcpmesh("proxy-config", "endpoints", f"{pod}.istio-system").stdout
    v1_ips = {
        p["status"]["podIP"] for p in mesh.pods() if p["metadata"]["labels"]["version"] == "v1"
    }
    rows = [line.split() for line in endpoints.splitlines()[1:]]
    assert {r[0] for r in rows if r[3] == v1} == {f"{ip}:9000" for ip in v1_ips}
    assert all(r[1:3] == ["HEALTHY", "OK"] for r in rows if r[3] == v1)
    as_json = json.loads(mesh.tcpmesh("proxy-config", "listeners", "-o", "json").stdout)
    assert [lst["name"] for lst in as_json] == [f"0.0.0.0_{PORT}"]


SERVICE_PORT_AND_TARGET_PORT = """apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: on-80
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: tcp-80, protocol: TCP}
    hosts: ["*"]
  - port: {number: 8080, name: tcp-8080, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: on-80
spec:
  hosts: ["*"]
  gateways: [on-80]
  tcp:
  - route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
"""


def test_a_service_port_and_its_target_port_make_one_listener_on_both_planes(
    mesh: MeshHarness, tmp_path: Path
) -> None:
    # The gateway Service maps port 80 to targetPort 8080: servers on 80 and 8080 both
    # resolve to port 80. The first server keeps it (docs/architecture.md states the rule).
    manifest = tmp_path / "on-80.yaml"
    manifest.write_text(SERVICE_PORT_AND_TARGET_PORT)
    mesh.apply(manifest)
    try:
        mesh.wait_for("port 80", lambda: _first_word_on(80) == "two", 10.0)
        rows = [
            line.split() for line in mesh.tcpmesh("proxy-config", "listeners").stdout.splitlines()
        ]
        assert [r[1] for r in rows[1:]].count("80") == 1
        names = [
            lst["name"]
            for lst in json.loads(mesh.tcpmesh("proxy-config", "listeners", "-o", "json").stdout)
        ]
        assert "0.0.0.0_80" in names and "0.0.0.0_8080" not in names
        analysis = mesh.tcpmesh("analyze", check=False)
        assert analysis.code == 1
        (conflict,) = [x for x in analysis.stdout.splitlines() if "IST0145" in x]
        assert "ports 80 and 8080 are both served on port 80" in conflict
    finally:
        mesh.tcpmesh("delete", "-f", str(manifest))
    mesh.wait_for("port 80 closed", lambda: _first_word_on(80) == "", 10.0)


def _first_word_on(port: int) -> str:
    try:
        return first_word(ADDRESS, port)
    except OSError:
        return ""
