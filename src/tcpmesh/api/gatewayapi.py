"""The Kubernetes Gateway API kinds tcpmesh serves (gateway.networking.k8s.io), and their checks.

GatewayClass (cluster-scoped; v1, the storage version, and v1beta1), Gateway (v1), TCPRoute
and TLSRoute (v1, the storage version, and v1alpha2), ReferenceGrant (v1, the storage
version, and v1beta1). Classes are named Kube* where Istio's models already use the name.

The models carry the fields of kubernetes-sigs/gateway-api ``apis/v1``; the checks are the
ones its CRDs make (OpenAPI bounds and patterns, the CEL rules with their messages), so what
an API server with those CRDs refuses is refused here. Defaults the CRDs would write (a
parentRef's group and kind, a backendRef's kind and weight) are read through the
``*_or_default`` helpers instead of being written into the stored object.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import Field

from tcpmesh.api.findings import Finding, error
from tcpmesh.api.models import LabelSelector, Model, Resource

GROUP = "gateway.networking.k8s.io"
GATEWAY_CLASS_VERSIONS = ("v1", "v1beta1")  # v1 is the storage version
GATEWAY_VERSIONS = ("v1",)
ROUTE_VERSIONS = ("v1", "v1alpha2")  # v1 is the storage version
REFERENCE_GRANT_VERSIONS = ("v1", "v1beta1")
MAX_WEIGHT = 1_000_000

_DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_HOSTNAME = re.compile(rf"^(\*\.)?{_DNS1123_SUBDOMAIN}$")
_SECTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_GROUP = re.compile(rf"^$|^{_DNS1123_SUBDOMAIN}$")
_CONTROLLER_NAME = re.compile(rf"^{_DNS1123_SUBDOMAIN}\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROTOCOL = re.compile(
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|"
    rf"{_DNS1123_SUBDOMAIN}\/[A-Za-z0-9]+$"
)


# ---------------------------------------------------------------- references


class ParentReference(Model):
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: int | None = None

    @property
    def group_or_default(self) -> str:
        return GROUP if self.group is None else self.group

    @property
    def kind_or_default(self) -> str:
        return self.kind or "Gateway"


class BackendRef(Model):
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None
    filters: Any = None

    @property
    def group_or_default(self) -> str:
        return self.group or ""

    @property
    def kind_or_default(self) -> str:
        return self.kind or "Service"

    @property
    def weight_or_default(self) -> int:
        return 1 if self.weight is None else self.weight


class SecretObjectReference(Model):
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None


class RouteGroupKind(Model):
    group: str | None = None
    kind: str

    @property
    def group_or_default(self) -> str:
        return GROUP if self.group is None else self.group


# ---------------------------------------------------------------- GatewayClass


class ParametersReference(Model):
    group: str
    kind: str
    name: str
    namespace: str | None = None


class GatewayClassSpec(Model):
    controller_name: str
    parameters_ref: ParametersReference | None = None
    description: str | None = None


class GatewayClass(Resource):
    """Cluster-scoped: which controller programs the Gateways naming this class."""

    spec: GatewayClassSpec


# ---------------------------------------------------------------- Gateway


class RouteNamespaces(Model):
    from_: str | None = Field(default=None, alias="from")
    selector: LabelSelector | None = None

    @property
    def from_or_default(self) -> str:
        return self.from_ or "Same"


class AllowedRoutes(Model):
    namespaces: RouteNamespaces | None = None
    kinds: list[RouteGroupKind] = Field(default_factory=list)


class ListenerTLSConfig(Model):
    mode: str | None = None
    certificate_refs: list[SecretObjectReference] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)
    frontend_validation: Any = None

    @property
    def mode_or_default(self) -> str:
        return self.mode or "Terminate"


class Listener(Model):
    name: str
    hostname: str | None = None
    port: int
    protocol: str
    tls: ListenerTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None

    @property
    def route_namespaces(self) -> RouteNamespaces:
        allowed = self.allowed_routes
        return (allowed.namespaces if allowed else None) or RouteNamespaces()


class GatewaySpecAddress(Model):
    type: str | None = None
    value: str = ""


class KubeGatewaySpec(Model):
    gateway_class_name: str
    listeners: list[Listener] = Field(default_factory=list)
    addresses: list[GatewaySpecAddress] = Field(default_factory=list)
    infrastructure: Any = None
    allowed_listeners: Any = None
    tls: Any = None
    default_scope: Any = None
    backend_tls: Any = None


class KubeGateway(Resource):
    """gateway.networking.k8s.io Gateway (Istio's networking.istio.io Gateway is models.Gateway)."""

    spec: KubeGatewaySpec


# ---------------------------------------------------------------- routes


class RouteRule(Model):
    name: str | None = None
    backend_refs: list[BackendRef] = Field(default_factory=list)


class TCPRouteSpec(Model):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    use_default_gateways: Any = None
    rules: list[RouteRule] = Field(default_factory=list)


class TLSRouteSpec(TCPRouteSpec):
    hostnames: list[str] = Field(default_factory=list)


class KubeTCPRoute(Resource):
    spec: TCPRouteSpec


class KubeTLSRoute(Resource):
    spec: TLSRouteSpec


Route = KubeTCPRoute | KubeTLSRoute


# ---------------------------------------------------------------- ReferenceGrant


class ReferenceGrantFrom(Model):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(Model):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Model):
    from_: list[ReferenceGrantFrom] = Field(alias="from")
    to: list[ReferenceGrantTo]


