"""TLS gateway servers: SNI-routed passthrough and terminating filter chains.

References (istio/istio): pilot/pkg/networking/core/gateway.go:
buildGatewayNetworkFiltersFromTLSRoutes (PASSTHROUGH: one filter chain per matching ``tls``
match, SNI hosts deduplicated, the first claim wins) and createGatewayTCPFilterChainOpts
(SIMPLE/MUTUAL on a TLS port: the server's hosts become the SNI match, the ``tcp`` rules
route the plaintext).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

from tcpmesh.api import (
    CA_CERT_KEY,
    TLS_CERT_KEY,
    TLS_PRIVATE_KEY_KEY,
    is_valid_cipher_suite,
    models,
    secret_bytes,
)
from tcpmesh.control.gatewayapi import CROSS_NAMESPACE_CREDENTIAL, secret_permitted
from tcpmesh.control.resources import (
    MeshResources,
    ProxyNode,
    resolve_gateway_name,
)
from tcpmesh.control.routes import (
    gateway_route,
    server_host,
    tcp_route,
    virtual_services_for_gateway,
    vs_matches_server_hosts,
)
from tcpmesh.control.servers import ServerPort
from tcpmesh.control.snapshot import (
    DownstreamTls,
    L4Match,
    TcpRoute,
)

_ENVOY_TLS_VERSIONS = {
    "TLSV1_0": "TLSv1_0",
    "TLSV1_1": "TLSv1_1",
    "TLSV1_2": "TLSv1_2",
    "TLSV1_3": "TLSv1_3",
}


def tls_listener_routes(
    resources: MeshResources, node: ProxyNode, group: Sequence[ServerPort]
) -> Iterator[TcpRoute]:
    """The filter chains of one TLS port, servers in order; an SNI name is claimed once."""
    taken: set[str] = set()
    for entry in group:
        assert entry.server.tls is not None
        if entry.server.tls.mode == "PASSTHROUGH":
            candidates = list(_passthrough_routes(resources, node, entry))
        else:
            route = _terminating_route(resources, node, entry)
            candidates = [route] if route is not None else []
        for route in candidates:
            names = set(route.match.server_names) or {"*"}
            if names & taken:
                continue  # Istio: "skipping ... duplicate SNI host names" (rejected config)
            taken |= names
            yield route


def _passthrough_routes(
    resources: MeshResources, node: ProxyNode, entry: ServerPort
) -> Iterator[TcpRoute]:
    server_hosts = [server_host(h, entry.gateway.namespace) for h in entry.server.hosts]
    for vs in virtual_services_for_gateway(resources, node, entry.gateway_name):
        if not vs_matches_server_hosts(vs, server_hosts):
            continue
        for index, rule in enumerate(vs.spec.tls):
            if rule is None or not rule.route:
                continue
            for match in rule.match:
                # l4SingleMatch: only port and gateways count on a gateway.
                if match is None or match.port not in (0, entry.number):
                    continue
                gateways = {resolve_gateway_name(g, vs.namespace) for g in match.gateways}
                if gateways and entry.gateway_name not in gateways:
                    continue
                route = tcp_route(resources, node, vs, index, rule, entry.number, "tls")
                names = server_names(match.sni_hosts)
                yield dataclasses.replace(route, match=L4Match(server_names=names))


def server_names(hosts: Iterable[str]) -> tuple[str, ...]:
    """SNI hosts as Envoy's ``server_names``: lowercase; a ``*`` among them matches all."""
    names = tuple(dict.fromkeys(h.lower() for h in hosts))
    return () if "*" in names else names


def _terminating_route(
    resources: MeshResources, node: ProxyNode, entry: ServerPort
) -> TcpRoute | None:
    route = gateway_route(
        resources, node, entry.gateway, entry.gateway_name, entry.server, entry.number
    )
    settings = entry.server.tls
    if route is None or settings is None:
        return None
    tls = downstream_tls(resources, node, settings)
    if tls is None:
        # Istio's gateway waits for a credential SDS never delivers: nothing is served.
        return None
    names = server_names(server_host(h, entry.gateway.namespace)[1] for h in entry.server.hosts)
    return dataclasses.replace(route, match=L4Match(server_names=names), tls=tls)


def downstream_tls(
    resources: MeshResources, node: ProxyNode, settings: models.ServerTLSSettings
) -> DownstreamTls | None:
    """The certificate of a terminating server, from ``credentialName`` in the gateway's
    namespace (Istio's credential lookup: ``tls.crt``/``tls.key``, the client CA in
    ``ca.crt`` or in the Secret ``<name>-cacert``). None when it is missing or unusable;
    file-path certificates (``serverCertificate``) are files of Istio's gateway pods and
    have no meaning here."""
    secret = _credential_secret(resources, node, settings.credential_name)
    if secret is None:
        return None
    chain = _pem(secret, TLS_CERT_KEY, "CERTIFICATE")
    key = _pem(secret, TLS_PRIVATE_KEY_KEY, "PRIVATE KEY")
    if chain is None or key is None:
        return None
    ca = ""
    if settings.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        ca_secret = find_secret(resources, node.namespace, f"{settings.credential_name}-cacert")
        ca = (
            _pem(secret, CA_CERT_KEY, "CERTIFICATE")
            or (_pem(ca_secret, CA_CERT_KEY, "CERTIFICATE") if ca_secret else None)
            or ""
        )
        if not ca:
            return None  # MUTUAL without a client CA cannot verify anyone
    suites = tuple(dict.fromkeys(c for c in settings.cipher_suites if is_valid_cipher_suite(c)))
    return DownstreamTls(
        secret=f"{secret.namespace}/{secret.name}",
        certificate_chain=chain,
        private_key=key,
        ca_certificates=ca,
        client_optional=settings.mode == "OPTIONAL_MUTUAL",
        min_protocol_version=_ENVOY_TLS_VERSIONS.get(settings.min_protocol_version, ""),
        max_protocol_version=_ENVOY_TLS_VERSIONS.get(settings.max_protocol_version, ""),
        cipher_suites=suites,
    )


def _credential_secret(
    resources: MeshResources, node: ProxyNode, credential: str
) -> models.Secret | None:
    """The Secret a credentialName names: one of the gateway's namespace, or (Gateway API
    certificateRefs, ``kubernetes-gateway://ns/name``) of another namespace whose
    ReferenceGrant lets Gateways of the gateway's namespace use it."""
    if not credential.startswith(CROSS_NAMESPACE_CREDENTIAL):
        return find_secret(resources, node.namespace, credential) if credential else None
    namespace, _, name = credential.removeprefix(CROSS_NAMESPACE_CREDENTIAL).partition("/")
    if not secret_permitted(resources.reference_grants, node.namespace, namespace, name):
        return None
    return find_secret(resources, namespace, name)


def find_secret(resources: MeshResources, namespace: str, name: str) -> models.Secret | None:
    return next((s for s in resources.secrets if s.namespace == namespace and s.name == name), None)


def _pem(secret: models.Secret, key: str, label: str) -> str | None:
    """A PEM value of the Secret, if it holds one with ``label`` (decoded, ASCII)."""
    try:
        raw = secret_bytes(secret.data, key)
        text = raw.decode("ascii") if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    if text is None or (f"-----BEGIN {label}" not in text and f" {label}-----" not in text):
        return None
    return text
