"""Where every kind of address lives on the loopback network, stated once.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a mesh on one machine can
give each pod, each Service and each load balancer its own address without touching an
interface. The ranges never overlap, so no cluster IP can be a pod's IP:

- 127.0.0.0/16: the node and its load balancers (``up --address``, ``spec.loadBalancerIP``);
- 127.1.0.1 - 127.238.255.254: pod IPs (:mod:`tcpmesh.runtime.ipam`);
- 127.239.0.0/16: the backends of capped load balancers (the ingress gateway behind the
  bandwidth-capping SLB layer listens there, see ``control.loadbalancer``);
- 127.240.0.0/12: cluster IPs, as Kubernetes' default service range is 10.96.0.0/12;
- 30000-32767: node ports, Kubernetes' default ``--service-node-port-range``.

Automatic allocation takes the lowest free value above a small lower band that is kept
for values users ask for, as Kubernetes does (KEP-3070 for cluster IPs, KEP-3668 for node
ports), so a Service created later that asks for 127.240.0.10 rarely finds it taken.
Lowest-free rather than Kubernetes' random pick keeps addresses predictable across
``down``/``up`` and in tests.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator

SERVICE_CIDR = ipaddress.IPv4Network("127.240.0.0/12")
NODE_NETWORK = ipaddress.IPv4Network("127.0.0.0/16")
LB_BACKEND_NETWORK = ipaddress.IPv4Network("127.239.0.0/16")
FIRST_POD_IP = "127.1.0.1"
LAST_POD_IP = "127.238.255.254"
NODE_PORT_RANGE = range(30000, 32768)

# Kubernetes' static band: min(max(16, size/16), 256) addresses, min(max(16, size/32), 128) ports.
_IP_BAND = min(max(16, SERVICE_CIDR.num_addresses // 16), 256)
_PORT_BAND = min(max(16, len(NODE_PORT_RANGE) // 32), 128)


def node_port_range_text() -> str:
    """``30000-32767``: how Kubernetes names the range in its messages."""
    return f"{NODE_PORT_RANGE.start}-{NODE_PORT_RANGE.stop - 1}"


def in_service_range(address: ipaddress.IPv4Address) -> bool:
    """Whether ``address`` is a usable cluster IP (not the range's network or broadcast)."""
    return address in SERVICE_CIDR and address not in (
        SERVICE_CIDR.network_address,
        SERVICE_CIDR.broadcast_address,
    )


def cluster_ip_candidates() -> Iterator[str]:
    """Cluster IPs in the order automatic allocation tries them.

    Above the static band first, then the band; never an address ending in .0 or .255,
    which some tools take for a network or broadcast address.
    """
    first = int(SERVICE_CIDR.network_address)
    last = int(SERVICE_CIDR.broadcast_address)
    for value in itertools.chain(range(first + _IP_BAND, last), range(first + 1, first + _IP_BAND)):
        if value & 0xFF not in (0, 0xFF):
            yield str(ipaddress.IPv4Address(value))


def node_port_candidates() -> Iterator[int]:
    """Node ports in the order automatic allocation tries them: above the band, then in it."""
    start, stop = NODE_PORT_RANGE.start, NODE_PORT_RANGE.stop
    yield from range(start + _PORT_BAND, stop)
    yield from range(start, start + _PORT_BAND)


def is_load_balancer_address(address: str) -> bool:
    """Whether ``address`` may serve a load balancer: an IPv4 address of 127.0.0.0/16."""
    try:
        value = ipaddress.IPv4Address(address)
    except ipaddress.AddressValueError:
        return False
    return value in NODE_NETWORK
