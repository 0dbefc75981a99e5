"""The kinds tcpmesh knows: API group, versions, REST plural and kubectl short names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tcpmesh.api import gatewayapi, models, rollouts
from tcpmesh.store import CLUSTER_SCOPED_KINDS, group_of, kind_key

ISTIO_NETWORKING = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    group: str  # "" for the core group
    versions: tuple[str, ...]  # the first is the preferred (storage) version
    plural: str
    short_names: tuple[str, ...]
    model: type[models.Resource]
    namespaced: bool = True
    # Objects the runtime writes (pods, endpoints) cannot be applied by users.
    user_writable: bool = True

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> str:
        """The kind's identity in the store, watches and tables: (group, kind) as one string."""
        return kind_key(self.group, self.kind)

    @property
    def qualified_plural(self) -> str:
        """``gateways.networking.istio.io``: the name kubectl and its messages use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def accepts_api_version(self, api_version: str) -> bool:
        return any(self.api_version(v) == api_version for v in self.versions)

    def api_path(self, namespace: str | None, name: str | None = None) -> str:
        """The Kubernetes-style REST path of a collection or an object."""
        prefix = f"/apis/{self.group}/{self.versions[0]}" if self.group else "/api/v1"
        path = prefix
        if self.namespaced and namespace is not None:
            path += f"/namespaces/{namespace}"
        path += f"/{self.plural}"
        if name is not None:
            path += f"/{name}"
        return path


KINDS: tuple[KindInfo, ...] = (
    KindInfo("Deployment", "apps", ("v1",), "deployments", ("deploy",), models.Deployment),
    KindInfo("Service", "", ("v1",), "services", ("svc",), models.Service),
    KindInfo("Pod", "", ("v1",), "pods", ("po",), models.Pod, user_writable=False),
    KindInfo("Endpoints", "", ("v1",), "endpoints", ("ep",), models.Endpoints, user_writable=False),
    KindInfo("Secret", "", ("v1",), "secrets", (), models.Secret),
    KindInfo("ConfigMap", "", ("v1",), "configmaps", ("cm",), models.ConfigMap),
    KindInfo("Namespace", "", ("v1",), "namespaces", ("ns",), models.Namespace, namespaced=False),
    KindInfo("Event", "", ("v1",), "events", ("ev",), models.Event),
    KindInfo("Gateway", ISTIO_NETWORKING, ISTIO_VERSIONS, "gateways", ("gw",), models.Gateway),
    KindInfo(
        "VirtualService",
        ISTIO_NETWORKING,
        ISTIO_VERSIONS,
        "virtualservices",
        ("vs",),
        models.VirtualService,
    ),
    KindInfo(
        "DestinationRule",
        ISTIO_NETWORKING,
        ISTIO_VERSIONS,
        "destinationrules",
        ("dr",),
        models.DestinationRule,
    ),
    KindInfo(
        "ServiceEntry",
        ISTIO_NETWORKING,
        ISTIO_VERSIONS,
        "serviceentries",
        ("se",),
        models.ServiceEntry,
    ),
    KindInfo(
        "WorkloadEntry",
        ISTIO_NETWORKING,
        ISTIO_VERSIONS,
        "workloadentries",
        ("we",),
        models.WorkloadEntry,
    ),
    # Gateway API: after Istio's kinds, so an unqualified "gateways" stays Istio's.
    KindInfo(
        "GatewayClass",
        gatewayapi.GROUP,
        gatewayapi.GATEWAY_CLASS_VERSIONS,
        "gatewayclasses",
        ("gc",),
        gatewayapi.GatewayClass,
        namespaced=False,
    ),
    KindInfo(
        "Gateway",
        gatewayapi.GROUP,
        gatewayapi.GATEWAY_VERSIONS,
        "gateways",
        ("gtw",),
        gatewayapi.KubeGateway,
    ),
    KindInfo(
        "TCPRoute",
        gatewayapi.GROUP,
        gatewayapi.ROUTE_VERSIONS,
        "tcproutes",
        (),
        gatewayapi.KubeTCPRoute,
    ),
    KindInfo(
        "TLSRoute",
        gatewayapi.GROUP,
        gatewayapi.ROUTE_VERSIONS,
        "tlsroutes",
        (),
        gatewayapi.KubeTLSRoute,
    ),
    KindInfo(
        "ReferenceGrant",
        gatewayapi.GROUP,
        gatewayapi.REFERENCE_GRANT_VERSIONS,
        "referencegrants",
        ("refgrant",),
        gatewayapi.ReferenceGrant,
    ),
    KindInfo(
        "WorkloadGroup",
        ISTIO_NETWORKING,
        ISTIO_VERSIONS,
        "workloadgroups",
        ("wg",),
        models.WorkloadGroup,
    ),
    KindInfo(
        "Rollout",
        rollouts.GROUP,
        (rollouts.VERSION,),
        "rollouts",
        ("ro",),
        rollouts.Rollout,
    ),
)


def _index(infos: tuple[KindInfo, ...]) -> dict[str, KindInfo]:
    """The registry by kind key; two entries with one key, or one short name, are a bug."""
    index = {info.key: info for info in infos}
    shorts = [s for info in infos for s in info.short_names]
    if len(index) != len(infos) or len(set(shorts)) != len(shorts):
        raise AssertionError("api.kinds: two kinds share a kind key or a short name")
    if {info.key for info in infos if not info.namespaced} != CLUSTER_SCOPED_KINDS:
        raise AssertionError("api.kinds: the cluster-scoped kinds differ from the store's")
    return index


_BY_KEY = _index(KINDS)


class UnknownKind(LookupError):
    pass


def by_key(key: str) -> KindInfo:
    """The entry of a kind key (``VirtualService``, ``Gateway.gateway.networking.k8s.io``)."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise UnknownKind(key) from None


def by_group_kind(group: str, kind: str) -> KindInfo:
    return by_key(kind_key(group, kind))


def for_object(obj: Mapping[str, Any]) -> KindInfo:
    """The registry entry of an object dict, from its ``apiVersion`` group and ``kind``."""
    return by_group_kind(group_of(obj.get("apiVersion")), str(obj.get("kind")))


def resolve(name: str) -> KindInfo:
    """Resolve what a user types (kind, plural, singular or short name, any case).

    ``virtualservices.networking.istio.io`` style qualified names (and kind keys such as
    ``Gateway.gateway.networking.k8s.io``) are accepted too. An unqualified name two groups
    share (``gateways``) is the first kind in :data:`KINDS` that has it: Istio's, as before
    the Gateway API was served.
    """
    wanted = name.lower()
    group = None
    if "." in wanted:
        wanted, group = wanted.split(".", 1)
    for info in KINDS:
        if group is not None and info.group != group:
            continue
        if wanted in (info.kind.lower(), info.plural, info.singular, *info.short_names):
            return info
    raise UnknownKind(name)


def by_plural(group: str, plural: str) -> KindInfo:
    for info in KINDS:
        if info.group == group and info.plural == plural:
            return info
    raise UnknownKind(f"{plural}.{group}" if group else plural)
