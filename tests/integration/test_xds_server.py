"""The ADS server against a scripted Envoy over real gRPC: order, ACK/NACK, status."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("envoy.service.discovery.v3.ads_pb2_grpc")

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.rpc import status_pb2  # noqa: E402

from tcpmesh.control.snapshot import (  # noqa: E402
    Cluster,
    Endpoint,
    Listener,
    RouteOrigin,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)
from tcpmesh.xds.server import XdsServer  # noqa: E402
from tcpmesh.xds.translate import (  # noqa: E402
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    SHORT_NAMES,
)

ORIGIN = RouteOrigin("VirtualService", "default", "tcp-echo", 0)

pytestmark = pytest.mark.integration

NODE = "istio-system/gw-1"
V1 = "outbound|9000|v1|echo.default.svc.cluster.local"
V2 = "outbound|9000|v2|echo.default.svc.cluster.local"
TIMEOUT = 5.0


def make_snapshot(weights: dict[str, int], clusters: tuple[str, ...] = (V1, V2)) -> Snapshot:
    route = TcpRoute(tuple(WeightedCluster(n, w) for n, w in weights.items()), ORIGIN, "x")
    listener = Listener("0.0.0.0_31400", "127.0.0.1", 31400, (route,))
    return Snapshot.build(
        (listener,),
        tuple(
            Cluster(n, "echo", 9000, n.split("|")[2], endpoints=(Endpoint("127.1.0.1", 9000),))
            for n in clusters
        ),
    )


class Source:
    """The control plane's ``watch(node)``: every snapshot put, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Snapshot] = asyncio.Queue()

    def current(self, node_id: str) -> Snapshot | None:
        return None

    async def watch(self, node_id: str) -> AsyncIterator[Snapshot]:
        assert node_id == NODE
        while True:
            yield await self.queue.get()


class FakeEnvoy:
    """Speaks ADS like Envoy: wildcard CDS/LDS, EDS and ECDS names from what it received."""

    def __init__(
        self,
        port: int,
        reject: Callable[[str, list[dict[str, Any]]], str | None],
        lose: Callable[[str, list[dict[str, Any]]], bool] = lambda _t, _r: False,
    ):
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self._call: Any = None
        self._reject = reject
        # Responses that never reach it (as one lost on the way): no answer at all.
        self._lose = lose
        self.received: list[tuple[str, list[str]]] = []
        self._accepted: dict[str, str] = {}
        self._nonce: dict[str, str] = {}
        self._names: dict[str, list[str]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
            self._channel
        ).StreamAggregatedResources()
        await self._request(CLUSTER_TYPE, node=True)
        await self._request(LISTENER_TYPE)
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._call.cancel()
        await self._channel.close()

    async def _request(self, type_url: str, node: bool = False, error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            version_info=self._accepted.get(type_url, ""),
            response_nonce=self._nonce.get(type_url, ""),
            resource_names=self._names.get(type_url, []),
        )
        if node:
            request.node.id = NODE
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self._call.write(request)

    async def ask_again(self, type_url: str) -> None:
        """What Envoy does for a cluster updated by CDS: the same EDS request once more."""
        await self._request(type_url)

    async def _read(self) -> None:
        async for response in self._call:
            resources = [json_format.MessageToDict(r) for r in response.resources]
            names = [str(r.get("name") or r.get("clusterName")) for r in resources]
            self.received.append((SHORT_NAMES[response.type_url], sorted(names)))
            if self._lose(response.type_url, resources):
                continue
            self._nonce[response.type_url] = response.nonce
            error = self._reject(response.type_url, resources)
            if error is not None:
                await self._request(response.type_url, error=error)
                continue
            # As Envoy does: the new clusters' endpoints, and the new listeners' filter
            # configs, are asked for before the ACK (the server may finish a push as soon
            # as the LDS ACK is in: the filters must be subscribed by then).
            if response.type_url == CLUSTER_TYPE:
                await self._subscribe(ENDPOINT_TYPE, names)
            if response.type_url == LISTENER_TYPE:
                filters = [
                    f["name"]
                    for r in resources
                    for chain in r.get("filterChains", [])
                    for f in chain.get("filters", [])
                ]
                await self._subscribe(EXTENSION_CONFIG_TYPE, filters)
            self._accepted[response.type_url] = response.version_info
            await self._request(response.type_url)

    async def _subscribe(self, type_url: str, names: list[str]) -> None:
        if sorted(names) != sorted(self._names.get(type_url, [])):
            self._names[type_url] = sorted(names)
            await self._request(type_url)


def never(_type_url: str, _resources: list[dict[str, Any]]) -> str | None:
    return None


