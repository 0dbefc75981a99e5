"""Snapshot → Envoy resources (Listener, Cluster, ClusterLoadAssignment, TypedExtensionConfig).

The translation is pure and produces Envoy's own JSON shape (what ``/config_dump`` prints),
so it is tested without protobuf and read back by ``proxy-config``; the ADS server parses
it into the v3 messages.

How a weight change leaves open connections alone
-------------------------------------------------
Envoy drains the connections of a filter chain that is changed or removed by an LDS
update and, for tcp_proxy (which cannot drain gracefully), closes them once
``--drain-time-s`` is over. Istio puts the whole ``tcp_proxy`` config (its
``weighted_clusters``) inside the listener's filter chain, so every weight change cuts
every open TCP connection of that listener (istio/istio#38616, #34989).

tcpmesh keeps routing decisions out of the listener: each filter chain holds one network
filter whose configuration comes from the Extension Config Discovery Service (ECDS,
``config_discovery``, supported for downstream network filters since Envoy 1.28). The
filter is named after its listener and route index, ``0.0.0.0_31400~0``, and the
``tcp_proxy`` config (clusters and weights, stat prefix, timeouts, hash policy, access
log) is a ``TypedExtensionConfig`` of that name. A weight change is then an ECDS update
only: the Listener resource stays byte-identical, so Envoy never drains it; each new
connection instantiates the filter from the newest config, while an open connection keeps
the filter instance it was created with, and with it its upstream. Only a change of the
listener itself (a port opened or closed, another match) still goes through Envoy's
drain, which is then about the port, not about a weight.

Alternatives weighed and rejected:

- One stable cluster per route with the weights in EDS (a locality per destination):
  the destinations' own cluster settings (load balancer, connect timeout, circuit
  breakers, outlier detection, stats) would collapse into one cluster, and Envoy's
  locality weighting routes around a locality without healthy hosts, turning the NC and
  UH shares of a split into traffic for the other version.
- Named filter chains behind ``filter_chain_matcher``, keeping old chains in the
  listener: the old chains must stay for as long as any connection uses them, which a
  control plane cannot observe; removing them later cuts those connections anyway, and
  the listener grows with every change.

Semantics stay in the control plane: a weighted entry whose cluster does not exist is
kept, and Envoy closes its share with ``NC`` (tcp_proxy finds no cluster); a cluster
whose endpoints are all not ready gets an empty ClusterLoadAssignment, so ``UH``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tcpmesh.control import (
    Cluster,
    DownstreamTls,
    Listener,
    Snapshot,
    TcpRoute,
    VersionAffinity,
    WeightedPick,
    derived,
)

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
EXTENSION_CONFIG_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
STDOUT_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
TLS_INSPECTOR_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
)
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)

# The order of a push: clusters before their endpoints, before the filters that route to
# them, before the listeners that use the filters (make-before-break).
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE, EXTENSION_CONFIG_TYPE, LISTENER_TYPE)

SHORT_NAMES = {
    LISTENER_TYPE: "LDS",
    CLUSTER_TYPE: "CDS",
    ENDPOINT_TYPE: "EDS",
    EXTENSION_CONFIG_TYPE: "ECDS",
    SECRET_TYPE: "SDS",
}

# The built-in proxy's access log line (tcpmesh.dataplane.accesslog), so both data
# planes' logs read the same and parse with one parser.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "- - -" 0 %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '- "-" "-" "-" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %DOWNSTREAM_LOCAL_ADDRESS% '
    "%DOWNSTREAM_REMOTE_ADDRESS%\n"
)

# The filter_metadata key of a cluster's service, subset and port.
CLUSTER_METADATA = "tcpmesh"

# Istio's default circuit breaker thresholds (getDefaultCircuitBreakerThresholds).
MAX_UINT32 = 4294967295

ADS_SOURCE: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}

Resource = dict[str, Any]


@dataclass(frozen=True)
class EnvoyConfig:
    """One node's Envoy resources, by type URL and then by resource name."""

    snapshot_version: str
    resources: dict[str, dict[str, Resource]] = field(default_factory=dict)

    def of(self, type_url: str) -> dict[str, Resource]:
        return self.resources.get(type_url, {})


# Envoy's tcp_proxy picks a weighted cluster by a random draw per connection; it has no
# other pick, so a route's WeightedPick.SMOOTH cannot be honoured by Envoy.
ENVOY_WEIGHTED_PICK = WeightedPick.RANDOM
# Envoy's hash policies (source_ip) choose an endpoint inside the cluster its weighted
# pick already drew at random; nothing hashes the pick of the cluster itself.
ENVOY_NO_VERSION_AFFINITY = (
    "is not available on Envoy: its tcp_proxy draws the version at random and hashes "
    "the client address only to pick an endpoint inside it"
)


