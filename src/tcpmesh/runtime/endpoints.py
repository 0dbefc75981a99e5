"""Endpoints controller: each Service with a selector gets an ``Endpoints`` of its pods.

Follows Kubernetes' endpoints controller: ready pods go to ``addresses``, the others to
``notReadyAddresses``; a named ``targetPort`` is looked up in each pod's containerPorts,
and a pod without that port is left out of that port (pods with different resolved
ports end up in different subsets). Load-balancer addresses are
:mod:`tcpmesh.runtime.loadbalancers`' business.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from tcpmesh.runtime.events import EventRecorder
from tcpmesh.runtime.loadbalancers import sync_load_balancers
from tcpmesh.runtime.objects import (
    Obj,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    pod_is_ready,
)
from tcpmesh.runtime.storeapi import StoreLike

log = logging.getLogger(__name__)


def resolve_target_port(service_port: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    """The pod port a service port sends to, or None when the pod has no such named port."""
    target = service_port.get("targetPort")
    if target is None or target == "":
        return int(service_port["port"])
    if isinstance(target, int) or target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def _belongs_in_endpoints(pod: Mapping[str, Any]) -> bool:
    """Kubernetes' ShouldPodBeInEndpoints: an IP, and not finished for good."""
    status = pod.get("status") or {}
    if not status.get("podIP") or meta(pod).get("deletionTimestamp"):
        return False
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    phase = status.get("phase")
    if policy == "Never":
        return phase not in ("Failed", "Succeeded")
    if policy == "OnFailure":
        return phase != "Succeeded"
    return True


def _address(pod: Mapping[str, Any]) -> Obj:
    return {
        "ip": pod["status"]["podIP"],
        "targetRef": {
            "kind": "Pod",
            "name": name_of(pod),
            "namespace": namespace_of(pod),
            "uid": meta(pod).get("uid") or "",
        },
    }


def _address_key(address: Mapping[str, Any]) -> tuple[int, str]:
    try:
        ip = int(ipaddress.ip_address(address["ip"]))
    except ValueError:
        ip = 0
    return ip, str(address["targetRef"]["name"])


def endpoint_subsets(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[Obj]:
    """The ``subsets`` of the Service's Endpoints, in a stable order."""
    spec = service.get("spec") or {}
    selector: Mapping[str, str] = spec.get("selector") or {}
    service_ports: list[Mapping[str, Any]] = spec.get("ports") or []
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[str, tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for pod in pods:
        if namespace_of(pod) != namespace_of(service) or not _belongs_in_endpoints(pod):
            continue
        labels = labels_of(pod)
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        ports: list[Obj] = []
        for service_port in service_ports:
            target = resolve_target_port(service_port, pod)
            if target is None:
                continue
            port: Obj = {"port": target, "protocol": service_port.get("protocol") or "TCP"}
            if service_port.get("name"):
                port["name"] = service_port["name"]
            if service_port.get("appProtocol"):
                port["appProtocol"] = service_port["appProtocol"]
            ports.append(port)
        if service_ports and not ports:
            continue
        ports.sort(key=lambda p: (p.get("name", ""), p["port"]))
        group_key = repr([sorted(p.items()) for p in ports])
        ready, not_ready, _ = groups.setdefault(group_key, ([], [], ports))
        (ready if publish_not_ready or pod_is_ready(pod) else not_ready).append(_address(pod))
    subsets = []
    for group_key in sorted(groups):
        ready, not_ready, ports = groups[group_key]
        subset: Obj = {}
        if ready:
            subset["addresses"] = sorted(ready, key=_address_key)
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=_address_key)
        subset["ports"] = ports
        subsets.append(subset)
    return subsets


def has_selector(service: Mapping[str, Any]) -> bool:
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def _sync_endpoints_of(store: StoreLike, service: Obj, pods: list[Obj]) -> None:
    subsets = endpoint_subsets(service, pods)
    labels = dict(labels_of(service))
    existing = store.get("Endpoints", *key_of(service))
    if existing is None:
        metadata: Obj = {"name": name_of(service), "namespace": namespace_of(service)}
        if labels:
            metadata["labels"] = labels
        store.create(
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": metadata, "subsets": subsets}
        )
    elif (existing.get("subsets") or []) != subsets or dict(labels_of(existing)) != labels:
        metadata = {**existing["metadata"], "labels": labels}
        store.replace({**existing, "metadata": metadata, "subsets": subsets})


def sync_services(store: StoreLike, node_address: str, events: EventRecorder | None = None) -> None:
    """Reconcile the Endpoints and load balancer status of every Service."""
    services = store.list("Service")
    pods = store.list("Pod")
    for service in services:
        try:
            if has_selector(service):
                _sync_endpoints_of(store, service, pods)
        except Exception:
            log.exception("service %s/%s: reconcile failed", *key_of(service))
    try:
        sync_load_balancers(store, services, node_address, events, pods)
    except Exception:
        log.exception("load balancers: reconcile failed")
    service_keys = {key_of(s) for s in services}
    for endpoints in store.list("Endpoints"):
        # Kubernetes deletes a Service's Endpoints along with the Service.
        if key_of(endpoints) not in service_keys:
            try:
                store.delete("Endpoints", *key_of(endpoints))
            except Exception:
                log.exception("endpoints %s/%s: delete failed", *key_of(endpoints))
