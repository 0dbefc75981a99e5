"""Cross-resource checks with istioctl analyze's codes and message templates.

Validation (``tcpmesh.api``) looks at one object at a time; these checks look at how
objects refer to each other, which Istio accepts at apply time and reports here
(istio/istio pkg/config/analysis/msg/messages.yaml). Only the analyzers that concern TCP
routing through a gateway are implemented.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tcpmesh.api import InvalidInput, Rollout, from_dict, hosts_overlap, models, validate_object
from tcpmesh.control import (
    OPAQUE_TCP_PROTOCOLS,
    TERMINATING_MODES,
    MeshResources,
    ProxyNode,
    ResponseFlag,
    bind_resources,
    build_snapshot,
    downstream_tls,
    find_service,
    gateway_servers,
    labels_match,
    resolve_gateway_name,
    resolve_host,
    service_entry_ports,
)
from tcpmesh.controllers import RouteProblem, weighted
from tcpmesh.runtime import image_name
from tcpmesh.store import group_of, kind_key

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
Level = Literal["Error", "Warning", "Info"]
LEVEL_ORDER: dict[str, int] = {"Error": 0, "Warning": 1, "Info": 2}


@dataclass(frozen=True)
class Message:
    level: Level
    code: str
    kind: str
    namespace: str
    name: str
    text: str
    source: str = ""

    @property
    def is_error(self) -> bool:
        return self.level == "Error"


def format_message(message: Message) -> str:
    """``<Level> [<CODE>] (<Kind> <ns>/<name>[ <file>]) <message>``, as istioctl prints it."""
    origin = f"{message.kind} {message.namespace}/{message.name}"
    if message.source:
        origin += f" {message.source}"
    return f"{message.level} [{message.code}] ({origin}) {message.text}"


def analyze(
    objects: Iterable[Mapping[str, Any]], sources: Mapping[tuple[str, str, str], str] | None = None
) -> list[Message]:
    """Every message for the objects, errors first; ``sources`` maps (kind, ns, name) to a file."""
    objects = list(objects)
    resources = MeshResources.from_objects(objects)
    workloads = _workload_labels(resources, objects)
    messages = [
        *_schema_messages(objects),
        *_virtual_service_messages(resources),
        *_destination_rule_messages(resources, workloads),
        *_gateway_messages(resources, workloads),
        *_credential_messages(resources, workloads),
        *_listen_port_conflicts(resources, workloads),
        *_envoy_differences(resources, workloads),
        *_rollout_messages(objects),
        *_gateway_api_messages(resources),
    ]
    sources = sources or {}
    located = [
        Message(
            m.level,
            m.code,
            m.kind,
            m.namespace,
            m.name,
            m.text,
            sources.get((m.kind, m.namespace, m.name), ""),
        )
        for m in messages
    ]
    return sorted(
        located, key=lambda m: (LEVEL_ORDER[m.level], m.code, m.kind, m.namespace, m.name, m.text)
    )


def _rollout_messages(objects: list[Mapping[str, Any]]) -> Iterator[Message]:
    """TCM0002: a Rollout whose VirtualService, route or stable destination is not there
    (the controller says the same in the Rollout's status and waits)."""
    stored = {
        (
            o.get("kind"),
            (o.get("metadata") or {}).get("namespace") or "default",
            (o.get("metadata") or {}).get("name"),
        ): o
        for o in objects
    }
    for obj in objects:
        if obj.get("kind") != "Rollout":
            continue
        try:
            rollout = from_dict(obj)
        except InvalidInput:
            continue
        assert isinstance(rollout, Rollout)
        name = rollout.spec.virtual_service.name
        vs = stored.get(("VirtualService", rollout.namespace, name))
        try:
            if vs is None:
                raise RouteProblem(f'VirtualService "{name}" not found')
            weighted(vs, rollout.spec, 0)
        except RouteProblem as problem:
            yield _message("Error", "TCM0002", rollout, f"{problem}: the Rollout cannot start.")


def _gateway_api_messages(resources: MeshResources) -> Iterator[Message]:
    """TCM0003: what the Gateway API status reports as not working (Istio has no analyzer
    for these; the same binding writes the status, so analyze and status agree). A route
    not accepted, or with a backend it cannot use, is an Error; a listener that cannot be
    programmed is a Warning."""
    binding = bind_resources(resources)
    for route in binding.routes:
        key = f"{route.route.kind}.{GATEWAY_API_GROUP}"
        for parent in route.parents:
            for condition in parent.conditions:
                if condition.status == "False":
                    text = (
                        f"{condition.type}=False ({condition.reason}) on parent Gateway "
                        f"{parent.namespace}/{parent.ref.name}: {condition.message}"
                    )
                    yield Message(
                        "Error", "TCM0003", key, route.route.namespace, route.route.name, text
                    )
    for gateway in binding.gateways:
        for listener in gateway.listeners:
            for condition in listener.conditions:
                broken = condition.status == "False" and condition.type in (
                    "Accepted",
                    "ResolvedRefs",
                )
                if broken:
                    text = (
                        f"listener {listener.name}: {condition.type}=False ({condition.reason})"
                        + (f": {condition.message}" if condition.message else "")
                    )
                    gw = gateway.gateway
                    yield Message(
                        "Warning",
                        "TCM0003",
                        f"Gateway.{GATEWAY_API_GROUP}",
                        gw.namespace,
                        gw.name,
                        text,
                    )


def _message(level: Level, code: str, resource: models.Resource, text: str) -> Message:
    return Message(level, code, resource.kind, resource.namespace, resource.name, text)


# ---------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    namespace: str
    labels: Mapping[str, str]
    # The container images, to tell an Envoy gateway from the built-in proxy.
    images: tuple[str, ...] = ()

    @property
    def runs_envoy(self) -> bool:
        return any(image_name(image) == "envoy" for image in self.images)


def _workload_labels(resources: MeshResources, objects: list[Mapping[str, Any]]) -> list[Workload]:
    """Running pods, plus the pods that Deployments without running pods will create."""
    workloads = [
        Workload(p.namespace, p.metadata.labels, tuple(c.image for c in p.spec.containers))
        for p in resources.pods
    ]
    for obj in objects:
        if obj.get("kind") != "Deployment":
            continue
        deployment = from_dict(dict(obj))
        assert isinstance(deployment, models.Deployment)
        labels = deployment.spec.template.metadata.labels
        if deployment.spec.replicas > 0 and not any(
            w.namespace == deployment.namespace and labels_match(labels, w.labels)
            for w in workloads
        ):
            images = tuple(c.image for c in deployment.spec.template.spec.containers)
            workloads.append(Workload(deployment.namespace, labels, images))
    return workloads


# ---------------------------------------------------------------- per kind


def _schema_messages(objects: list[Mapping[str, Any]]) -> Iterator[Message]:
    for obj in objects:
        if obj.get("kind") in ("Pod", "Endpoints"):
            continue
        errors, warnings = validate_object(obj)
        meta = obj.get("metadata") or {}
        kind = kind_key(group_of(obj.get("apiVersion")), str(obj.get("kind")))
        namespace = str(meta.get("namespace") or "default")
        name = str(meta.get("name") or "")
        for error in errors:
            text = f"Schema validation error: {_strip_label(error)}"
            yield Message("Error", "IST0106", kind, namespace, name, text)
        for warning in warnings:
            text = f"Schema validation warning: {_strip_label(warning)}"
            yield Message("Warning", "IST0133", kind, namespace, name, text)


def _strip_label(line: str) -> str:
    """Drop the `Kind "name" is invalid: ` / `Kind "name": ` prefix; the origin shows it."""
    for marker in ('" is invalid: ', '": '):
        if marker in line:
            return line.split(marker, 1)[1]
    return line


def _virtual_service_messages(resources: MeshResources) -> Iterator[Message]:
    gateway_names = {f"{g.namespace}/{g.name}" for g in resources.gateways}
    mesh_hosts: dict[str, list[models.VirtualService]] = {}
    for vs in resources.virtual_services:
        bound = [resolve_gateway_name(g, vs.namespace) for g in vs.spec.gateways] or ["mesh"]
        for gateway in bound:
            if gateway != "mesh" and gateway not in gateway_names:
                yield _message("Error", "IST0101", vs, f'Referenced gateway not found: "{gateway}"')
        if "mesh" in bound:
            for host in vs.spec.hosts:
                mesh_hosts.setdefault(resolve_host(host, vs.namespace), []).append(vs)
        rules: list[models.TCPRoute | models.TLSRoute | None] = [*vs.spec.tcp, *vs.spec.tls]
        for rule in rules:
            for entry in rule.route if rule is not None else []:
                if entry is not None and entry.destination is not None:
                    yield from _destination_messages(resources, vs, entry.destination)
        yield from _hosts_in_gateways(resources, vs, bound)
    for host, services in mesh_hosts.items():
        if len(services) > 1:
            names = ",".join(f"{v.namespace}/{v.name}" for v in services)
            text = (
                f"The VirtualServices {names} associated with mesh gateway define the same "
                f"host {host} which can lead to undefined behavior. This can be fixed by "
                "merging the conflicting VirtualServices into a single resource."
            )
            for vs in services:
                yield _message("Error", "IST0109", vs, text)


def _destination_messages(
    resources: MeshResources, vs: models.VirtualService, destination: models.Destination
) -> Iterator[Message]:
    fqdn = resolve_host(destination.host, vs.namespace)
    ports = _host_ports(resources, fqdn)
    if ports is None:
        yield _message("Error", "IST0101", vs, f'Referenced host not found: "{destination.host}"')
        return
    number = destination.port.number if destination.port else 0
    if number and number not in ports:
        text = f'Referenced host:port not found: "{destination.host}:{number}"'
        yield _message("Error", "IST0101", vs, text)
    if not number and len(ports) > 1:
        text = (
            f'This VirtualService routes to a service "{destination.host}" that exposes '
            f"multiple ports [{' '.join(str(p) for p in ports)}]. Specifying a port in the "
            "destination is required to disambiguate."
        )
        yield _message("Error", "IST0112", vs, text)
    if destination.subset and not any(
        resolve_host(dr.spec.host, dr.namespace) == fqdn
        and any(s is not None and s.name == destination.subset for s in dr.spec.subsets)
        for dr in resources.destination_rules
    ):
        text = (
            "Referenced host+subset in destinationrule not found: "
            f'"{destination.host}+{destination.subset}"'
        )
        yield _message("Error", "IST0101", vs, text)


def _host_ports(resources: MeshResources, fqdn: str) -> list[int] | None:
    """The ports of the Service or ServiceEntry behind a host; None when nothing is."""
    service = find_service(resources, fqdn)
    if service is not None:
        return [p.port for p in service.spec.ports]
    entry_ports = service_entry_ports(resources, fqdn)
    return entry_ports or None


def _hosts_in_gateways(
    resources: MeshResources, vs: models.VirtualService, bound: list[str]
) -> Iterator[Message]:
    for gateway in resources.gateways:
        name = f"{gateway.namespace}/{gateway.name}"
        if name not in bound:
            continue
        server_hosts = [
            host.split("/", 1)[-1]
            for server in gateway.spec.servers
            if server is not None
            for host in server.hosts
        ]
        missing = [
            h
            for h in vs.spec.hosts
            if not any(hosts_overlap(resolve_host(h, vs.namespace), s) for s in server_hosts)
        ]
        if missing:
            text = (
                f"one or more host [{' '.join(missing)}] defined in VirtualService "
                f"{vs.namespace}/{vs.name} not found in Gateway {name}."
            )
            yield _message("Warning", "IST0132", vs, text)


def _destination_rule_messages(
    resources: MeshResources, workloads: list[Workload]
) -> Iterator[Message]:
    for rule in resources.destination_rules:
        fqdn = resolve_host(rule.spec.host, rule.namespace)
        service = find_service(resources, fqdn)
        if service is None and not fqdn.startswith("*") and not _host_ports(resources, fqdn):
            text = (
                f"The host {fqdn} defined in the DestinationRule does not match any services "
                "in the mesh."
            )
            yield _message("Warning", "IST0174", rule, text)
            continue
        if service is None or not service.spec.selector:
            continue
        selector = service.spec.selector
        for subset in rule.spec.subsets:
            if subset is None:
                continue
            wanted = {**selector, **subset.labels}
            if not any(
                w.namespace == service.namespace and labels_match(wanted, w.labels)
                for w in workloads
            ):
                text = (
                    f"The Subset {subset.name} defined in the DestinationRule does not select "
                    f"any pods. Which may lead to 503 {ResponseFlag.NO_HEALTHY_UPSTREAM} "
                    "(NoHealthyUpstream)."
                )
                yield _message("Error", "IST0173", rule, text)


def _gateway_messages(resources: MeshResources, workloads: list[Workload]) -> Iterator[Message]:
    seen: dict[tuple[str, int], list[tuple[models.Gateway, list[str]]]] = {}
    for gateway in resources.gateways:
        selector = gateway.spec.selector
        selected = [w for w in workloads if labels_match(selector, w.labels)]
        if not selected:
            selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            text = f'Referenced selector not found: "{selector_text}"'
            yield _message("Error", "IST0101", gateway, text)
            continue
        exposed = _ports_exposed_for(resources, selected)
        for server in gateway.spec.servers:
            if server is None or server.port is None:
                continue
            number = server.port.number
            if number not in exposed:
                selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
                text = (
                    f"The gateway is listening on a target port (port {number}) that is not "
                    "defined in the Service associated with its workload instances (Pod "
                    f"selector {selector_text}). If you need to access the gateway port "
                    "through the gateway Service, it will not be available."
                )
                yield _message("Warning", "IST0162", gateway, text)
            if server.port.protocol.upper() in OPAQUE_TCP_PROTOCOLS and not server.tls:
                key = (",".join(f"{k}={v}" for k, v in sorted(selector.items())), number)
                seen.setdefault(key, []).append((gateway, list(server.hosts)))
    for (selector_text, port), entries in seen.items():
        if len(entries) < 2:
            continue
        for gateway, hosts in entries:
            others = [
                f"{g.namespace}/{g.name}"
                for g, other_hosts in entries
                if g is not gateway and any(hosts_overlap(a, b) for a in hosts for b in other_hosts)
            ]
            if others:
                text = (
                    f"Conflict with gateways {','.join(others)} (workload selector "
                    f"{selector_text}, port {port}, hosts [{' '.join(hosts)}])."
                )
                yield _message("Error", "IST0145", gateway, text)


def _credential_messages(resources: MeshResources, workloads: list[Workload]) -> Iterator[Message]:
    """IST0161: a terminating server whose ``credentialName`` Secret is missing or unusable
    in the namespace of a gateway workload it selects (where Istio looks it up)."""
    for gateway in resources.gateways:
        selected = [w for w in workloads if labels_match(gateway.spec.selector, w.labels)]
        namespaces = sorted({w.namespace for w in selected})
        for server in gateway.spec.servers:
            tls = server.tls if server is not None else None
            if tls is None or tls.mode not in TERMINATING_MODES or not tls.credential_name:
                continue
            if any(
                downstream_tls(resources, ProxyNode(ns, "", (), "127.0.0.1"), tls) is None
                for ns in namespaces
            ):
                text = (
                    f"The credential referenced by the Gateway {gateway.name} in namespace "
                    f"{gateway.namespace} is invalid, which can cause the traffic not to work "
                    "as expected."
                )
                yield _message("Error", "IST0161", gateway, text)
                break


def _listen_port_conflicts(
    resources: MeshResources, workloads: list[Workload]
) -> Iterator[Message]:
    """Servers with different port numbers that one Service port serves (IST0145 style).

    A Service port and its targetPort are one listen port on the gateway; the builder
    keeps the first server (control.gateway_servers states the rule). Servers
    sharing one number are reported above, as Istio's ConflictingGateways does.
    """
    seen: set[Message] = set()
    for workload in workloads:
        node = ProxyNode(workload.namespace, "", tuple(sorted(workload.labels.items())), "")
        _, conflicts = gateway_servers(resources, node)
        for conflict in conflicts:
            kept, dropped = conflict.kept, conflict.dropped
            if kept.number == dropped.number:
                continue
            text = (
                f"Conflict with gateways {kept.gateway_name} (port {kept.number}): server "
                f"ports {kept.number} and {dropped.number} are both served on port "
                f"{dropped.listen_port} of the gateway's Service; only the server of "
                f"{kept.gateway_name} on port {kept.number} gets it (the first server by "
                f"creation time), port {dropped.number} of this gateway is ignored."
            )
            message = _message("Error", "IST0145", dropped.gateway, text)
            if message not in seen:
                seen.add(message)
                yield message


def _envoy_differences(resources: MeshResources, workloads: list[Workload]) -> Iterator[Message]:
    """Routes an Envoy gateway cannot run as the Snapshot says (xds.translate states which).

    Built from the same Snapshot the gateway gets, so the message names exactly the routes
    whose behaviour differs between the two data planes."""
    from tcpmesh.xds import envoy_differences

    seen: set[Message] = set()
    by_name = {(vs.namespace, vs.name): vs for vs in resources.virtual_services}
    for workload in workloads:
        if not workload.runs_envoy:
            continue
        labels = tuple(sorted(workload.labels.items()))
        node = ProxyNode(workload.namespace, "", labels, "127.0.0.1")
        for listener in build_snapshot(resources, node).listeners:
            for route in listener.routes:
                vs = by_name.get((route.origin.namespace, route.origin.name))
                if vs is None:
                    continue
                for difference in envoy_differences(route):
                    text = f"On the Envoy gateway, {route.origin}: {difference}."
                    message = _message("Info", "TCM0001", vs, text)
                    if message not in seen:
                        seen.add(message)
                        yield message


def _ports_exposed_for(resources: MeshResources, workloads: list[Workload]) -> set[int]:
    ports: set[int] = set()
    for service in resources.services:
        selector = service.spec.selector
        if not selector or not any(labels_match(selector, w.labels) for w in workloads):
            continue
        for port in service.spec.ports:
            ports.add(port.port)
            if isinstance(port.target_port, int):
                ports.add(port.target_port)
    return ports
