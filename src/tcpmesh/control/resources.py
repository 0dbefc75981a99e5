"""The inputs of the snapshot builder: typed resources and the proxy asking for config."""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tcpmesh.api import from_dict, gatewayapi, is_ip, models
from tcpmesh.control.buildcache import BuildCache

if TYPE_CHECKING:
    from tcpmesh.control.policy import DestinationRuleIndex

DOMAIN_SUFFIX = "svc.cluster.local"
# The labels that make a pod an ingress gateway (Istio's default gateway selector); the
# mesh labels its default gateway so, and describe and status look gateways up by them.
INGRESS_GATEWAY_SELECTOR: Mapping[str, str] = {"istio": "ingressgateway"}
# The node proxy (kube-proxy's place, with Istio's sidecar-outbound routing): the pod that
# serves cluster IPs, node ports and load-balancer addresses for the whole node.
NODE_PROXY_NAMESPACE = "kube-system"
NODE_PROXY_NAME = "tcpmesh-node-proxy"
NODE_PROXY_LABELS: Mapping[str, str] = {
    "app": NODE_PROXY_NAME,
    "tcpmesh.io/component": "node-proxy",
}
# The built-in cloud load balancer that enforces bandwidth caps (control.loadbalancer).
LOAD_BALANCER_NAMESPACE = "kube-system"
LOAD_BALANCER_NAME = "tcpmesh-slb"
LOAD_BALANCER_LABELS: Mapping[str, str] = {
    "app": LOAD_BALANCER_NAME,
    "tcpmesh.io/component": "load-balancer",
}


class ProxyKind(StrEnum):
    """What a proxy serves, so the builder knows which table to make (Istio's NodeType).

    ``ROUTER``: a gateway, its Gateway servers' ports. ``NODE``: the node proxy, every
    Service's cluster IP, node ports and load-balancer addresses, routed as Istio routes a
    sidecar's outbound traffic (``control.outbound``). ``LOAD_BALANCER``: the cloud load
    balancer, the capped LoadBalancer ports (``control.loadbalancer``)."""

    ROUTER = "router"
    NODE = "node"
    LOAD_BALANCER = "load-balancer"


@dataclass(frozen=True)
class ProxyNode:
    """The gateway proxy a snapshot is built for (Istio's "proxy" / xDS node)."""

    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]
    address: str

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def kind(self) -> ProxyKind:
        """The node proxy and the load balancer are the pods with their labels in their
        namespace; any other is a router."""
        labels = self.label_dict()
        if self.namespace == NODE_PROXY_NAMESPACE and labels_match(NODE_PROXY_LABELS, labels):
            return ProxyKind.NODE
        if self.namespace == LOAD_BALANCER_NAMESPACE and labels_match(LOAD_BALANCER_LABELS, labels):
            return ProxyKind.LOAD_BALANCER
        return ProxyKind.ROUTER

    @classmethod
    def from_pod(cls, pod: models.Pod, address: str | None = None) -> ProxyNode:
        status = pod.status or {}
        return cls(
            namespace=pod.namespace,
            name=pod.name,
            labels=tuple(sorted(pod.metadata.labels.items())),
            address=address or str(status.get("podIP") or "127.0.0.1"),
        )