# Envoy's tcp_proxy ends connections only on its own timers (idle timeout, max
# connection duration: every connection alike); nothing closes a chosen few by version.
ENVOY_NO_REBALANCE = (
    "is not available on Envoy: its tcp_proxy can only recycle every connection "
    "(max connection duration), not close the share that must move"
)


def envoy_differences(route: TcpRoute) -> list[str]:
    """Where Envoy, fed this route, behaves unlike the Snapshot says (stated once, here).

    ``describe`` and ``analyze`` show these lines, so a user sees why the two data
    planes split differently."""
    moved = [f"rebalancing {ENVOY_NO_REBALANCE}"] if route.rebalance is not None else []
    return moved + _envoy_pick_differences(route)


def _envoy_pick_differences(route: TcpRoute) -> list[str]:
    if len(route.destinations) < 2:
        return []
    if route.version_affinity is not VersionAffinity.NONE:
        return [f"version affinity {route.version_affinity} {ENVOY_NO_VERSION_AFFINITY}"]
    if route.weighted_pick is not ENVOY_WEIGHTED_PICK:
        return [
            f"weighted pick {route.weighted_pick} is not available on Envoy: its tcp_proxy "
            f"draws each connection at random ({ENVOY_WEIGHTED_PICK})"
        ]
    return []


def duration(seconds: float) -> str:
    """protobuf Duration JSON: ``10s``, ``0.250s``."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def filter_name(listener: Listener, index: int) -> str:
    """The ECDS resource that holds the tcp_proxy config of a listener's route."""
    return f"{listener.name}~{index}"


def translate(snapshot: Snapshot) -> EnvoyConfig:
    """The node's Envoy resources. Each is translated once per Snapshot part
    (``control.derived``): a part a rebuild reused keeps its resources, the very same
    dicts, which the server then encodes and hashes once (``xds.server``). So resources
    are shared between configurations and must never be changed in place."""
    listeners: dict[str, Resource] = {}
    filters: dict[str, Resource] = {}
    secrets: dict[str, Resource] = {}
    for listener in snapshot.listeners:
        listeners[listener.name] = derived(
            listener, "xds.listener", partial(listener_resource, listener)
        )
        filters.update(derived(listener, "xds.filters", partial(_filters, listener)))
        for route in listener.routes:
            if route.tls is not None:
                secrets.update(secret_resources(route.tls))
    clusters, endpoints = _cluster_resources(snapshot.clusters)
    return EnvoyConfig(
        snapshot.version,
        {
            CLUSTER_TYPE: clusters,
            ENDPOINT_TYPE: endpoints,
            SECRET_TYPE: secrets,
            EXTENSION_CONFIG_TYPE: filters,
            LISTENER_TYPE: listeners,
        },
    )


# The CDS and EDS sets of the last few clusters tuples (by identity): a rebuild that
# changed no cluster hands its Snapshot the very tuple of the last one (control's build
# cache), and then the sets are the very dicts of the last translation, which the ADS
# server recognises as offered already without looking at their thousands of entries.
_CLUSTER_TUPLES_KEPT = 4
_by_clusters: dict[int, tuple[tuple[Cluster, ...], dict[str, Resource], dict[str, Resource]]] = {}


def _cluster_resources(
    clusters: tuple[Cluster, ...],
) -> tuple[dict[str, Resource], dict[str, Resource]]:
    entry = _by_clusters.get(id(clusters))
    if entry is None or entry[0] is not clusters:
        if len(_by_clusters) >= _CLUSTER_TUPLES_KEPT:
            del _by_clusters[next(iter(_by_clusters))]
        cds = {c.name: derived(c, "xds.cluster", partial(cluster_resource, c)) for c in clusters}
        eds = {c.name: derived(c, "xds.endpoints", partial(load_assignment, c)) for c in clusters}
        entry = _by_clusters[id(clusters)] = (clusters, cds, eds)
    return entry[1], entry[2]


def _filters(listener: Listener) -> dict[str, Resource]:
    """The ECDS resources of the listener's routes, one tcp_proxy config each."""
    filters: dict[str, Resource] = {}
    for index, route in enumerate(listener.routes):
        name = filter_name(listener, index)
        filters[name] = {
            "@type": EXTENSION_CONFIG_TYPE,
            "name": name,
            "typed_config": tcp_proxy_config(route),
        }
    return filters


