"""The manifests of the Gateway API conformance cases TCPRoute* (kubernetes-sigs/gateway-api
``conformance/tests/tcproute-*.yaml``), reproduced object for object with the class
``{GATEWAY_CLASS_NAME}`` filled in; the backends run the built-in echo-basic."""

from __future__ import annotations

import json

INFRA = "gateway-conformance-infra"
WEB = "gateway-conformance-web-backend"
G = "gateway.networking.k8s.io"
CLASS = "tcpmesh"


def echo_backend(name: str, namespace: str = INFRA, container: str = "tcp-echo") -> str:
    """A Service and Deployment of echo-basic in TCP mode, as every TCPRoute case has them."""
    return f"""
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {name}}}
spec:
  selector: {{app: {name}}}
  ports:
    - {{name: tcp, protocol: TCP, port: 3000, targetPort: 3000}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {name}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: {container}
          image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
          imagePullPolicy: IfNotPresent
          env:
            - {{name: TCP_ECHO_SERVER, value: "1"}}
            - name: POD_NAME
              valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
            - name: NAMESPACE
              valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
            - {{name: SERVICE_NAME, value: {name}}}
          ports:
            - {{containerPort: 3000, protocol: TCP}}
          resources:
            requests: {{cpu: 10m}}
"""


def gateway(name: str, *listeners: str) -> str:
    body = "\n".join(f"    - {listener}" for listener in listeners)
    return f"""
apiVersion: {G}/v1
kind: Gateway
metadata: {{name: {name}, namespace: {INFRA}}}
spec:
  gatewayClassName: "{CLASS}"
  listeners:
{body}
"""


def tcp_listener(name: str, port: int, same: bool = False, group: bool = False) -> str:
    kind = f"{{kind: TCPRoute, group: {G}}}" if group else "{kind: TCPRoute}"
    namespaces = ", namespaces: {from: Same}" if same else ""
    return (
        f"{{name: {name}, protocol: TCP, port: {port}, "
        f"allowedRoutes: {{kinds: [{kind}]{namespaces}}}}}"
    )


def tcp_route(name: str, parent: str, backends: str, namespace: str = INFRA) -> str:
    return f"""
apiVersion: {G}/v1alpha2
kind: TCPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs:
    - {parent}
  rules:
    - backendRefs: {backends}
"""


def documents(*texts: str) -> str:
    return "\n---\n".join(t.strip() for t in texts) + "\n"


