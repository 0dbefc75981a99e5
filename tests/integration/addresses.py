"""Gateway addresses for tests on a machine that other suites share.

A gateway listens on fixed ports (31400, 15020, 15021) of its address, with SO_REUSEPORT,
so two meshes on one address would share connections. Each test module takes the first
loopback address, from its own starting point on, where nothing listens on those ports.
"""

from __future__ import annotations

import ipaddress
import socket

GATEWAY_PORTS = (31400, 15020, 15021)


def _free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def idle_gateway_address(first: str, tries: int = 200) -> str:
    start = ipaddress.ip_address(first)
    for i in range(tries):
        address = str(start + i)
        if all(_free(address, port) for port in GATEWAY_PORTS):
            return address
    raise AssertionError(f"no loopback address from {first} with {GATEWAY_PORTS} free")
