"""Service addresses: the loopback ranges, and the registry that allocates cluster IPs and
node ports atomically with each Service write (Kubernetes' Service REST storage)."""

from tcpmesh.registry.allocation import (
    ServiceRejected,
    Taken,
    allocate,
    needs_cluster_ip,
    shared_address_ports,
)
from tcpmesh.registry.ranges import (
    FIRST_POD_IP,
    LAST_POD_IP,
    LB_BACKEND_NETWORK,
    NODE_NETWORK,
    NODE_PORT_RANGE,
    SERVICE_CIDR,
    is_load_balancer_address,
    node_port_range_text,
)
from tcpmesh.registry.registry import LOCK_KIND, ServiceRegistry

__all__ = [
    "FIRST_POD_IP",
    "LAST_POD_IP",
    "LB_BACKEND_NETWORK",
    "LOCK_KIND",
    "NODE_NETWORK",
    "NODE_PORT_RANGE",
    "SERVICE_CIDR",
    "ServiceRegistry",
    "ServiceRejected",
    "Taken",
    "allocate",
    "is_load_balancer_address",
    "needs_cluster_ip",
    "node_port_range_text",
    "shared_address_ports",
]
