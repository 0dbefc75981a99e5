"""The Kubernetes Gateway API as Istio config, and the status it earns: one pure binding.

Like Istio's pilot/pkg/config/kube/gateway, a Gateway whose GatewayClass names one of our
controllers (``tcpmesh.io/gateway-controller``, ``istio.io/gateway-controller``: the built-in
classes ``tcpmesh`` and ``istio``, or any class a user creates with them) becomes an Istio
Gateway (one server per listener, selecting the Gateway's own workload),
and each TCPRoute/TLSRoute attached to a listener becomes a VirtualService bound to it, so
the one snapshot builder serves both APIs on both data planes. The same pass decides every
status the spec asks for (route Accepted/ResolvedRefs per parent, listener conditions,
attachedRoutes, supportedKinds), so what is routed and what is reported cannot disagree;
``controllers.gatewayapi`` only writes it.

Rules, with the spec's reasons:
- a Gateway whose class does not exist, or belongs to another controller, is not ours: it
  is not programmed and gets no status from us; a class of ours with a ``parametersRef`` is
  not Accepted (InvalidParameters: tcpmesh takes none) and its Gateways are not programmed;
- ``allowedRoutes.namespaces.from: Selector`` matches the labels of the route's Namespace
  (a namespace without a Namespace object has the one label the API server would give it);
- a parentRef attaches to the listeners its ``sectionName`` and ``port`` name (all when
  neither), of those the route's kind and namespace are allowed on (NotAllowedByListeners),
  and for a TLSRoute whose hostnames intersect the listener's (NoMatchingListenerHostname);
  no listener by that name or port: NoMatchingParent;
- backendRefs are Services with a port; another kind is InvalidKind, a missing Service
  BackendNotFound, another namespace without a ReferenceGrant RefNotPermitted. An invalid
  backend keeps its weight and points at no cluster, so its share of connections is
  rejected (NC), as the spec asks; weight 0 is no traffic; no weight left rejects all;
- several routes on one listener are all Accepted; the oldest serves (the builder orders
  VirtualServices by creation time) and ``attachedRoutes`` counts them all;
- a Terminate listener's certificateRefs are core Secrets (else InvalidCertificateRef), of
  the Gateway's namespace or of one whose ReferenceGrant lets Gateways of this namespace
  reach them (else RefNotPermitted), that exist as kubernetes.io/tls with a parseable
  certificate chain and key (else InvalidCertificateRef): listener ResolvedRefs=False and
  Programmed=False (Invalid), routes still attach; the first permitted, usable Secret
  serves, across namespaces as ``kubernetes-gateway://<namespace>/<name>`` (Istio's form);
- a TCP listener shares its port with no other listener (ProtocolConflict: none of them is
  programmed); TLS listeners share a port whatever their modes, told apart by SNI
  (SupportTLSRouteModeMixed: Terminate and Passthrough on one port both serve).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tcpmesh.api import (
    TLS_CERT_KEY,
    TLS_PRIVATE_KEY_KEY,
    models,
    namespaces,
    secret_bytes,
    selector_matches,
)
from tcpmesh.api import gatewayapi as g
from tcpmesh.control.resources import MeshResources

# The controllerNames whose classes' Gateways the mesh programs, and the classes `up`
# creates with them (as Istio creates its "istio" class): class name -> controllerName.
BUILTIN_CLASSES = {
    "tcpmesh": "tcpmesh.io/gateway-controller",
    "istio": "istio.io/gateway-controller",
}
OUR_CONTROLLERS = frozenset(BUILTIN_CLASSES.values())
# The label on a Gateway's workload pods (Istio's), which its Istio Gateway selects.
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_NAMESPACE_LABEL = "tcpmesh.io/gateway-namespace"
# Where an invalid backend points: no Service or ServiceEntry can have a name under .invalid.
REFUSED_HOST = "backend-refused.invalid"
# A credentialName naming a Secret of another namespace (Istio's scheme for Gateway API
# certificateRefs); honoured by the builder only where a ReferenceGrant allows it.
CROSS_NAMESPACE_CREDENTIAL = "kubernetes-gateway://"
ROUTE_KINDS = {
    "TCP": ("TCPRoute",),
    "TLS-Passthrough": ("TLSRoute",),
    "TLS-Terminate": ("TLSRoute",),
}


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str = ""


@dataclass(frozen=True)
class ListenerResult:
    name: str
    supported_kinds: tuple[str, ...]
    attached_routes: int
    conditions: tuple[Condition, ...]

    @property
    def usable(self) -> bool:
        return all(c.status == "True" for c in self.conditions if c.type == "Accepted")

    @property
    def programmed(self) -> bool:
        return all(c.status == "True" for c in self.conditions if c.type == "Programmed")


@dataclass(frozen=True)
class GatewayResult:
    gateway: g.KubeGateway
    controller: str
    listeners: tuple[ListenerResult, ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.gateway.namespace, self.gateway.name


@dataclass(frozen=True)
class ParentResult:
    """One parentRef of one route: how it is echoed in status, and its two conditions."""

    ref: g.ParentReference
    namespace: str
    controller: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class RouteResult:
    route: g.KubeTCPRoute | g.KubeTLSRoute
    parents: tuple[ParentResult, ...]


@dataclass(frozen=True)
class ClassResult:
    """A GatewayClass of ours and its conditions (Accepted, SupportedVersion)."""

    gateway_class: g.GatewayClass
    conditions: tuple[Condition, ...]

    @property
    def accepted(self) -> bool:
        return all(c.status == "True" for c in self.conditions if c.type == "Accepted")


@dataclass(frozen=True)
class Binding:
    classes: tuple[ClassResult, ...] = ()
    gateways: tuple[GatewayResult, ...] = ()
    routes: tuple[RouteResult, ...] = ()
    istio_gateways: tuple[models.Gateway, ...] = ()
    virtual_services: tuple[models.VirtualService, ...] = ()


@dataclass
class _Inputs:
    gateways: Sequence[g.KubeGateway]
    routes: Sequence[g.KubeTCPRoute | g.KubeTLSRoute]
    grants: Sequence[g.ReferenceGrant]
    services: Sequence[models.Service]
    # Namespace name -> its labels, for allowedRoutes selectors.
    namespace_labels: dict[str, dict[str, str]]
    # Class name -> controllerName, of the accepted classes of ours.
    controllers: dict[str, str]
    secrets: Sequence[models.Secret] = ()


def bind(
    gateways: Sequence[g.KubeGateway],
    routes: Sequence[g.KubeTCPRoute | g.KubeTLSRoute],
    grants: Sequence[g.ReferenceGrant],
    services: Sequence[models.Service],
    classes: Sequence[g.GatewayClass],
    namespace_objects: Sequence[models.Namespace],
    secrets: Sequence[models.Secret] = (),
) -> Binding:
    """Every Gateway of our classes, every route that names one, as Istio config and status."""
    class_results = tuple(_class_result(c) for c in classes if _is_ours(c))
    controllers = {
        r.gateway_class.name: r.gateway_class.spec.controller_name
        for r in class_results
        if r.accepted
    }
    labels = {ns.name: dict(ns.metadata.labels) for ns in namespace_objects}
    inputs = _Inputs(gateways, routes, grants, services, labels, controllers, secrets)
    ours = [gw for gw in gateways if gw.spec.gateway_class_name in controllers]
    listener_kinds = {(gw.namespace, gw.name): _listener_modes(inputs, gw) for gw in ours}
    attachments: dict[tuple[str, str, str], int] = {}
    route_results: list[RouteResult] = []
    virtual_services: list[models.VirtualService] = []
    for route in sorted(routes, key=_creation_order):
        parents: list[ParentResult] = []
        for index, ref in enumerate(route.spec.parent_refs):
            result, attached = _attach(inputs, ours, listener_kinds, route, ref)
            if result is None:
                continue
            parents.append(result)
            for gw, listener in attached:
                key = (gw.namespace, gw.name, listener.name)
                attachments[key] = attachments.get(key, 0) + 1
                virtual_services.append(_virtual_service(inputs, route, index, gw, listener))
        if parents:
            route_results.append(RouteResult(route, tuple(parents)))
    gateway_results = tuple(_gateway_result(inputs, gw, listener_kinds, attachments) for gw in ours)
    return Binding(
        classes=class_results,
        gateways=gateway_results,
        routes=tuple(route_results),
        istio_gateways=tuple(_istio_gateway(inputs, r) for r in gateway_results),
        virtual_services=tuple(virtual_services),
    )


def _is_ours(gateway_class: g.GatewayClass) -> bool:
    return gateway_class.spec.controller_name in OUR_CONTROLLERS


def _class_result(gateway_class: g.GatewayClass) -> ClassResult:
    """Accepted unless it has parameters (tcpmesh takes none); the served API version is the
    one the CRDs describe, since tcpmesh serves the kinds itself (SupportedVersion)."""
    if gateway_class.spec.parameters_ref is not None:
        ref = gateway_class.spec.parameters_ref
        accepted = Condition(
            "Accepted",
            "False",
            "InvalidParameters",
            f"parametersRef {ref.kind} {ref.name}: tcpmesh's gateway classes take no parameters",
        )
    else:
        accepted = Condition("Accepted", "True", "Accepted", "Handled by tcpmesh")
    supported = Condition(
        "SupportedVersion",
        "True",
        "SupportedVersion",
        f"{g.GROUP} {', '.join(g.GATEWAY_CLASS_VERSIONS)} served by tcpmesh",
    )
    return ClassResult(gateway_class, (accepted, supported))


def builtin_gateway_classes() -> list[dict[str, object]]:
    """The GatewayClasses ``up`` creates when they do not exist (Istio creates ``istio``)."""
    return [
        {
            "apiVersion": f"{g.GROUP}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {"controllerName": controller},
        }
        for name, controller in BUILTIN_CLASSES.items()
    ]


def _creation_order(resource: models.Resource) -> tuple[str, str, str]:
    return (resource.metadata.creation_timestamp or "", resource.namespace, resource.name)


# ---------------------------------------------------------------- listeners


def _mode(listener: g.Listener) -> str:
    """ "TCP", "TLS-Passthrough", "TLS-Terminate", or the unsupported protocol's name."""
    if listener.protocol == "TLS" and listener.tls is not None:
        return f"TLS-{listener.tls.mode_or_default}"
    return listener.protocol