@dataclass(frozen=True)
class MeshResources:
    services: tuple[models.Service, ...] = ()
    endpoints: tuple[models.Endpoints, ...] = ()
    pods: tuple[models.Pod, ...] = ()
    gateways: tuple[models.Gateway, ...] = ()
    virtual_services: tuple[models.VirtualService, ...] = ()
    destination_rules: tuple[models.DestinationRule, ...] = ()
    service_entries: tuple[models.ServiceEntry, ...] = ()
    workload_entries: tuple[models.WorkloadEntry, ...] = ()
    # Certificates of gateways that terminate TLS (credentialName).
    secrets: tuple[models.Secret, ...] = ()
    # The Gateway API (control.gatewayapi turns them into gateways and virtual services).
    kube_gateways: tuple[gatewayapi.KubeGateway, ...] = ()
    kube_routes: tuple[gatewayapi.KubeTCPRoute | gatewayapi.KubeTLSRoute, ...] = ()
    reference_grants: tuple[gatewayapi.ReferenceGrant, ...] = ()
    gateway_classes: tuple[gatewayapi.GatewayClass, ...] = ()
    namespaces: tuple[models.Namespace, ...] = ()
    # Host name → IPv4 addresses, looked up by the control plane for DNS ServiceEntries so
    # that building stays pure; a name missing here has no endpoints yet.
    dns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The builder's step results, kept across builds by the control plane (a fresh one:
    # every step computed, the full rebuild). Never part of the resources' equality.
    cache: BuildCache = field(default_factory=BuildCache, compare=False, repr=False)

    @functools.cached_property
    def memo(self) -> dict[Hashable, Any]:
        """Lookups worked out once per set of resources (they never change): the builder's
        indexes by gateway, port and host, so that a build costs O(objects), not the
        O(objects²) of scanning every VirtualService for every server and Service."""
        return {}

    def stamps(self, *kinds: str) -> tuple[int, ...]:
        """The build cache's stamps of the named fields (``services``, ``pods``, ...): a
        step whose key holds them is recomputed only when one of those kinds changed."""
        found: list[int] = []
        for kind in kinds:
            key = ("stamp", kind)
            number: int | None = self.memo.get(key)
            if number is None:
                number = self.memo[key] = self.cache.stamp(kind, getattr(self, kind))
            found.append(number)
        return tuple(found)

    @functools.cached_property
    def services_in_order(self) -> tuple[models.Service, ...]:
        """The Services in creation order (the node proxy's listener order); sorted again
        only when a Service changed (every proxy's build of a generation reads it)."""
        return self.cache.get(
            "services_in_order",
            self.stamps("services"),
            (),
            lambda: tuple(sorted(self.services, key=creation_order_key)),
        )

    @functools.cached_property
    def virtual_services_in_order(self) -> tuple[models.VirtualService, ...]:
        """The VirtualServices in Istio's creation order (configCompareByCreationTime),
        sorted once per generation for all proxies."""
        return self.cache.get(
            "virtual_services_in_order",
            self.stamps("virtual_services"),
            (),
            lambda: tuple(sorted(self.virtual_services, key=creation_order_key)),
        )

    @functools.cached_property
    def services_by_fqdn(self) -> Mapping[str, models.Service]:
        """Each Service by its FQDN (the first stored, should two share one); indexed
        again only when a Service changed."""
        return self.cache.get("services_by_fqdn", self.stamps("services"), (), self._index_services)

    def _index_services(self) -> Mapping[str, models.Service]:
        index: dict[str, models.Service] = {}
        for service in self.services:
            index.setdefault(service_fqdn(service.name, service.namespace), service)
        return index

    @functools.cached_property
    def destination_rule_index(self) -> DestinationRuleIndex:
        """The DestinationRules indexed once (setDestinationRules) for every lookup of a build."""
        from tcpmesh.control.policy import DestinationRuleIndex  # policy imports this module

        # Built again only when a DestinationRule changed (it reads nothing else).
        return self.cache.get(
            "destination_rule_index",
            self.stamps("destination_rules"),
            (),
            lambda: DestinationRuleIndex(self.destination_rules),
        )

    @classmethod
    def from_objects(
        cls,
        objects: Iterable[Mapping[str, Any]],
        dns: Mapping[str, tuple[str, ...]] | None = None,
    ) -> MeshResources:
        """Type stored dicts and sort them into buckets (see :meth:`from_resources`)."""
        typed = (from_dict(dict(o)) for o in objects if o.get("kind") != "Deployment")
        return cls.from_resources(typed, dns)

    @classmethod
    def from_resources(
        cls,
        resources: Iterable[models.Resource],
        dns: Mapping[str, tuple[str, ...]] | None = None,
        cache: BuildCache | None = None,
    ) -> MeshResources:
        """Sort typed resources into buckets; kinds the builder does not use are skipped.

        ``cache``: the step results of earlier builds to reuse (``control.buildcache``)."""
        buckets: dict[type[models.Resource], list[Any]] = {
            models.Service: [],
            models.Endpoints: [],
            models.Pod: [],
            models.Gateway: [],
            models.VirtualService: [],
            models.DestinationRule: [],
            models.ServiceEntry: [],
            models.WorkloadEntry: [],
            models.Secret: [],
            gatewayapi.KubeGateway: [],
            gatewayapi.KubeTCPRoute: [],
            gatewayapi.KubeTLSRoute: [],
            gatewayapi.ReferenceGrant: [],
            gatewayapi.GatewayClass: [],
            models.Namespace: [],
        }
        for resource in resources:
            bucket = buckets.get(type(resource))
            if bucket is not None:
                bucket.append(resource)
        return cls(
            services=tuple(buckets[models.Service]),
            endpoints=tuple(buckets[models.Endpoints]),
            pods=tuple(buckets[models.Pod]),
            gateways=tuple(buckets[models.Gateway]),
            virtual_services=tuple(buckets[models.VirtualService]),
            destination_rules=tuple(buckets[models.DestinationRule]),
            service_entries=tuple(buckets[models.ServiceEntry]),
            workload_entries=tuple(buckets[models.WorkloadEntry]),
            secrets=tuple(buckets[models.Secret]),
            kube_gateways=tuple(buckets[gatewayapi.KubeGateway]),
            kube_routes=(*buckets[gatewayapi.KubeTCPRoute], *buckets[gatewayapi.KubeTLSRoute]),
            reference_grants=tuple(buckets[gatewayapi.ReferenceGrant]),
            gateway_classes=tuple(buckets[gatewayapi.GatewayClass]),
            namespaces=tuple(buckets[models.Namespace]),
            dns=dict(dns or {}),
            cache=cache if cache is not None else BuildCache(),
        )


