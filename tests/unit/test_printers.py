"""kubectl-style tables, YAML and JSON for ``tcpmesh get``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tcpmesh.api import kinds
from tcpmesh.cli import printers

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def stamp(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, ago: timedelta, namespace: str = "default") -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "creationTimestamp": stamp(ago)}


def cells(line: str) -> list[str]:
    """Split a table line on the 3+ spaces between columns (cells may hold one space)."""
    return re.split(r" {3,}", line)


def table(kind: str, objects: list[dict[str, Any]], **kwargs: bool) -> str:
    return printers.print_table(kinds.by_key(kind), objects, now=NOW, **kwargs)


def gateway_service(ago: timedelta = timedelta(minutes=31)) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**meta("istio-ingressgateway", ago, "istio-system")},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "127.0.10.1",
            "selector": {"istio": "ingressgateway", "app": "istio-ingressgateway"},
            "ports": [
                {"name": "status-port", "port": 15021, "targetPort": 15021},
                {"name": "http2", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443},
                {"name": "tcp", "port": 31400, "targetPort": 31400},
                {"name": "tls", "port": 15443, "targetPort": 15443},
            ],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}},
    }


def echo_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("tcp-echo", timedelta(seconds=5)),
        "spec": {
            "clusterIP": "127.0.10.2",
            "ports": [{"name": "tcp", "port": 9000}, {"name": "admin", "port": 9001}],
            "selector": {"app": "tcp-echo"},
        },
    }


# ---------------------------------------------------------------- AGE


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1.5, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (192, "3m12s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60 + 7, "3h5m"),
        (8 * 3600 + 59 * 60, "8h"),
        (47 * 3600, "47h"),
        (52 * 3600, "2d4h"),
        (72 * 3600, "3d"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (740 * 86400, "2y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_follows_kubectl(seconds: float, text: str) -> None:
    assert printers.human_duration(seconds) == text


def test_age_from_creation_timestamp() -> None:
    assert printers.age("2026-11-26T11:56:48Z", NOW) == "3m12s"
    assert printers.age(None, NOW) == "<unknown>"
    assert printers.age("not a time", NOW) == "<unknown>"


# ---------------------------------------------------------------- layout


def test_columns_are_separated_by_three_spaces_with_nothing_after_the_last() -> None:
    text = printers.format_columns(["NAME", "X", "AGE"], [["a-long-name", "1", "5s"]])
    assert text.splitlines() == ["NAME          X     AGE", "a-long-name   1     5s"]
    assert not text.endswith("\n")


def test_empty_table_message() -> None:
    assert printers.no_resources_message("default") == "No resources found in default namespace."
    assert printers.no_resources_message(None) == "No resources found"


# ---------------------------------------------------------------- Service


def test_service_table() -> None:
    ports = "15021/TCP,80/TCP,443/TCP,31400/TCP,15443/TCP"
    assert len(ports) == 44  # so the PORT(S) column is 44 + 3 wide
    assert table("Service", [gateway_service(), echo_service()]) == (
        "NAME                   TYPE           CLUSTER-IP   EXTERNAL-IP   PORT(S)"
        + " " * 40
        + "AGE\n"
        "istio-ingressgateway   LoadBalancer   127.0.10.1   127.0.0.1     " + ports + "   31m\n"
        "tcp-echo               ClusterIP      127.0.10.2   <none>        9000/TCP,9001/TCP"
        + " " * 30
        + "5s\n"
    )


def test_service_wide_and_all_namespaces() -> None:
    lines = table("Service", [gateway_service(), echo_service()], wide=True, all_namespaces=True)
    rows = [line.split() for line in lines.splitlines()]
    assert rows[0] == [
        "NAMESPACE",
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
        "SELECTOR",
    ]
    assert rows[1][0] == "istio-system"
    assert rows[1][-1] == "app=istio-ingressgateway,istio=ingressgateway"
    assert rows[2][:2] == ["default", "tcp-echo"]
    assert rows[2][-1] == "app=tcp-echo"


def test_service_node_ports_cluster_ip_and_pending_load_balancer() -> None:
    svc = gateway_service()
    svc["spec"]["ports"] = [
        {"name": "tcp", "port": 31400, "nodePort": 30123},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]
    svc["spec"].pop("clusterIP")
    svc["status"] = {"loadBalancer": {}}
    row = table("Service", [svc]).splitlines()[1].split()
    assert row[1:5] == ["LoadBalancer", "<none>", "<pending>", "31400:30123/TCP,53/UDP"]


def test_headless_service_and_external_ips() -> None:
    svc = echo_service()
    svc["spec"]["clusterIP"] = "None"
    svc["spec"]["externalIPs"] = ["192.0.2.1", "192.0.2.2"]
    svc["spec"]["ports"] = []
    row = table("Service", [svc]).splitlines()[1].split()
    assert row[2:5] == ["None", "192.0.2.1,192.0.2.2", "<none>"]


def test_long_load_balancer_list_is_truncated_unless_wide() -> None:
    svc = gateway_service()
    svc["status"]["loadBalancer"]["ingress"] = [{"ip": "127.0.0.1"}, {"hostname": "gw.example"}]
    assert table("Service", [svc]).splitlines()[1].split()[3] == "127.0.0.1,gw...."
    assert table("Service", [svc], wide=True).splitlines()[1].split()[3] == ("127.0.0.1,gw.example")


# ---------------------------------------------------------------- Deployment and Pod


def deployment() -> dict[str, Any]:
    return {
        "metadata": meta("tcp-echo-v1", timedelta(days=2, hours=4)),
        "spec": {
            "replicas": 2,
            "selector": {
                "matchLabels": {"version": "v1", "app": "tcp-echo"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
            },
            "template": {
                "spec": {
                    "containers": [
                        {"name": "tcp-echo", "image": "docker.io/istio/tcp-echo-server:1.1"},
                        {"name": "side", "image": "busybox"},
                    ]
                }
            },
        },
        "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1},
    }


def test_deployment_table() -> None:
    assert table("Deployment", [deployment()]) == (
        "NAME          READY   UP-TO-DATE   AVAILABLE   AGE\n"
        "tcp-echo-v1   1/2     2            1           2d4h\n"
    )


def test_deployment_wide_and_fresh_status() -> None:
    fresh = deployment()
    fresh["status"] = {}
    lines = table("Deployment", [deployment(), fresh], wide=True).splitlines()
    assert cells(lines[0]) == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert cells(lines[1])[5:] == [
        "tcp-echo,side",
        "docker.io/istio/tcp-echo-server:1.1,busybox",
        "app=tcp-echo,tier in (a,b),version=v1",
    ]
    assert cells(lines[2])[1:4] == ["0/2", "0", "0"]


def pod(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": meta("tcp-echo-v1-7d9f", timedelta(minutes=2)),
        "spec": {"containers": [{"name": "tcp-echo"}]},
        "status": {
            "phase": "Running",
            "podIP": "127.1.0.2",
            "containerStatuses": [
                {
                    "name": "tcp-echo",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": stamp(timedelta(minutes=2))}},
                    "lastState": {},
                }
            ],
        },
    }
    base["status"].update(status)
    return base


def test_pod_table_running() -> None:
    assert table("Pod", [pod()]) == (
        "NAME               READY   STATUS    RESTARTS   AGE\n"
        "tcp-echo-v1-7d9f   1/1     Running   0          2m\n"
    )


def test_pod_wide_shows_ip_and_local_node() -> None:
    lines = table("Pod", [pod()], wide=True).splitlines()
    assert cells(lines[0]) == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]
    assert cells(lines[1])[5:] == ["127.1.0.2", "local", "<none>", "<none>"]


def test_pod_crash_loop_with_recent_restarts() -> None:
    status = pod()["status"]
    cs = status["containerStatuses"][0]
    cs.update(
        ready=False,
        restartCount=3,
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={"terminated": {"exitCode": 1, "finishedAt": stamp(timedelta(seconds=40))}},
    )
    row = table("Pod", [pod(**status)]).splitlines()[1]
    assert cells(row) == ["tcp-echo-v1-7d9f", "0/1", "CrashLoopBackOff", "3 (40s ago)", "2m"]


def test_pod_terminated_and_terminating() -> None:
    status = pod()["status"]
    status["containerStatuses"][0].update(ready=False, state={"terminated": {"exitCode": 137}})
    assert "ExitCode:137" in table("Pod", [pod(**status)])
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = stamp(timedelta(seconds=1))
    assert table("Pod", [deleting]).splitlines()[1].split()[2] == "Terminating"
    pending = pod(phase="Pending", containerStatuses=[])
    assert table("Pod", [pending]).splitlines()[1].split()[1:3] == ["0/1", "Pending"]


# ---------------------------------------------------------------- Endpoints and Istio kinds


def test_endpoints_table() -> None:
    many = {
        "metadata": meta("tcp-echo", timedelta(seconds=30)),
        "subsets": [
            {
                "addresses": [{"ip": "127.1.0.2"}, {"ip": "127.1.0.3"}],
                "ports": [{"port": 9000}, {"port": 9001}],
            }
        ],
    }
    empty = {"metadata": meta("nothing", timedelta(seconds=30)), "subsets": []}
    v6 = {
        "metadata": meta("v6", timedelta(seconds=30)),
        "subsets": [{"addresses": [{"ip": "::1"}], "ports": [{"port": 80}]}],
    }
    lines = table("Endpoints", [many, empty, v6]).splitlines()
    assert lines[0].split() == ["NAME", "ENDPOINTS", "AGE"]
    assert cells(lines[1])[1] == "127.1.0.2:9000,127.1.0.3:9000,127.1.0.2:9001 + 1 more..."
    assert lines[2].split() == ["nothing", "<none>", "30s"]
    assert lines[3].split() == ["v6", "[::1]:80", "30s"]


def test_gateway_virtual_service_and_destination_rule() -> None:
    gw = {"metadata": meta("tcp-echo-gateway", timedelta(hours=1)), "spec": {}}
    assert table("Gateway", [gw]) == "NAME               AGE\ntcp-echo-gateway   60m\n"

    bound = {
        "metadata": meta("tcp-echo", timedelta(seconds=9)),
        "spec": {"hosts": ["*"], "gateways": ["tcp-echo-gateway"]},
    }
    mesh_only = {"metadata": meta("internal", timedelta(seconds=9)), "spec": {"hosts": ["a"]}}
    assert table("VirtualService", [bound, mesh_only]) == (
        "NAME       GATEWAYS               HOSTS   AGE\n"
        'tcp-echo   ["tcp-echo-gateway"]   ["*"]   9s\n'
        'internal                          ["a"]   9s\n'
    )

    dr = {"metadata": meta("tcp-echo-destination", timedelta(seconds=9)), "spec": {"host": "x"}}
    assert table("DestinationRule", [dr]) == (
        "NAME                   HOST   AGE\ntcp-echo-destination   x      9s\n"
    )


def test_all_namespaces_for_istio_kinds() -> None:
    dr = {"metadata": meta("r", timedelta(seconds=1), "team-a"), "spec": {"host": "h"}}
    lines = table("DestinationRule", [dr], all_namespaces=True).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "HOST", "AGE"]
    assert lines[1].split() == ["team-a", "r", "h", "1s"]


# ---------------------------------------------------------------- yaml / json


def service_list() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [gateway_service(), echo_service()],
    }


def test_to_json_is_kubectl_shaped() -> None:
    text = printers.to_json(gateway_service())
    assert text.startswith('{\n    "apiVersion": "v1",\n    "kind": "Service",\n    "metadata"')
    assert not text.endswith("\n")
    assert json.loads(text) == gateway_service()
    assert json.loads(printers.to_json(service_list())) == service_list()


def test_to_yaml_round_trips_and_quotes_like_kubectl() -> None:
    text = printers.to_yaml(service_list())
    assert yaml.safe_load(text) == service_list()
    assert text.startswith("apiVersion: v1\nitems:\n- apiVersion: v1\n")
    assert text.endswith('kind: List\nmetadata:\n  resourceVersion: ""\n')
    assert 'creationTimestamp: "2026-11-26T11:29:00Z"' in text
    vs = {"spec": {"hosts": ["*"], "port": "9000", "weight": 80, "note": "two\nlines\n"}}
    vs_text = printers.to_yaml(vs)
    assert "- '*'" in vs_text
    assert 'port: "9000"' in vs_text
    assert "weight: 80" in vs_text
    assert "  note: |\n    two\n    lines\n" in vs_text
    assert yaml.safe_load(vs_text) == vs
