"""Syntax rules for names: hosts, label keys and values, DNS labels, port names.

Two families live here because both APIs are spoken: Istio's (``pkg/config/labels``,
``pkg/config/validation/agent``), whose DNS labels also allow upper case, and
Kubernetes' (``apimachinery/pkg/util/validation``), which does not. Functions return the
problems as message strings (verbatim from those sources) and an empty list or ``None``
when the value is fine.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Mapping

# ---------------------------------------------------------------- Istio

_ISTIO_LABEL = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_ISTIO_LABEL_RE = re.compile(_ISTIO_LABEL)
_WILDCARD_LABEL_RE = re.compile(rf"\*|(?:\*|\*-)?{_ISTIO_LABEL}")
_QUALIFIED_NAME = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_TAG_KEY_RE = re.compile(rf"((?:{_ISTIO_LABEL}(?:\.{_ISTIO_LABEL})*)/)?({_QUALIFIED_NAME})")
_TAG_VALUE_RE = re.compile(f"(?:{_QUALIFIED_NAME})?")
_ALL_NUMERIC_RE = re.compile(r"[+-]?[0-9]+")
_LABEL_MAX = 63
_DNS_PREFIX_MAX = 253


def quote(value: str) -> str:
    """Go's ``%q`` for the strings that appear in messages."""
    return json.dumps(value, ensure_ascii=False)


def is_dns1123_label(value: str) -> bool:
    """Istio's ``labels.IsDNS1123Label`` (case-insensitive, unlike Kubernetes')."""
    return len(value) <= _LABEL_MAX and _ISTIO_LABEL_RE.fullmatch(value) is not None


@functools.lru_cache(maxsize=1 << 14)
def is_ip(value: str) -> bool:
    """Whether ``value`` is an IPv4 or IPv6 address (cached: the builder asks it of the
    same hosts for every route of every build)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _domain_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {quote(name)} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _dns1123_labels(domain: str) -> str | None:
    parts = domain.split(".")
    tld = parts[-1]
    if _ALL_NUMERIC_RE.fullmatch(tld):
        return (
            f"domain name {quote(domain)} invalid "
            f"(top level domain {quote(tld)} cannot be all-numeric)"
        )
    for i, label in enumerate(parts):
        # A trailing dot ("istio.io.") is an unambiguous absolute name.
        if i == len(parts) - 1 and label == "":
            return None
        if not is_dns1123_label(label):
            return f"domain name {quote(domain)} invalid (label {quote(label)} invalid)"
    return None


def validate_fqdn(name: str) -> str | None:
    return _domain_preconditions(name) or _dns1123_labels(name)


def validate_wildcard_domain(domain: str) -> str | None:
    """A domain that may start with a wildcard label (``*``, ``*.example.com``, ``*-x``)."""
    problem = _domain_preconditions(domain)
    if problem:
        return problem
    first, dot, rest = domain.partition(".")
    if len(first) > _LABEL_MAX or not _WILDCARD_LABEL_RE.fullmatch(first):
        return f"domain name {quote(domain)} invalid (label {quote(first)} invalid)"
    return _dns1123_labels(rest) if dot else None


def hosts_overlap(a: str, b: str) -> bool:
    """Istio's ``host.Name.Matches``: equal, or one wildcard covers the other."""
    a_wild, b_wild = a.startswith("*"), b.startswith("*")
    if a_wild and b_wild:
        shorter, longer = sorted((a, b), key=len)
        return longer[1:].endswith(shorter[1:])
    if a_wild:
        return b.endswith(a[1:])
    if b_wild:
        return a.endswith(b[1:])
    return a == b


def validate_ip_subnet(subnet: str) -> str | None:
    """CIDR (``10.0.0.0/8``) or a single address."""
    if subnet.count("/") == 1:
        try:
            ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            return f"{subnet} is not a valid CIDR block"
        return None
    return None if is_ip(subnet) else f"{subnet} is not a valid IP"


def validate_port(port: int) -> str | None:
    return None if 1 <= port <= 65535 else f"port number {port} must be in the range 1..65535"


