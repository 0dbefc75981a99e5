"""TLS in the API: Gateway server TLS settings, SNI hosts, and Secrets of type kubernetes.io/tls.

Messages are Istio's (``pkg/config/validation`` ``validateTLSOptions``, ``validateSniHost``;
``pkg/config/security`` ``ValidCipherSuites``) and Kubernetes' (``ValidateSecret``,
``IsConfigMapKey``), so a manifest rejected by them is rejected here with the same words.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping, Sequence

from tcpmesh.api import models, names
from tcpmesh.api.findings import Finding, error, warning
from tcpmesh.api.names import quote

SECRET_TYPE_TLS = "kubernetes.io/tls"
TLS_CERT_KEY = "tls.crt"
TLS_PRIVATE_KEY_KEY = "tls.key"
CA_CERT_KEY = "ca.crt"
SECRET_MAX_BYTES = 1024 * 1024

# Istio's ValidCipherSuites: `bssl ciphers -openssl-name ALL`, without PSK suites.
VALID_CIPHER_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "AES256-SHA",
        "DES-CBC3-SHA",
    }
)
PASSTHROUGH_MODES = ("PASSTHROUGH", "AUTO_PASSTHROUGH")
TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")

_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
_CONFIG_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
    "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)


def is_valid_cipher_suite(suite: str) -> bool:
    """Istio's ``IsValidCipherSuite``: names BoringSSL knows, and operator expressions."""
    if suite in ("", "ALL"):
        return True
    if not suite[0].isalnum():
        return True  # "-AES128-SHA", "+..." : cipher-list operators, passed through
    return suite in VALID_CIPHER_SUITES


def is_passthrough(settings: models.ServerTLSSettings | None) -> bool:
    """Istio's ``IsPassThroughServer``: the gateway routes by SNI and never terminates."""
    return settings is not None and settings.mode in PASSTHROUGH_MODES


# ---------------------------------------------------------------- Gateway server tls


def server_tls(path: str, settings: models.ServerTLSSettings) -> Iterator[Finding]:
    """Istio's ``validateTLSOptions`` for one Gateway server."""
    yield from _protocol_versions(path, settings)
    yield from _cipher_suites(f"{path}.cipherSuites", settings.cipher_suites)
    if settings.mode == "ISTIO_MUTUAL":
        yield from _istio_mutual(path, settings)
        return
    if settings.mode in PASSTHROUGH_MODES and _has_certificates(settings):
        yield warning(path, f"{settings.mode} mode does not use certificates, they will be ignored")
    sources = [
        bool(settings.server_certificate and settings.private_key),
        bool(settings.credential_name),
        bool(settings.credential_names),
        bool(settings.tls_certificates),
    ]
    if sum(sources) > 1:
        yield error(
            path,
            "only one of credential_name, credential_names, server_certificate/private_key, "
            "tls_certificates should be specified",
        )
    remote = settings.credential_name or settings.credential_names
    if settings.mode in TERMINATING_MODES and not remote:
        # With a credentialName the certificates come from a Secret, not the Gateway.
        yield from _inline_certificates(path, settings)
    if settings.ca_crl:
        if settings.credential_name:
            yield error(
                f"{path}.caCrl",
                "CRL is not supported with credentialName. CRL has to be specified in the "
                "credential",
            )
        if settings.mode == "SIMPLE":
            yield error(f"{path}.caCrl", "CRL is not supported with SIMPLE TLS")


def _protocol_versions(path: str, settings: models.ServerTLSSettings) -> Iterator[Finding]:
    if settings.min_protocol_version in ("TLSV1_0", "TLSV1_1") and not settings.cipher_suites:
        yield warning(
            f"{path}.minProtocolVersion",
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they "
            "no longer include compatible ciphers.",
        )
    low, high = settings.min_protocol_version, settings.max_protocol_version
    if low != "TLS_AUTO" and high != "TLS_AUTO" and low > high:
        # No version can be negotiated. Istio lets this through to the proxy; tcpmesh
        # says so at apply time instead.
        yield error(
            f"{path}.maxProtocolVersion",
            f"maxProtocolVersion {high} is lower than minProtocolVersion {low}",
        )


def _cipher_suites(path: str, suites: Sequence[str]) -> Iterator[Finding]:
    invalid = sorted({s for s in suites if not is_valid_cipher_suite(s)})
    seen: set[str] = set()
    duplicates: set[str] = set()
    for suite in suites:
        if is_valid_cipher_suite(suite):
            if suite in seen:
                duplicates.add(suite)
            seen.add(suite)
    if invalid:
        yield warning(path, f"ignoring invalid cipher suites: [{' '.join(invalid)}]")
    if duplicates:
        yield warning(path, f"ignoring duplicate cipher suites: [{' '.join(sorted(duplicates))}]")


def _istio_mutual(path: str, settings: models.ServerTLSSettings) -> Iterator[Finding]:
    for value, what in (
        (settings.server_certificate, "server certificate"),
        (settings.private_key, "private key"),
        (settings.ca_certificates, "CA bundle"),
        (settings.tls_certificates, "tlsCertificates"),
        (settings.credential_name, "credentialName"),
        (settings.credential_names, "credentialNames"),
    ):
        if value:
            yield error(path, f"ISTIO_MUTUAL TLS cannot have associated {what}")