def _listener_modes(inputs: _Inputs, gw: g.KubeGateway) -> dict[str, ListenerResult]:
    """Each listener's supported kinds and conditions, before routes are counted."""
    by_port: dict[int, list[str]] = {}
    for listener in gw.spec.listeners:
        by_port.setdefault(listener.port, []).append(_mode(listener))
    results: dict[str, ListenerResult] = {}
    for listener in gw.spec.listeners:
        modes = by_port[listener.port]
        conflict = len(modes) > 1 and "TCP" in modes
        certificates = _certificate_problem(inputs, gw, listener)
        results[listener.name] = _listener_result(listener, conflict, certificates)
    return results


def _listener_result(
    listener: g.Listener, conflict: bool, certificates: Condition | None
) -> ListenerResult:
    mode = _mode(listener)
    supported = ROUTE_KINDS.get(mode, ())
    listed = listener.allowed_routes.kinds if listener.allowed_routes else []
    invalid = any(k.kind not in supported or k.group_or_default != g.GROUP for k in listed)
    kinds = tuple(k.kind for k in listed if k.kind in supported) if listed else supported
    if not supported:
        accepted = Condition(
            "Accepted",
            "False",
            "UnsupportedProtocol",
            f"protocol {listener.protocol} is not served at L4 by tcpmesh",
        )
    elif conflict:
        accepted = Condition(
            "Accepted",
            "False",
            "ProtocolConflict",
            f"another listener on port {listener.port} takes another protocol",
        )
    else:
        accepted = Condition("Accepted", "True", "Accepted")
    resolved = (
        Condition(
            "ResolvedRefs",
            "False",
            "InvalidRouteKinds",
            "some allowedRoutes kinds are not supported",
        )
        if invalid
        else certificates or Condition("ResolvedRefs", "True", "ResolvedRefs")
    )
    conflicted = Condition(
        "Conflicted",
        "True" if conflict else "False",
        "ProtocolConflict" if conflict else "NoConflicts",
    )
    if accepted.status != "True":
        programmed = Condition("Programmed", "False", "Invalid", accepted.message)
    elif certificates is not None:
        programmed = Condition("Programmed", "False", "Invalid", certificates.message)
    else:
        programmed = Condition("Programmed", "True", "Programmed")
    return ListenerResult(listener.name, kinds, 0, (accepted, resolved, conflicted, programmed))


