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

ACKs and NACKs are tracked per node and type URL by a sans-IO ``AdsSession``
(``xds.session``, where the rules are stated and tested as transcripts); this module is
the I/O around it. A NACK stops the push there: the node
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
import logging
import time
from collections.abc import AsyncIterator, Callable
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
from tcpmesh.xds.session import AdsSession, Answer, NodeState, Request, Response
from tcpmesh.xds.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    SECRET_TYPE,
    SHORT_NAMES,
    EnvoyConfig,
    Resource,
    translate,
)

log = logging.getLogger("tcpmesh.xds")

# Envoy answers a response in milliseconds; a silent stream this long is broken.
ACK_TIMEOUT = 20.0

Transform = Callable[[EnvoyConfig], EnvoyConfig]


def to_any(resource: Resource) -> Any:
    message = any_pb2.Any()
    json_format.ParseDict(resource, message)
    return message


def _request(message: Any) -> Request:
    return Request(
        type_url=message.type_url,
        nonce=message.response_nonce,
        names=frozenset(message.resource_names),
        version=message.version_info,
        error=message.error_detail.message if message.HasField("error_detail") else None,
    )


def _response(response: Response) -> Any:
    return discovery_pb2.DiscoveryResponse(
        version_info=response.version,
        resources=[to_any(resource) for _, resource in response.resources],
        type_url=response.type_url,
        nonce=response.nonce,
    )


class _Stream:
    """One ADS stream: the I/O around an ``AdsSession`` (gRPC messages, futures, pushes)."""

    def __init__(self, server: XdsServer) -> None:
        self._server = server
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._session: AdsSession | None = None
        # The answer Envoy gives each response, by nonce: None an ACK, text a NACK.
        self._answers: dict[str, asyncio.Future[str | None]] = {}
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
            for answer in self._answers.values():
                if not answer.done():
                    answer.cancel()
            if self._session is not None:
                self._session.node.streams -= 1
                log.info("xDS stream of %s closed", self._session.node.node)

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        async for message in requests:
            if self._session is None:
                node_id = message.node.id
                if not node_id:
                    raise ValueError("the first DiscoveryRequest names no node")
                node = self._server.node_state(node_id)
                node.streams += 1
                self._session = AdsSession(node)
                log.info("xDS stream of %s opened", node_id)
                self._pusher = asyncio.create_task(self._follow(node_id))
            session = self._session
            request = _request(message)
            log.debug(
                "%s: %s request version=%r nonce=%r names=%s error=%r",
                session.node.node,
                SHORT_NAMES.get(request.type_url, request.type_url),
                request.version,
                request.nonce,
                sorted(request.names),
                request.error,
            )
            if not session.serves(request.type_url):
                log.warning("ignoring a request for unserved type %s", request.type_url)
                continue
            received = session.receive(request)
            if received.answer is not None:
                self._settle(received.answer)
            for response in received.responses:
                self._send(response)

    def _settle(self, answer: Answer) -> None:
        assert self._session is not None
        if answer.error is not None:
            log.warning(
                "%s rejected %s version %s: %s",
                self._session.node.node,
                SHORT_NAMES[answer.type_url],
                answer.version,
                answer.error,
            )
        future = self._answers.pop(answer.nonce, None)
        if future is not None and not future.done():
            future.set_result(answer.error)

    def _send(self, response: Response) -> None:
        self._answers[response.nonce] = asyncio.get_running_loop().create_future()
        log.debug(
            "%s: %s response version=%s nonce=%s names=%s",
            self._session.node.node if self._session else "?",
            SHORT_NAMES[response.type_url],
            response.version,
            response.nonce,
            response.names,
        )
        self._outbox.put_nowait(_response(response))

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
        session = self._session
        assert session is not None
        node = session.node
        node.pending = config.snapshot_version

        def staged(type_url: str) -> tuple[str, dict[str, Resource]]:
            return type_url, {**session.good(type_url), **config.of(type_url)}

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
        session = self._session
        assert session is not None
        node = session.node
        started = time.time()
        answers: list[asyncio.Future[str | None]] = []
        for type_url, resources in step:
            response, awaited = session.offer(type_url, resources)
            if response is not None:
                self._send(response)
            if awaited and awaited in self._answers:
                answers.append(self._answers[awaited])
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
