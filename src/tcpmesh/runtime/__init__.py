"""Runs the workloads of the store on this machine: kubelet + Deployment and Endpoints
controllers. Pods are OS processes, each on its own loopback IP (127.x.y.z)."""

from tcpmesh.runtime.endpoints import endpoint_subsets, load_balancer_status, resolve_target_port
from tcpmesh.runtime.images import BUILTIN_IMAGES, ImageNotRunnable, container_argv, image_name
from tcpmesh.runtime.ipam import allocate_ip
from tcpmesh.runtime.objects import pod_is_ready
from tcpmesh.runtime.runtime import Runtime

__all__ = [
    "BUILTIN_IMAGES",
    "ImageNotRunnable",
    "Runtime",
    "allocate_ip",
    "container_argv",
    "endpoint_subsets",
    "image_name",
    "load_balancer_status",
    "pod_is_ready",
    "resolve_target_port",
]
