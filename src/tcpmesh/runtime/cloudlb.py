"""Runs the built-in cloud load balancer while a LoadBalancer Service has a bandwidth cap.

The load balancer (``tcpmesh.dataplane.slb``, the pod ``kube-system/tcpmesh-slb``) is
the part of the cloud that enforces ``...-loadbalancer-bandwidth``; see
``tcpmesh.control.loadbalancer``. Like a cloud provider that provisions an SLB only
for the Services that ask, the runtime keeps its Deployment only while some Service
needs it, so a mesh without caps runs no extra process.
"""

from __future__ import annotations

from typing import Any

from tcpmesh.api import from_dict, models
from tcpmesh.control import (
    LOAD_BALANCER_LABELS,
    LOAD_BALANCER_NAME,
    LOAD_BALANCER_NAMESPACE,
    wants_load_balancer,
)
from tcpmesh.runtime.objects import Obj
from tcpmesh.runtime.storeapi import StoreLike

IMAGE = "tcpmesh/tcpmesh-slb:latest"
# Its readiness port (TCP probe); the gateway on the same host address has 15020/15021.
STATUS_PORT = 15031


def load_balancer_deployment() -> Obj:
    labels = dict(LOAD_BALANCER_LABELS)
    container: dict[str, Any] = {
        "name": "slb",
        "image": IMAGE,
        "env": [{"name": "TCPMESH_STATUS_PORT", "value": str(STATUS_PORT)}],
        "ports": [{"name": "status-port", "containerPort": STATUS_PORT}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": LOAD_BALANCER_NAME, "namespace": LOAD_BALANCER_NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # It owns load-balancer addresses, which are this host's.
                "spec": {"hostNetwork": True, "containers": [container]},
            },
        },
    }


def sync_load_balancer(store: StoreLike) -> None:
    """Create the load balancer's Deployment when a Service needs it; delete it after."""
    services = [from_dict(s) for s in store.list("Service")]
    wanted = wants_load_balancer(s for s in services if isinstance(s, models.Service))
    existing = store.get("Deployment", LOAD_BALANCER_NAMESPACE, LOAD_BALANCER_NAME)
    if wanted and existing is None:
        store.create(load_balancer_deployment())
    elif not wanted and existing is not None:
        store.delete("Deployment", LOAD_BALANCER_NAMESPACE, LOAD_BALANCER_NAME)
