"""The Aggregated Discovery Service: each Envoy gets its node's snapshot, in order.

State of the world over one ADS stream per Envoy (gRPC, ``grpc.aio``). The node id is
the gateway pod, ``namespace/name``; its snapshots come from the control plane's
``watch(node)``. Each snapshot is pushed make-before-break, as go-control-plane's ADS
mode orders it, and every step waits for Envoy's answer before the next:

1. CDS with EDS (Envoy ACKs new clusters only once their endpoints arrived), then ECDS,
   each with the new resources added to the last accepted ones (whatever the routes
   still in force use stays),
2. LDS,
3. ECDS, then CDS with EDS, with exactly the new resources (what nothing uses any more
   goes).

ACKs and NACKs are tracked per node and type URL. A NACK stops the push there: the node
stays on its last good configuration for that type and every later one, the NACK (with
Envoy's ``error_detail`` text) is kept for ``status`` until a later snapshot is applied
in full. Envoy applies the valid part of a rejected state-of-the-world response, so the
server then offers that type's last accepted resources again, and never the rejected
ones.

A request that repeats the last one (same nonce, same names, no ACK pending) is answered
again: Envoy sends it for a cluster updated by CDS, which stays warming, and holds back
its CDS ACK, until its endpoints arrive once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers the type)
from envoy.config.core.v3 import extension_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

from tcpmesh.control import SnapshotSource
from tcpmesh.xds.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    PUSH_ORDER,
    SECRET_TYPE,
    SHORT_NAMES,
    EnvoyConfig,
    Resource,
    translate,
)

log = logging.getLogger("tcpmesh.xds")

# Envoy answers a response in milliseconds; a silent stream this long is broken.
ACK_TIMEOUT = 20.0
WILDCARD_TYPES = (LISTENER_TYPE, CLUSTER_TYPE)

Transform = Callable[[EnvoyConfig], EnvoyConfig]


def content_version(resources: dict[str, Resource]) -> str:
    """Equal resource sets, equal versions, whatever snapshot they came from."""
    body = json.dumps(resources, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def to_any(resource: Resource) -> Any:
    message = any_pb2.Any()
    json_format.ParseDict(resource, message)
    return message


@dataclass
class Nack:
    type_url: str
    version: str
    snapshot: str
    error: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": SHORT_NAMES.get(self.type_url, self.type_url),
            "typeUrl": self.type_url,
            "version": self.version,
            "snapshot": self.snapshot,
            "error": self.error,
            "time": self.at,
        }


@dataclass
class NodeState:
    """What the server knows of one Envoy: kept after it disconnects, for ``status``."""

    node: str
    streams: int = 0
    # The snapshot whose every resource the node ACKed, and the one being pushed.
    applied: str = ""
    pending: str = ""
    acked: dict[str, str] = field(default_factory=dict)
    nacks: dict[str, Nack] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "connected": self.streams > 0,
            "appliedSnapshot": self.applied,
            "pendingSnapshot": self.pending,
            "acked": {SHORT_NAMES.get(t, t): v for t, v in self.acked.items()},
            "nacks": [n.to_dict() for n in self.nacks.values()],
        }


@dataclass
class _InFlight:
    version: str
    resources: dict[str, Resource]
    answer: asyncio.Future[str | None]  # None: ACK; text: NACK error_detail


@dataclass
class _TypeState:
    type_url: str
    subscribed: bool = False
    names: frozenset[str] = frozenset()
    desired: dict[str, Resource] | None = None
    desired_version: str = ""
    sent_version: str = ""
    sent_names: frozenset[str] | None = None
    sent_nonce: str = ""
    # What Envoy accepted last: every resource the server wanted it to have then.
    good: dict[str, Resource] = field(default_factory=dict)
    accepted: bool = False
    inflight: dict[str, _InFlight] = field(default_factory=dict)

    @property
    def wildcard(self) -> bool:
        return self.type_url in WILDCARD_TYPES

    def set_desired(self, resources: dict[str, Resource]) -> None:
        self.desired = resources
        self.desired_version = content_version(resources)

    def names_to_send(self) -> frozenset[str]:
        assert self.desired is not None
        if self.wildcard or "*" in self.names:
            return frozenset(self.desired)
        return frozenset(n for n in self.names if n in self.desired)


class _Stream:
    """One ADS stream: its subscriptions, its responses, and the pushes of its node."""

    def __init__(self, server: XdsServer) -> None:
        self._server = server
        self._types = {t: _TypeState(t) for t in PUSH_ORDER}
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._nonces = itertools.count(1)
        self._node: NodeState | None = None
        self._pusher: asyncio.Task[None] | None = None

    async def responses(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        reader = asyncio.create_task(self._read(requests))
        reader.add_done_callback(lambda _: self._outbox.put_nowait(None))
        try:
            while (response := await self._outbox.get()) is not None:
                yield response
            if not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            for task in (reader, self._pusher):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for state in self._types.values():
                for entry in state.inflight.values():
                    if not entry.answer.done():
                        entry.answer.cancel()
            if self._node is not None:
                self._node.streams -= 1
                log.info("xDS stream of %s closed", self._node.node)

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        async for request in requests:
            if self._node is None:
                node_id = request.node.id
                if not node_id:
                    raise ValueError("the first DiscoveryRequest names no node")
                self._node = self._server.node_state(node_id)
                self._node.streams += 1
                log.info("xDS stream of %s opened", node_id)
                self._pusher = asyncio.create_task(self._follow(node_id))
            log.debug(
                "%s: %s request version=%r nonce=%r names=%s error=%r",
                self._node.node,
                SHORT_NAMES.get(request.type_url, request.type_url),
                request.version_info,
                request.response_nonce,
                list(request.resource_names),
                request.error_detail.message,
            )
            state = self._types.get(request.type_url)
            if state is None:
                log.warning("ignoring a request for unserved type %s", request.type_url)
                continue
            answer = self._answered(state, request)
            if request.response_nonce and request.response_nonce != state.sent_nonce:
                continue  # stale: a newer response is on its way to Envoy
            names = frozenset(request.resource_names)
            if not answer and state.subscribed and names == state.names:
                # Envoy asks again for what it has: a cluster updated by CDS stays warming
                # until its endpoints come again, unchanged or not. Answer again.
                state.sent_names = None
            state.subscribed = True
            state.names = names
            self._offer(state)

    def _answered(self, state: _TypeState, request: Any) -> bool:
        """Take an ACK or NACK of a response; False when the request answers none."""
        entry = state.inflight.pop(request.response_nonce, None)
        if entry is None:
            return False
        assert self._node is not None
        if request.HasField("error_detail"):
            message = request.error_detail.message or "rejected without a message"
            log.warning(
                "%s rejected %s version %s: %s",
                self._node.node,
                SHORT_NAMES[state.type_url],
                entry.version,
                message,
            )
            self._node.nacks[state.type_url] = Nack(
                state.type_url, entry.version, self._node.pending, message, time.time()
            )
            # Envoy may have applied the valid part of a rejected state-of-the-world
            # response: offer the last accepted set again (from _read, right after this),
            # so it is back on exactly that, and never offer the rejected set again. With
            # nothing accepted on this stream yet, what Envoy runs is unknown here (it may
            # have kept a configuration across a reconnect): leave it alone.
            if state.accepted:
                state.set_desired(state.good)
                state.sent_names = None
            if not entry.answer.done():
                entry.answer.set_result(message)
        else:
            state.good = entry.resources
            state.accepted = True
            self._node.acked[state.type_url] = entry.version
            if not entry.answer.done():
                entry.answer.set_result(None)
        return True

    def _offer(self, state: _TypeState) -> asyncio.Future[str | None] | None:
        """Send the desired resources unless Envoy has (or is being sent) exactly them."""
        if not state.subscribed or state.desired is None:
            return None
        names = state.names_to_send()
        if state.sent_version == state.desired_version and state.sent_names == names:
            pending = state.inflight.get(state.sent_nonce)
            return pending.answer if pending is not None else None
        nonce = str(next(self._nonces))
        response = discovery_pb2.DiscoveryResponse(
            version_info=state.desired_version,
            resources=[to_any(state.desired[n]) for n in sorted(names)],
            type_url=state.type_url,
            nonce=nonce,
        )
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        state.inflight[nonce] = _InFlight(state.desired_version, state.desired, answer)
        state.sent_version, state.sent_names, state.sent_nonce = (
            state.desired_version,
            names,
            nonce,
        )
        log.debug(
            "%s: %s response version=%s nonce=%s names=%s",
            self._node.node if self._node else "?",
            SHORT_NAMES[state.type_url],
            state.desired_version,
            nonce,
            sorted(names),
        )
        self._outbox.put_nowait(response)
        return answer

    async def _follow(self, node_id: str) -> None:
        async for snapshot in self._server.source.watch(node_id):
            try:
                config = translate(snapshot)
                if self._server.transform is not None:
                    config = self._server.transform(config)
            except Exception:
                log.exception("%s: cannot translate a snapshot; keeping the last one", node_id)
                continue
            await self._apply(config)

    async def _apply(self, config: EnvoyConfig) -> None:
        node = self._node
        assert node is not None
        node.pending = config.snapshot_version

        def staged(type_url: str) -> tuple[str, dict[str, Resource]]:
            return type_url, {**self._types[type_url].good, **config.of(type_url)}

        def final(type_url: str) -> tuple[str, dict[str, Resource]]:
            return type_url, config.of(type_url)

        # Envoy ACKs a CDS update only once its new clusters are warm, that is once their
        # EDS arrived: clusters and endpoints go out together.
        steps = [
            [staged(CLUSTER_TYPE), staged(ENDPOINT_TYPE)],
            [staged(SECRET_TYPE), staged(EXTENSION_CONFIG_TYPE)],
            [final(LISTENER_TYPE)],
            [final(EXTENSION_CONFIG_TYPE), final(SECRET_TYPE)],
            [final(CLUSTER_TYPE), final(ENDPOINT_TYPE)],
        ]
        for step in steps:
            if not await self._push(step):
                return
        node.applied = config.snapshot_version
        node.pending = ""
        node.nacks.clear()
        log.info("%s runs snapshot %s", node.node, config.snapshot_version)

    async def _push(self, step: list[tuple[str, dict[str, Resource]]]) -> bool:
        """Offer resources and wait for Envoy's answers; False on a NACK (or no answer)."""
        node = self._node
        assert node is not None
        started = time.time()
        answers: list[asyncio.Future[str | None]] = []
        for type_url, resources in step:
            state = self._types[type_url]
            state.set_desired(resources)
            answer = self._offer(state)
            if answer is not None:
                answers.append(answer)
        if answers:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(a) for a in answers)), ACK_TIMEOUT
                )
            except TimeoutError:
                log.warning("%s: no answer in %.0fs", node.node, ACK_TIMEOUT)
                return False
        # A NACK of a response sent meanwhile on Envoy's request counts too.
        return not any(
            (nack := node.nacks.get(t)) is not None and nack.at >= started for t, _ in step
        )


