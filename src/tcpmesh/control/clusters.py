"""Clusters of Kubernetes Services: one per Service port and per DestinationRule subset.

References (istio/istio): pilot/pkg/networking/core/cluster_builder.go (subset clusters).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial

from tcpmesh.api import (
    is_ip,
    models,
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
from tcpmesh.control.serviceentries import workload_entry_healthy
from tcpmesh.control.snapshot import (
    Cluster,
    Endpoint,
)


def service_clusters(resources: MeshResources, node: ProxyNode) -> Iterable[Cluster]:
    """Every Service port's cluster, and one per subset of the rule the proxy uses.

    A Service's clusters are one step of the build cache: they read the Service, the rule,
    its Endpoints, the pods those name and the WorkloadEntries of its namespace, nothing
    else (the proxy only through the rule it uses)."""
    pods = {(p.namespace, p.name): p for p in resources.pods}
    endpoints = {(e.namespace, e.name): e for e in resources.endpoints}
    entries = _workload_entries_by_namespace(resources)
    index, labels = resources.destination_rule_index, node.label_dict()
    for service in resources.services:
        fqdn = service_fqdn(service.name, service.namespace)
        rule = destination_rule(index, fqdn, service.namespace, node.namespace, labels)
        service_endpoints = endpoints.get((service.namespace, service.name))
        named = _named_pods(service_endpoints, pods)
        local = entries.get(service.namespace, ())
        yield from resources.cache.get(
            "service_clusters",
            (len(named), len(local)),
            (service, rule, service_endpoints, *named, *local),
            partial(_clusters_of, resources, service, rule, service_endpoints, pods),
        )


def _clusters_of(
    resources: MeshResources,
    service: models.Service,
    rule: models.DestinationRule | None,
    service_endpoints: models.Endpoints | None,
    pods: dict[tuple[str, str], models.Pod],
) -> tuple[Cluster, ...]:
    fqdn = service_fqdn(service.name, service.namespace)
    clusters: list[Cluster] = []
    for port in service.spec.ports:
        members = tuple(_endpoints_for_port(service_endpoints, port, pods))
        members += tuple(_selected_workload_entries(resources, service, port))
        clusters.append(make_cluster(fqdn, port.port, "", members, rule))
        for subset in unique_subsets(rule):
            selected = tuple(e for e in members if labels_match(subset.labels, e.label_dict()))
            clusters.append(make_cluster(fqdn, port.port, subset.name, selected, rule))
    return tuple(clusters)


def _named_pods(
    service_endpoints: models.Endpoints | None, pods: dict[tuple[str, str], models.Pod]
) -> tuple[models.Pod | None, ...]:
    """The pods the Endpoints' addresses refer to (None: not stored), in address order."""
    if service_endpoints is None:
        return ()
    found: list[models.Pod | None] = []
    for subset in service_endpoints.subsets:
        for address in (*subset.addresses, *subset.not_ready_addresses):
            ref = address.target_ref
            if ref is not None:
                found.append(pods.get((ref.namespace or service_endpoints.namespace, ref.name)))
    return tuple(found)


def _workload_entries_by_namespace(
    resources: MeshResources,
) -> dict[str, tuple[models.WorkloadEntry, ...]]:
    grouped: dict[str, list[models.WorkloadEntry]] = {}
    for entry in resources.workload_entries:
        grouped.setdefault(entry.namespace, []).append(entry)
    return {namespace: tuple(group) for namespace, group in grouped.items()}


def _endpoints_for_port(
    service_endpoints: models.Endpoints | None,
    port: models.ServicePort,
    pods: dict[tuple[str, str], models.Pod],
) -> Iterable[Endpoint]:
    if service_endpoints is None:
        return
    for subset in service_endpoints.subsets:
        target = _endpoint_port(subset.ports, port)
        if target is None:
            continue
        for address, ready in [(a, True) for a in subset.addresses] + [
            (a, False) for a in subset.not_ready_addresses
        ]:
            labels: dict[str, str] = {}
            workload = ""
            ref = address.target_ref
            if ref is not None:
                namespace = ref.namespace or service_endpoints.namespace
                pod = pods.get((namespace, ref.name))
                labels = pod.metadata.labels if pod is not None else {}
                workload = f"{namespace}/{ref.name}"
            yield Endpoint(
                address=address.ip,
                port=target,
                labels=tuple(sorted(labels.items())),
                ready=ready,
                workload=workload,
            )


def _selected_workload_entries(
    resources: MeshResources, service: models.Service, port: models.ServicePort
) -> Iterable[Endpoint]:
    """The WorkloadEntries a Kubernetes Service selects, as Istio's kube registry adds them
    (serviceInstanceFromWorkloadInstance): same namespace, labels matching the selector
    (an unset selector selects nothing; an entry without labels is never selected).

    The endpoint port: a numeric targetPort, unless the entry names a port like the
    Service port; a named targetPort must be among the entry's ports, or it is skipped.
    Auto-registered entries (``tcpmesh workload join``) arrive here like any other.
    """
    selector = service.spec.selector
    if not selector or port.protocol == "UDP":
        return
    for workload in sorted(resources.workload_entries, key=lambda w: w.name):
        labels = {**workload.spec.labels, **workload.metadata.labels}
        if workload.namespace != service.namespace or not labels:
            continue
        if not labels_match(selector, labels) or not is_ip(workload.spec.address):
            continue
        target = _workload_entry_port(workload, port)
        if target is None:
            continue
        yield Endpoint(
            address=workload.spec.address,
            port=target,
            labels=tuple(sorted(labels.items())),
            ready=workload_entry_healthy(workload),
            workload=f"{workload.namespace}/{workload.name}",
        )


def _workload_entry_port(workload: models.WorkloadEntry, port: models.ServicePort) -> int | None:
    target = port.target_port
    if isinstance(target, str) and not target.isdigit():
        return workload.spec.ports.get(target) or None
    number = int(target) if target else port.port
    return workload.spec.ports.get(port.name or "") or number


def _endpoint_port(ports: Sequence[models.EndpointPort], port: models.ServicePort) -> int | None:
    if len(ports) == 1 and (ports[0].name or None) == (port.name or None):
        return ports[0].port
    return next((p.port for p in ports if p.name and p.name == port.name), None)
