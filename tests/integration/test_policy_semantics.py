"""DestinationRule semantics as Istio applies them, observed through the gateway on both
data planes.

Each test applies a VirtualService and DestinationRules, waits until the gateway shows the
outcome Istio's source predicts (cited per test), and removes them again. The mesh runs the
seed's tcp-echo v1 ("one") and v2 ("two") behind ``tcp-echo.default``; the gateway is
``istio-system/istio-ingressgateway``, so it lives in Istio's root namespace.
"""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tcpmesh.xds.envoyfiles import missing_envoy_support
from tests.integration.harness import SAMPLES, MeshHarness, exchange

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.1"
PORT = 31400
V2_CLUSTER = "outbound|9000|v2|tcp-echo.default.svc.cluster.local"
V1_CLUSTER = "outbound|9000|v1|tcp-echo.default.svc.cluster.local"
GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
"""


@pytest.fixture(scope="module", params=["python", "envoy"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshHarness]:
    dataplane: str = request.param
    if dataplane == "envoy" and (missing := missing_envoy_support()) is not None:
        pytest.skip(f"Envoy data plane: {missing}")
    harness = MeshHarness(
        tmp_path_factory.mktemp(f"policy-{dataplane}"), ADDRESS, workers=2, dataplane=dataplane
    )
    try:
        harness.up()
        harness.apply(SAMPLES / "tcp-echo-deployments.yaml", SAMPLES / "tcp-echo-service.yaml")
        harness.wait_for(
            "tcp-echo v1 and v2", lambda: harness.deployments_ready("tcp-echo-v1", "tcp-echo-v2")
        )
        harness.tcpmesh("apply", "-f", "-", stdin=GATEWAY)
        yield harness
    finally:
        harness.down()


def virtual_service(subset: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: tcp-echo, namespace: default}}
        spec:
          hosts: ["*"]
          gateways: [tcp-echo-gateway]
          tcp:
          - route:
            - destination: {{host: tcp-echo.default.svc.cluster.local, subset: {subset},
                             port: {{number: 9000}}}}
        """)


def rule(name: str, namespace: str, host: str, body: str) -> str:
    head = f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: "{host}"
"""
    return head + textwrap.indent(textwrap.dedent(body), "  ")


SUBSETS = """\
subsets:
- {name: v1, labels: {version: v1}}
- {name: v2, labels: {version: v2}}
"""
SEED_RULE = rule("tcp-echo-destination", "default", "tcp-echo", SUBSETS)


@contextlib.contextmanager
def applied(mesh: MeshHarness, *documents: str) -> Iterator[None]:
    """Apply the documents (one stream, in order); delete them however the test ends."""
    text = "---\n".join(d.rstrip("\n") + "\n" for d in documents)
    mesh.tcpmesh("apply", "-f", "-", stdin=text)
    try:
        yield
    finally:
        mesh.tcpmesh("delete", "-f", "-", stdin=text, check=False)


def reply(line: str = "probe") -> str:
    """The gateway's answer to one line; "" when the connection is closed unanswered (NC, UO)."""
    try:
        return exchange(ADDRESS, PORT, line)
    except OSError:
        return ""


def first_words(n: int) -> list[str]:
    return [reply().split(" ", 1)[0] for _ in range(n)]


def settle(mesh: MeshHarness, word: str, what: str) -> None:
    """Wait until every one of five connections answers ``word`` ("" = closed unanswered)."""
    mesh.wait_for(what, lambda: first_words(5) == [word] * 5, 15.0)


def concurrent_replies(n: int) -> list[str]:
    """Open ``n`` connections and keep them all open while each gets its line answered."""
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.create_connection((ADDRESS, PORT), timeout=5))
            for _ in range(n)
        ]
        answers = []
        for i, sock in enumerate(socks):
            sock.sendall(f"held {i}\n".encode())
            try:
                answers.append(sock.recv(100).decode())
            except OSError:
                answers.append("")
        return answers


