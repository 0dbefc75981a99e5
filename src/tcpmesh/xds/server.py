"""The Aggregated Discovery Service: each Envoy gets its node's snapshot, in order.

State of the world over one ADS stream per Envoy (gRPC, ``grpc.aio``). The node id is
the gateway pod, ``namespace/name``; its snapshots come from the control plane's
``watch(node)``. Each snapshot is pushed make-before-break, as go-control-plane's ADS
mode orders it, and every step waits for Envoy's answer before the next:

1. CDS with EDS (Envoy ACKs new clusters only once their endpoints arrived), then ECDS,
   each with the new resources added to the last accepted ones (whatever the routes
   still in force use stays),
2. LDS (once Envoy asked for listeners: it does when its clusters are initialised),
3. ECDS, then CDS with EDS, with exactly the new resources (what nothing uses any more
   goes).

A step sends only what changed (``xds.session``): listeners and clusters as whole sets,
and only when one of them changed; endpoints, filter configs and secrets one resource
each. A weight change is thus one ECDS response holding one filter config, and CDS goes
twice only when clusters were removed as well as added.

ACKs and NACKs are tracked per node and type URL by a sans-IO ``AdsSession``
(``xds.session``, where the rules are stated and tested as transcripts); this module is
the I/O around it. A NACK stops the push there: the node
stays on its last good configuration for that type and every later one, the NACK (with
Envoy's ``error_detail`` text) is kept for ``status`` until a later snapshot is applied
in full. Envoy applies the valid part of a rejected state-of-the-world response, so the
server then offers that type's last accepted resources again, and never the rejected
ones. A response Envoy leaves unanswered for the ACK timeout is not given up on: the
type's whole current state goes again (and again, waiting twice as long each time), so a
node that missed a push converges without waiting for the next change.

A request that repeats the last one (same nonce, same names, no ACK pending) is answered
again: Envoy sends it for a cluster updated by CDS, which stays warming, and holds back
its CDS ACK, until its endpoints arrive once more.

Two ports. Loopback, without TLS, for this host's Envoys (the gateway pods the runtime
starts; whoever runs code on this host is trusted already, as with the built-in proxy's
local feed). And, with ``remote``, one on ``--bind-address`` for Envoys on other hosts:
TLS with the mesh's CA, a client certificate required and verified by gRPC
(``require_client_auth``), then ``authorize(certificate, node id)`` on the stream's
first request, so a joined gateway follows its own node and nothing else
(PERMISSION_DENIED otherwise). Such a stream lasts no longer than its certificate: at
its expiry the server ends it (UNAUTHENTICATED) and Envoy reconnects with the rotated
one, so an expired certificate cannot keep a stream; and ``revoked(certificate, node
id)``, awaited beside the stream, ends it as soon as the peer may no longer follow that
node (its bootstrap token was deleted).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
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
from tcpmesh.xds.session import (
    WILDCARD_TYPES,
    AdsSession,
    Answer,
    NodeState,
    Request,
    Response,
    resource_digest,
)
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

# Envoy answers a response in milliseconds, or seconds for thousands of new clusters on a
# loaded machine: unanswered this long, the type's whole current state is sent again
# (the response or its answer may be lost), waiting twice as long each time up to
# ACK_TIMEOUT_MAX, until Envoy answers or the stream ends.
ACK_TIMEOUT = 20.0
ACK_TIMEOUT_MAX = 160.0
# And Envoy's time grows with a response's size: it took a minute of CPU to create the
# 40,000 clusters of 10,000 VirtualServices (a resend then only doubles its work).
ACK_TIMEOUT_PER_RESOURCE = 0.002
# Encodings kept beyond twice the live ones before the cache is pruned.
PRUNE_SLACK = 1024

Transform = Callable[[EnvoyConfig], EnvoyConfig]
# (client certificate PEM, node id): raises PermissionError (its text goes to the peer)
# when the stream is not allowed.
Authorize = Callable[[bytes, str], object]
# (client certificate PEM, node id): returns, with the reason, once that is no longer so.
Revoked = Callable[[bytes, str], Awaitable[str]]
# What an Envoy on another host may go without answering for this long before gRPC
# drops the connection (server-side keepalive); Envoy pings the other way, see
# xds.bootstrap.remote_ads_cluster, and the server must allow it.
SERVER_KEEPALIVE_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
MIN_CLIENT_PING_MS = 500


@dataclass(frozen=True)
class RemoteListener:
    """The ADS port for other hosts: its address, serving certificate and client CA."""

    host: str
    port: int
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    authorize: Authorize
    revoked: Revoked | None = None
    # gRPC's max_connection_age: a GOAWAY after this long, so the stream Envoy opens once
    # its certificate expired and its stream was ended goes over a new TLS connection,
    # with the renewed certificate (a new stream on the old connection would still carry
    # the old one). A third of the certificates' life.
    max_connection_age: float = 1200.0


class _Ended(Exception):
    """The server ends a stream: a gRPC status code and one line for the peer."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