class _Servicer:
    """envoy.service.discovery.v3.AggregatedDiscoveryService, state of the world only."""

    def __init__(self, server: XdsServer) -> None:
        self._server = server

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for response in _Stream(self._server).responses(request_iterator):
            yield response

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "tcpmesh serves state-of-the-world ADS only"
        )


class XdsServer:
    """ADS over gRPC on ``host:port`` (0: any free port), fed by a snapshot source.

    ``transform`` rewrites every translated configuration before it is served: the
    conformance tests serve Istio's listener layout through it, to show the difference.
    """

    def __init__(
        self,
        source: SnapshotSource,
        host: str = "127.0.0.1",
        port: int = 0,
        transform: Transform | None = None,
    ) -> None:
        self.source = source
        self.transform = transform
        self.host = host
        self.port = port
        self._nodes: dict[str, NodeState] = {}
        self._grpc: Any = None

    def node_state(self, node_id: str) -> NodeState:
        return self._nodes.setdefault(node_id, NodeState(node_id))

    async def start(self) -> int:
        # No SO_REUSEPORT: a port another server holds must fail to bind, not be shared
        # (a restarted mesh asks for its previous port; see tcpmesh.mesh).
        self._grpc = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), self._grpc)
        self.port = self._grpc.add_insecure_port(f"{self.host}:{self.port}")
        await self._grpc.start()
        log.info("xDS (ADS) on %s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(0.5)
            self._grpc = None

    def status(self) -> dict[str, Any]:
        return {
            "address": f"{self.host}:{self.port}",
            "nodes": [self._nodes[n].to_dict() for n in sorted(self._nodes)],
        }