CASES = {
    "TCPRouteInvalidBackendRefNonexistent": documents(
        gateway("tcp-gateway-invalid-backend", tcp_listener("tcp", 9300)),
        tcp_route(
            "tcp-route-invalid-backend-ref-nonexistent",
            "{name: tcp-gateway-invalid-backend, sectionName: tcp}",
            "[{name: nonexistent-service, port: 8080}]",
        ),
    ),
    "TCPRouteInvalidCrossNamespaceBackendRef": documents(
        echo_backend("tcp-invalid-xns-backend", WEB),
        gateway("tcp-invalid-cross-namespace-backend-ref-gateway", tcp_listener("tcp", 9321)),
        tcp_route(
            "tcp-invalid-cross-namespace-backend-ref",
            "{name: tcp-invalid-cross-namespace-backend-ref-gateway, sectionName: tcp}",
            f"[{{name: tcp-invalid-xns-backend, namespace: {WEB}, port: 3000}}]",
        ),
    ),
    "TCPRouteInvalidNonTCPListener": documents(
        gateway(
            "tcp-mixed-protocol-gateway",
            "{name: only-allow-http-routes, protocol: HTTP, port: 5300, "
            "allowedRoutes: {kinds: [{kind: HTTPRoute}]}}",
        ),
        tcp_route(
            "tcp-route",
            "{name: tcp-mixed-protocol-gateway, sectionName: only-allow-http-routes}",
            "[{name: tcp-echo-backend, port: 8080}]",
        ),
    ),
    "TCPRouteMultipleRoutesAttachment": documents(
        echo_backend("tcp-attach-backend-1", container="tcp-backend"),
        echo_backend("tcp-attach-backend-2", container="tcp-backend"),
        gateway("tcp-multi-route-attach-gateway", tcp_listener("tcp", 9310, same=True, group=True)),
        tcp_route(
            "tcproute-attach-older",
            "{name: tcp-multi-route-attach-gateway, sectionName: tcp}",
            "[{name: tcp-attach-backend-1, port: 3000}]",
        ),
    ),
    "TCPRouteParentRefAttachAll": documents(
        echo_backend("tcp-echo-attach-all"),
        gateway(
            "tcp-attach-all-gateway",
            *(
                tcp_listener(n, p)
                for n, p in zip(("one", "two", "three", "four"), range(9310, 9314), strict=True)
            ),
        ),
        tcp_route(
            "tcp-route-attach-all",
            "{name: tcp-attach-all-gateway}",
            "[{name: tcp-echo-attach-all, port: 3000}]",
        ),
    ),
    "TCPRouteParentRefPortAndSectionName": documents(
        *(echo_backend(f"tcp-echo-{n}") for n in ("one", "two", "three")),
        gateway(
            "tcp-multi-listener-gateway",
            *(
                tcp_listener(n, p)
                for n, p in zip(("one", "two", "three"), range(9300, 9303), strict=True)
            ),
        ),
        tcp_route(
            "tcp-route-by-port",
            "{name: tcp-multi-listener-gateway, port: 9300}",
            "[{name: tcp-echo-one, port: 3000}]",
        ),
        tcp_route(
            "tcp-route-by-section",
            "{name: tcp-multi-listener-gateway, sectionName: two}",
            "[{name: tcp-echo-two, port: 3000}]",
        ),
        tcp_route(
            "tcp-route-by-section-and-port",
            "{name: tcp-multi-listener-gateway, sectionName: three, port: 9302}",
            "[{name: tcp-echo-three, port: 3000}]",
        ),
    ),
    "TCPRouteReferenceGrant": documents(
        echo_backend("tcp-reference-grant-backend", WEB),
        f"""
apiVersion: {G}/v1
kind: ReferenceGrant
metadata: {{name: tcp-reference-grant, namespace: {WEB}}}
spec:
  from:
    - {{group: {G}, kind: TCPRoute, namespace: {INFRA}}}
  to:
    - {{group: "", kind: Service, name: tcp-reference-grant-backend}}
""",
        gateway("tcp-reference-grant-gateway", tcp_listener("tcp", 9320)),
        tcp_route(
            "tcp-reference-grant",
            "{name: tcp-reference-grant-gateway, sectionName: tcp}",
            f"[{{name: tcp-reference-grant-backend, namespace: {WEB}, port: 3000}}]",
        ),
    ),
    "TCPRouteWeightedRouting": documents(
        *(echo_backend(f"tcp-backend-v{i}", container="tcp-backend") for i in (1, 2, 3)),
        gateway("tcp-weighted-gateway", tcp_listener("tcp", 9300)),
        tcp_route(
            "tcp-weighted-route",
            "{name: tcp-weighted-gateway, sectionName: tcp}",
            "[{name: tcp-backend-v1, port: 3000, weight: 70}, "
            "{name: tcp-backend-v2, port: 3000, weight: 30}, "
            "{name: tcp-backend-v3, port: 3000, weight: 0}]",
        ),
    ),
}

NEWER_ROUTE = tcp_route(
    "tcproute-attach-newer",
    "{name: tcp-multi-route-attach-gateway, sectionName: tcp}",
    "[{name: tcp-attach-backend-2, port: 3000}]",
)


# ---------------------------------------------------------------- TLSRoute* (status cases)

APP = "gateway-conformance-app-backend"
SAME = "namespaces: {from: Same}"


def tls_gateway(name: str, *listeners: str) -> str:
    return gateway(name, *listeners)


def tls_route(name: str, parent: str, hostnames: str, backends: str) -> str:
    return f"""
apiVersion: {G}/v1
kind: TLSRoute
metadata: {{name: {name}, namespace: {INFRA}}}
spec:
  parentRefs:
    - {parent}
  hostnames: {hostnames}
  rules:
    - backendRefs: {backends}
"""


def grant(name: str, namespace: str, source: str, target: str) -> str:
    return f"""
apiVersion: {G}/v1
kind: ReferenceGrant
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  from: [{source}]
  to: [{target}]
"""


def _tls_secret(name: str, cert: str, key: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {INFRA}}}
type: kubernetes.io/tls
stringData:
  tls.crt: {json.dumps(cert)}
  tls.key: {json.dumps(key)}
