"""Pod IP allocation on the loopback network."""

from __future__ import annotations

import ipaddress
import itertools
import random
import socket

import pytest

from tcpmesh.runtime.ipam import allocate_ip, is_pod_ip, pod_ips, port_is_free


def test_the_first_pod_gets_127_1_0_1() -> None:
    assert allocate_ip(set()) == "127.1.0.1"


def test_the_lowest_free_address_is_taken() -> None:
    assert allocate_ip({"127.1.0.1", "127.1.0.2", "127.1.0.4"}) == "127.1.0.3"


def test_addresses_never_end_in_0_or_255() -> None:
    first = list(itertools.islice(pod_ips(), 600))
    assert first[253] == "127.1.0.254"
    assert first[254] == "127.1.1.1"
    assert not any(ip.endswith((".0", ".255")) for ip in first)
    assert len(set(first)) == len(first)


def test_pod_addresses_stop_below_the_service_range() -> None:
    assert list(pod_ips("127.238.255.253")) == ["127.238.255.253", "127.238.255.254"]


def test_allocation_skips_a_whole_taken_block() -> None:
    used = {f"127.1.0.{i}" for i in range(1, 255)}
    assert allocate_ip(used) == "127.1.1.1"


def test_unrelated_addresses_in_use_do_not_matter() -> None:
    assert allocate_ip({"127.0.0.1", "10.0.0.1", ""}) == "127.1.0.1"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.1.0.1", True),
        ("127.200.3.254", True),
        ("127.238.255.254", True),
        # Cluster IPs (127.240.0.0/12), load-balancer backends (127.239.0.0/16) and the node
        # network (127.0.0.0/16) are never pods'.
        ("127.239.0.1", False),
        ("127.240.1.1", False),
        ("127.255.255.254", False),
        ("127.0.5.1", False),
        ("127.0.0.1", False),
        ("127.1.0.0", False),
        ("127.1.0.255", False),
        ("10.1.0.1", False),
        ("", False),
        ("not an ip", False),
    ],
)
def test_is_pod_ip(address: str, expected: bool) -> None:
    assert is_pod_ip(address) is expected


@pytest.mark.integration
def test_addresses_where_a_pod_port_is_taken_are_skipped() -> None:
    # Another mesh, or a process one left behind, listens on the first address.
    first = f"127.{random.randint(100, 230)}.{random.randint(0, 255)}.1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind((first, 0))
        other.listen()
        port = other.getsockname()[1]
        assert allocate_ip(set(), first, ports=[port]) == str(ipaddress.IPv4Address(first) + 1)
        # Without ports to check, or when only another port is taken, nothing is skipped.
        assert allocate_ip(set(), first) == first
        free = next(p for p in range(port + 1, port + 100) if port_is_free(first, p))
        assert allocate_ip(set(), first, ports=[free]) == first
    assert allocate_ip(set(), first, ports=[port]) == first