def test_two_rules_for_one_host_merge_their_subsets(mesh: MeshHarness) -> None:
    """push_context.go mergeDestinationRule: a second rule for the same host (same
    exportTo, no selector) appends its subsets to the first, so subset v2 defined only in
    the newer rule routes (tcpmesh used one rule and closed v2's share with NC)."""
    first = rule("echo-v1", "default", "tcp-echo", "subsets:\n- {name: v1, labels: {version: v1}}")
    second = rule("echo-v2", "default", "tcp-echo", "subsets:\n- {name: v2, labels: {version: v2}}")
    with applied(mesh, first, second, virtual_service("v2")):
        settle(mesh, "two", "subset v2 of the second rule")


def test_max_connections_zero_leaves_the_limit_unset(mesh: MeshHarness) -> None:
    """cluster_traffic_policy.go applyConnectionPool: ``if settings.Tcp.MaxConnections > 0``
    - 0 keeps the default threshold (MaxUint32), so held connections are all admitted (a
    valid DR used to close every connection with UO)."""
    body = SUBSETS + "trafficPolicy:\n  connectionPool: {tcp: {maxConnections: 0}}\n"
    with applied(
        mesh, rule("tcp-echo-destination", "default", "tcp-echo", body), virtual_service("v1")
    ):
        settle(mesh, "one", "the route to v1")
        assert [a.split(" ")[0] for a in concurrent_replies(3)] == ["one"] * 3


def test_port_level_settings_replace_the_top_level_policy(mesh: MeshHarness) -> None:
    """util.go GetPortLevelTrafficPolicy: a matching portLevelSettings entry replaces the
    policy ("port level policies do not inherit ... defaults if not provided"), so the top
    level's maxConnections: 1 does not limit port 9000 (tcpmesh used to inherit it)."""
    body = SUBSETS + textwrap.dedent("""\
        trafficPolicy:
          connectionPool: {tcp: {maxConnections: 1}}
          portLevelSettings:
          - port: {number: 9000}
            loadBalancer: {simple: ROUND_ROBIN}
        """)
    with applied(
        mesh, rule("tcp-echo-destination", "default", "tcp-echo", body), virtual_service("v1")
    ):
        settle(mesh, "one", "the route to v1")
        assert [a.split(" ")[0] for a in concurrent_replies(3)] == ["one"] * 3


def test_a_rule_exported_only_to_its_namespace_is_not_the_gateways(mesh: MeshHarness) -> None:
    """push_context.go destinationRule: a gateway in the root namespace sees another
    namespace's rule only when it is exported (exportTo "." keeps it private), so the
    subset names no cluster and the connection closes unanswered (NC)."""
    private = rule("tcp-echo-destination", "default", "tcp-echo", SUBSETS + 'exportTo: ["."]\n')
    with applied(mesh, SEED_RULE, virtual_service("v1")):
        settle(mesh, "one", "the seed's route to v1")
        with applied(mesh, private):
            settle(mesh, "", "the private rule hiding subset v1 (NC)")


def test_a_rule_in_an_unrelated_namespace_does_not_apply(mesh: MeshHarness) -> None:
    """push_context.go destinationRule searches the proxy's namespace, the service's
    namespace and the root namespace, nowhere else: a public rule in namespace ``team``
    for tcp-echo.default gives the gateway no subsets (NC); the same rule in the root
    namespace does (the old lookup took any namespace's rule)."""
    host = "tcp-echo.default.svc.cluster.local"
    canary = "subsets:\n- {name: canary, labels: {version: v2}}\n"
    with applied(mesh, virtual_service("canary")):
        with applied(mesh, rule("canary", "team", host, canary)):
            settle(mesh, "", "no subset canary from namespace team (NC)")
        with applied(mesh, rule("canary", "istio-system", host, canary)):
            settle(mesh, "two", "subset canary from the root namespace")


def test_a_workload_selector_rule_applies_to_the_proxies_it_selects(mesh: MeshHarness) -> None:
    """sidecar.go SidecarScope.DestinationRule: among the rules push_context.go
    destinationRule found first (here the root namespace's own, as the gateway lives
    there), one of the proxy's namespace whose workloadSelector matches the proxy wins over
    a rule without selector; when none matches and there is no rule without selector, the
    result is no rule at all - the service namespace's rule is not consulted (the search
    stopped at the first namespace with a candidate), so the subset is NC. The old lookup
    ignored selectors."""
    host = "tcp-echo.default.svc.cluster.local"
    selected = "workloadSelector: {matchLabels: {istio: ingressgateway}}\n"
    others = "workloadSelector: {matchLabels: {istio: egressgateway}}\n"
    v2_as_v1 = "subsets:\n- {name: v1, labels: {version: v2}}\n"
    with applied(mesh, SEED_RULE, virtual_service("v1")):
        settle(mesh, "one", "the seed's route to v1")
        with applied(mesh, rule("gw-only", "istio-system", host, v2_as_v1 + selected)):
            settle(mesh, "two", "the gateway's own selector rule")
        with applied(mesh, rule("gw-only", "istio-system", host, v2_as_v1 + others)):
            settle(mesh, "", "a selector for other workloads shadowing the service's rule")
        settle(mesh, "one", "the service's rule once the selector rule is gone")