def _has_certificates(settings: models.ServerTLSSettings) -> bool:
    return any(
        (
            settings.ca_crl,
            settings.server_certificate,
            settings.private_key,
            settings.ca_certificates,
            settings.tls_certificates,
            settings.credential_name,
            settings.credential_names,
        )
    )


def _inline_certificates(path: str, settings: models.ServerTLSSettings) -> Iterator[Finding]:
    prefix = "SIMPLE TLS" if settings.mode == "SIMPLE" else "MUTUAL TLS"
    if prefix == "MUTUAL TLS" and not settings.ca_certificates:
        yield error(path, f"{prefix} requires a client CA bundle")
    if len(settings.tls_certificates) > 2:
        yield warning(path, f"{prefix} can support up to 2 server certificates")
    pairs = [(c.server_certificate, c.private_key) for c in settings.tls_certificates] or [
        (settings.server_certificate, settings.private_key)
    ]
    for certificate, key in pairs:
        if not certificate:
            yield error(path, f"{prefix} requires a server certificate")
        if not key:
            yield error(path, f"{prefix} requires a private key")


# ---------------------------------------------------------------- sniHosts


def host_subset_of(name: str, of: str) -> bool:
    """Istio's ``host.Name.SubsetOf``: every name ``name`` matches is matched by ``of``."""
    if name == of:
        return True
    if of.startswith("*"):
        if name.startswith("*"):
            return name[1:].endswith(of[1:])
        return name.endswith(of[1:])
    return False


def sni_host(path: str, sni: str, vs_hosts: Sequence[str]) -> Iterator[Finding]:
    """Istio's ``validateSniHost``: a valid (wildcard) domain within the VirtualService's hosts."""
    problem = names.validate_wildcard_domain(sni)
    if problem:
        if names.is_ip(sni):
            yield warning(
                path,
                f"using an IP address ({quote(sni)}) goes against SNI spec and most clients do "
                "not support this",
            )
        else:
            yield error(path, problem)
        return
    if not any(host_subset_of(sni, host) for host in vs_hosts):
        yield error(
            path,
            f"SNI host {quote(sni)} is not a compatible subset of any of the virtual service "
            f"hosts: [{', '.join(vs_hosts)}]",
        )


# ---------------------------------------------------------------- Secret


def secret(resource: models.Secret) -> Iterator[Finding]:
    """Kubernetes' ``ValidateSecret``: key syntax, total size, required keys of the type."""
    total = 0
    for key, value in resource.data.items():
        for problem in config_key_problems(key):
            yield error(f"data[{key}]", f"Invalid value: {quote(key)}: {problem}")
        offset = base64_problem(value)
        if offset is not None:
            # What Go's encoding/json says when the API server decodes the []byte field.
            yield error(f"data[{key}]", f"illegal base64 data at input byte {offset}")
        else:
            total += len(base64.b64decode(value))
    if total > SECRET_MAX_BYTES:
        yield error("data", f"Too long: must have at most {SECRET_MAX_BYTES} bytes")
    if resource.type == SECRET_TYPE_TLS:
        for key in (TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY):
            if key not in resource.data:
                yield error(f"data[{key}]", "Required value")


def config_map(resource: models.ConfigMap) -> Iterator[Finding]:
    """Kubernetes' ``ValidateConfigMap``: key syntax, no key in both bags, total size."""
    total = 0
    bags = (
        ("data", resource.data, "binaryData", resource.binary_data),
        ("binaryData", resource.binary_data, "data", resource.data),
    )
    for name, bag, other_name, other in bags:
        for key, value in bag.items():
            for problem in config_key_problems(key):
                yield error(f"{name}[{key}]", f"Invalid value: {quote(key)}: {problem}")
            if key in other:
                yield error(
                    f"{name}[{key}]",
                    f"Invalid value: {quote(key)}: duplicate of key present in {other_name}",
                )
            if name == "data":
                total += len(value.encode())
            elif (offset := base64_problem(value)) is not None:
                yield error(f"{name}[{key}]", f"illegal base64 data at input byte {offset}")
            else:
                total += len(base64.b64decode(value))
    if total > SECRET_MAX_BYTES:
        yield error("data", f"Too long: must have at most {SECRET_MAX_BYTES} bytes")


def base64_problem(value: str) -> int | None:
    """The offset of the first byte standard base64 cannot decode, or None when it decodes."""
    for offset, char in enumerate(value):
        if char not in _BASE64_ALPHABET and char != "=":
            return offset
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return max(len(value.rstrip("=")) // 4 * 4, 0)
    return None


def config_key_problems(key: str) -> list[str]:
    """Kubernetes' ``IsConfigMapKey``."""
    problems = []
    if len(key) > 253:
        problems.append("must be no more than 253 characters")
    if not _CONFIG_KEY_RE.fullmatch(key):
        problems.append(_CONFIG_KEY_MESSAGE)
    if key == ".":
        problems.append("must not be '.'")
    elif key == "..":
        problems.append("must not be '..'")
    elif key.startswith(".."):
        problems.append("must not start with '..'")
    return problems


def secret_bytes(data: Mapping[str, str], key: str) -> bytes | None:
    """The decoded value of one key of a stored Secret's ``data``, or None when absent."""
    value = data.get(key)
    if value is None:
        return None
    return base64.b64decode(value)
