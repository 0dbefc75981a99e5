"""The objects a joined peer stands for, built by the API server from what it trusts.

A gateway host becomes a Pod of its gateway Deployment (the Deployment's template labels,
``hostNetwork``, the host's address as pod IP), so the control plane builds its snapshot
like any gateway pod's and the Service's endpoints and load-balancer status count it. A
workload host becomes a WorkloadEntry made from its WorkloadGroup as Istio's
auto-registration makes it (the group's labels and annotations, the template with the
host's address, ``istio.io/autoRegistrationGroup``, health checks enabled when the group
has a probe). The peer only says whether it is ready; its labels come from the stored
Deployment or group and its address from its certificate, so a peer cannot claim to be
another version or another host.

Each heartbeat renews a lease kept in two annotations (the fields of a Kubernetes
``Lease``); the leader's runtime deletes objects whose lease ran out (``expired``).
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from typing import Any

from tcpmesh.join.identity import PeerIdentity

JOINED_NODE = "tcpmesh.io/joined-node"
RENEW_TIME = "tcpmesh.io/renew-time"
LEASE_SECONDS = "tcpmesh.io/lease-duration-seconds"
AUTO_REGISTRATION_GROUP = "istio.io/autoRegistrationGroup"
HEALTH_CHECKS = "proxy.istio.io/health-checks-enabled"
# A beat every third of it, retried each second when no server answers: a link cut for
# 10 s keeps the lease.
DEFAULT_LEASE_SECONDS = 20

Obj = dict[str, Any]


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease(identity: PeerIdentity, now: datetime.datetime, lease_seconds: int) -> dict[str, str]:
    return {
        JOINED_NODE: identity.node,
        RENEW_TIME: _stamp(now),
        LEASE_SECONDS: str(lease_seconds),
    }


def is_joined(obj: Mapping[str, Any]) -> bool:
    """Whether a remote peer registered this object (the local runtime never runs it)."""
    return JOINED_NODE in ((obj.get("metadata") or {}).get("annotations") or {})


def expired(obj: Mapping[str, Any], now: datetime.datetime) -> bool:
    """Whether a joined object's lease ran out (its agent stopped renewing it)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if JOINED_NODE not in annotations:
        return False
    try:
        renewed = datetime.datetime.fromisoformat(annotations[RENEW_TIME].replace("Z", "+00:00"))
        seconds = int(annotations[LEASE_SECONDS])
    except (KeyError, ValueError):
        return True  # a lease that cannot be read cannot be trusted to be held
    return renewed + datetime.timedelta(seconds=seconds) < now


def gateway_pod(
    deployment: Mapping[str, Any],
    identity: PeerIdentity,
    address: str,
    *,
    ready: bool,
    now: datetime.datetime,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
) -> tuple[Obj, Obj]:
    """The Pod and its status for a gateway host of ``deployment``."""
    template = (deployment.get("spec") or {}).get("template") or {}
    meta = template.get("metadata") or {}
    annotations = {**(meta.get("annotations") or {}), **_lease(identity, now, lease_seconds)}
    spec = copy.deepcopy(template.get("spec") or {})
    spec.update(hostNetwork=True, nodeName=identity.node)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": identity.object_name,
            "namespace": identity.namespace,
            "labels": dict(meta.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": spec,
    }
    status = {
        "phase": "Running",
        "hostIP": address,
        "podIP": address,
        "podIPs": [{"ip": address}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return pod, status


def workload_entry(
    group: Mapping[str, Any],
    identity: PeerIdentity,
    address: str,
    *,
    healthy: bool,
    now: datetime.datetime,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
) -> tuple[Obj, Obj]:
    """The WorkloadEntry and its status for a workload host of WorkloadGroup ``group``."""
    spec = group.get("spec") or {}
    meta = spec.get("metadata") or {}
    template = copy.deepcopy(spec.get("template") or {})
    template["address"] = address
    annotations = {
        **(meta.get("annotations") or {}),
        AUTO_REGISTRATION_GROUP: identity.name,
        **_lease(identity, now, lease_seconds),
    }
    if spec.get("probe"):
        annotations[HEALTH_CHECKS] = "true"
    group_meta = group.get("metadata") or {}
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {
            "name": identity.object_name,
            "namespace": identity.namespace,
            "labels": dict(meta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": group.get("apiVersion", "networking.istio.io/v1"),
                    "kind": "WorkloadGroup",
                    "name": identity.name,
                    "uid": group_meta.get("uid", ""),
                    "controller": True,
                }
            ],
        },
        "spec": template,
    }
    condition = {"type": "Healthy", "status": "True" if healthy else "False"}
    return entry, {"conditions": [condition]}