class Encodings:
    """Each resource's protobuf ``Any`` and digest, kept by resource (identity).

    A rebuilt Snapshot reuses its unchanged parts and ``translate`` their resources
    (the same dicts), so a push encodes and hashes only what changed: at a thousand
    listeners, encoding every resource again cost 1.4 s of CPU per push, and a first push
    of 10,000 VirtualServices holds 100,000 resources (``json_format`` takes 0.4 ms for
    one). An entry holds its resource, so no other dict can take its id. Entries live
    while a stream holds their resource (``prune``); a stream that reconnects finds its
    node's resources encoded already."""

    def __init__(self) -> None:
        self._entries: dict[int, list[Any]] = {}
        self._kept = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, resource: Resource) -> list[Any]:
        entry = self._entries.get(id(resource))
        if entry is None:
            entry = self._entries[id(resource)] = [resource, None, None]
        return entry

    def to_any(self, resource: Resource) -> Any:
        entry = self._entry(resource)
        if entry[1] is None:
            entry[1] = to_any(resource)
        return entry[1]

    def digest(self, resource: Resource) -> str:
        entry = self._entry(resource)
        if entry[2] is None:
            entry[2] = resource_digest(resource)
        digest: str = entry[2]
        return digest

    def prune(self, held: Callable[[], Iterable[Resource]]) -> None:
        """Drop what no stream holds, once the entries doubled since the last pruning:
        its O(resources) walk then costs O(1) per resource added."""
        if len(self._entries) <= 2 * self._kept + PRUNE_SLACK:
            return
        live = {id(resource) for resource in held()}
        self._entries = {k: e for k, e in self._entries.items() if k in live}
        self._kept = len(self._entries)


def _response(response: Response, encodings: Encodings) -> Any:
    return discovery_pb2.DiscoveryResponse(
        version_info=response.version,
        resources=[encodings.to_any(resource) for _, resource in response.resources],
        type_url=response.type_url,
        nonce=response.nonce,
    )