# How terminating routes get their certificates: by SDS, never inline. An inline
# certificate would be part of the Listener, so replacing a Secret would change the filter
# chain and Envoy would drain (and then cut) every open TLS session on it. With SDS the
# listener names the secret only; a new certificate is an SDS update that new handshakes
# use, while open sessions keep theirs. Names are Istio's: ``kubernetes://<name>`` for
# the certificate, ``kubernetes://<name>-cacert`` for the client CA.


def secret_names(tls: DownstreamTls) -> tuple[str, str]:
    namespace, _, name = tls.secret.partition("/")
    base = f"kubernetes://{namespace}/{name}"
    return base, f"{base}-cacert"


def secret_resources(tls: DownstreamTls) -> dict[str, Resource]:
    certificate, ca = secret_names(tls)
    out = {
        certificate: {
            "@type": SECRET_TYPE,
            "name": certificate,
            "tls_certificate": {
                "certificate_chain": {"inline_string": tls.certificate_chain},
                "private_key": {"inline_string": tls.private_key},
            },
        }
    }
    if tls.ca_certificates:
        out[ca] = {
            "@type": SECRET_TYPE,
            "name": ca,
            "validation_context": {"trusted_ca": {"inline_string": tls.ca_certificates}},
        }
    return out


def downstream_tls_context(tls: DownstreamTls) -> Resource:
    certificate, ca = secret_names(tls)
    common: Resource = {
        "tls_certificate_sds_secret_configs": [{"name": certificate, "sds_config": ADS_SOURCE}],
    }
    params: Resource = {"tls_minimum_protocol_version": tls.min_protocol_version or "TLSv1_2"}
    if tls.max_protocol_version:
        params["tls_maximum_protocol_version"] = tls.max_protocol_version
    if tls.cipher_suites:
        params["cipher_suites"] = list(tls.cipher_suites)
    common["tls_params"] = params
    if tls.ca_certificates:
        common["validation_context_sds_secret_config"] = {"name": ca, "sds_config": ADS_SOURCE}
    context: Resource = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}
    if tls.ca_certificates and not tls.client_optional:
        context["require_client_certificate"] = True
    return context


def listener_resource(listener: Listener) -> Resource:
    chains = []
    for index, route in enumerate(listener.routes):
        chain: Resource = {
            "name": f"{listener.name}~{index}",
            "filters": [
                {
                    "name": filter_name(listener, index),
                    "config_discovery": {
                        "config_source": ADS_SOURCE,
                        "type_urls": [TCP_PROXY_TYPE],
                    },
                }
            ],
        }
        match: Resource = {}
        if route.match.destination_subnets:
            match["prefix_ranges"] = [_cidr(s) for s in route.match.destination_subnets]
        if route.match.server_names:
            match["server_names"] = list(route.match.server_names)
        if route.match.source_prefixes:
            match["source_prefix_ranges"] = [_cidr(s) for s in route.match.source_prefixes]
        if match:
            chain["filter_chain_match"] = match
        if route.tls is not None:
            chain["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": downstream_tls_context(route.tls),
            }
        chains.append(chain)
    resource: Resource = {
        "@type": LISTENER_TYPE,
        "name": listener.name,
        "address": {"socket_address": {"address": listener.address, "port_value": listener.port}},
        "filter_chains": chains,
    }
    if listener.reads_client_hello:
        # The SNI match needs the ClientHello; Envoy's inspector closes a connection that
        # does not finish one within listener_filters_timeout (15 s), as the proxy does.
        resource["listener_filters"] = [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": TLS_INSPECTOR_TYPE},
            }
        ]
        # A connection no filter chain matches (unknown SNI) is logged by the listener,
        # with NR, as the built-in proxy logs it.
        resource["access_log"] = access_log()
    return resource


def _cidr(subnet: str) -> Resource:
    address, _, length = subnet.partition("/")
    if not length:
        length = "128" if ":" in address else "32"
    return {"address_prefix": address, "prefix_len": int(length)}


def access_log() -> list[Resource]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": STDOUT_LOG_TYPE,
                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
            },
        }
    ]


def tcp_proxy_config(route: TcpRoute) -> Resource:
    config: Resource = {
        "@type": TCP_PROXY_TYPE,
        "stat_prefix": route.stat_prefix,
        # None disables the idle timeout, which Envoy spells 0s; unset would mean 1h.
        "idle_timeout": duration(route.idle_timeout or 0.0),
        "access_log": access_log(),
    }
    if len(route.destinations) == 1:
        config["cluster"] = route.destinations[0].cluster_name
    else:
        config["weighted_clusters"] = {
            "clusters": [{"name": d.cluster_name, "weight": d.weight} for d in route.destinations]
        }
    if route.max_connection_duration is not None:
        config["max_downstream_connection_duration"] = duration(route.max_connection_duration)
    if route.hash_policy == "source_ip":
        config["hash_policy"] = [{"source_ip": {}}]
    if route.max_connect_attempts > 1:
        config["max_connect_attempts"] = route.max_connect_attempts
    return config


