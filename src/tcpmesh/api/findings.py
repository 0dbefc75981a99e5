"""What a validator reports: one finding per problem, with the field path it is about.

Its own module so that validators of several kinds (Istio's in
:mod:`tcpmesh.api.validation`, TLS settings and Secrets in :mod:`tcpmesh.api.tls`, the
Gateway API in :mod:`tcpmesh.api.gatewayapi`) share one shape without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    path: str
    message: str
    warning: bool = False


def error(path: str, message: str) -> Finding:
    return Finding(path, message)


def warning(path: str, message: str) -> Finding:
    return Finding(path, message, warning=True)
