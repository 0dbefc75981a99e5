"""The Gateway API controller: each Gateway's workload and Service, and every status.

Level-triggered like the Rollout controller: any change to a watched kind marks the world
dirty, and one sync recomputes everything from the store. What is routed and what each
status says both come from ``control.gatewayapi.bind`` (pure); the status documents are
built by the pure functions below, and this class only reads, compares and writes.

Every GatewayClass of our controllers gets its status (Accepted, SupportedVersion). A
Gateway of such a class gets, as Istio's deployment controller makes them, a Deployment
``<gateway>-<class>`` running the mesh's gateway proxy with the labels its Istio Gateway
selects, and a LoadBalancer Service of the same name exposing the listener ports; both are
owned by the Gateway and deleted with it.

Addresses, as a cloud gives each LoadBalancer Service its own: the Service asks for
``spec.loadBalancerIP``, the Gateway's ``spec.addresses`` IPAddress when it names one
(it must be in 127.0.0.0/16, else Programmed=False AddressNotUsable), else the address it
holds already, else the first free address after the node's in the node's /24 (free: no
other LoadBalancer Service asks for it). The runtime then gives the Service that address
(``status.loadBalancer.ingress``), the node proxy serves it and forwards to the Gateway's
pods, and that ingress address is the Gateway's ``status.addresses`` once a pod is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tcpmesh.api import gatewayapi as g
from tcpmesh.api import pod_ready
from tcpmesh.control import (
    GATEWAY_NAME_LABEL,
    ClassResult,
    Condition,
    GatewayResult,
    MeshResources,
    ParentResult,
    RouteResult,
    bind_resources,
    workload_labels,
)
from tcpmesh.controllers.reconciler import WATCH_RETRY, Reconciler
from tcpmesh.registry import is_load_balancer_address
from tcpmesh.store import Conflict, NotFound, StoreBackend, StoreError

log = logging.getLogger("tcpmesh.controllers.gatewayapi")

Obj = dict[str, Any]
# (name, namespace, labels, ports) -> the gateway proxy Deployment (mesh.py knows the image).
WorkloadFactory = Callable[[str, str, Mapping[str, str]], Obj]
GATEWAY_KEY = "Gateway.gateway.networking.k8s.io"
CLASS_KEY = "GatewayClass.gateway.networking.k8s.io"
ROUTE_KEYS = ("TCPRoute.gateway.networking.k8s.io", "TLSRoute.gateway.networking.k8s.io")
WATCHED = (
    GATEWAY_KEY,
    *ROUTE_KEYS,
    "ReferenceGrant.gateway.networking.k8s.io",
    CLASS_KEY,
    "Namespace",
    "Service",
    "Pod",
    "Secret",
)
MANAGED_BY = "gateway.istio.io/managed"
MANAGED_VALUE = "tcpmesh.io-gateway-controller"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions_doc(
    new: Sequence[Condition], old: Sequence[Mapping[str, Any]], generation: int, now: str
) -> list[Obj]:
    """metav1.Conditions: the transition time moves only when the status does."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prior = before.get(c.type) or {}
        changed = prior.get("status") != c.status
        out.append(
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": generation,
                "lastTransitionTime": now if changed else prior.get("lastTransitionTime", now),
            }
        )
    return out


def class_status(result: ClassResult, old: Mapping[str, Any] | None, now: str) -> Obj:
    """The class's conditions; the CRD's default "Pending" Accepted is replaced by ours."""
    generation = result.gateway_class.metadata.generation or 1
    ours = {c.type for c in result.conditions}
    kept = [c for c in (old or {}).get("conditions") or [] if c.get("type") not in ours]
    mine = conditions_doc(result.conditions, (old or {}).get("conditions") or [], generation, now)
    return {**(old or {}), "conditions": [*mine, *kept]}


def route_status(result: RouteResult, old: Mapping[str, Any] | None, now: str) -> Obj:
    """The route's ``status.parents``: ours recomputed, other controllers' entries kept."""
    ours = {p.controller for p in result.parents}
    kept = [p for p in (old or {}).get("parents") or [] if p.get("controllerName") not in ours]
    generation = result.route.metadata.generation or 1
    previous = {_parent_key(p.get("parentRef") or {}): p for p in (old or {}).get("parents") or []}
    parents = [
        _parent_doc(p, previous.get(_parent_key(_ref_doc(p))), generation, now)
        for p in result.parents
    ]
    return {**(old or {}), "parents": [*kept, *parents]}


