"""The bootstrap a gateway's Envoy starts from: who it is, where its ADS server is.

Everything routing-related comes over ADS (CDS, EDS, ECDS, LDS). Static parts: the ADS
cluster (HTTP/2 over loopback to the mesh), the admin interface on 127.0.0.1 only (port
0: Envoy picks one and writes it to ``--admin-address-path``), and Istio's status port
(15021) on the pod address answering ``GET /healthz/ready``. Envoy opens listeners only
once its initial CDS/LDS fetch is complete, so the runtime's TCP readiness probe on that
port means "configured", as with the built-in proxy.
"""

from __future__ import annotations

from typing import Any

from tcpmesh.telemetry import ENVOY_STATS_CONFIG

XDS_CLUSTER = "tcpmesh-xds"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def bootstrap(
    node_id: str,
    node_cluster: str,
    xds_address: str,
    xds_port: int,
    status_address: str,
    status_port: int | None,
) -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    listeners = [] if status_port is None else [status_listener(status_address, status_port)]
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        # Tags that keep whole cluster names: tcpmesh.telemetry.envoy reads them.
        "stats_config": ENVOY_STATS_CONFIG,
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        HTTP_OPTIONS_KEY: {
                            "@type": f"type.googleapis.com/{HTTP_OPTIONS_KEY}",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_address,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
            "listeners": listeners,
        },
    }


def status_listener(address: str, port: int) -> dict[str, Any]:
    route = {
        "match": {"path": "/healthz/ready"},
        "direct_response": {"status": 200, "body": {"inline_string": "ready\n"}},
    }
    return {
        "name": f"status_{port}",
        "address": {"socket_address": {"address": address, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM_TYPE,
                            "stat_prefix": "status",
                            "route_config": {
                                "virtual_hosts": [
                                    {"name": "status", "domains": ["*"], "routes": [route]}
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": ROUTER_TYPE},
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }
