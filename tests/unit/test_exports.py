"""Each package's public surface, pinned (trio's test_exports.py is the model).

A name added to or removed from an ``__init__`` surface is a change of contract and
shows up here; and no module of ``src/`` outside a package reaches past that surface
into the package's modules.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tcpmesh"

SURFACES: dict[str, set[str]] = {
    "tcpmesh.join": {
        "DEFAULT_LEASE_SECONDS",
        "RENEW_TIME",
        "TOKEN_NAMESPACE",
        "TOKEN_PREFIX",
        "TOKEN_TYPE",
        "TOKEN_UNIT_PREFIX",
        "BootstrapToken",
        "GatewayOptions",
        "IdentityError",
        "JoinError",
        "PeerAgent",
        "PeerIdentity",
        "TokenError",
        "TokenScope",
        "VerifiedPeer",
        "check_scope",
        "check_token",
        "description",
        "expiration",
        "expired",
        "gateway_pod",
        "is_joined",
        "peer_from_certificate",
        "peer_from_pem",
        "run_gateway",
        "run_workload",
        "scope_of",
        "secret_name",
        "token_object",
        "workload_entry",
    },
    "tcpmesh.control": {
        "BuildCache",
        "derived",
        "GATEWAY_NAME_LABEL",
        "Binding",
        "ClassResult",
        "Condition",
        "GatewayResult",
        "ParentResult",
        "RouteResult",
        "bind_resources",
        "builtin_gateway_classes",
        "istio_gateway_name",
        "workload_labels",
        "BandwidthLimit",
        "CappedPort",
        "LOAD_BALANCER_LABELS",
        "LOAD_BALANCER_NAME",
        "LOAD_BALANCER_NAMESPACE",
        "backend_address",
        "capped_ports",
        "service_bandwidth",
        "wants_load_balancer",
        "HASH_POLICIES",
        "Cluster",
        "ControlPlane",
        "DownstreamTls",
        "Endpoint",
        "INGRESS_GATEWAY_SELECTOR",
        "NODE_PROXY_LABELS",
        "NODE_PROXY_NAME",
        "NODE_PROXY_NAMESPACE",
        "L4Match",
        "Listener",
        "MeshResources",
        "OPAQUE_TCP_PROTOCOLS",
        "TERMINATING_MODES",
        "OutlierDetection",
        "PortConflict",
        "ProxyKind",
        "ProxyNode",
        "Rebalance",
        "ResponseFlag",
        "RouteOrigin",
        "ServerPort",
        "SlowStart",
        "Snapshot",
        "SnapshotError",
        "SnapshotSource",
        "StoreCurrency",
        "TcpKeepalive",
        "TcpRoute",
        "VersionAffinity",
        "WeightedCluster",
        "WeightedPick",
        "build_snapshot",
        "cluster_name",
        "downstream_tls",
        "find_service",
        "gateway_servers",
        "labels_match",
        "resolve_gateway_name",
        "resolve_host",
        "service_entry_ports",
        "service_fqdn",
    },
    "tcpmesh.dataplane": {
        "ALL_FAMILIES",
        "AccessLogRecord",
        "ClusterStat",
        "Decision",
        "Family",
        "LoadBalancer",
        "ParsedLine",
        "Proxy",
        "ProxyStats",
        "SnapshotFeed",
        "TcpProxyStat",
        "decide",
        "format_line",
        "match_route",
        "parse_line",
        "pick_weighted",
    },
    "tcpmesh.xds": {
        "ENVOY_NO_REBALANCE",
        "ENVOY_NO_VERSION_AFFINITY",
        "ENVOY_WEIGHTED_PICK",
        "EnvoyConfig",
        "INSTALL_HINT",
        "AdsTls",
        "RemoteListener",
        "XdsServer",
        "admin_address_file",
        "die_with_parent",
        "envoy_argv",
        "envoy_binary",
        "envoy_differences",
        "missing_envoy_support",
        "pod_dir",
        "proxyconfig",
        "read_admin_address",
        "read_xds_address",
        "remote_bootstrap",
        "remove_xds_address",
        "sds_resource",
        "status_lines",
        "translate",
        "write_xds_address",
        "xds_libraries_installed",
    },
    "tcpmesh.analysis": {"Message", "analyze", "format_message"},
    "tcpmesh.registry": {
        "FIRST_POD_IP",
        "LAST_POD_IP",
        "LB_BACKEND_NETWORK",
        "LOCK_KIND",
        "NODE_NETWORK",
        "NODE_PORT_RANGE",
        "SERVICE_CIDR",
        "ServiceRegistry",
        "ServiceRejected",
        "Taken",
        "allocate",
        "is_load_balancer_address",
        "needs_cluster_ip",
        "node_port_range_text",
        "shared_address_ports",
    },
    "tcpmesh.store": {
        "CLUSTER_SCOPE",
        "CLUSTER_SCOPED_KINDS",
        "EVENT_HISTORY",
        "SQLITE_FILE",
        "AlreadyExists",
        "ApplyResult",
        "Conflict",
        "Election",
        "EtcdConfig",
        "Expired",
        "NotFound",
        "NotLeader",
        "Store",
        "StoreBackend",
        "StoreError",
        "Unavailable",
        "WatchEvent",
        "check_store_spec",
        "group_of",
        "kind_key",
        "leader_election",
        "object_kind_key",
        "open_store",
        "parse_etcd_url",
        "split_kind_key",
    },
    "tcpmesh.telemetry": {
        "Reading",
        "Route",
        "RouteDestination",
        "Sampler",
        "Totals",
        "destination_totals",
        "routes_of",
        "totals_by_destination",
        "view",
        "ALL_FAMILIES",
        "ClusterStat",
        "Counts",
        "CountsCollector",
        "DESTINATION_LABELS",
        "DURATION_BUCKETS",
        "Destination",
        "Family",
        "ISTIO_LABELS",
        "MetricsThread",
        "NO_FLAGS",
        "PROMETHEUS_PATH",
        "PROMETHEUS_PORT",
        "SOURCE_LABELS",
        "Source",
        "TCP_CONNECTIONS_CLOSED",
        "TCP_CONNECTIONS_OPENED",
        "TCP_CONNECTION_DURATION",
        "TcpProxyStat",
        "UNKNOWN",
        "WorkerTotals",
        "channel_name",
        "common_destination",
        "destination",
        "envoy_counts",
        "envoy_stats_config",
        "families",
        "fetch_counts",
        "make_app",
        "parse_envoy_prometheus",
        "render",
        "serve_counts",
        "total",
        "workload_of",
    },
    "tcpmesh.controllers": {
        "CONNECT_FAILURE_FLAGS",
        "Event",
        "GateResult",
        "GatewayApiController",
        "Measurement",
        "MetricsSource",
        "NamespaceController",
        "Outcome",
        "Phase",
        "Report",
        "RolloutController",
        "RouteProblem",
        "Sample",
        "State",
        "Tally",
        "Tick",
        "Verdict",
        "VersionSelector",
        "advance",
        "current_weight",
        "effective_analysis",
        "evaluate",
        "measuring",
        "parse_samples",
        "pod_metrics",
        "quantile",
        "query_number",
        "scrape_targets",
        "tally",
        "version_selector",
        "weighted",
    },
}


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_the_surface_is_exactly_the_pinned_names(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == SURFACES[package]
    for name in module.__all__:
        if name == "XdsServer" and importlib.util.find_spec("grpc") is None:
            continue  # needs the envoy extra
        assert getattr(module, name) is not None


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every ``import``/``from ... import`` in a file."""
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_callers_outside_the_package_use_only_its_surface(package: str) -> None:
    home = SRC / package.split(".", 1)[1]
    surface = SURFACES[package]
    offences = []
    for path in sorted(SRC.rglob("*.py")):
        if home in path.parents:
            continue
        for line, module, names in _imports(path):
            where = f"{path.relative_to(SRC.parent)}:{line}"
            if module.startswith(package + "."):
                offences.append(f"{where} imports {module}")
            elif module == package:
                offences += [f"{where} imports {n}" for n in names if n not in surface]
    assert offences == []
