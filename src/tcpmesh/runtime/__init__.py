"""Runs the workloads of the store on this machine: kubelet + Deployment and Endpoints
controllers. Pods are OS processes, each on its own loopback IP (127.x.y.z)."""

from tcpmesh.runtime import volumes
from tcpmesh.runtime.endpoints import endpoint_subsets, resolve_target_port
from tcpmesh.runtime.events import EventRecorder, Happening
from tcpmesh.runtime.images import BUILTIN_IMAGES, ImageNotRunnable, container_argv, image_name
from tcpmesh.runtime.ipam import allocate_ip
from tcpmesh.runtime.loadbalancers import assign_load_balancers
from tcpmesh.runtime.objects import pod_is_ready
from tcpmesh.runtime.podcap import DEFAULT_MAX_PODS, replica_cap_errors
from tcpmesh.runtime.runtime import Runtime

__all__ = [
    "BUILTIN_IMAGES",
    "DEFAULT_MAX_PODS",
    "EventRecorder",
    "Happening",
    "ImageNotRunnable",
    "Runtime",
    "allocate_ip",
    "assign_load_balancers",
    "container_argv",
    "endpoint_subsets",
    "image_name",
    "pod_is_ready",
    "replica_cap_errors",
    "resolve_target_port",
    "volumes",
]