def creation_order_key(resource: models.Resource) -> tuple[str, str, str]:
    """Istio's configCompareByCreationTime: creation time, then name, then namespace."""
    return (resource.metadata.creation_timestamp or "", resource.name, resource.namespace)


def service_fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.{DOMAIN_SUFFIX}"


def resolve_host(host: str, namespace: str) -> str:
    """ResolveShortnameToFQDN: a name without a dot lives in the rule's namespace."""
    if host == "*" or "." in host or is_ip(host):
        return host
    return service_fqdn(host, namespace)


def resolve_gateway_name(name: str, namespace: str) -> str:
    """resolveGatewayName: ``name`` → ``ns/name``; legacy ``name.ns.svc...`` → ``ns/name``."""
    if name == "mesh" or "/" in name:
        return name
    if "." in name:
        short, ns = name.split(".")[:2]
        return f"{ns}/{short}"
    return f"{namespace}/{name}"


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """An equality-based label selector (Istio's ``labels.Instance.SubsetOf``)."""
    return all(labels.get(k) == v for k, v in selector.items())


def service_entries_visible_to(
    entries: Sequence[models.ServiceEntry], namespace: str
) -> tuple[models.ServiceEntry, ...]:
    """The entries a proxy in ``namespace`` sees, in the order Istio prefers them.

    servicesExportedToNamespace: entries private to or exported to the namespace come
    before public ones (no ``exportTo`` means public), each group by creation time;
    ``~`` hides an entry from every proxy but its own workloads, so from every gateway.
    """
    local: list[models.ServiceEntry] = []
    public: list[models.ServiceEntry] = []
    for entry in sorted(entries, key=creation_order_key):
        export_to = entry.spec.export_to
        if not export_to or "*" in export_to:
            public.append(entry)
        elif namespace in export_to or ("." in export_to and entry.namespace == namespace):
            local.append(entry)
    return (*local, *public)