"""


PASSTHROUGH = "tls: {mode: Passthrough}"
TLS_BACKEND = "[{name: tls-backend, port: 443}]"
PLAIN_TLS_443 = f"{{name: tls, protocol: TLS, port: 443, allowedRoutes: {{{SAME}}}, {PASSTHROUGH}}}"
FROM_ROUTE = f"{{group: {G}, kind: TLSRoute, namespace: {INFRA}}}"
TO_BACKEND = '{group: "", kind: Service, name: tls-backend}'


def tls_cases(cert: str, key: str) -> dict[str, str]:
    """The TLSRoute* cases whose assertions are statuses; ``cert``/``key`` are the PEMs of
    the base manifests' certificate Secrets."""
    terminate = (
        "{name: tls-terminate, port: 8443, protocol: TLS, hostname: terminate.example.com, "
        f"allowedRoutes: {{{SAME}, kinds: [{{kind: TLSRoute}}]}}, "
        "tls: {mode: Terminate, certificateRefs: [{name: tls-terminate-checks-certificate}]}}"
    )
    return {
        "TLSRouteInvalidBackendRefNonexistent": documents(
            tls_gateway(
                "gateway-tlsroute-invalid-backend-ref-nonexistent",
                PLAIN_TLS_443,
            ),
            tls_route(
                "invalid-backend-ref-nonexistent",
                f"{{name: gateway-tlsroute-invalid-backend-ref-nonexistent, namespace: {INFRA}}}",
                '["example.com"]',
                f"[{{name: nonexistent, namespace: {INFRA}, port: 443}}]",
            ),
        ),
        "TLSRouteInvalidBackendRefUnknownKind": documents(
            tls_gateway(
                "gateway-tlsroute-invalid-backend-ref-unknown-kind",
                PLAIN_TLS_443,
            ),
            tls_route(
                "invalid-backend-ref-unknown-kind",
                f"{{name: gateway-tlsroute-invalid-backend-ref-unknown-kind, namespace: {INFRA}}}",
                '["example.com"]',
                "[{group: unknownkind.example.com, kind: NonExistent, name: tls-backend, "
                "port: 443}]",
            ),
        ),
        "TLSRouteInvalidNoMatchingListenerHostname": documents(
            *(
                tls_gateway(
                    f"gateway-tls-{which}-hostname",
                    f'{{name: tls, port: 443, protocol: TLS, hostname: "{host}", '
                    f"allowedRoutes: {{{SAME}, kinds: [{{kind: TLSRoute}}]}}, {PASSTHROUGH}}}",
                )
                for which, host in (("exact", "www.example.com"), ("wildcard", "*.example.com"))
            ),
            tls_route(
                "tlsroute-hostname-mismatch-1",
                "{name: gateway-tls-exact-hostname}",
                '["www.nomatch.com", "*.nomatch.com"]',
                TLS_BACKEND,
            ),
            tls_route(
                "tlsroute-hostname-mismatch-2",
                "{name: gateway-tls-wildcard-hostname}",
                '["www.different.com", "*.different.com"]',
                TLS_BACKEND,
            ),
        ),
        "TLSRouteInvalidNoMatchingListener": documents(
            _tls_secret("tls-validity-checks-certificate", cert, key),
            tls_gateway(
                "gateway-tlsroute-tls-passthrough-only",
                f"{{name: tls-passthrough, protocol: TLS, port: 443, allowedRoutes: {{{SAME}}}, "
                f"{PASSTHROUGH}}}",
            ),
            tls_gateway(
                "gateway-tlsroute-http-only",
                f"{{name: http, port: 80, protocol: HTTP, allowedRoutes: {{{SAME}}}}}",
            ),
            tls_gateway(
                "gateway-tlsroute-https-only",
                f"{{name: https, port: 443, protocol: HTTPS, allowedRoutes: {{{SAME}}}, "
                "tls: {mode: Terminate, certificateRefs: "
                f"[{{name: tls-validity-checks-certificate, namespace: {INFRA}}}]}}}}",
            ),
            tls_route(
                "tlsroute-not-allowed-protocol-http",
                "{name: gateway-tlsroute-http-only}",
                "[tls.example.com]",
                TLS_BACKEND,
            ),
            tls_route(
                "tlsroute-not-allowed-protocol-https",
                "{name: gateway-tlsroute-https-only}",
                "[tls.example.com]",
                TLS_BACKEND,
            ),
            tls_route(
                "tlsroute-no-matching-section-name",
                "{name: gateway-tlsroute-tls-passthrough-only, sectionName: nonexistent-listener}",
                "[tls.example.com]",
                TLS_BACKEND,
            ),
        ),
        "TLSRouteInvalidReferenceGrant": documents(
            f"""
apiVersion: v1
kind: Service
metadata: {{name: tls-backend, namespace: {APP}}}
spec:
  selector: {{app: tls-backend}}
  ports: [{{name: https, port: 443, targetPort: 8443}}]
""",
            grant("reference-grant-wrong-namespace", INFRA, FROM_ROUTE, TO_BACKEND),
            grant(
                "reference-grant-wrong-from-group",
                APP,
                f"{{group: not-the-group-youre-looking-for, kind: TLSRoute, namespace: {INFRA}}}",
                TO_BACKEND,
            ),
            grant(
                "reference-grant-wrong-from-kind",
                APP,
                f"{{group: {G}, kind: Gateway, namespace: {INFRA}}}",
                TO_BACKEND,
            ),
            grant(
                "reference-grant-wrong-from-namespace",
                APP,
                f"{{group: {G}, kind: TLSRoute, namespace: not-the-namespace-youre-looking-for}}",
                TO_BACKEND,
            ),
            grant(
                "reference-grant-wrong-to-group",
                APP,
                FROM_ROUTE,
                "{group: not-the-group-youre-looking-for, kind: Service, name: tls-backend}",
            ),
            grant(
                "reference-grant-wrong-to-kind",
                APP,
                FROM_ROUTE,
                '{group: "", kind: Secret, name: tls-backend}',
            ),
            grant(
                "reference-grant-wrong-to-name",
                APP,
                FROM_ROUTE,
                '{group: "", kind: Service, name: not-the-service-youre-looking-for}',
            ),
            tls_route(
                "gateway-conformance-infra-test",
                "{name: gateway-tlsroute-referencegrant}",
                "[abc.example.com]",
                f"[{{name: tls-backend, namespace: {APP}, port: 443}}]",
            ),
            tls_gateway(
                "gateway-tlsroute-referencegrant",
                '{name: https, port: 443, protocol: TLS, hostname: "*.example.com", '
                f"allowedRoutes: {{{SAME}, kinds: [{{kind: TLSRoute}}]}}, {PASSTHROUGH}}}",
            ),
        ),
        "TLSRouteListenerPassthroughSupportedKinds": documents(
            tls_gateway(
                "gateway-tlsroute-passthrough-supported-kind",
                "{name: tls-passthrough, port: 443, protocol: TLS, allowedRoutes: "
                f"{{{SAME}, kinds: [{{kind: TCPRoute}}, {{kind: TLSRoute}}]}}, {PASSTHROUGH}}}",
            ),
        ),
        "TLSRouteListenerTerminateSupportedKinds": documents(
            tls_gateway("gateway-tlsroute-terminate-supported", terminate),
        ),
    }