def _gateway_result(
    inputs: _Inputs,
    gw: g.KubeGateway,
    listener_kinds: dict[tuple[str, str], dict[str, ListenerResult]],
    attachments: dict[tuple[str, str, str], int],
) -> GatewayResult:
    listeners = tuple(
        ListenerResult(
            r.name,
            r.supported_kinds,
            attachments.get((gw.namespace, gw.name, r.name), 0),
            r.conditions,
        )
        for r in listener_kinds[(gw.namespace, gw.name)].values()
    )
    return GatewayResult(gw, inputs.controllers[gw.spec.gateway_class_name], listeners)


# ---------------------------------------------------------------- certificates


def _terminates(listener: g.Listener) -> bool:
    return listener.tls is not None and listener.tls.mode_or_default == "Terminate"


def _certificate_problem(
    inputs: _Inputs, gw: g.KubeGateway, listener: g.Listener
) -> Condition | None:
    """The listener's ResolvedRefs=False condition for its certificateRefs, or None."""
    if not _terminates(listener):
        return None
    assert listener.tls is not None
    for ref in listener.tls.certificate_refs:
        problem = _certificate_ref_problem(inputs, gw, ref)
        if problem is not None:
            return Condition("ResolvedRefs", "False", *problem)
    return None


def _certificate_ref_problem(
    inputs: _Inputs, gw: g.KubeGateway, ref: g.SecretObjectReference
) -> tuple[str, str] | None:
    """(reason, message) when this certificateRef cannot serve; None when it can."""
    kind, group = ref.kind or "Secret", ref.group or ""
    namespace = ref.namespace or gw.namespace
    where = f"certificateRef {namespace}/{ref.name}"
    if (group, kind) != ("", "Secret"):
        return "InvalidCertificateRef", f"{where}: {kind}.{group or 'core'} is not a Secret"
    if not secret_permitted(inputs.grants, gw.namespace, namespace, ref.name):
        return "RefNotPermitted", f"{where}: no ReferenceGrant allows this Gateway to use it"
    secret = next(
        (s for s in inputs.secrets if (s.namespace, s.name) == (namespace, ref.name)), None
    )
    if secret is None:
        return "InvalidCertificateRef", f"{where}: Secret not found"
    problem = certificate_problem(secret)
    return None if problem is None else ("InvalidCertificateRef", f"{where}: {problem}")


