"""``tcpmesh proxy-config``: a proxy's listeners, clusters and endpoints, istioctl style.

The built-in proxy is described by its snapshot, Envoy by its own admin interface
(``/config_dump`` and ``/clusters``), and both in the same tables, so that one can be
checked against the other. Pure functions over JSON; the CLI does the fetching.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tcpmesh.control import Snapshot, WeightedPick
from tcpmesh.xds.translate import CLUSTER_METADATA, ENVOY_WEIGHTED_PICK

Table = tuple[list[str], list[list[str]]]

LISTENER_HEADERS = ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
CLUSTER_HEADERS = ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"]
ENDPOINT_HEADERS = ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]

TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ADMIN_TIMEOUT = 5.0


def destination_text(
    single: str | None, weighted: list[tuple[str, int]], pick: WeightedPick
) -> str:
    """``Cluster: NAME``, or the weighted clusters and how they are picked."""
    if single is not None:
        return f"Cluster: {single}"
    shares = ", ".join(f"{name} ({weight})" for name, weight in weighted)
    return f"WeightedClusters: {shares}; pick {pick}"


def match_text(
    subnets: list[str], server_names: list[str] | None = None, sources: list[str] | None = None
) -> str:
    """istioctl's MATCH column: ``Addr: ...``, ``SNI: ...`` (joined by ``; ``) or ``ALL``;
    a node proxy's routes by client address add ``Src: ...``."""
    parts = []
    if subnets:
        parts.append(f"Addr: {','.join(subnets)}")
    if server_names:
        parts.append(f"SNI: {','.join(server_names)}")
    if sources:
        parts.append(f"Src: {','.join(sources)}")
    return "; ".join(parts) or "ALL"


def _cluster_order(row: list[str]) -> tuple[str, int, str]:
    return row[0], int(row[1]) if row[1].isdigit() else -1, row[2]


def cluster_row(name: str, kind: str, fields: dict[str, Any] | None) -> list[str]:
    """A cluster's columns from its service, subset and port; a cluster without them
    (Envoy's own, from the bootstrap) shows its name. tcpmesh's clusters are outbound."""
    if fields is None:
        return [name, "-", "-", "-", kind]
    port = fields.get("port")
    return [
        str(fields.get("service", name)),
        str(int(port)) if isinstance(port, int | float) else "-",
        str(fields.get("subset") or "-"),
        "outbound",
        kind,
    ]


# ----------------------------------------------------------------- the built-in proxy


def snapshot_listeners(snapshot: Snapshot) -> Table:
    rows = []
    for listener in snapshot.listeners:
        for route in listener.routes:
            dests = route.destinations
            single = dests[0].cluster_name if len(dests) == 1 else None
            rows.append(
                [
                    listener.address,
                    str(listener.port),
                    match_text(
                        list(route.match.destination_subnets),
                        list(route.match.server_names),
                        list(route.match.source_prefixes),
                    ),
                    destination_text(
                        single, [(d.cluster_name, d.weight) for d in dests], route.weighted_pick
                    ),
                ]
            )
    return LISTENER_HEADERS, rows


def snapshot_clusters(snapshot: Snapshot) -> Table:
    rows = [
        cluster_row(c.name, "EDS", {"service": c.service, "subset": c.subset, "port": c.port})
        for c in snapshot.clusters
    ]
    return CLUSTER_HEADERS, sorted(rows, key=_cluster_order)


def snapshot_endpoints(snapshot: Snapshot) -> Table:
    rows = [
        [f"{e.address}:{e.port}", "HEALTHY", "OK", c.name]
        for c in snapshot.clusters
        for e in c.ready_endpoints
    ]
    return ENDPOINT_HEADERS, sorted(rows, key=lambda r: (r[3], r[0]))


def snapshot_json(snapshot: Snapshot, what: str) -> Any:
    data = snapshot.to_dict()
    if what == "listeners":
        return data["listeners"]
    if what == "clusters":
        return [{k: v for k, v in c.items() if k != "endpoints"} for c in data["clusters"]]
    return [{"cluster": c["name"], "endpoints": c["endpoints"]} for c in data["clusters"]]


# ----------------------------------------------------------------- Envoy