def validate_labels(labels: Mapping[str, str]) -> list[str]:
    """Istio's ``labels.Instance.Validate`` (subset labels, sourceLabels)."""
    problems: list[str] = []
    for key in sorted(labels):
        match = _TAG_KEY_RE.fullmatch(key)
        if match is None:
            problems.append(f"invalid tag key: {quote(key)}")
        elif match.group(1) and len(match.group(1)) - 1 > _DNS_PREFIX_MAX:
            problems.append(f"invalid tag key: {quote(key)} (DNS prefix is too long)")
        elif len(match.group(2)) > _LABEL_MAX:
            problems.append(f"invalid tag key: {quote(key)} (name is too long)")
        if not _TAG_VALUE_RE.fullmatch(labels[key]):
            problems.append(f"invalid tag value: {quote(labels[key])}")
    return problems


def validate_gateway_host(host: str) -> list[str]:
    """A Gateway server host: ``host``, ``ns/host``, ``*/host`` or ``./host``."""
    namespace, slash, name = host.partition("/")
    if not slash:
        return _gateway_host_name(host)
    problems: list[str] = []
    if not namespace or not name:
        problems.append("config namespace and dnsName in host entry cannot be empty")
    if namespace not in ("*", ".") and not is_dns1123_label(namespace):
        problems.append(f"invalid namespace value {quote(namespace)} in gateway")
    return problems + _gateway_host_name(name)


def _gateway_host_name(name: str) -> list[str]:
    problems: list[str] = []
    if name != "*" and "." not in name:
        problems.append("short names (non FQDN) are not allowed")
    problem = validate_wildcard_domain(name)
    if problem and not is_ip(name):
        problems.append(problem)
    if "*" in name and len(name) != 1 and not name.startswith("*."):
        problems.append(f"partial wildcard {quote(name)} not allowed")
    return problems


# ---------------------------------------------------------------- Kubernetes

K8S_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
K8S_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
K8S_DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_K8S_LABEL = "[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_K8S_LABEL_RE = re.compile(_K8S_LABEL)
_K8S_SUBDOMAIN_RE = re.compile(rf"{_K8S_LABEL}(?:\.{_K8S_LABEL})*")
_K8S_DNS1035_RE = re.compile("[a-z](?:[-a-z0-9]*[a-z0-9])?")


def _too_long(value: str, limit: int) -> list[str]:
    return [f"must be no more than {limit} characters"] if len(value) > limit else []


def k8s_label_problems(value: str) -> list[str]:
    """Kubernetes ``IsDNS1123Label`` (container names, port names, namespaces)."""
    bad = _K8S_LABEL_RE.fullmatch(value) is None
    return _too_long(value, _LABEL_MAX) + ([K8S_LABEL_MESSAGE] if bad else [])


def k8s_subdomain_problems(value: str) -> list[str]:
    """Kubernetes ``IsDNS1123Subdomain`` (most object names)."""
    bad = _K8S_SUBDOMAIN_RE.fullmatch(value) is None
    return _too_long(value, 253) + ([K8S_SUBDOMAIN_MESSAGE] if bad else [])


def k8s_dns1035_problems(value: str) -> list[str]:
    """Kubernetes ``IsDNS1035Label`` (Service names)."""
    bad = _K8S_DNS1035_RE.fullmatch(value) is None
    return _too_long(value, _LABEL_MAX) + ([K8S_DNS1035_MESSAGE] if bad else [])


def k8s_port_name_problems(name: str) -> list[str]:
    """Kubernetes ``IsValidPortName`` (IANA_SVC_NAME: container port names, targetPort)."""
    problems = _too_long(name, 15)
    if not re.fullmatch(r"[-a-z0-9]+", name):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", name):
        problems.append("must contain at least one letter (a-z)")
    if "--" in name:
        problems.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return problems


def k8s_port_number_problem(port: int) -> str | None:
    return None if 1 <= port <= 65535 else "must be between 1 and 65535, inclusive"