def secret_permitted(
    grants: Sequence[g.ReferenceGrant], gateway_namespace: str, namespace: str, name: str
) -> bool:
    """A Gateway of ``gateway_namespace`` may use the Secret ``namespace/name``: its own
    namespace, or a ReferenceGrant there from Gateways of that namespace to the Secret."""
    if namespace == gateway_namespace:
        return True
    return any(
        grant.namespace == namespace
        and any(
            (f.group, f.kind, f.namespace) == (g.GROUP, "Gateway", gateway_namespace)
            for f in grant.spec.from_
        )
        and any(
            t.group == "" and t.kind == "Secret" and t.name in (None, name) for t in grant.spec.to
        )
        for grant in grants
    )


def certificate_problem(secret: models.Secret) -> str | None:
    """Why a Secret cannot serve TLS (its type, a missing key, unparseable PEM), or None."""
    if secret.type != "kubernetes.io/tls":
        return f"Secret type is {secret.type}, not kubernetes.io/tls"
    try:
        chain = secret_bytes(secret.data, TLS_CERT_KEY)
        key = secret_bytes(secret.data, TLS_PRIVATE_KEY_KEY)
    except ValueError:
        return "its data is not base64"
    if not chain or not key:
        return f"{TLS_CERT_KEY} and {TLS_PRIVATE_KEY_KEY} are both required"
    try:
        x509.load_pem_x509_certificates(chain)
        serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return f"{TLS_CERT_KEY} or {TLS_PRIVATE_KEY_KEY} is not a PEM certificate chain and key"
    return None