def test_the_most_specific_wildcard_host_wins(mesh: MeshHarness) -> None:
    """model/destination_rule.go MostSpecificHostMatch: an exact host, else the longest
    matching wildcard, whatever the creation order (the old lookup took the older of two
    wildcards)."""
    broad = rule(
        "broad", "default", "*.svc.cluster.local", "subsets:\n- {name: v1, labels: {version: v1}}"
    )
    narrow = rule(
        "narrow",
        "default",
        "*.default.svc.cluster.local",
        "subsets:\n- {name: v1, labels: {version: v2}}",
    )
    with applied(mesh, broad, narrow, virtual_service("v1")):
        settle(mesh, "two", "the narrower wildcard's subset v1")


def test_maglev_with_its_table_size_serves_on_both_planes(mesh: MeshHarness) -> None:
    """cluster_traffic_policy.go applyLoadBalancer: consistentHash.maglev becomes Envoy's
    MAGLEV with maglev_lb_config.table_size (it used to become RING_HASH, the size
    dropped); Envoy accepts the cluster and both planes route through it."""
    body = SUBSETS + textwrap.dedent("""\
        trafficPolicy:
          loadBalancer:
            consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}
        """)
    with applied(
        mesh, rule("tcp-echo-destination", "default", "tcp-echo", body), virtual_service("v2")
    ):
        settle(mesh, "two", "the MAGLEV cluster of v2")
        clusters = json.loads(mesh.tcpmesh("proxy-config", "clusters", "-o", "json").stdout)
    [v2] = [c for c in clusters if c["name"] == V2_CLUSTER]
    assert v2["lb_policy"] == "MAGLEV"
    # Envoy's config_dump spells the UInt64Value as a string; the Snapshot as a number.
    size = (
        v2["maglev_lb_config"]["table_size"]
        if "maglev_lb_config" in v2
        else v2["maglev_table_size"]
    )
    assert int(size) == 65537


def proxy_config(mesh: MeshHarness, what: str) -> list[dict[str, Any]]:
    return list(json.loads(mesh.tcpmesh("proxy-config", what, "-o", "json").stdout))


def hashes_source_ip(mesh: MeshHarness) -> bool | None:
    """Whether the 31400 route hashes the client address (None: no such route yet)."""
    for listener in proxy_config(mesh, "listeners"):
        if "routes" in listener:  # the built-in proxy: the Snapshot's listener
            return bool(listener["routes"][0]["hash_policy"] == "source_ip")
        for chain in listener.get("filter_chains", []):  # Envoy's config_dump
            for flt in chain.get("filters", []):
                return "hash_policy" in flt.get("typed_config", {})
    return None


def test_hash_policy_as_maybe_set_hash_policy_resolves_it(mesh: MeshHarness) -> None:
    """networkfilter.go maybeSetHashPolicy: the rule's useSourceIp counts unless the
    route's single subset has a load balancer of its own, which decides alone (``simple``
    turns the hash off); a weighted route passes no subset, so only the top level counts
    (tcpmesh used to OR the two levels)."""
    body = textwrap.dedent("""\
        trafficPolicy:
          loadBalancer: {consistentHash: {useSourceIp: true}}
        subsets:
        - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
        - {name: v2, labels: {version: v2}}
        """)
    with applied(mesh, rule("tcp-echo-destination", "default", "tcp-echo", body)):
        with applied(mesh, virtual_service("v1")):
            settle(mesh, "one", "the route to v1")
            mesh.wait_for("no hash for subset v1", lambda: hashes_source_ip(mesh) is False, 10)
        with applied(mesh, virtual_service("v2")):
            settle(mesh, "two", "the route to v2")
            mesh.wait_for("the hash for subset v2", lambda: hashes_source_ip(mesh) is True, 10)