class ReferenceGrant(Resource):
    spec: ReferenceGrantSpec


# ---------------------------------------------------------------- checks


def problems(resource: Resource) -> Iterator[Finding]:
    """What the Gateway API CRDs refuse in ``resource`` (nothing for other kinds)."""
    if isinstance(resource, GatewayClass):
        yield from _gateway_class(resource.spec)
    elif isinstance(resource, KubeGateway):
        yield from _gateway(resource.spec)
    elif isinstance(resource, KubeTLSRoute):
        yield from _route(resource.spec, resource.api_version, "spec")
        yield from _tls_hostnames(resource.spec.hostnames, resource.api_version)
    elif isinstance(resource, KubeTCPRoute):
        yield from _route(resource.spec, resource.api_version, "spec")
    elif isinstance(resource, ReferenceGrant):
        yield from _reference_grant(resource.spec)


def _invalid(path: str, value: object, why: str) -> Finding:
    shown = f'"{value}"' if isinstance(value, str) else value
    return error(path, f"Invalid value: {shown}: {why}")


def _items(path: str, items: Sequence[object], least: int, most: int) -> Iterator[Finding]:
    if len(items) < least:
        yield error(path, f"Required value: must have at least {least} items")
    elif len(items) > most:
        yield error(path, f"Too many: {len(items)}: must have at most {most} items")


def _pattern(
    path: str, value: str | None, pattern: re.Pattern[str], most: int
) -> Iterator[Finding]:
    if value is None:
        return
    if not value or len(value) > most:
        yield _invalid(path, value, f"must be 1 to {most} characters long")
    elif not pattern.match(value):
        yield _invalid(path, value, f"should match '{pattern.pattern}'")


def _port(path: str, port: int | None) -> Iterator[Finding]:
    if port is not None and not 1 <= port <= 65535:
        yield _invalid(path, port, "must be between 1 and 65535, inclusive")


def _gateway_class(spec: GatewayClassSpec) -> Iterator[Finding]:
    yield from _pattern("spec.controllerName", spec.controller_name, _CONTROLLER_NAME, 253)
    if spec.description is not None and len(spec.description) > 64:
        yield error(
            "spec.description",
            f"Too long: may not be more than 64 bytes (got {len(spec.description)})",
        )
    ref = spec.parameters_ref
    if ref is not None:
        where = "spec.parametersRef"
        yield from _pattern(f"{where}.group", ref.group or None, _GROUP, 253)
        yield from _pattern(f"{where}.kind", ref.kind, _KIND, 63)
        if not ref.name or len(ref.name) > 253:
            yield _invalid(f"{where}.name", ref.name, "must be 1 to 253 characters long")
        yield from _pattern(f"{where}.namespace", ref.namespace, _NAMESPACE, 63)


