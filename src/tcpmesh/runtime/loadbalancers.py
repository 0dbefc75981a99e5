"""Load-balancer addresses: the service controller's part, for one machine.

Every LoadBalancer Service gets an address in ``status.loadBalancer.ingress[0].ip`` and,
in ``ingress[0].ports``, the frontend ports it holds there; the node proxy serves exactly
those (a port with an ``error`` is not served). The rule, like Services sharing one
Alibaba Cloud SLB, where each listener port belongs to one Service:

- the address is ``spec.loadBalancerIP`` when set (an address of 127.0.0.0/16), else the
  node address (``up --address``), which every such Service shares with the ingress
  gateway and with the node ports;
- an address:port belongs to one Service: node ports first, then the Service that holds
  it already, then the oldest Service asking for it (creationTimestamp, then
  namespace/name), so a later Service never takes a port that serves;
- a Service that holds nothing yet and cannot get every port it needs gets no address at
  all, and its ``LoadBalancerReady`` condition and a ``SyncLoadBalancerFailed`` Event
  say which port is whose; a Service that holds its address keeps it, and only a port
  added later that another Service holds is marked with an ``error``;
- a Service whose pods include joined gateway hosts (``tcpmesh gateway join``) also lists
  every ready joined host, after this machine, as a cloud load balancer lists its
  frontends; when all its pods are joined, only those hosts (nothing is claimed here).

:func:`assign_load_balancers` is the pure decision; :func:`sync_load_balancers` writes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tcpmesh.join import is_joined
from tcpmesh.registry import is_load_balancer_address
from tcpmesh.runtime.events import NORMAL, WARNING, EventRecorder, Happening
from tcpmesh.runtime.objects import (
    Obj,
    condition,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    pod_is_ready,
)
from tcpmesh.runtime.storeapi import StoreLike

Key = tuple[str, str]
Claim = tuple[str, str, int]  # address, protocol, port
CONDITION = "LoadBalancerReady"
PORT_IN_USE = "tcpmesh.io/PortInUse"


@dataclass(frozen=True)
class PortOutcome:
    port: int
    protocol: str
    error: str | None = None  # the holder, when another Service has this address:port


@dataclass(frozen=True)
class Outcome:
    """What one LoadBalancer Service gets: an address and its ports, or why not."""

    address: str | None
    ports: tuple[PortOutcome, ...] = ()
    problem: str | None = None
    joined_hosts: tuple[str, ...] = ()  # other machines serving it (they hold their ports)

    def load_balancer(self) -> Obj:
        """``status.loadBalancer`` as Kubernetes spells it."""
        ingress: list[Obj] = []
        if self.address is not None:
            ports = []
            for p in self.ports:
                entry: Obj = {"port": p.port, "protocol": p.protocol}
                if p.error:
                    entry["error"] = PORT_IN_USE
                ports.append(entry)
            ingress.append({"ip": self.address, "ports": ports})
        ingress += [{"ip": host} for host in self.joined_hosts]
        return {"ingress": ingress} if ingress else {}


def _ports(service: Mapping[str, Any]) -> list[tuple[str, int]]:
    ports = (service.get("spec") or {}).get("ports") or []
    return [(str(p.get("protocol") or "TCP"), int(p["port"])) for p in ports if "port" in p]


def _label(service: Mapping[str, Any]) -> str:
    return f"{namespace_of(service)}/{name_of(service)}"


def _order(service: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(meta(service).get("creationTimestamp") or ""), *key_of(service))


def wanted_address(service: Mapping[str, Any], node_address: str) -> str:
    return str((service.get("spec") or {}).get("loadBalancerIP") or node_address)


def _held(service: Mapping[str, Any], address: str) -> set[tuple[str, int]]:
    """The ports the Service serves on ``address`` now, by its own status."""
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if not ingress or ingress[0].get("ip") != address:
        return set()
    return {
        (str(p.get("protocol") or "TCP"), int(p["port"]))
        for p in ingress[0].get("ports") or []
        if "port" in p and not p.get("error")
    }


def _node_port_claims(services: Iterable[Mapping[str, Any]], node_address: str) -> dict[Claim, str]:
    claims: dict[Claim, str] = {}
    for service in services:
        for port in (service.get("spec") or {}).get("ports") or []:
            if port.get("nodePort"):
                claim = (node_address, str(port.get("protocol") or "TCP"), int(port["nodePort"]))
                claims.setdefault(claim, f"node port of Service {_label(service)}")
    return claims


def _joined_hosts(
    service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
) -> tuple[bool, tuple[str, ...]]:
    """Whether this machine serves the Service, and the ready joined hosts that do too."""
    selector: Mapping[str, str] = (service.get("spec") or {}).get("selector") or {}
    selected = [
        pod
        for pod in pods
        if selector
        and namespace_of(pod) == namespace_of(service)
        and all(labels_of(pod).get(k) == v for k, v in selector.items())
    ]
    joined = [p for p in selected if is_joined(p)]
    hosts: list[str] = []
    for pod in sorted(joined, key=name_of):
        ip = str((pod.get("status") or {}).get("podIP") or "")
        if ip and pod_is_ready(pod) and ip not in hosts:
            hosts.append(ip)
    return not joined or len(joined) < len(selected), tuple(hosts)


def assign_load_balancers(
    services: list[Obj], node_address: str, pods: Iterable[Mapping[str, Any]] = ()
) -> dict[Key, Outcome]:
    """The address and ports of every LoadBalancer Service (see the module docstring)."""
    pods = list(pods)
    outcomes: dict[Key, Outcome] = {}
    balanced = []
    for service in sorted(services, key=_order):
        if (service.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        local, hosts = _joined_hosts(service, pods)
        if local:
            balanced.append((service, hosts))
        else:
            outcomes[key_of(service)] = Outcome(None, joined_hosts=hosts)
    claims = _node_port_claims(services, node_address)
    owner = {key_of(s): f"LoadBalancer Service {_label(s)}" for s, _ in balanced}
    for service, _ in balanced:  # what serves keeps serving
        address = wanted_address(service, node_address)
        wanted = set(_ports(service))
        for protocol, port in sorted(_held(service, address) & wanted):
            claims.setdefault((address, protocol, port), owner[key_of(service)])
    for service, hosts in balanced:
        outcome = _outcome(service, node_address, claims, owner[key_of(service)])
        outcomes[key_of(service)] = dataclasses.replace(outcome, joined_hosts=hosts)
    return outcomes


def _outcome(service: Obj, node_address: str, claims: dict[Claim, str], me: str) -> Outcome:
    address = wanted_address(service, node_address)
    if address != node_address and not is_load_balancer_address(address):
        return Outcome(
            None,
            problem=f"spec.loadBalancerIP {address} is not a load-balancer address: tcpmesh "
            "serves load balancers on 127.0.0.0/16 (and on the node address)",
        )
    ports = _ports(service)
    taken = {
        (protocol, port): claims[(address, protocol, port)]
        for protocol, port in ports
        if claims.get((address, protocol, port), me) != me
    }
    holds = bool(_held(service, address))
    if taken and not holds:
        conflicts = "; ".join(
            f"port {port}/{protocol} of {address} is taken by the {holder}"
            for (protocol, port), holder in taken.items()
        )
        return Outcome(
            None,
            problem=f"{conflicts} (Services sharing a load balancer must use "
            "different frontend ports)",
        )
    for protocol, port in ports:
        claims.setdefault((address, protocol, port), me)
    outcome_ports = tuple(
        PortOutcome(port, protocol, taken.get((protocol, port))) for protocol, port in ports
    )
    problem = "; ".join(
        f"port {p.port}/{p.protocol} of {address} is taken by the {p.error}"
        for p in outcome_ports
        if p.error
    )
    return Outcome(address, outcome_ports, problem or None)


def load_balancer_status(outcome: Outcome | None, status: Mapping[str, Any]) -> Obj:
    """The Service's status with its load balancer and condition (None: not a LoadBalancer)."""
    previous: list[Mapping[str, Any]] = [
        c for c in status.get("conditions") or [] if isinstance(c, dict)
    ]
    others: list[Mapping[str, Any]] = [c for c in previous if c.get("type") != CONDITION]
    new: Obj = {k: v for k, v in status.items() if k not in ("loadBalancer", "conditions")}
    new["loadBalancer"] = {} if outcome is None else outcome.load_balancer()
    if outcome is not None:
        serves = outcome.address is not None or bool(outcome.joined_hosts)
        ready = serves and outcome.problem is None
        if ready:
            where = [outcome.address] if outcome.address else []
            reason, message = "Ensured", f"serving on {', '.join([*where, *outcome.joined_hosts])}"
        else:
            reason = "PortsInUse" if serves else "Pending"
            message = str(outcome.problem)
        others.append(condition(CONDITION, ready, previous, reason, message))
    if others:
        new["conditions"] = others
    return new


def _happening(outcome: Outcome) -> Happening:
    """What Kubernetes' service controller reports for the same outcome."""
    if outcome.problem is None:
        return Happening(NORMAL, "EnsuredLoadBalancer", "Ensured load balancer")
    return Happening(
        WARNING,
        "SyncLoadBalancerFailed",
        f"Error syncing load balancer: failed to ensure load balancer: {outcome.problem}",
    )


def sync_load_balancers(
    store: StoreLike,
    services: list[Obj],
    node_address: str,
    events: EventRecorder | None,
    pods: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Write each Service's load balancer status where it changed, with an Event then."""
    outcomes = assign_load_balancers(services, node_address, pods)
    for service in services:
        outcome = outcomes.get(key_of(service))
        status = service.get("status") or {}
        wanted = load_balancer_status(outcome, status)
        if wanted == status or (not status and wanted == {"loadBalancer": {}}):
            continue
        store.update_status("Service", *key_of(service), wanted)
        if events is not None and outcome is not None:
            events.record(service, _happening(outcome))