class _Stream:
    """One ADS stream: the I/O around an ``AdsSession`` (gRPC messages, futures, pushes)."""

    def __init__(self, server: XdsServer, cert_pem: bytes | None = None) -> None:
        self._server = server
        # The verified client certificate of a stream on the remote port (None: loopback).
        self._cert_pem = cert_pem
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._expiry: asyncio.TimerHandle | None = None
        self._watch: asyncio.Task[None] | None = None
        self._session: AdsSession | None = None
        # The answer Envoy gives each response, by nonce: None an ACK, text a NACK.
        self._answers: dict[str, asyncio.Future[str | None]] = {}
        # How many resources each unanswered response holds, by nonce.
        self._sizes: dict[str, int] = {}
        self._pusher: asyncio.Task[None] | None = None
        # Set once Envoy asked for the type on this stream.
        self._asked: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )

    async def responses(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        reader = asyncio.create_task(self._read(requests))
        reader.add_done_callback(lambda _: self._outbox.put_nowait(None))
        try:
            while (response := await self._outbox.get()) is not None:
                if isinstance(response, _Ended):
                    raise response
                yield response
            if not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            for task in (reader, self._pusher, self._watch):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for answer in self._answers.values():
                if not answer.done():
                    answer.cancel()
            if self._session is not None:
                self._server.sessions.discard(self._session)
                self._session.node.streams -= 1
                log.info("xDS stream of %s closed", self._session.node.node)

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        async for message in requests:
            if self._session is None and not self._open(message.node.id):
                return
            session = self._session
            assert session is not None
            if not session.serves(message.type_url):
                log.warning("ignoring a request for unserved type %s", message.type_url)
                continue
            self._asked[message.type_url].set()
            if session.waiting(message.type_url, message.response_nonce):
                continue  # set aside unread (AdsSession.waiting)
            request = _request(message)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s: %s request version=%r nonce=%r names=%s error=%r",
                    session.node.node,
                    SHORT_NAMES.get(request.type_url, request.type_url),
                    request.version,
                    request.nonce,
                    sorted(request.names),
                    request.error,
                )
            received = session.receive(request)
            if received.answer is not None:
                self._settle(received.answer)
            for response in received.responses:
                self._send(response)

    def _open(self, node_id: str) -> bool:
        """The stream's first request: admit the node, start following its snapshots."""
        if not node_id:
            raise ValueError("the first DiscoveryRequest names no node")
        if not self._admit(node_id):
            return False
        node = self._server.node_state(node_id)
        node.streams += 1
        node.opened += 1
        self._session = AdsSession(node, digest=self._server.encodings.digest)
        self._server.sessions.add(self._session)
        log.info("xDS stream of %s opened", node_id)
        self._pusher = asyncio.create_task(self._follow(node_id))
        return True

    def _admit(self, node_id: str) -> bool:
        """Authorize a remote peer for ``node_id``; end its stream at its certificate's
        expiry, or when it is revoked."""
        cert_pem = self._cert_pem
        if cert_pem is None:
            return True
        remote = self._server.remote
        assert remote is not None
        try:
            remote.authorize(cert_pem, node_id)
        except PermissionError as exc:
            log.warning("xDS stream for %s refused: %s", node_id, exc)
            self.end(_Ended(grpc.StatusCode.PERMISSION_DENIED, str(exc)))
            return False
        remaining = _not_after(cert_pem) - time.time()
        ended = _Ended(grpc.StatusCode.UNAUTHENTICATED, "the client certificate expired")
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(remaining, 0.0), self.end, ended)
        if remote.revoked is not None:
            self._watch = asyncio.create_task(self._until_revoked(remote.revoked, node_id))
        return True

    async def _until_revoked(self, revoked: Revoked, node_id: str) -> None:
        assert self._cert_pem is not None
        reason = await revoked(self._cert_pem, node_id)
        log.warning("xDS stream of %s ended: %s", node_id, reason)
        self.end(_Ended(grpc.StatusCode.UNAUTHENTICATED, reason))

    def end(self, ended: _Ended) -> None:
        """End the stream with a status (from the loop's thread)."""
        self._outbox.put_nowait(ended)

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
        self._sizes.pop(answer.nonce, None)
        future = self._answers.pop(answer.nonce, None)
        if future is not None and not future.done():
            future.set_result(answer.error)

    def _send(self, response: Response) -> asyncio.Future[str | None]:
        answer = self._answers[response.nonce] = asyncio.get_running_loop().create_future()
        self._sizes[response.nonce] = len(response.resources)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: %s response version=%s nonce=%s names=%s",
                self._session.node.node if self._session else "?",
                SHORT_NAMES[response.type_url],
                response.version,
                response.nonce,
                response.names,
            )
        self._outbox.put_nowait(_response(response, self._server.encodings))
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
            self._server.prune()

    async def _apply(self, config: EnvoyConfig) -> None:
        session = self._session
        assert session is not None
        node = session.node
        node.pending = config.snapshot_version

        def staged(type_url: str) -> tuple[str, dict[str, Resource]]:
            return type_url, _with_kept(session.good(type_url), config.of(type_url))

        def final(type_url: str) -> tuple[str, dict[str, Resource]]:
            return type_url, config.of(type_url)

        # Envoy ACKs a CDS update only once its new clusters are warm, that is once their
        # EDS arrived: clusters and endpoints go out together. A step whose sets are the
        # ones offered last sends nothing (AdsSession.offer): a weight change is one
        # ECDS response, and CDS goes twice only when clusters were also removed.
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
        """Offer resources and wait for Envoy's answers; False on a NACK."""
        session = self._session
        assert session is not None
        node = session.node
        started = time.time()
        answers: dict[str, str] = {}
        for type_url, _ in step:
            if type_url in WILDCARD_TYPES:
                await self._until_asked(type_url)
        for type_url, resources in step:
            response, awaited = session.offer(type_url, resources)
            if response is not None:
                self._send(response)
            if awaited and awaited in self._answers:
                answers[type_url] = awaited
        await self._answered(answers)
        # A NACK of a response sent meanwhile on Envoy's request counts too.
        return not any(
            (nack := node.nacks.get(t)) is not None and nack.at >= started for t, _ in step
        )

    async def _until_asked(self, type_url: str) -> None:
        """Until Envoy subscribed to a wildcard type: it asks for listeners only once its
        clusters are initialised, and a push is not done before its listeners are."""
        asked = self._asked[type_url]
        while not asked.is_set():
            try:
                await asyncio.wait_for(asked.wait(), self._server.ack_timeout)
            except TimeoutError:
                assert self._session is not None
                log.warning(
                    "%s: has not asked for %s in %.0fs",
                    self._session.node.node,
                    SHORT_NAMES[type_url],
                    self._server.ack_timeout,
                )

    async def _answered(self, answers: dict[str, str]) -> None:
        """Until Envoy answered each type's awaited response (by nonce). A type unanswered
        for the timeout (longer for a larger response) gets its whole current state again
        (``AdsSession.resend``), which Envoy answers in its turn: a node that missed a
        push converges without a new change."""
        session = self._session
        assert session is not None
        backoff = 1.0
        while waiting := {t: n for t, n in answers.items() if n in self._answers}:
            size = max(self._sizes.get(n, 0) for n in waiting.values())
            timeout = min(
                backoff * (self._server.ack_timeout + ACK_TIMEOUT_PER_RESOURCE * size),
                self._server.ack_timeout_max,
            )
            futures = [asyncio.shield(self._answers[n]) for n in waiting.values()]
            await asyncio.wait(futures, timeout=timeout)
            late = [t for t, n in waiting.items() if n in self._answers]
            if not late:
                return
            log.warning(
                "%s: no answer for %s in %.0fs; sending the current state again",
                session.node.node,
                "/".join(SHORT_NAMES[t] for t in late),
                timeout,
            )
            session.node.resends += 1
            for type_url in late:
                response = session.resend(type_url)
                if response is None:  # nothing of it is desired or subscribed any more
                    del answers[type_url]
                else:
                    self._send(response)
                    answers[type_url] = response.nonce
            backoff *= 2