# ---------------------------------------------------------------- attachment


def _attach(
    inputs: _Inputs,
    ours: Sequence[g.KubeGateway],
    listener_kinds: dict[tuple[str, str], dict[str, ListenerResult]],
    route: g.KubeTCPRoute | g.KubeTLSRoute,
    ref: g.ParentReference,
) -> tuple[ParentResult | None, list[tuple[g.KubeGateway, g.Listener]]]:
    """A parentRef's result (None: not a Gateway of ours) and the listeners it attaches to."""
    if ref.group_or_default != g.GROUP or ref.kind_or_default != "Gateway":
        return None, []
    namespace = ref.namespace or route.namespace
    gw = next((x for x in ours if (x.namespace, x.name) == (namespace, ref.name)), None)
    if gw is None:
        return None, []
    controller = inputs.controllers[gw.spec.gateway_class_name]
    named = [
        li
        for li in gw.spec.listeners
        if (ref.section_name is None or li.name == ref.section_name)
        and (ref.port is None or li.port == ref.port)
    ]
    modes = listener_kinds[(gw.namespace, gw.name)]
    accepted, attached = _accepted(inputs, route, gw, named, modes)
    resolved = _resolved_refs(inputs, route)
    return ParentResult(ref, namespace, controller, (accepted, resolved)), attached


def _accepted(
    inputs: _Inputs,
    route: g.KubeTCPRoute | g.KubeTLSRoute,
    gw: g.KubeGateway,
    named: Sequence[g.Listener],
    modes: dict[str, ListenerResult],
) -> tuple[Condition, list[tuple[g.KubeGateway, g.Listener]]]:
    if not named:
        return Condition(
            "Accepted", "False", "NoMatchingParent", "no listener matches the parentRef"
        ), []
    allowed = [
        li
        for li in named
        if modes[li.name].usable
        and route.kind in modes[li.name].supported_kinds
        and _namespace_allowed(inputs, li, gw, route)
    ]
    if not allowed:
        return Condition(
            "Accepted",
            "False",
            "NotAllowedByListeners",
            f"no listener of the parentRef allows a {route.kind} from namespace {route.namespace}",
        ), []
    if isinstance(route, g.KubeTLSRoute):
        allowed = [li for li in allowed if _sni_hosts(route, li)]
        if not allowed:
            return Condition(
                "Accepted",
                "False",
                "NoMatchingListenerHostname",
                "no hostname of the route intersects a listener's hostname",
            ), []
    return Condition("Accepted", "True", "Accepted"), [(gw, li) for li in allowed]


def _namespace_allowed(
    inputs: _Inputs, listener: g.Listener, gw: g.KubeGateway, route: models.Resource
) -> bool:
    rule = listener.route_namespaces
    if rule.from_or_default == "All":
        return True
    if rule.from_or_default == "Same":
        return route.namespace == gw.namespace
    if rule.selector is None:
        return False  # the CRD asks for one with Selector; without it nothing is selected
    default = {namespaces.NAME_LABEL: route.namespace}
    return selector_matches(rule.selector, inputs.namespace_labels.get(route.namespace, default))


def _sni_hosts(route: g.KubeTLSRoute, listener: g.Listener) -> list[str]:
    """The route's hostnames as the listener narrows them (the spec's intersection)."""
    wanted = route.spec.hostnames or ["*"]
    mine = listener.hostname
    if not mine:
        return list(wanted)
    found: list[str] = []
    for host in wanted:
        if host == "*" or _covers(host, mine):
            found.append(mine)
        elif _covers(mine, host):
            found.append(host)
    return list(dict.fromkeys(found))