def cluster_resource(cluster: Cluster) -> Resource:
    resource: Resource = {
        "@type": CLUSTER_TYPE,
        "name": cluster.name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ADS_SOURCE, "service_name": cluster.name},
        "connect_timeout": duration(cluster.connect_timeout),
        "lb_policy": cluster.lb_policy,
        # What the cluster is for, as fields (Istio keeps the same under "istio"), so that
        # proxy-config reads Envoy's config_dump without taking the cluster name apart.
        "metadata": {
            "filter_metadata": {
                CLUSTER_METADATA: {
                    "service": cluster.service,
                    "subset": cluster.subset,
                    "port": cluster.port,
                }
            }
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": (
                        cluster.max_connections
                        if cluster.max_connections is not None
                        else MAX_UINT32
                    ),
                    "max_pending_requests": MAX_UINT32,
                    "max_requests": MAX_UINT32,
                    "max_retries": MAX_UINT32,
                }
            ]
        },
    }
    resource.update(_lb_config(cluster))
    od = cluster.outlier_detection
    if od is not None:
        resource["outlier_detection"] = {
            # For TCP a failed connect is a local-origin error, counted as a 5xx while
            # local and external errors are not split; the control plane folded Istio's
            # 5xx, gateway and local-origin thresholds into the one that ejects first.
            "consecutive_5xx": max(od.consecutive_errors, 0),
            "enforcing_consecutive_5xx": 100 if od.consecutive_errors > 0 else 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_consecutive_local_origin_failure": 0,
            "interval": duration(od.interval),
            "base_ejection_time": duration(od.base_ejection_time),
            "max_ejection_percent": od.max_ejection_percent,
            "enforcing_success_rate": 0,
        }
        # Istio maps minHealthPercent to the panic threshold (0 disables panic mode).
        resource["common_lb_config"] = {
            "healthy_panic_threshold": {"value": float(od.min_health_percent)}
        }
    ka = cluster.tcp_keepalive
    if ka is not None:
        keepalive: Resource = {}
        if ka.probes is not None:
            keepalive["keepalive_probes"] = ka.probes
        if ka.time is not None:
            keepalive["keepalive_time"] = max(1, round(ka.time))
        if ka.interval is not None:
            keepalive["keepalive_interval"] = max(1, round(ka.interval))
        resource["upstream_connection_options"] = {"tcp_keepalive": keepalive}
    return resource


def _lb_config(cluster: Cluster) -> Resource:
    """The load balancer's parameters, as Istio's applyLoadBalancer and setWarmup set them."""
    if cluster.lb_policy == "RING_HASH" and cluster.ring_hash_minimum_size is not None:
        return {"ring_hash_lb_config": {"minimum_ring_size": cluster.ring_hash_minimum_size}}
    if cluster.lb_policy == "MAGLEV" and cluster.maglev_table_size is not None:
        return {"maglev_lb_config": {"table_size": cluster.maglev_table_size}}
    slow = cluster.slow_start
    if slow is None or cluster.lb_policy not in ("LEAST_REQUEST", "ROUND_ROBIN"):
        return {}
    config = {
        "slow_start_config": {
            "slow_start_window": duration(slow.window),
            "aggression": {"default_value": slow.aggression, "runtime_key": "tcpmesh.aggression"},
            "min_weight_percent": {"value": slow.min_weight_percent},
        }
    }
    key = (
        "least_request_lb_config"
        if cluster.lb_policy == "LEAST_REQUEST"
        else "round_robin_lb_config"
    )
    return {key: config}


def load_assignment(cluster: Cluster) -> Resource:
    """The cluster's ready endpoints; none ready means an empty assignment, hence UH."""
    endpoints = [
        {
            "endpoint": {
                "address": {"socket_address": {"address": e.address, "port_value": e.port}},
                "hostname": e.workload,
            },
            "health_status": "HEALTHY",
        }
        for e in cluster.ready_endpoints
    ]
    return {
        "@type": ENDPOINT_TYPE,
        "cluster_name": cluster.name,
        "endpoints": [{"lb_endpoints": endpoints}] if endpoints else [],
    }
