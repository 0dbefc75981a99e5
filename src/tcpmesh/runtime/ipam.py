"""Pod IPs: one loopback address per pod, so every replica can bind its containerPort.

Linux routes all of 127.0.0.0/8 to the loopback interface, so no interface setup is
needed. Pod addresses are 127.1.0.1-127.238.255.254 (clear of 127.0.0.0/16, the node and
its load balancers, 127.239.0.0/16, their backends, and 127.240.0.0/12, the cluster IPs:
:mod:`tcpmesh.registry` states every range) and never end in .0 or .255, which some
tools treat as network or broadcast.
Another mesh on the same machine (or a process it left behind) may already listen on
an address, so a new pod skips addresses where one of its ports cannot be bound.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection, Iterator

from tcpmesh.registry import FIRST_POD_IP, LAST_POD_IP

_LAST = int(ipaddress.IPv4Address(LAST_POD_IP))


class AddressesExhausted(RuntimeError):
    """Every pod address up to 127.238.255.254 is taken."""


def pod_ips(first: str = FIRST_POD_IP) -> Iterator[str]:
    """All pod addresses from ``first`` on, lowest first."""
    for value in range(int(ipaddress.IPv4Address(first)), _LAST + 1):
        if value & 0xFF not in (0, 0xFF):
            yield str(ipaddress.IPv4Address(value))


def is_pod_ip(address: str, first: str = FIRST_POD_IP) -> bool:
    """Whether ``address`` is one `pod_ips` (first) would hand out."""
    try:
        value = int(ipaddress.IPv4Address(address))
    except ipaddress.AddressValueError:
        return False
    return int(ipaddress.IPv4Address(first)) <= value <= _LAST and value & 0xFF not in (0, 0xFF)


def allocate_ip(
    used: Collection[str], first: str = FIRST_POD_IP, ports: Collection[int] = ()
) -> str:
    """The lowest pod address not in ``used`` where every TCP port in ``ports`` is free.

    Stable, so the first pod is 127.1.0.1 unless something else already listens there.
    """
    for address in pod_ips(first):
        if address not in used and all(port_is_free(address, port) for port in ports):
            return address
    raise AddressesExhausted(f"no free pod address left in {first}-{LAST_POD_IP}")


def port_is_free(address: str, port: int) -> bool:
    """Whether a TCP server could bind ``address:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do, so that connections of a process that just exited do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