def _with_kept(good: dict[str, Resource], new: dict[str, Resource]) -> dict[str, Resource]:
    """``new`` plus whatever was accepted last and is not in it (what the routes still in
    force may use). ``new`` itself when nothing is kept: its very dict, which the session
    then recognises as the set it offered last."""
    if good is new or good.keys() <= new.keys():
        return new
    return {**good, **new}


def _not_after(cert_pem: bytes) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def _peer_certificate(context: Any) -> bytes | None:
    """The client certificate gRPC verified (remote port), None on the loopback port."""
    values = (context.auth_context() or {}).get("x509_pem_cert") or []
    return bytes(values[0]) if values else None


class _Servicer:
    """envoy.service.discovery.v3.AggregatedDiscoveryService, state of the world only.

    Delta xDS would send listeners and clusters by the resource too, and Envoy's filter
    subscriptions as one name each (state of the world repeats every name it subscribed
    so far, so a first push of N listeners brings N requests of up to N names); a
    weight change, the common push, already costs one resource either way."""

    def __init__(self, server: XdsServer) -> None:
        self._server = server

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        stream = _Stream(self._server, _peer_certificate(context))
        try:
            async for response in stream.responses(request_iterator):
                yield response
        except _Ended as ended:
            await context.abort(ended.code, ended.message)

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
        remote: RemoteListener | None = None,
        ack_timeout: float = ACK_TIMEOUT,
        ack_timeout_max: float = ACK_TIMEOUT_MAX,
    ) -> None:
        self.source = source
        self.ack_timeout = ack_timeout
        self.ack_timeout_max = ack_timeout_max
        # The open streams' sessions: what they hold keeps its encodings.
        self.sessions: set[AdsSession] = set()
        self.transform = transform
        self.host = host
        self.port = port
        self.remote = remote
        self._nodes: dict[str, NodeState] = {}
        self._grpc: Any = None
        self.encodings = Encodings()

    def node_state(self, node_id: str) -> NodeState:
        return self._nodes.setdefault(node_id, NodeState(node_id))

    def prune(self) -> None:
        """Forget the encodings of resources no open stream holds any more."""
        self.encodings.prune(lambda: (r for s in self.sessions for r in s.resources()))

    async def start(self) -> int:
        # No SO_REUSEPORT: a port another server holds must fail to bind, not be shared
        # (a restarted mesh asks for its previous port; see tcpmesh.mesh).
        options = [
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_MS),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if self.remote is not None:
            options.append(
                ("grpc.max_connection_age_ms", int(self.remote.max_connection_age * 1000))
            )
        self._grpc = grpc.aio.server(options=options)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), self._grpc)
        self.port = self._grpc.add_insecure_port(f"{self.host}:{self.port}")
        if self.remote is not None:
            self._listen_remote(self.remote)
        await self._grpc.start()
        log.info("xDS (ADS) on %s:%d", self.host, self.port)
        return self.port

    def _listen_remote(self, remote: RemoteListener) -> None:
        credentials = grpc.ssl_server_credentials(
            [(remote.key_pem, remote.cert_pem)],
            root_certificates=remote.ca_pem,
            require_client_auth=True,
        )
        address = f"{_host(remote.host)}:{remote.port}"
        try:
            port = self._grpc.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's bind failure; an OSError, so the mesh does not retry
            port = 0
        if port == 0:
            raise OSError(f"--xds-port {remote.port}: cannot listen on {address} (in use?)")
        self.remote = dataclasses.replace(remote, port=port)
        log.info("xDS (ADS, mTLS) for other hosts on %s:%d", remote.host, port)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(0.5)
            self._grpc = None

    def status(self) -> dict[str, Any]:
        remote = self.remote
        return {
            "address": f"{self.host}:{self.port}",
            "remote": f"{_host(remote.host)}:{remote.port}" if remote is not None else None,
            "nodes": [self._nodes[n].to_dict() for n in sorted(self._nodes)],
        }


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