PENDING_CLASS_STATUS = {
    "conditions": [
        {
            "type": "Accepted",
            "status": "Unknown",
            "reason": "Pending",
            "message": "Waiting for controller",
            "lastTransitionTime": "1970-01-01T00:00:00Z",
        }
    ]
}


def with_default_status(obj: dict[str, Any]) -> dict[str, Any]:
    """A new GatewayClass as the CRD defaults it: Accepted Unknown until a controller says."""
    if obj.get("status"):
        return obj
    return {**obj, "status": copy.deepcopy(PENDING_CLASS_STATUS)}


def changed_immutably(old: Resource, new: Resource) -> Iterator[Finding]:
    """The CRDs' ``self == oldSelf`` rules: a GatewayClass's controllerName never changes."""
    if (
        isinstance(old, GatewayClass)
        and isinstance(new, GatewayClass)
        and old.spec.controller_name != new.spec.controller_name
    ):
        yield _invalid("spec.controllerName", new.spec.controller_name, "Value is immutable")


def _gateway(spec: KubeGatewaySpec) -> Iterator[Finding]:
    if not spec.gateway_class_name:
        yield error("spec.gatewayClassName", "Required value")
    yield from _items("spec.listeners", spec.listeners, 1, 64)
    for i, listener in enumerate(spec.listeners):
        yield from _listener(f"spec.listeners[{i}]", listener)
    yield from _listener_rules(spec.listeners)
    yield from _items("spec.addresses", spec.addresses, 0, 16)


def _listener(path: str, listener: Listener) -> Iterator[Finding]:
    yield from _pattern(f"{path}.name", listener.name, _SECTION_NAME, 253)
    yield from _pattern(f"{path}.hostname", listener.hostname, _HOSTNAME, 253)
    yield from _port(f"{path}.port", listener.port)
    yield from _pattern(f"{path}.protocol", listener.protocol, _PROTOCOL, 255)
    allowed = listener.allowed_routes
    if allowed is not None:
        yield from _items(f"{path}.allowedRoutes.kinds", allowed.kinds, 0, 8)
        for j, kind in enumerate(allowed.kinds):
            yield from _pattern(f"{path}.allowedRoutes.kinds[{j}].kind", kind.kind, _KIND, 63)
        namespaces = allowed.namespaces
        if namespaces is not None and namespaces.from_or_default not in ("All", "Selector", "Same"):
            yield error(
                f"{path}.allowedRoutes.namespaces.from",
                f'Unsupported value: "{namespaces.from_}": supported values: '
                '"All", "Selector", "Same"',
            )
    tls = listener.tls
    if tls is not None:
        if tls.mode not in (None, "Terminate", "Passthrough"):
            yield error(
                f"{path}.tls.mode",
                f'Unsupported value: "{tls.mode}": supported values: "Terminate", "Passthrough"',
            )
        if tls.mode_or_default == "Terminate" and not tls.certificate_refs and not tls.options:
            yield error(
                f"{path}.tls",
                'Invalid value: "object": certificateRefs or options must be specified '
                "when mode is Terminate",
            )


