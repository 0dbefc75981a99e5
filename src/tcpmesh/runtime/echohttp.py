"""echo-basic's HTTP mode (the image without ``TCP_ECHO_SERVER``): every request is
answered ``200`` with a JSON echo of itself and of the pod, as the Gateway API conformance
suite's HTTP and TLS cases read it (``path``, ``host``, ``method``, ``proto``, ``headers``,
``namespace``, ``ingress``, ``service``, ``pod``, and ``tls`` on HTTPS). ``HTTP_PORT``
(default 3000) is plain HTTP; ``HTTPS_PORT`` (default 8443) serves HTTPS when
``TLS_SERVER_CERT`` and ``TLS_SERVER_PRIVKEY`` name PEM files. ``/health`` answers ``OK``.
The image's /status, /retry, websocket and h2c endpoints are not built in.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# crypto/tls VersionName, as the TCP mode reports them.
TLS_VERSIONS = {"TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
SERVER_NAME = "tcpmesh.echo-basic.server-name"


def request_echo(request: web.BaseRequest, context: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body: the request as the server saw it, and where it was served."""
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.title(), []).append(value)
    echo: dict[str, Any] = {
        "path": request.rel_url.path,
        "host": request.host,
        "method": request.method,
        "proto": f"HTTP/{request.version.major}.{request.version.minor}",
        "headers": headers,
        "httpPort": context.get("httpPort", ""),
        **{k: context.get(k, "") for k in ("namespace", "ingress", "service", "pod")},
    }
    tls = request.transport.get_extra_info("ssl_object") if request.transport else None
    if tls is not None:
        cipher = tls.cipher()
        echo["tls"] = {
            "version": TLS_VERSIONS.get(str(tls.version()), str(tls.version())),
            "serverName": getattr(tls, SERVER_NAME.replace(".", "_"), ""),
            "cipherSuite": cipher[0] if cipher else "",
        }
    return echo


def application(context: Mapping[str, str]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = json.dumps(request_echo(request, context))
        return web.Response(text=body, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def https_context(env: Mapping[str, str]) -> ssl.SSLContext | None:
    cert, key = env.get("TLS_SERVER_CERT"), env.get("TLS_SERVER_PRIVKEY")
    if not cert or not key:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)

    def remember(tls: Any, name: str | None, _: ssl.SSLContext) -> None:
        setattr(tls, SERVER_NAME.replace(".", "_"), name or "")

    context.sni_callback = remember
    return context


async def serve_http(env: Mapping[str, str], host: str) -> list[web.AppRunner]:
    """Start the HTTP (and, with a certificate, HTTPS) servers; their runners."""
    http_port = env.get("HTTP_PORT") or "3000"
    https_port = env.get("HTTPS_PORT") or "8443"
    for name, value in (("HTTP_PORT", http_port), ("HTTPS_PORT", https_port)):
        if not value.isdigit():
            raise SystemExit(f"non-integer value in {name}: {value}")
    context = {
        "namespace": env.get("NAMESPACE", ""),
        "ingress": env.get("INGRESS_NAME", ""),
        "service": env.get("SERVICE_NAME", ""),
        "pod": env.get("POD_NAME", ""),
        "httpPort": http_port,
    }
    runner = web.AppRunner(application(context), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(http_port)).start()
    tls = https_context(env)
    if tls is not None:
        await web.TCPSite(runner, host, int(https_port), ssl_context=tls).start()
    return [runner]
