"""Snapshot JSON: ``to_json``'s framed text and ``from_json``'s reader (control.snapshot).

A proxy is sent its whole Snapshot on every change; the reader parses only the parts it
has not seen in the last text, and must give the very Snapshot a full parse gives.
"""

from __future__ import annotations

import json

from tcpmesh.control import Cluster, Endpoint, Listener, Snapshot
from tcpmesh.control.snapshot import PartReader, RouteOrigin, TcpRoute, WeightedCluster

# Strings a naive cut at the frame's characters would split: a tab, braces, commas.
AWKWARD = 'a\t"},{"clusters":[\t,'


def cluster(name: str, address: str = "10.0.0.1") -> Cluster:
    return Cluster(
        name, "svc.default.svc.cluster.local", 9000, endpoints=(Endpoint(address, 9000),)
    )


def listener(port: int, weight: int, prefix: str = "p") -> Listener:
    route = TcpRoute(
        destinations=(WeightedCluster("a", weight), WeightedCluster("b", 100 - weight)),
        origin=RouteOrigin("VirtualService", "default", "vs", 0),
        stat_prefix=prefix,
    )
    return Listener(f"0.0.0.0_{port}", "127.0.0.1", port, (route,))


def snapshot(weight: int, prefix: str = "p") -> Snapshot:
    listeners = tuple(listener(31400 + i, weight if i == 1 else 50, prefix) for i in range(3))
    return Snapshot.build(listeners, (cluster("a"), cluster("b", "10.0.0.2")))


def test_the_framed_text_is_the_json_of_the_snapshots_dict() -> None:
    snap = snapshot(80)
    assert json.loads(snap.to_json()) == json.loads(json.dumps(snap.to_dict()))
    assert Snapshot.from_json(snap.to_json()) == snap


def test_a_second_text_reuses_the_parts_it_shares_with_the_first() -> None:
    reader = PartReader()
    first = reader.read(snapshot(80).to_json().encode())
    second = reader.read(snapshot(30).to_json().encode())
    assert first is not None and second is not None
    _, first_listeners, first_clusters = first
    version, listeners, clusters = second
    assert version == snapshot(30).version
    assert [a is b for a, b in zip(first_listeners, listeners, strict=True)] == [
        True,
        False,
        True,
    ]
    assert all(a is b for a, b in zip(first_clusters, clusters, strict=True))
    assert [d.weight for d in listeners[1].routes[0].destinations] == [30, 70]


def test_strings_holding_the_frames_characters_read_back_whole() -> None:
    snap = snapshot(80, prefix=AWKWARD)
    assert "\t" not in json.dumps(AWKWARD)  # the text holds it as \\t, not as a tab
    assert Snapshot.from_json(snap.to_json()) == snap
    assert Snapshot.from_json(snap.to_json().encode()).listeners[0].routes[0].stat_prefix == AWKWARD


def test_any_other_json_of_a_snapshot_reads_by_a_full_parse() -> None:
    snap = snapshot(80)
    compact = json.dumps(snap.to_dict(), sort_keys=True, separators=(",", ":"))
    indented = json.dumps(snap.to_dict(), indent="\t")
    assert PartReader().read(compact.encode()) is None
    assert PartReader().read(indented.encode()) is None
    assert Snapshot.from_json(compact) == snap
    assert Snapshot.from_json(indented) == snap
    assert Snapshot.from_json(Snapshot.build((), ()).to_json()) == Snapshot.build((), ())