def _covers(pattern: str, host: str) -> bool:
    """Whether ``pattern`` (exact or ``*.suffix``) matches ``host`` (which may be a wildcard)."""
    if pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return False


# ---------------------------------------------------------------- backends


def _backend_problem(
    inputs: _Inputs, route: models.Resource, ref: g.BackendRef
) -> Condition | None:
    if ref.group_or_default != "" or ref.kind_or_default != "Service":
        return Condition(
            "ResolvedRefs",
            "False",
            "InvalidKind",
            f"backendRef {ref.name}: {ref.kind_or_default} is not a Service",
        )
    namespace = ref.namespace or route.namespace
    if namespace != route.namespace and not _granted(inputs, route, namespace, ref.name):
        return Condition(
            "ResolvedRefs",
            "False",
            "RefNotPermitted",
            f"backendRef {namespace}/{ref.name}: no ReferenceGrant allows it",
        )
    if not any((s.namespace, s.name) == (namespace, ref.name) for s in inputs.services):
        return Condition(
            "ResolvedRefs",
            "False",
            "BackendNotFound",
            f"backendRef {namespace}/{ref.name}: Service not found",
        )
    return None


def _granted(inputs: _Inputs, route: models.Resource, namespace: str, name: str) -> bool:
    """A ReferenceGrant in ``namespace`` lets this route's kind and namespace reach the Service."""
    for grant in inputs.grants:
        if grant.namespace != namespace:
            continue
        source = any(
            f.group == g.GROUP and f.kind == route.kind and f.namespace == route.namespace
            for f in grant.spec.from_
        )
        target = any(
            t.group == "" and t.kind == "Service" and t.name in (None, name) for t in grant.spec.to
        )
        if source and target:
            return True
    return False


def _resolved_refs(inputs: _Inputs, route: g.KubeTCPRoute | g.KubeTLSRoute) -> Condition:
    for rule in route.spec.rules:
        for ref in rule.backend_refs:
            problem = _backend_problem(inputs, route, ref)
            if problem is not None:
                return problem
    return Condition("ResolvedRefs", "True", "ResolvedRefs")


def _destinations(
    inputs: _Inputs, route: g.KubeTCPRoute | g.KubeTLSRoute, port: int
) -> list[models.RouteDestination]:
    """The rule's backends as weighted destinations; invalid ones point nowhere (rejected)."""
    found: list[models.RouteDestination] = []
    for rule in route.spec.rules[:1]:
        for ref in rule.backend_refs:
            if ref.weight_or_default == 0:
                continue
            namespace = ref.namespace or route.namespace
            problem = _backend_problem(inputs, route, ref)
            # A missing Service keeps its name (its cluster may come); a refused one never.
            refused = problem is not None and problem.reason != "BackendNotFound"
            host = REFUSED_HOST if refused else f"{ref.name}.{namespace}.svc.cluster.local"
            destination = models.Destination(
                host=host, port=models.PortSelector(number=ref.port or port)
            )
            found.append(
                models.RouteDestination(destination=destination, weight=ref.weight_or_default)
            )
    if not found:
        # No backend with weight: every connection is rejected.
        nowhere = models.Destination(host=REFUSED_HOST, port=models.PortSelector(number=port))
        found.append(models.RouteDestination(destination=nowhere, weight=1))
    return found


# ---------------------------------------------------------------- Istio config


def istio_gateway_name(gateway_name: str) -> str:
    """The Istio Gateway a Gateway API Gateway becomes (in its namespace)."""
    return f"{gateway_name}-istio-autogenerated-k8s-gateway"


def workload_labels(gw: g.KubeGateway) -> dict[str, str]:
    """The labels of a Gateway's workload pods, which its Istio Gateway selects."""
    return {GATEWAY_NAME_LABEL: gw.name, GATEWAY_NAMESPACE_LABEL: gw.namespace}


