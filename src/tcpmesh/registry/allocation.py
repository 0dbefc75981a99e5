"""A Service's cluster IP and node ports: what Kubernetes' Service REST storage decides.

Pure: given the Service being written, the one stored before (None on create) and what
other Services hold, :func:`allocate` returns the Service as it is to be stored, or raises
:class:`ServiceRejected` with Kubernetes' own field errors. The rules follow kubernetes
``pkg/registry/core/service/storage`` (rest.go: normalizeClusterIPs, patchAllocatedValues,
dropTypeDependentFields; alloc.go: allocClusterIPs, initNodePorts, updateNodePorts) and
``pkg/apis/core/validation`` (validateUpgradeDowngradeClusterIPs), single-stack IPv4.

One rule is tcpmesh's own: the node address is also the default load-balancer address
(``up --address``), so a node port is never one of the ports a LoadBalancer Service on that
shared address serves there (``Taken.shared_lb_ports``).
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tcpmesh.api import describe
from tcpmesh.registry.ranges import (
    NODE_PORT_RANGE,
    SERVICE_CIDR,
    cluster_ip_candidates,
    in_service_range,
    node_port_candidates,
    node_port_range_text,
)
from tcpmesh.store import StoreError

Obj = dict[str, Any]
HEADLESS = "None"
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


class ServiceRejected(StoreError):
    """A Service write refused with Kubernetes' messages (nothing was written).

    ``internal`` marks what Kubernetes answers with 500 InternalError (a full range); the
    rest is 422 Invalid, one message per field error, each naming the Service.
    """

    def __init__(self, name: str, namespace: str, messages: list[str], *, internal: bool = False):
        super().__init__("\n".join(messages))
        self.name = name
        self.namespace = namespace
        self.messages = messages
        self.internal = internal


@dataclass(frozen=True)
class Taken:
    """What the other Services hold: cluster IPs, node ports, ports on the shared address."""

    cluster_ips: frozenset[str] = frozenset()
    node_ports: frozenset[int] = frozenset()
    shared_lb_ports: frozenset[int] = frozenset()

    @classmethod
    def of(cls, services: Iterable[Mapping[str, Any]]) -> Taken:
        ips: set[str] = set()
        node_ports: set[int] = set()
        shared: set[int] = set()
        for service in services:
            spec = service.get("spec") or {}
            ips.update(ip for ip in spec.get("clusterIPs") or [] if ip and ip != HEADLESS)
            if spec.get("clusterIP") and spec["clusterIP"] != HEADLESS:
                ips.add(str(spec["clusterIP"]))
            node_ports.update(int(p["nodePort"]) for p in _ports(spec) if p.get("nodePort"))
            shared.update(shared_address_ports(service))
        return cls(frozenset(ips), frozenset(node_ports), frozenset(shared))

    def node_port_taken(self, port: int) -> bool:
        return port in self.node_ports or port in self.shared_lb_ports


def shared_address_ports(service: Mapping[str, Any]) -> set[int]:
    """The ports a LoadBalancer Service serves on the node address (none for other types)."""
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer" or spec.get("loadBalancerIP"):
        return set()
    return {int(p["port"]) for p in _ports(spec) if "port" in p}


def needs_cluster_ip(spec: Mapping[str, Any]) -> bool:
    """Every type but ExternalName has a cluster IP, unless it is headless."""
    return spec.get("type") != "ExternalName" and not _headless(spec)


def allocate(new: Obj, old: Obj | None, taken: Taken) -> Obj:
    """``new`` with its cluster IP and node ports, or ServiceRejected (Kubernetes' errors)."""
    service = copy.deepcopy(new)
    spec: Obj = service.setdefault("spec", {})
    old_spec: Obj = (old or {}).get("spec") or {}
    if old is not None:
        _drop_type_dependent_fields(spec, old_spec)
        _patch_allocated_values(spec, old_spec)
    _normalize_cluster_ips(spec, old_spec if old is not None else None)
    errors = list(_field_errors(spec, old_spec if old is not None else None))
    if not errors:
        errors += _assign_cluster_ip(spec, old_spec, taken)
    if not errors:
        errors += _assign_node_ports(spec, old_spec, taken)
    if errors:
        meta = service.get("metadata") or {}
        name, namespace = str(meta.get("name", "")), str(meta.get("namespace") or "default")
        label = describe("Service", name, namespace)
        internal = any(e.startswith(_INTERNAL) for e in errors)
        messages = [e if e.startswith(_INTERNAL) else f"{label} is invalid: {e}" for e in errors]
        raise ServiceRejected(name, namespace, messages, internal=internal)
    return service


_INTERNAL = "Internal error occurred: "


def _ports(spec: Mapping[str, Any]) -> list[Obj]:
    ports = spec.get("ports") or []
    return [p for p in ports if isinstance(p, dict)]


def _headless(spec: Mapping[str, Any]) -> bool:
    ips = spec.get("clusterIPs") or []
    return spec.get("clusterIP") == HEADLESS or (len(ips) == 1 and ips[0] == HEADLESS)


def _go_strings(values: Iterable[str]) -> str:
    """Go's ``%#v`` of a ``[]string``, as Kubernetes prints a bad clusterIPs value."""
    return "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"


# ---------------------------------------------------------------- before validation


def _drop_type_dependent_fields(spec: Obj, old: Mapping[str, Any]) -> None:
    """What a type change makes meaningless, dropped when the client left it as it was."""
    if spec.get("type") == old.get("type"):
        return
    if spec.get("type") == "ExternalName" and spec.get("clusterIPs") == old.get("clusterIPs"):
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            spec.pop(key, None)
    if spec.get("type") not in NODE_PORT_TYPES:
        old_ports = {int(p["nodePort"]) for p in _ports(old) if p.get("nodePort")}
        for port in _ports(spec):
            if port.get("nodePort") in old_ports:
                port.pop("nodePort")
    if spec.get("type") != "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") == old.get(
        "allocateLoadBalancerNodePorts"
    ):
        spec.pop("allocateLoadBalancerNodePorts", None)