def fetch_admin(admin_address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{admin_address}{path}", timeout=ADMIN_TIMEOUT) as resp:
        return json.loads(resp.read())


def _dump_section(config_dump: dict[str, Any], kind: str) -> dict[str, Any]:
    suffix = f".{kind}"
    return next(
        (c for c in config_dump.get("configs", []) if str(c.get("@type", "")).endswith(suffix)),
        {},
    )


def envoy_listeners_json(config_dump: dict[str, Any]) -> list[dict[str, Any]]:
    """Active dynamic listeners, each ECDS filter replaced by the config it runs now."""
    ecds = {
        f["ecds_filter"]["name"]: f["ecds_filter"].get("typed_config", {})
        for f in _dump_section(config_dump, "EcdsConfigDump").get("ecds_filters", [])
    }
    listeners = []
    for entry in _dump_section(config_dump, "ListenersConfigDump").get("dynamic_listeners", []):
        listener = (entry.get("active_state") or {}).get("listener")
        if listener is None:
            continue
        listener = json.loads(json.dumps(listener))
        for chain in listener.get("filter_chains", []):
            for flt in chain.get("filters", []):
                if "config_discovery" in flt and flt["name"] in ecds:
                    flt["typed_config"] = ecds[flt["name"]]
        listeners.append(listener)
    return listeners


def envoy_listeners(config_dump: dict[str, Any]) -> Table:
    rows = []
    for listener in envoy_listeners_json(config_dump):
        socket = listener.get("address", {}).get("socket_address", {})
        for chain in listener.get("filter_chains", []):
            chain_match = chain.get("filter_chain_match", {})
            subnets = [
                f"{r['address_prefix']}/{r.get('prefix_len', 32)}"
                for r in chain_match.get("prefix_ranges", [])
            ]
            server_names = [str(n) for n in chain_match.get("server_names", [])]
            sources = [
                f"{r['address_prefix']}/{r.get('prefix_len', 32)}"
                for r in chain_match.get("source_prefix_ranges", [])
            ]
            proxy = next(
                (
                    f["typed_config"]
                    for f in chain.get("filters", [])
                    if f.get("typed_config", {}).get("@type") == TCP_PROXY_TYPE
                ),
                None,
            )
            if proxy is None:
                destination = "-"
            else:
                weighted = [
                    (c["name"], int(c.get("weight", 0)))
                    for c in proxy.get("weighted_clusters", {}).get("clusters", [])
                ]
                # Envoy's tcp_proxy has one weighted pick (see translate.envoy_differences).
                destination = destination_text(proxy.get("cluster"), weighted, ENVOY_WEIGHTED_PICK)
            rows.append(
                [
                    str(socket.get("address", "")),
                    str(socket.get("port_value", "")),
                    match_text(subnets, server_names, sources),
                    destination,
                ]
            )
    return LISTENER_HEADERS, rows


def envoy_clusters_json(config_dump: dict[str, Any]) -> list[dict[str, Any]]:
    section = _dump_section(config_dump, "ClustersConfigDump")
    return [c["cluster"] for c in section.get("dynamic_active_clusters", [])]


def envoy_clusters(config_dump: dict[str, Any]) -> Table:
    rows = [
        cluster_row(
            c["name"],
            str(c.get("type", "EDS")),
            c.get("metadata", {}).get("filter_metadata", {}).get(CLUSTER_METADATA),
        )
        for c in envoy_clusters_json(config_dump)
    ]
    return CLUSTER_HEADERS, sorted(rows, key=_cluster_order)


def envoy_endpoints_json(clusters: dict[str, Any]) -> list[dict[str, Any]]:
    """``/clusters?format=json`` of the clusters that came over xDS."""
    return [c for c in clusters.get("cluster_statuses", []) if c.get("added_via_api")]


def envoy_endpoints(clusters: dict[str, Any]) -> Table:
    rows = []
    for cluster in envoy_endpoints_json(clusters):
        for host in cluster.get("host_statuses", []):
            socket = host.get("address", {}).get("socket_address", {})
            health = host.get("health_status", {})
            rows.append(
                [
                    f"{socket.get('address')}:{socket.get('port_value')}",
                    str(health.get("eds_health_status", "HEALTHY")),
                    "FAILED" if health.get("failed_outlier_check") else "OK",
                    str(cluster["name"]),
                ]
            )
    return ENDPOINT_HEADERS, sorted(rows, key=lambda r: (r[3], r[0]))


def status_lines(xds: dict[str, Any] | None) -> list[str]:
    """``tcpmesh status`` lines for the xDS server: each Envoy, and any NACK it sent."""
    if not xds:
        return []
    nodes = xds.get("nodes", [])
    remote = f", {xds['remote']} (mTLS) for other hosts" if xds.get("remote") else ""
    count = f"{len(nodes)} Envoy node{'s' * (len(nodes) != 1)}"
    lines = [f"xDS server: {xds['address']}{remote} ({count})"]
    for node in nodes:
        state = "connected" if node["connected"] else "disconnected"
        applied = node["appliedSnapshot"] or "none"
        pending = f", pushing {node['pendingSnapshot']}" if node["pendingSnapshot"] else ""
        lines.append(f"  {node['node']}: {state}, snapshot {applied}{pending}")
        lines.extend(
            f"  NACK from {node['node']}: {nack['type']} version {nack['version']} "
            f"(snapshot {nack['snapshot']}) rejected: {' '.join(nack['error'].split())}"
            for nack in node["nacks"]
        )
    return lines