def run_async(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A plain test that runs the coroutine on its own loop, bounded in time."""

    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), 30))

    return wrapper


async def eventually(what: str, predicate: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Rig:
    def __init__(
        self,
        reject: Callable[[str, list[dict[str, Any]]], str | None],
        lose: Callable[[str, list[dict[str, Any]]], bool] = lambda _t, _r: False,
        ack_timeout: float = 20.0,
    ) -> None:
        self.source = Source()
        self.server = XdsServer(self.source, ack_timeout=ack_timeout)
        self.reject = reject
        self.lose = lose
        self.envoy: FakeEnvoy | None = None

    async def __aenter__(self) -> Rig:
        port = await self.server.start()
        self.envoy = FakeEnvoy(port, self.reject, self.lose)
        await self.envoy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        await self.server.stop()

    def node(self) -> dict[str, Any]:
        nodes = self.server.status()["nodes"]
        return dict(nodes[0]) if nodes else {}

    async def push(self, snapshot: Snapshot) -> None:
        await self.source.queue.put(snapshot)
        await eventually(
            f"snapshot {snapshot.version}",
            lambda: self.node().get("appliedSnapshot") == snapshot.version,
        )

    def received(self) -> list[tuple[str, list[str]]]:
        assert self.envoy is not None
        return self.envoy.received


@run_async
async def test_first_push_orders_clusters_endpoints_listeners_filters() -> None:
    async with Rig(never) as rig:
        snap = make_snapshot({V1: 100})
        await rig.push(snap)
        order = [t for t, _ in rig.received()]
        assert order.index("CDS") < order.index("EDS") < order.index("LDS") < order.index("ECDS")
        assert ("CDS", sorted([V1, V2])) in rig.received()
        assert ("LDS", ["0.0.0.0_31400"]) in rig.received()
        assert ("ECDS", ["0.0.0.0_31400~0"]) in rig.received()
        node = rig.node()
        assert node["connected"] is True
        assert set(node["acked"]) == {"CDS", "EDS", "LDS", "ECDS"}
        assert node["nacks"] == []


@run_async
async def test_weight_change_is_one_extension_config_update() -> None:
    async with Rig(never) as rig:
        await rig.push(make_snapshot({V1: 100}))
        before = len(rig.received())
        await rig.push(make_snapshot({V1: 80, V2: 20}))
        assert rig.received()[before:] == [("ECDS", ["0.0.0.0_31400~0"])]


@run_async
async def test_removed_cluster_goes_only_after_the_route_moved_away() -> None:
    async with Rig(never) as rig:
        await rig.push(make_snapshot({V1: 100}, clusters=(V1,)))
        before = len(rig.received())
        await rig.push(make_snapshot({V2: 100}, clusters=(V2,)))
        after = rig.received()[before:]
        cds = [names for t, names in after if t == "CDS"]
        # Make before break: first both clusters, the last one only once routes moved.
        assert cds == [sorted([V1, V2]), [V2]]
        kinds = [t for t, _ in after]
        assert kinds.index("ECDS") < len(kinds) - 1 - kinds[::-1].index("CDS")


@run_async
async def test_nack_keeps_the_node_on_its_last_good_config_until_a_good_snapshot() -> None:
    def reject_v3(type_url: str, resources: list[dict[str, Any]]) -> str | None:
        if type_url == CLUSTER_TYPE and any("|v3|" in r["name"] for r in resources):
            return "Proto constraint validation failed: connect_timeout must be > 0s"
        return None

    v3 = "outbound|9000|v3|echo.default.svc.cluster.local"
    async with Rig(reject_v3) as rig:
        good = make_snapshot({V1: 100})
        await rig.push(good)
        before = len(rig.received())
        bad = make_snapshot({v3: 100}, clusters=(V1, V2, v3))
        await rig.source.queue.put(bad)
        await eventually("the NACK", lambda: bool(rig.node()["nacks"]))
        node = rig.node()
        (nack,) = node["nacks"]
        assert nack["type"] == "CDS"
        assert nack["snapshot"] == bad.version
        assert "connect_timeout must be > 0s" in nack["error"]
        assert node["appliedSnapshot"] == good.version
        assert node["pendingSnapshot"] == bad.version
        await asyncio.sleep(0.2)
        after = rig.received()[before:]
        # No route moves after the rejected clusters, and the clusters are rolled back
        # (the endpoints Envoy has did not change, and v3's it never asked for).
        assert [t for t, _ in after] == ["CDS", "CDS"]
        assert after[0] == ("CDS", sorted([V1, V2, v3]))
        assert after[-1] == ("CDS", sorted([V1, V2]))
        fixed = make_snapshot({V2: 100})
        await rig.push(fixed)
        assert rig.node()["nacks"] == []
        assert rig.node()["pendingSnapshot"] == ""


@run_async
async def test_status_keeps_a_node_after_it_disconnects() -> None:
    async with Rig(never) as rig:
        await rig.push(make_snapshot({V1: 100}))
        assert rig.envoy is not None
        await rig.envoy.stop()
        rig.envoy = None
        await eventually("the disconnect", lambda: rig.node()["connected"] is False)
        assert rig.server.status()["address"].startswith("127.0.0.1:")


@run_async
async def test_a_repeated_request_is_answered_again() -> None:
    async with Rig(never) as rig:
        await rig.push(make_snapshot({V1: 100}))
        assert rig.envoy is not None
        before = len(rig.received())
        await rig.envoy.ask_again(ENDPOINT_TYPE)
        await eventually("the EDS answer", lambda: len(rig.received()) > before)
        assert rig.received()[before:] == [("EDS", sorted([V1, V2]))]
        await asyncio.sleep(0.1)
        # The answer's ACK is not taken for another request.
        assert len(rig.received()) == before + 1


@run_async
async def test_a_node_that_missed_a_push_gets_the_current_state_again() -> None:
    lost: list[str] = []

    def lose_first_weight_change(type_url: str, resources: list[dict[str, Any]]) -> bool:
        weighted = "weightedClusters" in str(resources)
        if type_url == EXTENSION_CONFIG_TYPE and weighted and not lost:
            lost.append(type_url)
            return True
        return False

    async with Rig(never, lose_first_weight_change, ack_timeout=0.3) as rig:
        await rig.push(make_snapshot({V1: 100}))
        before = len(rig.received())
        # The ECDS response of the change never arrives: no ACK, no NACK, no new change.
        await rig.push(make_snapshot({V1: 80, V2: 20}))
        assert lost == [EXTENSION_CONFIG_TYPE]
        # After the timeout the filter config went again, and that one was ACKed.
        assert rig.received()[before:] == [("ECDS", ["0.0.0.0_31400~0"])] * 2
        assert rig.node()["resends"] == 1