def _ref_doc(parent: ParentResult) -> Obj:
    ref = parent.ref
    doc: Obj = {
        "group": ref.group_or_default,
        "kind": ref.kind_or_default,
        "namespace": parent.namespace,
        "name": ref.name,
    }
    if ref.section_name is not None:
        doc["sectionName"] = ref.section_name
    if ref.port is not None:
        doc["port"] = ref.port
    return doc


def _parent_key(ref: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(ref.get(k) for k in ("group", "kind", "namespace", "name", "sectionName", "port"))


def _parent_doc(parent: ParentResult, old: Obj | None, generation: int, now: str) -> Obj:
    return {
        "parentRef": _ref_doc(parent),
        "controllerName": parent.controller,
        "conditions": conditions_doc(
            parent.conditions, (old or {}).get("conditions") or [], generation, now
        ),
    }


def gateway_status(
    result: GatewayResult,
    addresses: Sequence[str],
    old: Mapping[str, Any] | None,
    now: str,
    unusable_address: str = "",
) -> Obj:
    """Accepted, Programmed (a listener is usable and the workload has an address), listeners."""
    generation = result.gateway.metadata.generation or 1
    usable = any(li.programmed for li in result.listeners)
    accepted = Condition("Accepted", "True", "Accepted")
    if unusable_address:
        programmed = Condition(
            "Programmed",
            "False",
            "AddressNotUsable",
            f"address {unusable_address} is not a load-balancer address here (127.0.0.0/16)",
        )
    elif not usable:
        programmed = Condition("Programmed", "False", "Invalid", "no listener can be programmed")
    elif not addresses:
        programmed = Condition(
            "Programmed", "False", "Pending", "the gateway workload is not ready"
        )
    else:
        programmed = Condition("Programmed", "True", "Programmed")
    old_listeners = {li.get("name"): li for li in (old or {}).get("listeners") or []}
    listeners = [
        {
            "name": li.name,
            "supportedKinds": [{"group": g.GROUP, "kind": k} for k in li.supported_kinds],
            "attachedRoutes": li.attached_routes,
            "conditions": conditions_doc(
                li.conditions,
                (old_listeners.get(li.name) or {}).get("conditions") or [],
                generation,
                now,
            ),
        }
        for li in result.listeners
    ]
    return {
        "addresses": [{"type": "IPAddress", "value": a} for a in addresses],
        "conditions": conditions_doc(
            (accepted, programmed), (old or {}).get("conditions") or [], generation, now
        ),
        "listeners": listeners,
    }


def workload_name(gw: g.KubeGateway) -> str:
    return f"{gw.name}-{gw.spec.gateway_class_name}"


def requested_address(gw: g.KubeGateway) -> str:
    """The IPAddress the Gateway's ``spec.addresses`` asks for ("" when none)."""
    return next((a.value for a in gw.spec.addresses if (a.type or "IPAddress") == "IPAddress"), "")


def gateway_address(gw: g.KubeGateway, stored: Obj | None, taken: set[str], node: str) -> str:
    """The address the Gateway's Service asks for (see the module); "" when there is none."""
    requested = requested_address(gw)
    if requested:
        return requested if is_load_balancer_address(requested) else ""
    held = str(((stored or {}).get("spec") or {}).get("loadBalancerIP") or "")
    if held:
        return held
    if not is_load_balancer_address(node):
        return ""
    network = ipaddress.IPv4Network(f"{node}/24", strict=False)
    start = int(ipaddress.IPv4Address(node)) + 1
    for value in range(start, int(network.broadcast_address)):
        candidate = str(ipaddress.IPv4Address(value))
        if candidate not in taken:
            return candidate
    return ""


def desired_service(gw: g.KubeGateway, address: str = "") -> Obj:
    """The Gateway's LoadBalancer Service: one port per distinct listener port."""
    ports = sorted({li.port for li in gw.spec.listeners})
    labels = {**workload_labels(gw), MANAGED_BY: MANAGED_VALUE}
    address_spec = {"loadBalancerIP": address} if address else {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": workload_name(gw),
            "namespace": gw.namespace,
            "labels": labels,
            "ownerReferences": [_owner(gw)],
        },
        "spec": {
            "type": "LoadBalancer",
            **address_spec,
            "selector": workload_labels(gw),
            "ports": [
                {"name": f"tcp-{p}", "port": p, "targetPort": p, "protocol": "TCP"} for p in ports
            ],
        },
    }


def _owner(gw: g.KubeGateway) -> Obj:
    return {
        "apiVersion": f"{g.GROUP}/v1",
        "kind": "Gateway",
        "name": gw.name,
        "uid": gw.metadata.uid or "",
        "controller": True,
    }


