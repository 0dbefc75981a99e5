"""Pod IPs: one loopback address per pod, so every replica can bind its containerPort.

Linux routes all of 127.0.0.0/8 to the loopback interface, so no interface setup is
needed. Addresses start at 127.1.0.1 (clear of 127.0.0.1, where users run other
things) and never end in .0 or .255, which some tools treat as network or broadcast.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterator

FIRST_POD_IP = "127.1.0.1"
_LAST = int(ipaddress.IPv4Address("127.255.255.254"))


class AddressesExhausted(RuntimeError):
    """Every pod address in 127.1.0.1-127.255.255.254 is taken."""


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


def allocate_ip(used: Collection[str], first: str = FIRST_POD_IP) -> str:
    """The lowest pod address not in ``used``: stable, so the first pod is 127.1.0.1."""
    for address in pod_ips(first):
        if address not in used:
            return address
    raise AddressesExhausted(f"no free pod address left in {first}-127.255.255.254")
