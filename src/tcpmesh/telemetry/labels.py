"""Istio's standard TCP metric labels, worked out from Snapshot objects and the pod's env.

The names and values follow Istio's standard metrics (istio/istio
``tests/integration/telemetry`` and the ``istio.stats`` filter's defaults): a reporting
proxy fills the ``source_*`` labels from its own pod and the ``destination_*`` labels
from the peer it connected to. tcpmesh has no mTLS, so both principals are
``unknown``, as Istio reports them for plain-text peers; ``connection_security_policy``
is ``unknown`` for ``reporter="source"``, as in Istio. Both data planes call these
functions, so the series they expose carry the same label values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tcpmesh.control import Cluster, Endpoint, WeightedCluster

UNKNOWN = "unknown"
# Istio's default cluster id (``values.global.multiCluster.clusterName``).
CLUSTER_ID = "Kubernetes"

SOURCE_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "source_version",
    "source_principal",
    "source_cluster",
)
DESTINATION_LABELS = (
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_principal",
    "destination_cluster",
)
CONNECTION_LABELS = ("request_protocol", "response_flags", "connection_security_policy")

# The values of DESTINATION_LABELS, in that order.
Destination = tuple[str, str, str, str, str, str, str, str, str]

# A ReplicaSet's pod: <deployment>-<pod-template-hash>-<suffix>.
_POD_OF_DEPLOYMENT = re.compile(r"^(?P<workload>.+)-[a-z0-9]{5,10}-[a-z0-9]{5}$")


def workload_of(pod_name: str) -> str:
    """The workload (Deployment) name of a pod, as Istio's ``destination_workload``."""
    match = _POD_OF_DEPLOYMENT.match(pod_name)
    return match.group("workload") if match else pod_name


def _app(labels: Mapping[str, str]) -> str:
    return labels.get("app.kubernetes.io/name") or labels.get("app") or UNKNOWN


def _version(labels: Mapping[str, str]) -> str:
    return labels.get("app.kubernetes.io/version") or labels.get("version") or UNKNOWN


def service_parts(host: str) -> tuple[str, str]:
    """(destination_service_name, destination_service_namespace) of a host name.

    ``tcp-echo.default.svc.cluster.local`` → (tcp-echo, default); any other host (a
    ServiceEntry's) is its own name with an unknown namespace."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[0], parts[1]
    return host or UNKNOWN, UNKNOWN


def destination(
    weighted: WeightedCluster | None, cluster: Cluster | None, endpoint: Endpoint | None
) -> Destination:
    """The destination labels of a connection to ``endpoint`` of ``cluster``, picked as
    the route's share ``weighted``; structured fields only, never a cluster name taken
    apart.

    Without an endpoint (NC, UH, UO) Istio knows only the service; tcpmesh also keeps the
    subset as ``destination_version`` there, so a failed share stays attributable to the
    version it was meant for (``sum by (destination_version, response_flags)``)."""
    if cluster is not None:
        service, subset = cluster.service, cluster.subset
    elif weighted is not None:
        service, subset = weighted.service, weighted.subset
    else:
        service, subset = "", ""
    name, namespace = service_parts(service) if service else (UNKNOWN, UNKNOWN)
    if endpoint is None:
        return (
            UNKNOWN,
            UNKNOWN,
            UNKNOWN,
            subset or UNKNOWN,
            service or UNKNOWN,
            name,
            namespace,
            UNKNOWN,
            UNKNOWN,
        )
    labels = endpoint.label_dict()
    pod_namespace, _, pod = endpoint.workload.partition("/")
    return (
        workload_of(pod) if pod else UNKNOWN,
        pod_namespace or UNKNOWN,
        _app(labels),
        _version(labels),
        service or UNKNOWN,
        name,
        namespace,
        UNKNOWN,
        CLUSTER_ID,
    )


def common_destination(cluster: Cluster) -> Destination:
    """The labels every endpoint of ``cluster`` shares; a label they disagree on is unknown.

    For a data plane that counts per cluster rather than per endpoint (Envoy's cluster
    stats): a subset is normally one workload, and then this equals ``destination``."""
    rows = [destination(None, cluster, e) for e in cluster.endpoints]
    if not rows:
        return destination(None, cluster, None)
    first = rows[0]
    merged = tuple(v if all(r[i] == v for r in rows) else UNKNOWN for i, v in enumerate(first))
    return merged  # type: ignore[return-value]


@dataclass(frozen=True)
class Source:
    """The reporting proxy's own labels (its pod), the same on every series."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Source:
        """From the pod's environment: POD_NAME, POD_NAMESPACE and, as Istio's injector
        sets them, ISTIO_META_WORKLOAD_NAME and the ``app``/``version`` pod labels passed
        as TCPMESH_POD_APP / TCPMESH_POD_VERSION (downward API)."""
        pod = env.get("POD_NAME", "")
        workload = env.get("ISTIO_META_WORKLOAD_NAME") or (workload_of(pod) if pod else "")
        return cls(
            workload=workload or UNKNOWN,
            namespace=env.get("POD_NAMESPACE") or UNKNOWN,
            app=env.get("TCPMESH_POD_APP") or UNKNOWN,
            version=env.get("TCPMESH_POD_VERSION") or UNKNOWN,
        )

    def values(self) -> tuple[str, ...]:
        """The values of SOURCE_LABELS; a gateway reports as the connection's source."""
        return (
            "source",
            self.workload,
            self.namespace,
            self.app,
            self.version,
            UNKNOWN,
            CLUSTER_ID,
        )