class GatewayApiController(Reconciler):
    """Keeps every Gateway's workload, Service and status, and every route's status."""

    name = "gateway-api"

    def __init__(
        self, store: StoreBackend, workload: WorkloadFactory, node_address: str = ""
    ) -> None:
        super().__init__(store, WATCHED)
        self._store = store
        self._workload = workload
        self._node_address = node_address

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                self.sync()
            except (Conflict, NotFound):
                self._dirty.set()
            except StoreError:
                log.exception("gateway-api sync failed")
                await asyncio.sleep(WATCH_RETRY)
                self._dirty.set()
            # A burst of events is one sync; let it settle.
            await asyncio.sleep(0.05)

    def sync(self) -> None:
        """One level-triggered pass: workloads first, then the statuses they lead to."""
        self.syncs += 1
        objects = [o for key in WATCHED if key != "Pod" for o in self._store.list(key)]
        binding = bind_resources(MeshResources.from_objects(objects))
        now = _now()
        for cls in binding.classes:
            stored = self._store.get(CLASS_KEY, "", cls.gateway_class.name)
            if stored is not None:
                self._write_status(CLASS_KEY, stored, class_status(cls, stored.get("status"), now))
        taken = self._taken_addresses()
        for result in binding.gateways:
            gw = result.gateway
            address = self._ensure_workload(gw, taken)
            taken.add(address)
            addresses = self._addresses(gw)
            stored = self._store.get(GATEWAY_KEY, *result.key)
            if stored is not None:
                unusable = requested_address(gw) if not address and requested_address(gw) else ""
                status = gateway_status(result, addresses, stored.get("status"), now, unusable)
                self._write_status(GATEWAY_KEY, stored, status)
        self._remove_orphans({r.key for r in binding.gateways})
        for route in binding.routes:
            key = f"{route.route.kind}.{g.GROUP}"
            stored = self._store.get(key, route.route.namespace, route.route.name)
            if stored is not None:
                self._write_status(key, stored, route_status(route, stored.get("status"), now))

    def _ensure_workload(self, gw: g.KubeGateway, taken: set[str]) -> str:
        """Write the Gateway's Deployment and Service; the address the Service asks for."""
        name = workload_name(gw)
        labels = {**workload_labels(gw), MANAGED_BY: MANAGED_VALUE}
        deployment = self._workload(name, gw.namespace, labels)
        deployment["metadata"]["ownerReferences"] = [_owner(gw)]
        stored = self._store.get("Service", gw.namespace, name)
        mine = str(((stored or {}).get("spec") or {}).get("loadBalancerIP") or "")
        address = gateway_address(gw, stored, taken - {mine}, self._node_address)
        self._store.apply([desired_service(gw, address), deployment])
        return address

    def _taken_addresses(self) -> set[str]:
        """Addresses LoadBalancer Services ask for, and the node's own."""
        taken = {self._node_address}
        for svc in self._store.list("Service"):
            spec = svc.get("spec") or {}
            if spec.get("type") == "LoadBalancer" and spec.get("loadBalancerIP"):
                taken.add(str(spec["loadBalancerIP"]))
        return taken

    def _addresses(self, gw: g.KubeGateway) -> list[str]:
        """The Service's load-balancer addresses, once a workload pod is ready to serve."""
        pods = self._store.list("Pod", gw.namespace, label_selector=workload_labels(gw))
        if not any(pod_ready(p.get("status")) for p in pods):
            return []
        service = self._store.get("Service", gw.namespace, workload_name(gw)) or {}
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [str(i["ip"]) for i in ingress if i.get("ip")]

    def _remove_orphans(self, live: set[tuple[str, str]]) -> None:
        for key in ("Service", "Deployment"):
            for obj in self._store.list(key, None, label_selector={MANAGED_BY: MANAGED_VALUE}):
                labels = obj["metadata"].get("labels") or {}
                owner = (obj["metadata"]["namespace"], labels.get(GATEWAY_NAME_LABEL))
                if owner not in live:
                    with contextlib.suppress(NotFound):
                        self._store.delete(
                            key, obj["metadata"]["namespace"], obj["metadata"]["name"]
                        )

    def _write_status(self, key: str, stored: Obj, status: Obj) -> None:
        if stored.get("status") == status or _same_but_times(stored.get("status"), status):
            return
        meta = stored["metadata"]
        self._store.update_status(
            key,
            meta.get("namespace", ""),
            meta["name"],
            status,
            expected_resource_version=meta.get("resourceVersion"),
        )


def _same_but_times(old: Any, new: Any) -> bool:
    """Equal apart from lastTransitionTime values (nothing a reader needs rewritten)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "lastTransitionTime"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return old is not None and strip(old) == strip(new)
