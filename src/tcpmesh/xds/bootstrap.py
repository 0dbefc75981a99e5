"""The bootstrap a gateway's Envoy starts from: who it is, where its ADS server is.

Everything routing-related comes over ADS (CDS, EDS, ECDS, LDS). Static parts: the ADS
cluster (HTTP/2 over loopback to the mesh), the admin interface on 127.0.0.1 only (port
0: Envoy picks one and writes it to ``--admin-address-path``), and Istio's status port
(15021) on the pod address answering ``GET /healthz/ready``. Envoy opens listeners only
once its initial CDS/LDS fetch is complete, so the runtime's TCP readiness probe on that
port means "configured", as with the built-in proxy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpmesh.telemetry import envoy_stats_config

XDS_CLUSTER = "tcpmesh-xds"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UPSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
PEER_SECRET = "tcpmesh-peer"
# A joined Envoy's ADS connection: HTTP/2 pings every second, dead after 2 s without an
# answer (a cut link sends no FIN), then a new stream within 0.1-0.5 s on the next
# server, each connect given 0.5 s: back within about a second of a link's return (a
# SYN sent into a cut link is retransmitted only after 1 s, so an attempt gives up
# sooner and the next one goes out).
KEEPALIVE_INTERVAL = "1s"
KEEPALIVE_TIMEOUT = "2s"
RETRY_BASE = "0.1s"
RETRY_MAX = "0.5s"
REMOTE_CONNECT_TIMEOUT = "0.5s"


@dataclass(frozen=True)
class AdsTls:
    """How an Envoy on another host reaches ADS: mTLS with its peer certificate, which
    file-based SDS (``sds_file``, reloaded when a file is moved into ``sds_dir``) rotates
    without a restart; the mesh's CA, pinned at join; the addresses the servers'
    certificates must name."""

    sds_file: Path
    sds_dir: Path
    ca_file: Path
    server_names: tuple[str, ...]


def bootstrap(
    node_id: str,
    node_cluster: str,
    xds_address: str,
    xds_port: int,
    status_address: str,
    status_port: int | None,
) -> dict[str, Any]:
    """A local gateway pod's bootstrap: ADS over loopback, without TLS."""
    cluster = _xds_cluster([(xds_address, xds_port)])
    return _bootstrap(node_id, node_cluster, cluster, {}, status_address, status_port)


def remote_bootstrap(
    node_id: str,
    node_cluster: str,
    servers: list[tuple[str, int]],
    tls: AdsTls,
    status_address: str,
    status_port: int | None,
) -> dict[str, Any]:
    """A joined gateway's bootstrap: ADS over mTLS to any of ``servers`` (round robin, so
    a retried stream goes to the next replica), HTTP/2 keepalive to notice a dead link."""
    cluster = _xds_cluster(servers, keepalive=True)
    cluster["connect_timeout"] = REMOTE_CONNECT_TIMEOUT
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM_TLS_TYPE, "common_tls_context": _client_tls(tls)},
    }
    if any(not _is_ip(host) for host, _ in servers):
        cluster["type"] = "STRICT_DNS"
    retry = {"retry_back_off": {"base_interval": RETRY_BASE, "max_interval": RETRY_MAX}}
    return _bootstrap(
        node_id, node_cluster, cluster, {"retry_policy": retry}, status_address, status_port
    )


def sds_resource(cert_file: Path, key_file: Path) -> dict[str, Any]:
    """The file-based SDS answer naming the peer's certificate and key."""
    secret = {
        "@type": SECRET_TYPE,
        "name": PEER_SECRET,
        "tls_certificate": {
            "certificate_chain": {"filename": str(cert_file)},
            "private_key": {"filename": str(key_file)},
        },
    }
    return {"resources": [secret]}


def _client_tls(tls: AdsTls) -> dict[str, Any]:
    sans = [
        {"san_type": "IP_ADDRESS" if _is_ip(name) else "DNS", "matcher": {"exact": name}}
        for name in tls.server_names
    ]
    source = {"path": str(tls.sds_file), "watched_directory": {"path": str(tls.sds_dir)}}
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        # gRPC servers require HTTP/2 negotiated by ALPN.
        "alpn_protocols": ["h2"],
        "tls_certificate_sds_secret_configs": [
            {
                "name": PEER_SECRET,
                "sds_config": {"path_config_source": source, "resource_api_version": "V3"},
            }
        ],
        "validation_context": {
            "trusted_ca": {"filename": str(tls.ca_file)},
            "match_typed_subject_alt_names": sans,
        },
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bootstrap(
    node_id: str,
    node_cluster: str,
    xds_cluster: dict[str, Any],
    grpc_options: dict[str, Any],
    status_address: str,
    status_port: int | None,
) -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    listeners = [] if status_port is None else [status_listener(status_address, status_port)]
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        # Tags that keep whole cluster names, and only the per-cluster stats
        # tcpmesh.telemetry.envoy reads (all of the ADS cluster's).
        "stats_config": envoy_stats_config([f"cluster.{XDS_CLUSTER}."]),
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, **grpc_options}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster], "listeners": listeners},
    }


def _xds_cluster(servers: list[tuple[str, int]], *, keepalive: bool = False) -> dict[str, Any]:
    http2: dict[str, Any] = {}
    if keepalive:
        http2["connection_keepalive"] = {
            "interval": KEEPALIVE_INTERVAL,
            "timeout": KEEPALIVE_TIMEOUT,
        }
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        for host, port in servers
    ]
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_KEY: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS_KEY}",
                "explicit_http_config": {"http2_protocol_options": http2},
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": endpoints}],
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