# ---------------------------------------------------------------- TLSRoute* (traffic cases)

# The certificates the suite makes before the cases run (suite.go: MustCreateCACertConfigMap,
# MustCreateCASignedCertSecret): Secret name -> the DNS names of its CA-signed certificate.
SIGNED_SECRETS = {
    "tls-checks-certificate": ("abc.example.com", "other.example.com"),
    "tls-passthrough-checks-certificate": ("abc.example.com",),
    "tls-terminate-checks-certificate": ("tls.example.com",),
}


def tls_base(ca_pem: str, secrets: dict[str, tuple[str, str]]) -> str:
    """The base manifests the TLSRoute traffic cases use: the CA ConfigMap, the signed
    Secrets (``secrets``: name -> (cert, key) PEMs) and ``tcp-backend``, which mounts
    ``tls-passthrough-checks-certificate`` as a volume and serves TLS from it."""
    config_map = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: tls-checks-ca-certificate, namespace: {INFRA}}}
data:
  ca.crt: {json.dumps(ca_pem)}
"""
    backend = f"""
apiVersion: v1
kind: Service
metadata: {{name: tcp-backend, namespace: {INFRA}}}
spec:
  selector: {{app: tcp-backend}}
  ports:
    - {{name: echo-tcp-plain, protocol: TCP, port: 3000, targetPort: 3000}}
    - {{name: echo-tcp-tls, protocol: TCP, port: 8443, targetPort: 8443}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tcp-backend
  namespace: {INFRA}
  labels: {{app: tcp-backend}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: tcp-backend}}
  template:
    metadata:
      labels: {{app: tcp-backend}}
    spec:
      containers:
        - name: tcp-backend
          image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
          resources:
            requests: {{cpu: 10m}}
          volumeMounts:
            - {{name: secret-volume, mountPath: /etc/secret-volume}}
          env:
            - name: POD_NAME
              valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
            - name: NAMESPACE
              valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
            - {{name: TLS_SERVER_CERT, value: /etc/secret-volume/crt}}
            - {{name: TLS_SERVER_PRIV_KEY, value: /etc/secret-volume/key}}
            - {{name: TCP_ECHO_SERVER, value: "1"}}
      volumes:
        - name: secret-volume
          secret:
            secretName: tls-passthrough-checks-certificate
            items:
              - {{key: tls.crt, path: crt}}
              - {{key: tls.key, path: key}}
"""
    signed = (_tls_secret(name, cert, key) for name, (cert, key) in secrets.items())
    return documents(config_map, *signed, backend)


TLS_ONLY_SAME = f"allowedRoutes: {{{SAME}, kinds: [{{kind: TLSRoute}}]}}"
TERMINATE_REFS = (
    "tls: {mode: Terminate, certificateRefs: [{name: tls-terminate-checks-certificate}]}"
)

TLS_TRAFFIC_CASES = {
    "TLSRouteSimpleSameNamespace": documents(
        tls_route(
            "gateway-conformance-infra-test",
            f"{{name: gateway-tlsroute, namespace: {INFRA}}}",
            "[abc.example.com]",
            "[{name: tcp-backend, port: 8443}]",
        ),
        tls_gateway(
            "gateway-tlsroute",
            f'{{name: https, port: 443, protocol: TLS, hostname: "*.example.com", '
            f"{TLS_ONLY_SAME}, {PASSTHROUGH}}}",
        ),
    ),
    "TLSRouteTerminateSimpleSameNamespace": documents(
        tls_route(
            "tlsroute-terminated-test",
            f"{{name: gateway-tlsroute-terminate, namespace: {INFRA}}}",
            "[tls.example.com]",
            "[{name: tcp-backend, port: 3000}]",
        ),
        tls_gateway(
            "gateway-tlsroute-terminate",
            "{name: tlsterminate, port: 8443, protocol: TLS, hostname: tls.example.com, "
            f"{TLS_ONLY_SAME}, {TERMINATE_REFS}}}",
        ),
    ),
    "TLSRouteMixedTerminationSameNamespace": documents(
        tls_gateway(
            "gateway-tlsroute-mixed-termination",
            "{name: tls-terminate, port: 8883, protocol: TLS, hostname: tls.example.com, "
            f"{TLS_ONLY_SAME}, {TERMINATE_REFS}}}",
            "{name: tls-passthrough, port: 8883, protocol: TLS, hostname: abc.example.com, "
            f"{TLS_ONLY_SAME}, {PASSTHROUGH}}}",
        ),
        tls_route(
            "gateway-conformance-mixed-passthroughroute",
            f"{{name: gateway-tlsroute-mixed-termination, namespace: {INFRA}}}",
            "[abc.example.com]",
            "[{name: tcp-backend, port: 8443}]",
        ),
        tls_route(
            "gateway-conformance-mixed-terminateroute",
            f"{{name: gateway-tlsroute-mixed-termination, namespace: {INFRA}}}",
            "[tls.example.com]",
            "[{name: tcp-backend, port: 3000}]",
        ),
    ),
}


# ---------------------------------------------------------------- Gateway certificateRefs

# The Gateway* certificateRef cases (gateway-invalid-tls-configuration.yaml,
# gateway-secret-*-reference-grant*.yaml) with protocol TLS + mode Terminate where upstream
# has HTTPS: tcpmesh serves no HTTP, and the certificateRef rules are the same.
ALL_NAMESPACES = "allowedRoutes: {namespaces: {from: All}}"


def cert_gateway(name: str, ref: str) -> str:
    return tls_gateway(
        name,
        f"{{name: https, port: 443, protocol: TLS, {ALL_NAMESPACES}, "
        f"tls: {{mode: Terminate, certificateRefs: [{ref}]}}}}",
    )


WEB_CERT = f'{{group: "", kind: Secret, name: certificate, namespace: {WEB}}}'
SECRET_GRANT = grant(
    "reference-grant-specific",
    WEB,
    f"{{group: {G}, kind: Gateway, namespace: {INFRA}}}",
    '{group: "", kind: Secret, name: certificate}',
)


def certificate_ref_cases(web_cert: str, web_key: str) -> dict[str, str]:
    """``web_cert``/``web_key``: the PEMs of the Secret ``certificate`` in the web backend's
    namespace (the suite's MustCreateSelfSignedCertSecret; CA-signed here for a check)."""
    web_secret = _tls_secret("certificate", web_cert, web_key).replace(
        f"namespace: {INFRA}", f"namespace: {WEB}"
    )
    malformed = f"""
apiVersion: v1
kind: Secret
metadata: {{name: malformed-certificate, namespace: {INFRA}}}
data: {{tls.crt: SGVsbG8gd29ybGQK, tls.key: SGVsbG8gd29ybGQK}}
type: kubernetes.io/tls
"""
    return {
        "GatewayInvalidTLSConfiguration": documents(
            cert_gateway(
                "gateway-certificate-nonexistent-secret",
                '{group: "", kind: Secret, name: nonexistent-certificate}',
            ),
            cert_gateway(
                "gateway-certificate-unsupported-group",
                "{group: wrong.group.company.io, kind: Secret, "
                "name: tls-validity-checks-certificate}",
            ),
            cert_gateway(
                "gateway-certificate-unsupported-kind",
                '{group: "", kind: WrongKind, name: tls-validity-checks-certificate}',
            ),
            cert_gateway(
                "gateway-certificate-malformed-secret",
                '{group: "", kind: Secret, name: malformed-certificate}',
            ),
            malformed,
        ),
        "GatewaySecretMissingReferenceGrant": documents(
            web_secret, cert_gateway("gateway-secret-missing-reference-grant", WEB_CERT)
        ),
        "GatewaySecretReferenceGrantSpecific": documents(
            web_secret,
            cert_gateway("gateway-secret-reference-grant-specific", WEB_CERT),
            # tcpmesh's addition, to see the Secret served: a route behind the listener.
            tls_route(
                "gateway-secret-reference-grant-specific",
                "{name: gateway-secret-reference-grant-specific}",
                "[tls.example.com]",
                "[{name: tcp-backend, port: 3000}]",
            ),
        ),
    }


def tls_http_backend(name: str) -> str:
    """The base manifests' ``tls-backend``/``tls-backend-2``: echo-basic's HTTPS mode, its
    certificate ``tls-checks-certificate`` mounted as a volume."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {INFRA}}}
spec:
  selector: {{app: {name}}}
  ports:
    - {{protocol: TCP, port: 443, targetPort: 8443}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {INFRA}
  labels: {{app: {name}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: {name}
          image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
          volumeMounts:
            - {{name: secret-volume, mountPath: /etc/secret-volume}}
          env:
            - name: POD_NAME
              valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
            - name: NAMESPACE
              valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
            - {{name: TLS_SERVER_CERT, value: /etc/secret-volume/crt}}
            - {{name: TLS_SERVER_PRIVKEY, value: /etc/secret-volume/key}}
          resources:
            requests: {{cpu: 10m}}
      volumes:
        - name: secret-volume
          secret:
            secretName: tls-checks-certificate
            items:
              - {{key: tls.crt, path: crt}}
              - {{key: tls.key, path: key}}
"""


def _intersection_gateway(name: str, listener: str, hostname: str | None) -> str:
    host = f'hostname: "{hostname}", ' if hostname else ""
    return tls_gateway(
        name,
        f"{{name: {listener}, protocol: TLS, port: 443, {host}{TLS_ONLY_SAME}, {PASSTHROUGH}}}",
    )


# TLSRouteHostnameIntersection: (gateway, listener, its hostname, [(route, route hostname,
# backend)]).
INTERSECTIONS = (
    (
        "gw-tlsroute-exact-hostname-x-1",
        "listener-exact-hostname",
        "abc.example.com",
        [("tlsroute-more-specific-wc-hostname-x-1", "*.example.com", "tls-backend")],
    ),
    (
        "gw-tlsroute-more-specific-wc-hostname-x-2",
        "listener-more-specific-wc-hostname",
        "*.example.com",
        [
            ("tlsroute-exact-hostname-x-2", "abc.example.com", "tls-backend"),
            ("tlsroute-less-specific-wc-hostname-x-2", "*.com", "tls-backend-2"),
        ],
    ),
    (
        "gw-tlsroute-less-specific-wc-hostname-x-3",
        "listener-less-specific-wc-hostname",
        "*.com",
        [
            ("tlsroute-exact-hostname-x-3", "abc.example.com", "tls-backend"),
            ("tlsroute-more-specific-wc-hostname-x-3", "*.example.com", "tls-backend-2"),
        ],
    ),
    (
        "gw-tlsroute-empty-hostname-x-4",
        "listener-empty-hostname",
        None,
        [
            ("tlsroute-exact-hostname-x-4", "abc.example.com", "tls-backend"),
            ("tlsroute-less-specific-wc-hostname-x-4", "*.com", "tls-backend-2"),
        ],
    ),
)

TLS_TRAFFIC_CASES["TLSRouteHostnameIntersection"] = documents(
    tls_http_backend("tls-backend"),
    tls_http_backend("tls-backend-2"),
    *(_intersection_gateway(gw, listener, host) for gw, listener, host, _ in INTERSECTIONS),
    *(
        tls_route(
            route,
            f"{{name: {gw}, namespace: {INFRA}}}",
            f'["{hostname}"]',
            f"[{{name: {backend}, port: 443}}]",
        )
        for gw, _, _, routes in INTERSECTIONS
        for route, hostname, backend in routes
    ),
)


# ---------------------------------------------------------------- GatewayClass, Namespaces

# The base manifests' Namespaces (conformance/base/manifests.yaml), with their labels.
NAMESPACE_LABELS = {INFRA: "infra", APP: "backend", WEB: "web-backend"}
SELECTOR_GATEWAY = "tcp-backend-namespaces"
USER_CLASS = "tcpmesh-user-class"
FOREIGN_CLASS = "someone-elses-class"


def namespace(name: str, label: str) -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {name}
  labels: {{gateway-conformance: {label}}}
"""


def gateway_class(name: str, controller: str) -> str:
    return f"""
apiVersion: {G}/v1
kind: GatewayClass
metadata: {{name: {name}}}
spec:
  controllerName: {controller}
"""


def class_cases(controller: str) -> dict[str, str]:
    """GatewayClassObservedGenerationBump's class; the base manifests' ``backend-namespaces``
    Gateway (allowedRoutes from Selector gateway-conformance: backend) with a TCP listener;
    a user's class of our controller and one of another controller, each with a Gateway."""
    selector = (
        "{name: tcp, protocol: TCP, port: 9330, allowedRoutes: {kinds: [{kind: TCPRoute}], "
        "namespaces: {from: Selector, selector: {matchLabels: {gateway-conformance: backend}}}}}"
    )
    parent = f"{{name: {SELECTOR_GATEWAY}, namespace: {INFRA}}}"
    user_gateway = gateway("tcp-user-class-gateway", tcp_listener("tcp", 9331)).replace(
        f'"{CLASS}"', f'"{USER_CLASS}"'
    )
    foreign_gateway = gateway("tcp-foreign-class-gateway", tcp_listener("tcp", 9332)).replace(
        f'"{CLASS}"', f'"{FOREIGN_CLASS}"'
    )
    return {
        "Namespaces": documents(*(namespace(n, label) for n, label in NAMESPACE_LABELS.items())),
        "GatewayClassObservedGenerationBump": gateway_class(
            "gatewayclass-observed-generation-bump", controller
        ),
        "AllowedRoutesSelector": documents(
            echo_backend("tcp-selected-backend", APP),
            gateway(SELECTOR_GATEWAY, selector),
            tcp_route("tcp-selected", parent, "[{name: tcp-selected-backend, port: 3000}]", APP),
            tcp_route(
                "tcp-not-selected", parent, "[{name: tcp-invalid-xns-backend, port: 3000}]", WEB
            ),
        ),
        "UserClasses": documents(
            gateway_class(USER_CLASS, controller),
            gateway_class(FOREIGN_CLASS, "example.net/gateway-controller"),
            user_gateway,
            foreign_gateway,
            tcp_route(
                "tcp-user-class-route",
                "{name: tcp-user-class-gateway}",
                "[{name: tcp-echo-attach-all, port: 3000}]",
            ),
        ),
    }
