"""ServiceEntry hosts merged as Istio merges them, and their clusters.

References (istio/istio): pilot/pkg/serviceregistry/serviceentry/conversion.go
(convertServices, convertServiceEntryToInstances, convertWorkloadInstanceToServiceInstance,
mergeServicesInstancesByNamespaceHost), model/sidecar.go (appendSidecarServices),
networking/core/cluster.go (convertResolution) and cluster_builder.go (buildCluster).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tcpmesh.api import (
    is_ip,
    models,
    pod_ready,
)
from tcpmesh.control.policy import (
    destination_rule,
    make_cluster,
    unique_subsets,
)
from tcpmesh.control.resources import (
    MeshResources,
    ProxyNode,
    labels_match,
    service_fqdn,
)
from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
)

DNS_RESOLUTIONS = frozenset({"DNS", "DNS_ROUND_ROBIN"})


UNIX_ADDRESS_PREFIX = "unix://"


HEALTH_CHECKS_ANNOTATION = "proxy.istio.io/health-checks-enabled"


_GO_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})


@dataclass(frozen=True)
class EntryService:
    """One host of the ServiceEntries a proxy sees, with the entries merged into it.

    Entries of the same namespace and host merge (their ports and endpoints add up); for
    one host in several namespaces the first entry in :func:`service_entries_visible_to`
    order wins, as in appendSidecarServices. ``resolution`` is that first entry's.
    """

    host: str
    namespace: str
    resolution: str
    entries: tuple[models.ServiceEntry, ...]

    @property
    def ports(self) -> tuple[models.ServiceEntryPort, ...]:
        """The merged ports, one per number (the first definition wins)."""
        found: dict[int, models.ServiceEntryPort] = {}
        for entry in self.entries:
            for port in entry.spec.ports:
                if port is not None:
                    found.setdefault(port.number, port)
        return tuple(found.values())


@dataclass(frozen=True)
class _Instance:
    """An endpoint of one entry port before name resolution: ``address`` may be a name."""

    address: str
    port: int
    labels: tuple[tuple[str, str], ...]
    ready: bool
    workload: str


def entry_services(resources: MeshResources) -> dict[str, EntryService]:
    """Host → the ServiceEntries behind it; a Kubernetes Service of that name wins."""
    kubernetes = {service_fqdn(s.name, s.namespace) for s in resources.services}
    found: dict[str, EntryService] = {}
    for entry in resources.service_entries:
        for host in dict.fromkeys(entry.spec.hosts):
            if host in kubernetes:
                continue
            current = found.get(host)
            if current is None:
                found[host] = EntryService(host, entry.namespace, entry.spec.resolution, (entry,))
            elif current.namespace == entry.namespace:
                merged = (*current.entries, entry)
                found[host] = dataclasses.replace(current, entries=merged)
    return found


def service_entry_ports(resources: MeshResources, fqdn: str) -> list[int]:
    """The port numbers of the entry for ``fqdn``, or of the closest wildcard host covering it."""
    services = entry_services(resources)
    service = services.get(fqdn)
    if service is None:
        covering = [h for h in services if h.startswith("*") and fqdn.endswith(h[1:])]
        if not covering:
            return []
        service = services[max(covering, key=len)]
    return [p.number for p in service.ports]


def dns_names(resources: MeshResources) -> set[str]:
    """The host names the endpoints of DNS ServiceEntries need looked up (for every proxy)."""
    names: set[str] = set()
    for entry in resources.service_entries:
        if entry.spec.resolution not in DNS_RESOLUTIONS:
            continue
        for host in entry.spec.hosts:
            for port in entry.spec.ports:
                if port is None:
                    continue
                for instance in _entry_instances(resources, entry, host, port):
                    if not is_ip(instance.address) and not instance.address.startswith("*"):
                        names.add(instance.address)
    return names


def service_entry_clusters(resources: MeshResources, node: ProxyNode) -> Iterable[Cluster]:
    """Every entry host's port clusters, and one per subset of the rule the proxy uses."""
    index, labels = resources.destination_rule_index, node.label_dict()
    for host, service in entry_services(resources).items():
        rule = destination_rule(index, host, service.namespace, node.namespace, labels)
        # Envoy builds no STRICT_DNS/LOGICAL_DNS cluster without endpoints (cluster_builder
        # buildCluster): routes to it find no cluster (NC) rather than no healthy host (UH).
        dns = service.resolution in DNS_RESOLUTIONS
        for port in service.ports:
            if port.protocol.upper() == "UDP":
                continue  # Istio builds no clusters for UDP ports
            instances = _port_instances(resources, service, port.number)
            if instances or not dns:
                endpoints = _resolve(resources.dns, instances, service.resolution)
                yield make_cluster(host, port.number, "", endpoints, rule)
            for subset in unique_subsets(rule):
                selected = [i for i in instances if labels_match(subset.labels, dict(i.labels))]
                if not selected and dns:
                    continue
                endpoints = _resolve(resources.dns, selected, service.resolution)
                yield make_cluster(host, port.number, subset.name, endpoints, rule)


