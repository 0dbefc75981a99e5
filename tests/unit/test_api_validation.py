"""One test per validation message: Istio's webhook rules and Kubernetes' field errors.

Each case starts from a valid object of the reference scenario (the Istio TCP traffic
shifting task), breaks one thing, and expects exactly the lines Istio or the Kubernetes
API server would print, in tcpmesh's ``<resource> is invalid: <path>: <reason>`` form.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tcpmesh.api import validate_object

DELETE = object()
Obj = dict[str, Any]


def with_(obj: Obj, *changes: tuple[str, Any]) -> Obj:
    """A copy of ``obj`` with ``path = value`` applied (``DELETE`` removes the key)."""
    out = copy.deepcopy(obj)
    for path, value in changes:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
        target: Any = out
        for part in parts[:-1]:
            target = target[part]
        if value is DELETE:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return out


def dest(subset: str = "v1", weight: int | None = None, host: str = "tcp-echo") -> Obj:
    route: Obj = {"destination": {"host": host, "subset": subset, "port": {"number": 9000}}}
    if weight is not None:
        route["weight"] = weight
    return route


VS: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "tcp-echo"},
    "spec": {
        "hosts": ["*"],
        "gateways": ["tcp-echo-gateway"],
        "tcp": [{"match": [{"port": 31400}], "route": [dest("v1", 80), dest("v2", 20)]}],
    },
}
DR: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "tcp-echo-destination"},
    "spec": {
        "host": "tcp-echo",
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}
SERVER: Obj = {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
GW: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "tcp-echo-gateway"},
    "spec": {"selector": {"istio": "ingressgateway"}, "servers": [SERVER]},
}
DEPLOY: Obj = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "tcp-echo-v1"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "tcp-echo", "version": "v1"}},
        "template": {
            "metadata": {"labels": {"app": "tcp-echo", "version": "v1"}},
            "spec": {
                "containers": [
                    {
                        "name": "tcp-echo",
                        "image": "docker.io/istio/tcp-echo-server:1.1",
                        "args": ["9000", "one"],
                        "ports": [{"containerPort": 9000}],
                    }
                ]
            },
        },
    },
}
SVC: Obj = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "tcp-echo"},
    "spec": {
        "selector": {"app": "tcp-echo"},
        "ports": [{"name": "tcp", "port": 9000}, {"name": "tcp-other", "port": 9001}],
    },
}
VS_RULE: Obj = VS["spec"]["tcp"][0]
BASES = {"VirtualService": VS, "DestinationRule": DR, "Gateway": GW, "Deployment": DEPLOY}
BASES["Service"] = SVC


def lines(obj: Obj, *findings: tuple[str, str]) -> list[str]:
    label = f'{obj["kind"]} "{obj["metadata"]["name"]}" is invalid'
    return [f"{label}: {path}: {message}" for path, message in findings]


@pytest.mark.parametrize("kind", sorted(BASES))
def test_base_objects_are_valid(kind: str) -> None:
    assert validate_object(BASES[kind]) == ([], [])


def case(obj: Obj, *findings: tuple[str, str], id: str) -> Any:
    return pytest.param(obj, lines(obj, *findings), id=id)


NO_ROUTES: tuple[str, list[Obj]] = ("spec.tcp", [])
TOO_LONG = "a" * 250 + ".com" + ".x"
LONG_KEY = "example.com/" + "k" * 64

ERROR_CASES = [
    # ------------------------------------------------------------ VirtualService
    case(
        with_(VS, NO_ROUTES),
        ("spec", "http, tcp or tls must be provided in virtual service"),
        id="vs-no-routes",
    ),
    case(
        with_(VS, ("spec.hosts", [])),
        ("spec.gateways", "delegate virtual service must have no gateways specified"),
        ("spec.tcp", "delegate virtual service must have no tcp route specified"),
        id="vs-delegate-gateways-tcp",
    ),
    case(
        with_(VS, ("spec.hosts", []), ("spec.gateways", []), ("spec.tls", [{"match": []}])),
        ("spec.tls", "delegate virtual service must have no tls route specified"),
        ("spec.tcp", "delegate virtual service must have no tcp route specified"),
        # Istio validates every tls rule as well, delegate or not.
        ("spec.tls[0].match", "TLS route must have at least one match condition"),
        ("spec.tls[0].route", "TLS route is required"),
        id="vs-delegate-tls",
    ),
    case(
        with_(VS, ("spec.gateways", [])),
        (
            "spec.hosts[0]",
            "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        ),
        id="vs-wildcard-mesh-default",
    ),
    case(
        with_(VS, ("spec.gateways", ["tcp-echo-gateway", "mesh"])),
        (
            "spec.hosts[0]",
            "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        ),
        id="vs-wildcard-mesh-listed",
    ),
    case(
        with_(VS, ("spec.hosts", ["tcp_echo"])),
        ("spec.hosts[0]", 'domain name "tcp_echo" invalid (label "tcp_echo" invalid)'),
        id="vs-host-label",
    ),
    case(
        with_(VS, ("spec.hosts", [""])),
        ("spec.hosts[0]", "empty domain name not allowed"),
        id="vs-host-empty",
    ),
    case(
        with_(VS, ("spec.hosts", [TOO_LONG])),
        ("spec.hosts[0]", f'domain name "{TOO_LONG}" too long (max 255)'),
        id="vs-host-too-long",
    ),
    case(
        with_(VS, ("spec.hosts", ["echo.123"])),
        (
            "spec.hosts[0]",
            # Istio checks the labels after the first one as a domain of their own.
            'domain name "123" invalid (top level domain "123" cannot be all-numeric)',
        ),
        id="vs-host-numeric-tld",
    ),
    case(
        with_(VS, ("spec.hosts", ["*.example.com", "echo.example.com"])),
        ("spec.hosts[1]", "duplicate hosts in virtual service: *.example.com & echo.example.com"),
        id="vs-duplicate-hosts",
    ),
    case(
        with_(VS, ("spec.gateways", ["istio-system/"])),
        ("spec.gateways[0]", "config namespace and gateway name cannot be empty"),
        ("spec.gateways[0]", 'invalid value for gateway name: ""'),
        id="vs-gateway-empty-part",
    ),
    case(
        with_(VS, ("spec.gateways", ["istio_system/gw"])),
        ("spec.gateways[0]", 'invalid value for namespace: "istio_system"'),
        id="vs-gateway-namespace",
    ),
    case(
        with_(VS, ("spec.gateways", ["istio-system/gw_1"])),
        ("spec.gateways[0]", 'invalid value for gateway name: "gw_1"'),
        id="vs-gateway-name",
    ),
    case(
        with_(VS, ("spec.gateways", ["gw_1"])),
        ("spec.gateways[0]", 'domain name "gw_1" invalid (label "gw_1" invalid)'),
        id="vs-gateway-fqdn",
    ),
    case(
        with_(VS, ("spec.tcp[0].route", [])),
        ("spec.tcp[0].route", "TCP route is required"),
        id="vs-tcp-route-required",
    ),
    case(
        with_(VS, ("spec.tcp[0].match", [None])),
        ("spec.tcp[0].match[0]", "tcp match may not be nil"),
        id="vs-tcp-match-nil",
    ),
    case(
        with_(VS, ("spec.tcp[0].match[0].port", 70000)),
        ("spec.tcp[0].match[0].port", "port number 70000 must be in the range 1..65535"),
        id="vs-match-port",
    ),
    case(
        with_(VS, ("spec.tcp[0].match[0].destinationSubnets", ["10.0.0.0/8", "10.0.0.0/33"])),
        ("spec.tcp[0].match[0].destinationSubnets[1]", "10.0.0.0/33 is not a valid CIDR block"),
        id="vs-match-cidr",
    ),
    case(
        with_(VS, ("spec.tcp[0].match[0].destinationSubnets", ["10.0.0.300"])),
        ("spec.tcp[0].match[0].destinationSubnets[0]", "10.0.0.300 is not a valid IP"),
        id="vs-match-ip",
    ),
    case(
        with_(VS, ("spec.tcp[0].match[0].sourceLabels", {"bad key": "v1"})),
        ("spec.tcp[0].match[0].sourceLabels", 'invalid tag key: "bad key"'),
        id="vs-match-label-key",
    ),
    case(
        with_(VS, ("spec.tcp[0].match[0].sourceLabels", {LONG_KEY: "v1"})),
        ("spec.tcp[0].match[0].sourceLabels", f'invalid tag key: "{LONG_KEY}" (name is too long)'),
        id="vs-match-label-key-too-long",
    ),
    case(
        with_(VS, ("spec.tcp[0].match[0].sourceLabels", {"app": "bad value"})),
        ("spec.tcp[0].match[0].sourceLabels", 'invalid tag value: "bad value"'),
        id="vs-match-label-value",
    ),
    case(
        with_(VS, ("spec.tcp[0].match[0].gateways", ["ns/gw_1"])),
        ("spec.tcp[0].match[0].gateways[0]", 'invalid value for gateway name: "gw_1"'),
        id="vs-match-gateway",
    ),
    case(
        with_(VS, ("spec.tcp[0].route[1]", None)),
        ("spec.tcp[0].route[1]", "weight may not be nil"),
        id="vs-route-nil",
    ),
    case(
        with_(VS, ("spec.tcp[0].route[1].destination", DELETE)),
        ("spec.tcp[0].route[1].destination", "destination is required"),
        id="vs-destination-required",
    ),
    case(
        with_(VS, ("spec.tcp[0].route[1].weight", -5)),
        ("spec.tcp[0].route[1].weight", "weight -5 < 0"),
        id="vs-negative-weight",
    ),
    case(
        with_(VS, ("spec.tcp[0].route", [dest("v1", 0), dest("v2")])),
        ("spec.tcp[0].route", "total destination weight = 0"),
        id="vs-total-weight-zero",
    ),
    case(
        with_(VS, ("spec.tcp[0].route", [dest("v1", -5), dest("v2", 5)])),
        ("spec.tcp[0].route[0].weight", "weight -5 < 0"),
        ("spec.tcp[0].route", "total destination weight = 0"),
        id="vs-negative-cancels-positive",
    ),
    case(
        with_(VS, ("spec.tcp[0].route[0].destination.host", "*")),
        ("spec.tcp[0].route[0].destination.host", "invalid destination host *"),
        id="vs-destination-wildcard",
    ),
    case(
        with_(VS, ("spec.tcp[0].route[0].destination.host", "tcp_echo")),
        (
            "spec.tcp[0].route[0].destination.host",
            'domain name "tcp_echo" invalid (label "tcp_echo" invalid)',
        ),
        id="vs-destination-host",
    ),
    case(
        with_(VS, ("spec.tcp[0].route[0].destination.subset", "v_1")),
        ("spec.tcp[0].route[0].destination.subset", "subset name is invalid: v_1"),
        id="vs-destination-subset",
    ),
    case(
        with_(VS, ("spec.tcp[0].route[0].destination.port.number", 0)),
        (
            "spec.tcp[0].route[0].destination.port.number",
            "port number 0 must be in the range 1..65535",
        ),
        id="vs-destination-port",
    ),
    # ------------------------------------------------------------ DestinationRule
    case(
        with_(DR, ("spec.host", "tcp_echo")),
        ("spec.host", 'domain name "tcp_echo" invalid (label "tcp_echo" invalid)'),
        id="dr-host",
    ),
    case(
        with_(DR, ("spec.host", DELETE)),
        ("spec.host", "empty domain name not allowed"),
        id="dr-host-missing",
    ),
    case(
        with_(DR, ("spec.subsets[1]", None)),
        ("spec.subsets[1]", "subset may not be null"),
        id="dr-subset-null",
    ),
    case(
        with_(DR, ("spec.subsets[1].name", "v1")),
        ("spec.subsets[1].name", "duplicate subset names: v1"),
        id="dr-subset-duplicate",
    ),
    case(
        with_(DR, ("spec.subsets[1].name", DELETE)),
        ("spec.subsets[1].name", "subset name cannot be empty"),
        id="dr-subset-name-empty",
    ),
    case(
        with_(DR, ("spec.subsets[1].name", "v.2")),
        ("spec.subsets[1].name", "subset name is invalid: v.2"),
        id="dr-subset-name-invalid",
    ),
    case(
        with_(DR, ("spec.subsets[0].labels", {"-version": "v1"})),
        ("spec.subsets[0].labels", 'invalid tag key: "-version"'),
        id="dr-subset-label-key",
    ),
    case(
        with_(DR, ("spec.subsets[0].labels", {"version": "v1!"})),
        ("spec.subsets[0].labels", 'invalid tag value: "v1!"'),
        id="dr-subset-label-value",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {})),
        ("spec.trafficPolicy", "traffic policy must have at least one field"),
        id="dr-policy-empty",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {"tunnel": {}, "proxyProtocol": {}})),
        ("spec.trafficPolicy", "tunnel and proxyProtocol must not be set together"),
        id="dr-policy-tunnel-proxy-protocol",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {"connectionPool": {}})),
        ("spec.trafficPolicy.connectionPool", "connection pool must have at least one field"),
        id="dr-pool-empty",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {"connectionPool": {"tcp": {"maxConnections": -1}}})),
        (
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "max connections must be non-negative",
        ),
        id="dr-max-connections",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {"connectionPool": {"tcp": {"connectTimeout": "0s"}}})),
        (
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "duration must be greater than 1ms",
        ),
        id="dr-connect-timeout-zero",
    ),
    case(
        with_(
            DR, ("spec.trafficPolicy", {"connectionPool": {"tcp": {"connectTimeout": "1.0005s"}}})
        ),
        (
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "only durations to ms precision are supported",
        ),
        id="dr-connect-timeout-precision",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {"connectionPool": {"tcp": {"connectTimeout": "ten"}}})),
        (
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            'invalid duration "ten": expected a number with a unit, such as "10s", "0.5s", '
            '"500ms", "1m30s" or "1h"',
        ),
        id="dr-connect-timeout-syntax",
    ),
    case(
        with_(
            DR,
            ("spec.trafficPolicy", {"connectionPool": {"tcp": {"maxConnectionDuration": "0s"}}}),
        ),
        (
            "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
            "duration must be greater than 1ms",
        ),
        id="dr-max-connection-duration",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {"connectionPool": {"tcp": {"idleTimeout": "-1s"}}})),
        ("spec.trafficPolicy.connectionPool.tcp.idleTimeout", "duration must be greater than 1ms"),
        id="dr-idle-timeout-negative",
    ),
    case(
        with_(
            DR,
            (
                "spec.trafficPolicy",
                {"connectionPool": {"tcp": {"tcpKeepalive": {"time": "0s", "interval": "1us"}}}},
            ),
        ),
        (
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
            "duration must be greater than 1ms",
        ),
        (
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval",
            "duration must be greater than 1ms",
        ),
        id="dr-keepalive",
    ),
    case(
        with_(
            DR,
            (
                "spec.trafficPolicy",
                {"outlierDetection": {"baseEjectionTime": "0s", "interval": "1.5ms1us"}},
            ),
        ),
        (
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
            "duration must be greater than 1ms",
        ),
        (
            "spec.trafficPolicy.outlierDetection.interval",
            "only durations to ms precision are supported",
        ),
        id="dr-outlier-durations",
    ),
    case(
        with_(
            DR, ("spec.trafficPolicy", {"outlierDetection": {"consecutiveLocalOriginFailures": 3}})
        ),
        (
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split "
            "external local origin errors is set to false",
        ),
        id="dr-outlier-local-origin",
    ),
    case(
        with_(
            DR,
            (
                "spec.trafficPolicy",
                {"outlierDetection": {"maxEjectionPercent": 101, "minHealthPercent": -1}},
            ),
        ),
        (
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "percentage 101 is not in range 0..100",
        ),
        (
            "spec.trafficPolicy.outlierDetection.minHealthPercent",
            "percentage -1 is not in range 0..100",
        ),
        id="dr-outlier-percent",
    ),
    case(
        with_(DR, ("spec.trafficPolicy", {"portLevelSettings": [{"port": {"number": 9000}}]})),
        (
            "spec.trafficPolicy.portLevelSettings[0]",
            "port traffic policy must have at least one field",
        ),
        id="dr-port-policy-empty",
    ),
    case(
        with_(
            DR,
            ("spec.trafficPolicy", {"portLevelSettings": [{"connectionPool": {"tcp": {}}}]}),
        ),
        ("spec.trafficPolicy.portLevelSettings[0].port", "portTrafficPolicy must have valid port"),
        id="dr-port-policy-port",
    ),
    case(
        with_(
            DR,
            (
                "spec.subsets[1].trafficPolicy",
                {"connectionPool": {"tcp": {"maxConnections": -2}}},
            ),
        ),
        (
            "spec.subsets[1].trafficPolicy.connectionPool.tcp.maxConnections",
            "max connections must be non-negative",
        ),
        id="dr-subset-policy",
    ),
    # ------------------------------------------------------------ Gateway
    case(
        with_(GW, ("metadata.name", "tcp-echo.gateway")),
        ("metadata.name", 'invalid gateway name: "tcp-echo.gateway"'),
        id="gw-name",
    ),
    case(
        with_(GW, ("spec.servers", [])),
        ("spec.servers", "gateway must have at least one server"),
        id="gw-no-servers",
    ),
    case(
        with_(GW, ("spec.servers", [SERVER, None])),
        ("spec.servers[1]", "server may not be nil"),
        id="gw-server-nil",
    ),
    case(
        with_(GW, ("spec.servers[0].hosts", [])),
        ("spec.servers[0].hosts", "server config must contain at least one host"),
        id="gw-no-hosts",
    ),
    case(
        with_(GW, ("spec.servers[0].hosts", ["tcp-echo"])),
        ("spec.servers[0].hosts[0]", "short names (non FQDN) are not allowed"),
        id="gw-short-name",
    ),
    case(
        with_(GW, ("spec.servers[0].hosts", ["echo*.example.com"])),
        (
            "spec.servers[0].hosts[0]",
            'domain name "echo*.example.com" invalid (label "echo*" invalid)',
        ),
        ("spec.servers[0].hosts[0]", 'partial wildcard "echo*.example.com" not allowed'),
        id="gw-partial-wildcard",
    ),
    case(
        with_(GW, ("spec.servers[0].hosts", ["/echo.example.com"])),
        ("spec.servers[0].hosts[0]", "config namespace and dnsName in host entry cannot be empty"),
        ("spec.servers[0].hosts[0]", 'invalid namespace value "" in gateway'),
        id="gw-host-empty-namespace",
    ),
    case(
        with_(GW, ("spec.servers[0].hosts", ["tcp_echo/*"])),
        ("spec.servers[0].hosts[0]", 'invalid namespace value "tcp_echo" in gateway'),
        id="gw-host-namespace",
    ),
    case(
        with_(GW, ("spec.servers[0].port", DELETE)),
        ("spec.servers[0].port", "port is required"),
        id="gw-port-required",
    ),
    case(
        with_(GW, ("spec.servers[0].port.protocol", "SCTP")),
        (
            "spec.servers[0].port.protocol",
            'invalid protocol "SCTP", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, '
            "MONGO, REDIS, MYSQL, TCP",
        ),
        id="gw-protocol",
    ),
    case(
        with_(GW, ("spec.servers[0].port.number", 70000)),
        ("spec.servers[0].port.number", "port number 70000 must be in the range 1..65535"),
        id="gw-port-number",
    ),
    case(
        with_(GW, ("spec.servers[0].port.name", DELETE)),
        ("spec.servers[0].port.name", 'port name must be set: number:31400 protocol:"TCP"'),
        id="gw-port-name",
    ),
    case(
        with_(GW, ("spec.servers", [SERVER, with_(SERVER, ("port.number", 31401))])),
        ("spec.servers[1].port.name", "port names in servers must be unique: duplicate name tcp"),
        id="gw-port-name-unique",
    ),
    case(
        with_(GW, ("spec.servers[0].tls", {"mode": "SIMPLE"})),
        ("spec.servers[0].tls", "SIMPLE TLS requires a server certificate"),
        ("spec.servers[0].tls", "SIMPLE TLS requires a private key"),
        ("spec.servers[0].tls", "server cannot have TLS settings for non HTTPS/TLS ports"),
        id="gw-tls-on-tcp",
    ),
    case(
        with_(
            GW,
            ("spec.servers[0].port.protocol", "HTTP"),
            ("spec.servers[0].tls", {"mode": "SIMPLE"}),
        ),
        ("spec.servers[0].tls", "SIMPLE TLS requires a server certificate"),
        ("spec.servers[0].tls", "SIMPLE TLS requires a private key"),
        ("spec.servers[0].tls", "server cannot have TLS settings for plain text HTTP ports"),
        id="gw-tls-on-http",
    ),
    case(
        with_(GW, ("spec.servers[0].port.protocol", "TLS")),
        ("spec.servers[0].tls", "server must have TLS settings for HTTPS/TLS protocols"),
        id="gw-tls-missing",
    ),
    case(
        with_(GW, ("spec.servers[0].port.targetPort", 31400)),
        ("spec.servers[0].port.targetPort", "targetPort has no impact on Gateways"),
        id="gw-target-port",
    ),
    case(
        with_(GW, ("spec.servers[0].bind", "localhost")),
        ("spec.servers[0].bind", "localhost is not a valid IP"),
        id="gw-bind",
    ),
    # ------------------------------------------------------------ Deployment
    case(
        with_(DEPLOY, ("spec.replicas", -1)),
        ("spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
        id="deploy-replicas",
    ),
    case(
        with_(DEPLOY, ("spec.template.metadata.labels.version", "v2")),
        (
            "spec.template.metadata.labels",
            'Invalid value: map[string]string{"app":"tcp-echo", "version":"v2"}: '
            "`selector` does not match template `labels`",
        ),
        id="deploy-selector-mismatch",
    ),
    case(
        with_(DEPLOY, ("spec.selector", {})),
        (
            "spec.selector",
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
            "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: "
            "empty selector is invalid for deployment",
        ),
        id="deploy-empty-selector",
    ),
    case(
        with_(
            DEPLOY,
            ("spec.selector.matchExpressions", [{"key": "app", "operator": "In"}]),
        ),
        (
            "spec.selector.matchExpressions[0].values",
            "Required value: must be specified when `operator` is 'In' or 'NotIn'",
        ),
        id="deploy-expression-values-required",
    ),
    case(
        with_(
            DEPLOY,
            (
                "spec.selector.matchExpressions",
                [{"key": "app", "operator": "Exists", "values": ["x"]}],
            ),
        ),
        (
            "spec.selector.matchExpressions[0].values",
            "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ),
        id="deploy-expression-values-forbidden",
    ),
    case(
        with_(DEPLOY, ("spec.template.spec.restartPolicy", "Never")),
        (
            "spec.template.spec.restartPolicy",
            'Unsupported value: "Never": supported values: "Always"',
        ),
        id="deploy-restart-policy",
    ),
    case(
        with_(DEPLOY, ("spec.template.spec.containers", [])),
        ("spec.template.spec.containers", "Required value"),
        id="deploy-no-containers",
    ),
    case(
        with_(DEPLOY, ("spec.template.spec.containers[0].name", "")),
        ("spec.template.spec.containers[0].name", "Required value"),
        id="deploy-container-name-required",
    ),
    case(
        with_(DEPLOY, ("spec.template.spec.containers[0].name", "TCP_echo")),
        (
            "spec.template.spec.containers[0].name",
            'Invalid value: "TCP_echo": a lowercase RFC 1123 label must consist of lower case '
            "alphanumeric characters or '-', and must start and end with an alphanumeric "
            "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ),
        id="deploy-container-name-invalid",
    ),
    case(
        with_(
            DEPLOY,
            (
                "spec.template.spec.initContainers",
                [{"name": "tcp-echo", "command": ["true"]}],
            ),
        ),
        ("spec.template.spec.containers[0].name", 'Duplicate value: "tcp-echo"'),
        id="deploy-container-name-duplicate",
    ),
    case(
        with_(DEPLOY, ("spec.template.spec.containers[0].ports[0].containerPort", 0)),
        (
            "spec.template.spec.containers[0].ports[0].containerPort",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        id="deploy-container-port",
    ),
    case(
        with_(DEPLOY, ("spec.template.spec.containers[0].ports[0].hostPort", 65536)),
        (
            "spec.template.spec.containers[0].ports[0].hostPort",
            "Invalid value: 65536: must be between 1 and 65535, inclusive",
        ),
        id="deploy-host-port",
    ),
    case(
        with_(DEPLOY, ("spec.template.spec.containers[0].ports[0].name", "-tcp-echo-port-x")),
        (
            "spec.template.spec.containers[0].ports[0].name",
            'Invalid value: "-tcp-echo-port-x": must be no more than 15 characters',
        ),
        (
            "spec.template.spec.containers[0].ports[0].name",
            'Invalid value: "-tcp-echo-port-x": must not begin or end with a hyphen',
        ),
        id="deploy-port-name",
    ),
    case(
        with_(
            DEPLOY,
            (
                "spec.template.spec.containers[0].ports",
                [{"containerPort": 9000, "name": "tcp"}, {"containerPort": 9001, "name": "tcp"}],
            ),
        ),
        ("spec.template.spec.containers[0].ports[1].name", 'Duplicate value: "tcp"'),
        id="deploy-port-name-duplicate",
    ),
    # ------------------------------------------------------------ Service
    case(with_(SVC, ("spec.ports", [])), ("spec.ports", "Required value"), id="svc-no-ports"),
    case(
        with_(SVC, ("spec.ports[0].port", 0)),
        ("spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        id="svc-port",
    ),
    case(
        with_(SVC, ("spec.ports[1].name", DELETE)),
        ("spec.ports[1].name", "Required value"),
        id="svc-port-name-required",
    ),
    case(
        with_(SVC, ("spec.ports[1].name", "TCP")),
        (
            "spec.ports[1].name",
            'Invalid value: "TCP": a lowercase RFC 1123 label must consist of lower case '
            "alphanumeric characters or '-', and must start and end with an alphanumeric "
            "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ),
        id="svc-port-name-invalid",
    ),
    case(
        with_(SVC, ("spec.ports[1].name", "tcp")),
        ("spec.ports[1].name", 'Duplicate value: "tcp"'),
        id="svc-port-name-duplicate",
    ),
    case(
        with_(SVC, ("spec.ports[0].targetPort", 70000)),
        (
            "spec.ports[0].targetPort",
            "Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        id="svc-target-port-number",
    ),
    case(
        with_(SVC, ("spec.ports[0].targetPort", "9000")),
        (
            "spec.ports[0].targetPort",
            'Invalid value: "9000": must contain at least one letter (a-z)',
        ),
        id="svc-target-port-name",
    ),
    # ------------------------------------------------------------ metadata
    case(
        with_(SVC, ("metadata.name", "9-echo")),
        (
            "metadata.name",
            'Invalid value: "9-echo": a DNS-1035 label must consist of lower case alphanumeric '
            "characters or '-', start with an alphabetic character, and end with an "
            "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation "
            "is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
        id="meta-service-name",
    ),
    case(
        with_(DR, ("metadata.name", "TCP_echo")),
        (
            "metadata.name",
            'Invalid value: "TCP_echo": a lowercase RFC 1123 subdomain must consist of lower '
            "case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
        id="meta-name",
    ),
]


@pytest.mark.parametrize(("obj", "expected"), ERROR_CASES)
def test_error_message(obj: Obj, expected: list[str]) -> None:
    errors, _ = validate_object(obj)
    assert errors == expected


def test_missing_name() -> None:
    errors, _ = validate_object(with_(VS, ("metadata.name", DELETE)))
    assert errors == [
        "VirtualService (unnamed) is invalid: metadata.name: Required value: name is required"
    ]


def test_bad_namespace_is_named_in_the_label() -> None:
    errors, _ = validate_object(with_(VS, ("metadata.namespace", "Tcp_Echo")))
    assert errors == [
        'VirtualService "Tcp_Echo/tcp-echo" is invalid: metadata.namespace: Invalid value: '
        '"Tcp_Echo": a lowercase RFC 1123 label must consist of lower case alphanumeric '
        "characters or '-', and must start and end with an alphanumeric character (e.g. "
        "'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    ]


def warning(obj: Obj, path: str, message: str) -> str:
    return f'{obj["kind"]} "{obj["metadata"]["name"]}": {path}: {message}'


WARNING_CASES = [
    pytest.param(
        with_(VS, ("spec.tcp[0].route[1].weight", 10)),
        "spec.tcp[0].route",
        "total destination weight 90 != 100; effective split: tcp-echo/v1:9000 88.9%, "
        "tcp-echo/v2:9000 11.1%",
        id="weights-90",
    ),
    pytest.param(
        with_(VS, ("spec.tcp[0].route", [dest("v1", 150), dest("v2", 50), dest("v3", 0)])),
        "spec.tcp[0].route",
        "total destination weight 200 != 100; effective split: tcp-echo/v1:9000 75.0%, "
        "tcp-echo/v2:9000 25.0%",
        id="weights-over-100-zero-dropped",
    ),
    pytest.param(
        with_(
            VS,
            (
                "spec.tcp[0].route",
                [{"destination": {"host": "tcp-echo"}, "weight": 1}, dest("v2", 2)],
            ),
        ),
        "spec.tcp[0].route",
        "total destination weight 3 != 100; effective split: tcp-echo 33.3%, "
        "tcp-echo/v2:9000 66.7%",
        id="weights-label-without-subset-or-port",
    ),
    pytest.param(
        with_(VS, ("spec.tcp", [{"route": [dest()]}, {"route": [dest("v2")]}])),
        "spec.tcp[1]",
        "virtualService rule #1 not used (only the last rule can have no matches)",
        id="unreachable-second-catch-all",
    ),
    pytest.param(
        with_(VS, ("spec.tcp", [{"route": [dest()]}, {"match": [{"port": 1}], "route": [dest()]}])),
        "spec.tcp[1]",
        "virtualService rule #1 not used (route without matches defined before)",
        id="unreachable-after-catch-all",
    ),
    pytest.param(
        with_(VS, ("spec.tcp", [VS_RULE, VS_RULE])),
        "spec.tcp[1].match[0]",
        "virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)",
        id="ineffective-duplicate-match",
    ),
    pytest.param(
        with_(VS, ("spec.tcp", [VS_RULE, VS_RULE])),
        "spec.tcp[1]",
        "virtualService rule #1 not used (all matches used by prior rules)",
        id="unreachable-all-matches-used",
    ),
    pytest.param(
        with_(VS, ("spec.gateways", ["tcp-echo-gateway.istio-system"])),
        "spec.gateways[0]",
        'using legacy gatewayName format "tcp-echo-gateway.istio-system"; prefer the '
        '<namespace>/<name> format: "istio-system/tcp-echo-gateway"',
        id="legacy-gateway-name",
    ),
    pytest.param(
        with_(DR, ("spec.trafficPolicy", {"outlierDetection": {"consecutiveErrors": 5}})),
        "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or "
        "consecutive5xxErrors instead",
        id="deprecated-consecutive-errors",
    ),
]


@pytest.mark.parametrize(("obj", "path", "message"), WARNING_CASES)
def test_warning_message(obj: Obj, path: str, message: str) -> None:
    errors, warnings = validate_object(obj)
    assert errors == []
    assert warning(obj, path, message) in warnings


VALID_VARIANTS = [
    pytest.param(with_(VS, ("spec.tcp[0].route", [dest("v1", 0)])), id="single-weight-zero"),
    pytest.param(with_(VS, ("spec.tcp[0].route", [dest("v1", 100), dest("v2", 0)])), id="100-0"),
    pytest.param(with_(VS, ("spec.hosts", ["10.0.0.1"]), ("spec.gateways", [])), id="ip-host"),
    pytest.param(with_(VS, ("spec.gateways", ["istio-system/tcp-echo-gateway"])), id="ns-gw"),
    pytest.param(with_(VS, ("spec.tcp[0].match", [])), id="catch-all-rule"),
    pytest.param(
        with_(DR, ("spec.trafficPolicy", {"connectionPool": {"tcp": {"idleTimeout": "0s"}}})),
        id="idle-timeout-0s-disables",
    ),
    pytest.param(
        with_(
            DR,
            (
                "spec.trafficPolicy",
                {"connectionPool": {"tcp": {"connectTimeout": "1m30s", "maxConnections": 0}}},
            ),
        ),
        id="go-duration",
    ),
    pytest.param(with_(DR, ("spec.subsets[0].labels", {})), id="subset-selects-all"),
    pytest.param(
        with_(GW, ("spec.servers[0].hosts", ["istio-system/*.example.com", "./a.b", "1.2.3.4"])),
        id="gw-host-forms",
    ),
    pytest.param(
        with_(
            GW,
            ("spec.servers[0].port.protocol", "https"),
            ("spec.servers[0].tls", {"mode": "SIMPLE", "credentialName": "cert"}),
        ),
        id="gw-https-lowercase-with-tls",
    ),
    pytest.param(
        with_(
            DEPLOY,
            ("spec.selector.matchLabels", {"app": "tcp-echo"}),
            (
                "spec.selector.matchExpressions",
                [
                    {"key": "version", "operator": "NotIn", "values": ["v2"]},
                    {"key": "track", "operator": "DoesNotExist"},
                    {"key": "version", "operator": "Exists"},
                ],
            ),
        ),
        id="deploy-expressions-match",
    ),
    pytest.param(
        with_(
            GW,
            ("spec.servers[0].port.protocol", "HTTP"),
            ("spec.servers[0].tls", {"httpsRedirect": True}),
        ),
        id="gw-http-redirect",
    ),
    pytest.param(with_(DEPLOY, ("spec.replicas", 0)), id="deploy-zero-replicas"),
    pytest.param(with_(SVC, ("spec.ports", [{"port": 80, "targetPort": 0}])), id="svc-anonymous"),
    pytest.param(with_(SVC, ("spec.ports[0].targetPort", "tcp-echo")), id="svc-named-target"),
    pytest.param(with_(SVC, ("spec.ports", []), ("spec.clusterIP", "None")), id="svc-headless"),
]


@pytest.mark.parametrize("obj", VALID_VARIANTS)
def test_valid_variant(obj: Obj) -> None:
    assert validate_object(obj) == ([], [])


def test_warnings_do_not_reject() -> None:
    errors, warnings = validate_object(with_(VS, ("spec.tcp[0].route[1].weight", 10)))
    assert errors == []
    assert len(warnings) == 1


def test_errors_and_warnings_are_reported_together() -> None:
    broken_rule = with_(VS_RULE, ("route[0].weight", -1))
    obj = with_(VS, ("spec.tcp", [broken_rule, VS_RULE]))
    errors, warnings = validate_object(obj)
    assert errors == lines(obj, ("spec.tcp[0].route[0].weight", "weight -1 < 0"))
    unused = "virtualService rule #1 not used (all matches used by prior rules)"
    assert warning(obj, "spec.tcp[1]", unused) in warnings


def test_the_weighted_pick_setting_is_validated() -> None:
    annotation = "tcpmesh.io/weighted-pick"
    good = with_(VS, ("metadata.annotations", {annotation: "random"}))
    assert validate_object(good) == ([], [])
    errors, _ = validate_object(with_(VS, ("metadata.annotations", {annotation: "round-robin"})))
    assert errors == [
        f'VirtualService "tcp-echo" is invalid: metadata.annotations[{annotation}]: '
        'Unsupported value: "round-robin": supported values: "random", "smooth"'
    ]


def test_the_version_affinity_setting_is_validated() -> None:
    annotation = "traffic.tcpmesh.io/version-affinity"
    good = with_(VS, ("metadata.annotations", {annotation: "source-ip"}))
    assert validate_object(good) == ([], [])
    errors, _ = validate_object(with_(VS, ("metadata.annotations", {annotation: "cookie"})))
    assert errors == [
        f'VirtualService "tcp-echo" is invalid: metadata.annotations[{annotation}]: '
        'Unsupported value: "cookie": supported values: "source-ip"'
    ]


@pytest.mark.parametrize("value", ["0", "11", "two", "-1", "1.5", ""])
def test_the_max_connect_attempts_setting_is_validated(value: str) -> None:
    annotation = "traffic.tcpmesh.io/max-connect-attempts"
    good = with_(VS, ("metadata.annotations", {annotation: "3"}))
    assert validate_object(good) == ([], [])
    errors, _ = validate_object(with_(VS, ("metadata.annotations", {annotation: value})))
    assert errors == [
        f'VirtualService "tcp-echo" is invalid: metadata.annotations[{annotation}]: '
        f'Invalid value: "{value}": must be an integer from 1 to 10'
    ]
