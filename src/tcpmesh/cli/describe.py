"""``tcpmesh describe``: an object, its status, and what it means for routing."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from tcpmesh.api import kinds
from tcpmesh.apiserver.client import ApiClient
from tcpmesh.control import (
    GATEWAY_NAME_LABEL,
    INGRESS_GATEWAY_SELECTOR,
    NODE_PROXY_LABELS,
    NODE_PROXY_NAMESPACE,
    Listener,
    Rebalance,
    ResponseFlag,
    Snapshot,
    TcpRoute,
    VersionAffinity,
    istio_gateway_name,
    labels_match,
    resolve_host,
    service_fqdn,
)
from tcpmesh.xds import envoy_differences

_K8S = "gateway.networking.k8s.io"
K8S_GATEWAY = f"Gateway.{_K8S}"
K8S_ROUTES = (f"TCPRoute.{_K8S}", f"TLSRoute.{_K8S}")
ROUTING_KINDS = (
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "Service",
    "ServiceEntry",
    K8S_GATEWAY,
    *K8S_ROUTES,
)


def describe_object(client: ApiClient, info: kinds.KindInfo, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    lines = [f"Name:         {meta['name']}"]
    if info.namespaced:  # kubectl shows no Namespace line for a cluster-scoped object
        lines.append(f"Namespace:    {meta.get('namespace', 'default')}")
    lines += [
        f"Kind:         {obj['kind']}",
        f"API Version:  {obj['apiVersion']}",
        f"Labels:       {_pairs(meta.get('labels'))}",
        f"Annotations:  {_pairs(meta.get('annotations'))}",
        f"Created:      {meta.get('creationTimestamp', '<unknown>')}",
        f"Generation:   {meta.get('generation', '<unknown>')}",
    ]
    if obj["kind"] == "Secret":
        lines.extend(_secret_lines(obj))
    for section in ("spec", "subsets", "status"):
        if obj.get(section):
            lines.append(f"{section.capitalize()}:")
            lines.extend("  " + line for line in _yaml(obj[section]).splitlines())
    if info.key in ROUTING_KINDS:
        lines.append("Routing:")
        lines.extend("  " + line for line in routing_lines(client, obj))
    return "\n".join(lines) + "\n"


def _secret_lines(obj: dict[str, Any]) -> list[str]:
    """As kubectl describes a Secret: its type and the size of each key, never the values."""
    lines = [f"Type:         {obj.get('type', 'Opaque')}", "Data:"]
    for key, value in sorted((obj.get("data") or {}).items()):
        lines.append(f"  {key}:  {len(base64.b64decode(value))} bytes")
    return lines


def _proxies(client: ApiClient) -> list[tuple[str, str]]:
    """(role, "ns/pod") of one pod of each gateway (the default ingress gateway's, each
    Gateway API Gateway's: all pods of one gateway share its Snapshot), then of the node
    proxy."""
    found: dict[tuple[str, str], str] = {}
    node_proxy: list[str] = []
    for pod in client.list("Pod", None):
        metadata = pod["metadata"]
        labels = metadata.get("labels") or {}
        node = f"{metadata['namespace']}/{metadata['name']}"
        if labels_match(INGRESS_GATEWAY_SELECTOR, labels):
            found.setdefault(("", "ingress"), node)
        elif GATEWAY_NAME_LABEL in labels:
            found.setdefault((metadata["namespace"], labels[GATEWAY_NAME_LABEL]), node)
        elif metadata["namespace"] == NODE_PROXY_NAMESPACE and labels_match(
            NODE_PROXY_LABELS, labels
        ):
            node_proxy.append(node)
    proxies = [("gateway", node) for node in found.values()]
    return proxies + [("node proxy", node) for node in node_proxy[:1]]


def routing_lines(client: ApiClient, obj: dict[str, Any]) -> list[str]:
    """The listeners, routes and clusters of the gateway and node proxy snapshots that
    involve ``obj``; each cluster once."""
    kind = kinds.for_object(obj).key
    lines: list[str] = []
    clusters_shown: set[str] = set()
    for role, node in _proxies(client):
        data = client.snapshot(node)
        if data is None:
            continue
        snapshot = Snapshot.from_dict(data)
        for listener in snapshot.listeners:
            for route in listener.routes:
                if _route_involves(kind, obj, listener.gateway, route):
                    lines += _route_lines(f"{role} {node}", listener, route, snapshot)
        for cluster in snapshot.clusters:
            if cluster.service in _hosts_of(kind, obj) and cluster.name not in clusters_shown:
                clusters_shown.add(cluster.name)
                endpoints = ", ".join(
                    f"{e.address}:{e.port}{'' if e.ready else ' (not ready)'}"
                    for e in cluster.endpoints
                )
                lines.append(f"cluster {cluster.name}: {endpoints or 'no endpoints'}")
    return lines or ["<no routes or clusters>"]


def _route_lines(proxy: str, listener: Listener, route: TcpRoute, snapshot: Snapshot) -> list[str]:
    """A route as describe shows it: where, for which clients, each share and its state."""
    clients = route.match.source_prefixes
    scope = f" for clients {', '.join(clients)}" if clients else ""
    lines = [
        f"{proxy} listener {listener.name} ({listener.address}:{listener.port}){scope} "
        f"from {route.source}, {_pick_text(route)}:"
    ]
    lines.extend(f"  on Envoy: {d}" for d in envoy_differences(route))
    if route.rebalance is not None:
        lines.append(f"  {_rebalance_text(route.rebalance)}")
    total = sum(d.weight for d in route.destinations) or 1
    for dest in route.destinations:
        cluster = snapshot.cluster(dest.cluster_name)
        if cluster is None:
            state = f"no such cluster: connections close with {ResponseFlag.NO_CLUSTER}"
        else:
            ready = len(cluster.ready_endpoints)
            state = f"{ready} ready endpoint(s)" + (
                "" if ready else f": {ResponseFlag.NO_HEALTHY_UPSTREAM}"
            )
        lines.append(f"  {100 * dest.weight / total:5.1f}%  {dest.cluster_name}  ({state})")
    return lines


def _route_involves(kind: str, obj: dict[str, Any], gateway: str, route: TcpRoute) -> bool:
    namespace = obj["metadata"].get("namespace", "default")
    name = obj["metadata"]["name"]
    if kind == "VirtualService":
        origin = route.origin
        return (origin.kind, origin.namespace, origin.name) == (kind, namespace, name)
    if kind == "Gateway":
        return gateway == f"{namespace}/{name}"
    if kind == K8S_GATEWAY:
        return gateway == f"{namespace}/{istio_gateway_name(name)}"
    if kind in K8S_ROUTES:
        # One VirtualService per parentRef: NAME, then NAME-1, NAME-2...
        origin = route.origin
        suffix = origin.name.removeprefix(f"{name}-")
        return (origin.kind, origin.namespace) == (obj["kind"], namespace) and (
            origin.name == name or suffix.isdigit()
        )
    hosts = _hosts_of(kind, obj)
    return any(d.service in hosts for d in route.destinations)


def _hosts_of(kind: str, obj: dict[str, Any]) -> set[str]:
    """The FQDNs whose clusters an object shapes."""
    namespace = obj["metadata"].get("namespace", "default")
    spec = obj.get("spec") or {}
    if kind == "Service":
        return {service_fqdn(obj["metadata"]["name"], namespace)}
    if kind == "DestinationRule":
        return {resolve_host(str(spec.get("host", "")), namespace)}
    if kind == "ServiceEntry":
        return {str(h) for h in spec.get("hosts") or []}
    return set()


def _pairs(mapping: dict[str, str] | None) -> str:
    if not mapping:
        return "<none>"
    return "\n              ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _pick_text(route: TcpRoute) -> str:
    """How the route splits: its weighted pick, or the client address when it is sticky."""
    if route.version_affinity is not VersionAffinity.NONE:
        return f"version affinity {route.version_affinity}"
    return f"weighted pick {route.weighted_pick}"


def _rebalance_text(rebalance: Rebalance) -> str:
    """The route's rebalance request as ``describe`` shows it."""
    return (
        f"rebalance request {rebalance.request}: over {rebalance.over:g}s, "
        f"at most {100 * rebalance.max_share:g}% of open connections"
    )
