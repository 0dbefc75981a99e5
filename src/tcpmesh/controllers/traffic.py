"""What a Rollout changes and reads in other objects, as pure functions over dicts.

The Rollout names a VirtualService ``tcp`` route and two destinations on it; these
functions find that route, rewrite its two weights (the only fields a Rollout owns in
another object) and work out which metric series belong to each version.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from tcpmesh.api.rollouts import RolloutSpec, VersionRef
from tcpmesh.control import resolve_host
from tcpmesh.controllers.gates import VersionSelector

Obj = dict[str, Any]


class RouteProblem(ValueError):
    """The Rollout's VirtualService or route does not exist (a sentence for the status)."""


def route_index(vs: Mapping[str, Any], spec: RolloutSpec) -> int:
    """The index in ``spec.tcp`` of the route the Rollout drives (RouteProblem if none)."""
    selector = spec.virtual_service
    routes = (vs.get("spec") or {}).get("tcp") or []
    name = selector.name
    if selector.port is not None:
        for index, route in enumerate(routes):
            ports = [m.get("port") for m in route.get("match") or [] if isinstance(m, Mapping)]
            if selector.port in ports:
                return index
        port = selector.port
        raise RouteProblem(f'VirtualService "{name}" has no tcp route matching port {port}')
    index = selector.route or 0
    if index >= len(routes):
        raise RouteProblem(
            f'VirtualService "{name}" has no tcp route {index} ({len(routes)} tcp routes)'
        )
    return index


def _is(ref: VersionRef, destination: Mapping[str, Any], namespace: str) -> bool:
    host = str(destination.get("host") or "")
    return (
        resolve_host(host, namespace) == resolve_host(ref.host, namespace)
        and destination.get("subset") == ref.subset
    )


def weighted(
    vs: Mapping[str, Any], spec: RolloutSpec, canary_weight: int
) -> tuple[Obj | None, str]:
    """The VirtualService with the route at ``100 - w`` stable and ``w`` canary, or
    ``(None, why)`` when it already is, or when the route has destinations the Rollout
    does not know (it never drops a user's destination)."""
    namespace = (vs.get("metadata") or {}).get("namespace") or "default"
    index = route_index(vs, spec)
    new = copy.deepcopy(dict(vs))
    route = new["spec"]["tcp"][index]
    entries = [e for e in route.get("route") or [] if isinstance(e, dict)]
    stable = [e for e in entries if _is(spec.stable, e.get("destination") or {}, namespace)]
    canary = [e for e in entries if _is(spec.canary, e.get("destination") or {}, namespace)]
    if not stable:
        raise RouteProblem(
            f"tcp route {index} has no destination {spec.stable.host} subset {spec.stable.subset}"
        )
    others = len(entries) - len(stable) - len(canary)
    if others or len(stable) > 1 or len(canary) > 1:
        raise RouteProblem(f"tcp route {index} has destinations other than stable and canary")
    if not canary:
        destination = copy.deepcopy(stable[0].get("destination") or {})
        destination["host"] = spec.canary.host
        destination["subset"] = spec.canary.subset
        canary = [{"destination": destination}]
        entries.append(canary[0])
    if (stable[0].get("weight"), canary[0].get("weight")) == (100 - canary_weight, canary_weight):
        return None, "unchanged"
    stable[0]["weight"] = 100 - canary_weight
    canary[0]["weight"] = canary_weight
    route["route"] = entries
    return new, "weights set"


def current_weight(vs: Mapping[str, Any], spec: RolloutSpec) -> int | None:
    """The canary's share (percent of the route's total weight) as the VirtualService has it."""
    namespace = (vs.get("metadata") or {}).get("namespace") or "default"
    try:
        route = ((vs.get("spec") or {}).get("tcp") or [])[route_index(vs, spec)]
    except RouteProblem:
        return None
    entries = [e for e in route.get("route") or [] if isinstance(e, Mapping)]
    weights = [int(e.get("weight") or 0) for e in entries]
    if len(entries) == 1:
        weights = [100]
    total = sum(weights)
    for entry, weight in zip(entries, weights, strict=True):
        if _is(spec.canary, entry.get("destination") or {}, namespace):
            return round(100 * weight / total) if total else 0
    return 0


def version_selector(
    ref: VersionRef, namespace: str, destination_rules: Iterable[Mapping[str, Any]]
) -> VersionSelector:
    """The metric series of one version: its service FQDN, and as ``destination_version``
    the subset's name or its pods' version label (what the proxies report)."""
    fqdn = resolve_host(ref.host, namespace)
    versions = {ref.subset}
    for rule in destination_rules:
        rule_ns = (rule.get("metadata") or {}).get("namespace") or "default"
        spec = rule.get("spec") or {}
        if resolve_host(str(spec.get("host") or ""), rule_ns) != fqdn:
            continue
        for subset in spec.get("subsets") or []:
            if isinstance(subset, Mapping) and subset.get("name") == ref.subset:
                labels = subset.get("labels") or {}
                for key in ("version", "app.kubernetes.io/version"):
                    if key in labels:
                        versions.add(str(labels[key]))
    return VersionSelector(fqdn, frozenset(versions))