def _port_instances(
    resources: MeshResources, service: EntryService, number: int
) -> list[_Instance]:
    instances: list[_Instance] = []
    for entry in service.entries:
        port = next((p for p in entry.spec.ports if p is not None and p.number == number), None)
        if port is not None:
            instances += _entry_instances(resources, entry, service.host, port)
    if service.resolution == "DNS_ROUND_ROBIN":
        # LOGICAL_DNS takes a single endpoint; mergeServicesInstancesByNamespaceHost keeps
        # the first one per port.
        return instances[:1]
    return instances


def _entry_instances(
    resources: MeshResources,
    entry: models.ServiceEntry,
    host: str,
    port: models.ServiceEntryPort,
) -> list[_Instance]:
    """convertServiceEntryToInstances plus the workloads a ``workloadSelector`` picks."""
    spec = entry.spec
    dns = spec.resolution in DNS_RESOLUTIONS
    owner = f"{entry.namespace}/{entry.name}"
    if spec.workload_selector is None:
        if not spec.endpoints and dns:
            # No endpoints: the host itself is looked up, on the target port.
            return [_Instance(host, port.target_port or port.number, (), True, owner)]
        return [
            instance
            for i, endpoint in enumerate(spec.endpoints)
            if endpoint is not None
            for instance in _workload_instance(
                endpoint.address,
                endpoint.ports,
                endpoint.labels,
                port,
                ready=True,
                workload=f"{owner}-{i}",
                allow_names=dns,
            )
        ]
    selector = spec.workload_selector.labels
    instances: list[_Instance] = []
    # Istio orders selected workloads by kind ("Kubernetes" pods before WorkloadEntries),
    # then namespace and name.
    for pod in sorted(resources.pods, key=lambda p: p.name):
        pod_ip = str((pod.status or {}).get("podIP") or "")
        if pod.namespace != entry.namespace or not pod_ip:
            continue
        if not labels_match(selector, pod.metadata.labels):
            continue
        instances += _workload_instance(
            pod_ip,
            _pod_port_map(pod),
            pod.metadata.labels,
            port,
            ready=pod_ready(pod.status),
            workload=f"{pod.namespace}/{pod.name}",
            allow_names=False,
        )
    for workload in sorted(resources.workload_entries, key=lambda w: w.name):
        if workload.namespace != entry.namespace:
            continue
        # ConvertWorkloadEntry: metadata labels win over spec labels.
        labels = {**workload.spec.labels, **workload.metadata.labels}
        if not labels_match(selector, labels):
            continue
        instances += _workload_instance(
            workload.spec.address,
            workload.spec.ports,
            labels,
            port,
            ready=workload_entry_healthy(workload),
            workload=f"{workload.namespace}/{workload.name}",
            allow_names=dns,
        )
    return instances


def _workload_instance(
    address: str,
    port_map: Mapping[str, int],
    labels: Mapping[str, str],
    port: models.ServiceEntryPort,
    *,
    ready: bool,
    workload: str,
    allow_names: bool,
) -> list[_Instance]:
    """convertWorkloadInstanceToServiceInstance for one entry port.

    The endpoint port is the workload's own port of that name, else the entry port's
    targetPort, else its number. Host names serve DNS entries only (DNSServiceEntryOnly);
    Unix sockets and address-less entries (reached through a network gateway) have no
    TCP address here.
    """
    if not address or address.startswith(UNIX_ADDRESS_PREFIX):
        return []
    if not allow_names and not is_ip(address):
        return []
    target = port_map.get(port.name, 0) or port.target_port or port.number
    return [_Instance(address, target, tuple(sorted(labels.items())), ready, workload)]


def _pod_port_map(pod: models.Pod) -> dict[str, int]:
    """getPortMap: named TCP container ports, the first of a name winning."""
    found: dict[str, int] = {}
    for container in pod.spec.containers:
        for port in container.ports:
            if port.name and port.protocol == "TCP":
                found.setdefault(port.name, port.container_port)
    return found


def workload_entry_healthy(workload: models.WorkloadEntry) -> bool:
    """isHealthy: with health checks enabled, only a Healthy condition makes it ready."""
    if workload.metadata.annotations.get(HEALTH_CHECKS_ANNOTATION, "") not in _GO_TRUE:
        return True
    conditions = (workload.status or {}).get("conditions") or []
    return any(
        isinstance(c, dict) and c.get("type") == "Healthy" and c.get("status") == "True"
        for c in conditions
    )


def _resolve(
    dns: Mapping[str, tuple[str, ...]], instances: Sequence[_Instance], resolution: str
) -> tuple[Endpoint, ...]:
    """Instances → endpoints, host names replaced by the addresses looked up for them.

    STRICT_DNS (``DNS``) keeps every address, in a stable order so that a rotating answer
    does not churn snapshots; LOGICAL_DNS (``DNS_ROUND_ROBIN``) connects to the first
    address of the latest answer.
    """
    endpoints: list[Endpoint] = []
    for instance in instances:
        if is_ip(instance.address):
            addresses: Sequence[str] = (instance.address,)
        elif resolution == "DNS_ROUND_ROBIN":
            addresses = dns.get(instance.address, ())[:1]
        elif resolution == "DNS":
            addresses = sorted(dns.get(instance.address, ()), key=ipaddress.ip_address)
        else:
            continue
        endpoints += [
            Endpoint(
                address=address,
                port=instance.port,
                labels=instance.labels,
                ready=instance.ready,
                workload=instance.workload,
            )
            for address in addresses
        ]
    return tuple(endpoints)