def _istio_gateway(inputs: _Inputs, result: GatewayResult) -> models.Gateway:
    gw = result.gateway
    usable = {r.name for r in result.listeners if r.usable}
    servers = [_server(inputs, gw, li) for li in gw.spec.listeners if li.name in usable]
    return models.Gateway(
        api_version="networking.istio.io/v1",
        kind="Gateway",
        metadata=models.ObjectMeta(
            name=istio_gateway_name(gw.name),
            namespace=gw.namespace,
            creation_timestamp=gw.metadata.creation_timestamp,
        ),
        spec=models.GatewaySpec(selector=workload_labels(gw), servers=list(servers)),
    )


def _server(inputs: _Inputs, gw: g.KubeGateway, listener: g.Listener) -> models.Server:
    port = models.GatewayPort(number=listener.port, protocol=listener.protocol, name=listener.name)
    hosts = [listener.hostname or "*"]
    if listener.protocol != "TLS" or listener.tls is None:
        return models.Server(port=port, hosts=hosts, name=listener.name)
    if listener.tls.mode_or_default == "Passthrough":
        tls = models.ServerTLSSettings(mode="PASSTHROUGH")
    else:
        tls = models.ServerTLSSettings(
            mode="SIMPLE", credential_name=_credential(inputs, gw, listener)
        )
    return models.Server(port=port, hosts=hosts, tls=tls, name=listener.name)


def _credential(inputs: _Inputs, gw: g.KubeGateway, listener: g.Listener) -> str:
    """The first certificateRef that can serve, as a credentialName ("" when none can)."""
    assert listener.tls is not None
    for ref in listener.tls.certificate_refs:
        if _certificate_ref_problem(inputs, gw, ref) is None:
            namespace = ref.namespace or gw.namespace
            if namespace == gw.namespace:
                return ref.name
            return f"{CROSS_NAMESPACE_CREDENTIAL}{namespace}/{ref.name}"
    return ""


def _virtual_service(
    inputs: _Inputs,
    route: g.KubeTCPRoute | g.KubeTLSRoute,
    index: int,
    gw: g.KubeGateway,
    listener: g.Listener,
) -> models.VirtualService:
    """The route on one listener, as Istio's gateway controller writes it (kind kept, so
    the Snapshot's route origin names the TCPRoute/TLSRoute)."""
    gateway = f"{gw.namespace}/{istio_gateway_name(gw.name)}"
    destinations = _destinations(inputs, route, listener.port)
    passthrough = listener.tls is not None and listener.tls.mode_or_default == "Passthrough"
    if isinstance(route, g.KubeTLSRoute) and passthrough:
        sni = _sni_hosts(route, listener)
        spec = models.VirtualServiceSpec(
            hosts=sni,
            gateways=[gateway],
            tls=[
                models.TLSRoute(
                    match=[models.TLSMatchAttributes(sni_hosts=sni, port=listener.port)],
                    route=list(destinations),
                )
            ],
        )
    else:
        hosts = _sni_hosts(route, listener) if isinstance(route, g.KubeTLSRoute) else ["*"]
        spec = models.VirtualServiceSpec(
            hosts=hosts,
            gateways=[gateway],
            tcp=[
                models.TCPRoute(
                    match=[models.L4MatchAttributes(port=listener.port)], route=list(destinations)
                )
            ],
        )
    return models.VirtualService(
        api_version=route.api_version,
        kind=route.kind,
        metadata=models.ObjectMeta(
            name=route.name if index == 0 else f"{route.name}-{index}",
            namespace=route.namespace,
            creation_timestamp=route.metadata.creation_timestamp,
        ),
        spec=spec,
    )


def with_gateway_api(resources: MeshResources) -> MeshResources:
    """``resources`` with the Istio config its Gateway API objects stand for added."""
    if not resources.kube_gateways:
        return resources
    binding = bind_resources(resources)
    return dataclasses.replace(
        resources,
        gateways=(*resources.gateways, *binding.istio_gateways),
        virtual_services=(*resources.virtual_services, *binding.virtual_services),
    )


def bind_resources(resources: MeshResources) -> Binding:
    return bind(
        resources.kube_gateways,
        resources.kube_routes,
        resources.reference_grants,
        resources.services,
        resources.gateway_classes,
        resources.namespaces,
        resources.secrets,
    )