def _patch_allocated_values(spec: Obj, old: Mapping[str, Any]) -> None:
    """Values the server chose, kept when the client resubmits without them."""
    if needs_cluster_ip_type(old) and needs_cluster_ip_type(spec):
        if not spec.get("clusterIP") and old.get("clusterIP"):
            spec["clusterIP"] = old["clusterIP"]
        if not spec.get("clusterIPs") and old.get("clusterIPs"):
            spec["clusterIPs"] = list(old["clusterIPs"])
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if key not in spec and key in old:
                spec[key] = copy.deepcopy(old[key])
    if old.get("type") in NODE_PORT_TYPES and spec.get("type") in NODE_PORT_TYPES:
        new_ports = _ports(spec)
        used = {int(p["nodePort"]) for p in new_ports if p.get("nodePort")}
        by_name = {str(p.get("name") or ""): p.get("nodePort") for p in _ports(old)}
        for port in new_ports:
            kept = by_name.get(str(port.get("name") or ""))
            if not port.get("nodePort") and kept and kept not in used:
                port["nodePort"] = kept
                used.add(int(kept))


def needs_cluster_ip_type(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") != "ExternalName"


def _normalize_cluster_ips(spec: Obj, old: Mapping[str, Any] | None) -> None:
    """Keep ``clusterIP`` and ``clusterIPs`` in step, as Kubernetes' normalizeClusterIPs."""
    ip, ips = spec.get("clusterIP"), spec.get("clusterIPs")
    if old is None:
        if ip and not ips:
            spec["clusterIPs"] = [ip]
        return
    if old.get("clusterIPs") and not ips and old.get("clusterIP") == ip:
        spec["clusterIPs"] = ips = list(old["clusterIPs"])
    if old.get("clusterIP") != ip and ips == old.get("clusterIPs"):
        if ip:
            spec["clusterIPs"] = [ip]
        else:
            spec.pop("clusterIPs", None)


def _field_errors(spec: Mapping[str, Any], old: Mapping[str, Any] | None) -> Iterator[str]:
    """Kubernetes' checks that need the stored Service or come after the steps above."""
    ip, ips = spec.get("clusterIP"), list(spec.get("clusterIPs") or [])
    if ip and not ips:
        yield "spec.clusterIPs: Required value"
    elif ip and ips[0] != ip:
        yield (
            f"spec.clusterIPs: Invalid value: {_go_strings(ips)}: first value must match "
            "`clusterIP`"
        )
    elif not ip and ips:
        yield (
            f"spec.clusterIPs: Invalid value: {_go_strings(ips)}: must be empty when "
            "`clusterIP` is not specified"
        )
    kind = spec.get("type") or "ClusterIP"
    if kind == "ExternalName" and ips:
        yield "spec.clusterIPs: Forbidden: may not be set for ExternalName services"
    if kind == "ClusterIP":
        for i, port in enumerate(_ports(spec)):
            if port.get("nodePort"):
                yield (
                    f"spec.ports[{i}].nodePort: Forbidden: may not be used when `type` is "
                    "'ClusterIP'"
                )
    if spec.get("allocateLoadBalancerNodePorts") is not None and kind != "LoadBalancer":
        yield (
            "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is "
            "'LoadBalancer'"
        )
    if old is not None:
        yield from _immutable_cluster_ips(spec, old)


def _immutable_cluster_ips(spec: Mapping[str, Any], old: Mapping[str, Any]) -> Iterator[str]:
    """validateUpgradeDowngradeClusterIPs for one IP family: the cluster IP never changes."""
    if "ExternalName" in (spec.get("type"), old.get("type")):
        return
    if _headless(spec) and _headless(old):
        return
    new_ips, old_ips = list(spec.get("clusterIPs") or []), list(old.get("clusterIPs") or [])
    if not old_ips:
        return  # stored before tcpmesh allocated cluster IPs: it gets one now
    if not new_ips:
        yield (
            f"spec.clusterIPs[0]: Invalid value: {_go_strings(new_ips)}: primary clusterIP "
            "can not be unset"
        )
    elif new_ips[0] != old_ips[0]:
        yield f"spec.clusterIPs[0]: Invalid value: {_go_strings(new_ips)}: may not change once set"


# ---------------------------------------------------------------- allocation


def _assign_cluster_ip(spec: Obj, old: Mapping[str, Any], taken: Taken) -> list[str]:
    """allocClusterIPs: the requested IP if it is in the range and free, else the next free."""
    if not needs_cluster_ip(spec):
        if _headless(spec):
            spec["clusterIP"], spec["clusterIPs"] = HEADLESS, [HEADLESS]
        return []
    requested = (spec.get("clusterIPs") or [""])[0]
    if requested and requested in (old.get("clusterIPs") or []):
        chosen = requested  # its own, kept
    elif requested:
        problem = _requested_ip_problem(requested, spec, taken)
        if problem:
            return [problem]
        chosen = requested
    else:
        free = next((ip for ip in cluster_ip_candidates() if ip not in taken.cluster_ips), None)
        if free is None:
            return [f"{_INTERNAL}failed to allocate a serviceIP: range is full"]
        chosen = free
    spec["clusterIP"], spec["clusterIPs"] = chosen, [chosen]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    return []


def _requested_ip_problem(requested: str, spec: Mapping[str, Any], taken: Taken) -> str | None:
    ips = _go_strings(spec.get("clusterIPs") or [requested])
    try:
        address = ipaddress.ip_address(requested)
    except ValueError:
        return None  # static validation already said "must be a valid IP address"
    if address.version == 6:
        return f"spec.clusterIPs[0]: Invalid value: {ips}: IPv6 is not configured on this cluster"
    prefix = f"spec.clusterIPs: Invalid value: {ips}: failed to allocate IP {requested}: "
    if not isinstance(address, ipaddress.IPv4Address) or not in_service_range(address):
        return (
            f"{prefix}the provided IP ({requested}) is not in the valid range. "
            f"The range of valid IPs is {SERVICE_CIDR}"
        )
    if requested in taken.cluster_ips:
        return f"{prefix}provided IP is already allocated"
    return None


def _assign_node_ports(spec: Obj, old: Mapping[str, Any], taken: Taken) -> list[str]:
    """initNodePorts/updateNodePorts: requested ones checked, missing ones allocated."""
    kind = spec.get("type")
    if kind not in NODE_PORT_TYPES:
        return []
    if kind == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    allocate_missing = kind == "NodePort" or spec.get("allocateLoadBalancerNodePorts") is not False
    own = {int(p["nodePort"]) for p in _ports(old) if p.get("nodePort")}
    own_frontends = shared_address_ports({"spec": spec})
    by_service_port: dict[int, int] = {}
    errors: list[str] = []
    for i, port in enumerate(_ports(spec)):
        wanted = int(port.get("nodePort") or 0)
        if wanted:
            problem = _node_port_problem(wanted, own, own_frontends, by_service_port, taken)
            if problem:
                errors.append(f"spec.ports[{i}].nodePort: Invalid value: {wanted}: {problem}")
            by_service_port.setdefault(int(port.get("port", 0)), wanted)
            continue
        if not allocate_missing:
            continue
        shared = by_service_port.get(int(port.get("port", 0)))
        chosen = shared or _next_node_port(taken, own_frontends, set(by_service_port.values()))
        if chosen is None:
            return [f"{_INTERNAL}failed to allocate a nodePort: range is full"]
        port["nodePort"] = chosen
        by_service_port.setdefault(int(port.get("port", 0)), chosen)
    return errors


def _node_port_problem(
    wanted: int, own: set[int], own_frontends: set[int], mine: Mapping[int, int], taken: Taken
) -> str | None:
    if wanted in own or wanted in mine.values():
        return None
    if wanted not in NODE_PORT_RANGE:
        return (
            "provided port is not in the valid range. The range of valid ports is "
            f"{node_port_range_text()}"
        )
    if taken.node_port_taken(wanted) or wanted in own_frontends:
        return "provided port is already allocated"
    return None


def _next_node_port(taken: Taken, own_frontends: set[int], mine: set[int]) -> int | None:
    for port in node_port_candidates():
        if not taken.node_port_taken(port) and port not in own_frontends and port not in mine:
            return port
    return None
