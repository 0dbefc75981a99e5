"""Sticky versions: the weighted pick of a route by a consistent hash of the client address.

Istio's and Envoy's source-IP hashing (``consistentHash.useSourceIp``) only picks an
endpoint *inside* the version that a random weighted draw already chose, so a client
changes version from one connection to the next. With ``version-affinity: source-ip`` the
draw itself is a function of the client address: each address maps to a point ``u`` in
[0, 1), and the route's destinations own consecutive intervals of [0, 1) in their order,
each as long as its share of the weight. So:

- the same address always gets the same version while the weights stand;
- a weight change moves only the addresses whose point crosses a boundary that moved:
  from 80/20 to 70/30 exactly those in [0.7, 0.8), a tenth, which is the least any
  assignment can move (for two versions; for more, each boundary moves by the change of
  the weights before it);
- the point is Knuth's multiplicative (Fibonacci) hash of the address as an integer.
  Addresses that differ in their low bits, as a subnet of clients does, land as evenly
  over [0, 1) as any sequence can (the three-gap theorem), so the shares follow the
  weights more closely than a random draw would; unrelated addresses look random.

Inside the version, the DestinationRule's load balancer still picks the endpoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from tcpmesh.control import WeightedCluster

_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / phi, odd
_MASK = (1 << 64) - 1


def address_point(address: str) -> float:
    """The client's point in [0, 1) (IPv6 folded to 64 bits; ValueError for a non-IP)."""
    value = int(ipaddress.ip_address(address))
    if value >> 64:
        value = (value >> 64) ^ (value & _MASK)
    return ((value * _GOLDEN) & _MASK) / 2**64


def pick_by_address(
    destinations: Sequence[WeightedCluster], address: str | None
) -> WeightedCluster | None:
    """The destination owning the client's point; None if every weight is 0.

    A connection without a usable address (a Unix socket) takes the first destination's
    interval at point 0, so it is still deterministic."""
    total = sum(d.weight for d in destinations)
    if total <= 0:
        return None
    try:
        point = address_point(address) if address else 0.0
    except ValueError:
        point = 0.0
    target = point * total
    cumulative = 0
    for destination in destinations:
        cumulative += destination.weight
        if target < cumulative:
            return destination
    return destinations[-1]