def _listener_rules(listeners: Sequence[Listener]) -> Iterator[Finding]:
    """The CEL rules of ``spec.listeners``, with the CRD's messages."""
    path = "spec.listeners"
    rules: tuple[tuple[Callable[[Listener], bool], str], ...] = (
        (
            lambda li: li.protocol in ("HTTP", "TCP", "UDP") and li.tls is not None,
            "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
        ),
        (
            lambda li: (
                li.protocol == "HTTPS"
                and li.tls is not None
                and li.tls.mode not in (None, "", "Terminate")
            ),
            "tls mode must be Terminate for protocol HTTPS",
        ),
        (
            lambda li: li.protocol == "TLS" and (li.tls is None or not li.tls.mode),
            "tls mode must be set for protocol TLS",
        ),
        (
            lambda li: li.protocol in ("TCP", "UDP") and bool(li.hostname),
            "hostname must not be specified for protocols ['TCP', 'UDP']",
        ),
    )
    for broken, message in rules:
        if any(broken(li) for li in listeners):
            yield _invalid(path, "array", message)
    names = [li.name for li in listeners]
    if len(set(names)) != len(names):
        yield _invalid(path, "array", "Listener name must be unique within the Gateway")
    combos = [(li.port, li.protocol, li.hostname or None) for li in listeners]
    if len(set(combos)) != len(combos):
        yield _invalid(
            path,
            "array",
            "Combination of port, protocol and hostname must be unique for each listener",
        )


def _route(spec: TCPRouteSpec, api_version: str, path: str) -> Iterator[Finding]:
    yield from _items(f"{path}.parentRefs", spec.parent_refs, 0, 32)
    for i, ref in enumerate(spec.parent_refs):
        where = f"{path}.parentRefs[{i}]"
        yield from _pattern(f"{where}.sectionName", ref.section_name, _SECTION_NAME, 253)
        yield from _pattern(f"{where}.kind", ref.kind, _KIND, 63)
        yield from _pattern(f"{where}.group", ref.group or None, _GROUP, 253)
        yield from _port(f"{where}.port", ref.port)
    most_rules = 1 if api_version.endswith("/v1") else 16
    yield from _items(f"{path}.rules", spec.rules, 1, most_rules)
    for i, rule in enumerate(spec.rules):
        where = f"{path}.rules[{i}]"
        yield from _pattern(f"{where}.name", rule.name, _SECTION_NAME, 253)
        yield from _items(f"{where}.backendRefs", rule.backend_refs, 1, 16)
        for j, backend in enumerate(rule.backend_refs):
            yield from _backend_ref(f"{where}.backendRefs[{j}]", backend)


def _backend_ref(path: str, ref: BackendRef) -> Iterator[Finding]:
    yield from _port(f"{path}.port", ref.port)
    if ref.weight is not None and not 0 <= ref.weight <= MAX_WEIGHT:
        yield _invalid(
            f"{path}.weight", ref.weight, f"must be between 0 and {MAX_WEIGHT}, inclusive"
        )
    yield from _pattern(f"{path}.kind", ref.kind, _KIND, 63)
    if ref.group_or_default == "" and ref.kind_or_default == "Service" and ref.port is None:
        yield _invalid(path, "object", "Must have port for Service reference")


def _tls_hostnames(hostnames: Sequence[str], api_version: str) -> Iterator[Finding]:
    path = "spec.hostnames"
    yield from _items(path, hostnames, 1 if api_version.endswith("/v1") else 0, 1024)
    for i, host in enumerate(hostnames):
        where = f"{path}[{i}]"
        if _is_ip(host):
            yield _invalid(where, host, "Hostnames cannot contain an IP")
        elif "*" in host and not (host.startswith("*.") and _HOSTNAME.match(host)):
            yield _invalid(
                where,
                host,
                "Wildcards on hostnames must be the first label, and the rest of hostname "
                "must be valid based on RFC-1123",
            )
        elif not _HOSTNAME.match(host):
            yield _invalid(where, host, "Hostnames must be valid based on RFC-1123")


def _reference_grant(spec: ReferenceGrantSpec) -> Iterator[Finding]:
    yield from _items("spec.from", spec.from_, 1, 16)
    yield from _items("spec.to", spec.to, 1, 16)
    for i, source in enumerate(spec.from_):
        yield from _pattern(f"spec.from[{i}].kind", source.kind, _KIND, 63)
        yield from _pattern(f"spec.from[{i}].group", source.group or None, _GROUP, 253)
    for i, target in enumerate(spec.to):
        yield from _pattern(f"spec.to[{i}].kind", target.kind, _KIND, 63)
        yield from _pattern(f"spec.to[{i}].group", target.group or None, _GROUP, 253)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