def outlier(mesh: MeshHarness) -> tuple[int, bool] | None:
    """The v1 cluster's consecutive-failure threshold and whether it ejects at all."""
    for cluster in proxy_config(mesh, "clusters"):
        if cluster["name"] != V1_CLUSTER:
            continue
        od = cluster.get("outlier_detection")
        if od is None:
            return None
        if "consecutive_errors" in od:  # the Snapshot's folded threshold; 0 never ejects
            return od["consecutive_errors"], od["consecutive_errors"] > 0
        # Envoy: a TCP connect failure counts as a 5xx (origins not split).
        return int(od.get("consecutive_5xx", 5)), od.get("enforcing_consecutive_5xx", 100) > 0
    return None


def test_outlier_thresholds_as_istio_maps_them(mesh: MeshHarness) -> None:
    """cluster_traffic_policy.go applyOutlierDetection: consecutive5xxErrors 0 disables
    5xx ejection (enforcing 0), consecutiveGatewayErrors sets and enforces
    consecutive_gateway_failure, the deprecated consecutiveErrors is not read. A connect
    failure is both a 5xx and a gateway error in Envoy, so the lower enforced threshold
    ejects first; tcpmesh used to read consecutiveErrors and ignore gateway errors."""
    disabled = SUBSETS + textwrap.dedent("""\
        trafficPolicy:
          outlierDetection: {consecutive5xxErrors: 0, consecutiveErrors: 2}
        """)
    gateway = SUBSETS + textwrap.dedent("""\
        trafficPolicy:
          outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 3}
        """)
    with applied(mesh, virtual_service("v1")):
        with applied(mesh, rule("tcp-echo-destination", "default", "tcp-echo", disabled)):
            mesh.wait_for("no ejection", lambda: (o := outlier(mesh)) is not None and not o[1], 10)
        with applied(mesh, rule("tcp-echo-destination", "default", "tcp-echo", gateway)):
            mesh.wait_for("3 gateway errors", lambda: outlier(mesh) == (3, True), 10)


def failover_config(pod_ip: str, attempts: int | None) -> list[str]:
    """A STATIC ServiceEntry whose two endpoints are v1's pod and an address nothing
    listens on, round robin between them, and the gateway's route to it."""
    entry = textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: flaky, namespace: default}}
        spec:
          hosts: [flaky.example.internal]
          ports: [{{number: 9000, name: tcp, protocol: TCP}}]
          resolution: STATIC
          endpoints: [{{address: "{pod_ip}"}}, {{address: 127.0.99.99}}]
        """)
    annotation = (
        f'  annotations: {{traffic.tcpmesh.io/max-connect-attempts: "{attempts}"}}\n'
        if attempts is not None
        else ""
    )
    route = (
        textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: tcp-echo
          namespace: default
        """)
        + annotation
        + textwrap.dedent("""\
        spec:
          hosts: ["*"]
          gateways: [tcp-echo-gateway]
          tcp:
          - route:
            - destination: {host: flaky.example.internal, port: {number: 9000}}
        """)
    )
    balance = "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n"
    return [entry, rule("flaky", "default", "flaky.example.internal", balance), route]


def test_connect_failover_tries_another_endpoint(mesh: MeshHarness) -> None:
    """Envoy's tcp_proxy ``max_connect_attempts`` (tcp_proxy.proto; a retry is a new load
    balancer pick in the same cluster). Istio never sets it, so Envoy's default 1 means a
    refused connect closes the client with UF; tcpmesh's validated VirtualService
    annotation ``traffic.tcpmesh.io/max-connect-attempts`` raises it on both planes, and
    then no client sees the dead endpoint."""
    [v1] = [p for p in mesh.pods() if p["metadata"]["labels"].get("version") == "v1"]
    pod_ip = v1["status"]["podIP"]
    with applied(mesh, *failover_config(pod_ip, None)):
        mesh.wait_for("UF from the dead endpoint", lambda: "" in first_words(10), 15.0)
    with applied(mesh, *failover_config(pod_ip, 2)):
        settle(mesh, "one", "failover to the live endpoint")
        assert first_words(20) == ["one"] * 20
