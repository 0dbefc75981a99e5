"""The Service environment variables a kubelet gives every container (Docker links).

Kubernetes' ``pkg/kubelet/envvars`` FromServices, for the Services of the pod's namespace
that have a cluster IP when the container starts (headless and ExternalName Services have
none): ``TCP_ECHO_SERVICE_HOST``, ``TCP_ECHO_SERVICE_PORT`` (the first port),
``TCP_ECHO_SERVICE_PORT_<NAME>`` per named port, and the Docker-link set
``TCP_ECHO_PORT``, ``TCP_ECHO_PORT_9000_TCP`` with ``_PROTO``, ``_PORT`` and ``_ADDR``.
``enableServiceLinks: false`` leaves them out. A container's own ``env`` wins over them and
may refer to them with ``$(VAR)``, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tcpmesh.registry import needs_cluster_ip


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def links_enabled(pod: Mapping[str, Any]) -> bool:
    """``spec.enableServiceLinks``, which Kubernetes defaults to true."""
    return (pod.get("spec") or {}).get("enableServiceLinks") is not False


def service_variables(services: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The variables of every Service with a cluster IP, as Kubernetes names them."""
    variables: dict[str, str] = {}
    for service in sorted(services, key=lambda s: str((s.get("metadata") or {}).get("name"))):
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict) and "port" in p]
        if not ip or not needs_cluster_ip(spec) or not ports:
            continue
        prefix = _env_name(str(service["metadata"]["name"]))
        variables[f"{prefix}_SERVICE_HOST"] = str(ip)
        variables[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                variables[f"{prefix}_SERVICE_PORT_{_env_name(port['name'])}"] = str(port["port"])
        for i, port in enumerate(ports):
            protocol = str(port.get("protocol") or "TCP")
            url = f"{protocol.lower()}://{ip}:{port['port']}"
            if i == 0:
                variables[f"{prefix}_PORT"] = url
            link = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
            variables[link] = url
            variables[f"{link}_PROTO"] = protocol.lower()
            variables[f"{link}_PORT"] = str(port["port"])
            variables[f"{link}_ADDR"] = str(ip)
    return variables
