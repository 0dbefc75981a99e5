"""The ACK/NACK and version logic of one ADS stream, without I/O (sans-IO, as h11).

``AdsSession`` is fed Envoy's requests (``receive``) and the server's wishes (``offer``)
and returns what to send and which responses Envoy answered; it never touches gRPC,
asyncio or a clock it was not given. ``xds.server`` drives it over a real stream, and
the rules below are tested as transcripts of requests in and responses out.

The rules (state of the world, per type URL):

- A response carries the desired resources, a content version and a fresh nonce. The
  same resources and names are never sent twice while Envoy has (or is being sent)
  them.
- A request whose ``response_nonce`` names an unanswered response answers it: an ACK
  without ``error_detail``, a NACK with it. An ACK makes that response's resources the
  type's last accepted ("good") set. A NACK is recorded on the node, and, if anything was
  accepted on this stream, the good set becomes the desired one again (Envoy may have
  applied the valid part of a rejected response; this puts it back on exactly what it
  accepted) and is offered at once.
- A request with a nonce other than the last one sent is stale (a newer response is on
  its way): it changes nothing and is not answered.
- A request that repeats the last one (same names, nothing answered) is answered again:
  Envoy sends it for a cluster updated by CDS, which stays warming until its endpoints
  come once more.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tcpmesh.xds.translate import CLUSTER_TYPE, LISTENER_TYPE, PUSH_ORDER, SHORT_NAMES, Resource

WILDCARD_TYPES = (LISTENER_TYPE, CLUSTER_TYPE)


Digest = Callable[[Resource], str]


def resource_digest(resource: Resource) -> str:
    """A digest of one resource's content."""
    body = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def content_version(resources: dict[str, Resource], digest: Digest = resource_digest) -> str:
    """Equal resource sets, equal versions, whatever snapshot they came from.

    Made of each resource's digest, so a server that keeps those (``xds.server``: by
    resource, as a reused Snapshot part keeps its resources) hashes only the new ones."""
    body = "\n".join(f"{name} {digest(resources[name])}" for name in sorted(resources))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Request:
    """The fields of a DiscoveryRequest the session reads."""

    type_url: str
    nonce: str = ""
    names: frozenset[str] = frozenset()
    version: str = ""
    # error_detail.message when the request carries one (a NACK), else None.
    error: str | None = None


@dataclass(frozen=True)
class Response:
    """A DiscoveryResponse to send: ``resources`` in name order."""

    type_url: str
    version: str
    nonce: str
    resources: tuple[tuple[str, Resource], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.resources]


@dataclass(frozen=True)
class Answer:
    """Envoy's answer to the response with ``nonce``: an ACK when ``error`` is None."""

    type_url: str
    nonce: str
    version: str
    error: str | None


@dataclass(frozen=True)
class Received:
    """What a request caused: the answer it carried (if any) and the responses to send."""

    answer: Answer | None
    responses: tuple[Response, ...] = ()


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
    # Streams opened so far (a reconnect counts): status shows it, tests read it.
    opened: int = 0
    # The snapshot whose every resource the node ACKed, and the one being pushed.
    applied: str = ""
    pending: str = ""
    acked: dict[str, str] = field(default_factory=dict)
    nacks: dict[str, Nack] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "connected": self.streams > 0,
            "streamsOpened": self.opened,
            "appliedSnapshot": self.applied,
            "pendingSnapshot": self.pending,
            "acked": {SHORT_NAMES.get(t, t): v for t, v in self.acked.items()},
            "nacks": [n.to_dict() for n in self.nacks.values()],
        }


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
    # Unanswered responses: nonce -> (version, resources).
    inflight: dict[str, tuple[str, dict[str, Resource]]] = field(default_factory=dict)

    def set_desired(self, resources: dict[str, Resource], digest: Digest) -> None:
        self.desired = resources
        self.desired_version = content_version(resources, digest)

    def names_to_send(self) -> frozenset[str]:
        assert self.desired is not None
        if self.type_url in WILDCARD_TYPES or "*" in self.names:
            return frozenset(self.desired)
        return frozenset(n for n in self.names if n in self.desired)


class AdsSession:
    """The protocol state of one ADS stream of ``node``; see the module docstring."""

    def __init__(
        self,
        node: NodeState,
        clock: Callable[[], float] = time.time,
        digest: Digest = resource_digest,
    ) -> None:
        self.node = node
        self._clock = clock
        self._digest = digest
        self._types = {t: _TypeState(t) for t in PUSH_ORDER}
        self._nonces = itertools.count(1)

    def serves(self, type_url: str) -> bool:
        return type_url in self._types

    def good(self, type_url: str) -> dict[str, Resource]:
        """The resources of the type Envoy accepted last on this stream."""
        return self._types[type_url].good

    def receive(self, request: Request) -> Received:
        state = self._types[request.type_url]
        answer = self._answer(state, request)
        if request.nonce and request.nonce != state.sent_nonce:
            return Received(answer)  # stale: a newer response is on its way to Envoy
        if not request.nonce and state.sent_nonce in state.inflight:
            # Sent before Envoy saw the response in flight: its answer to that response
            # names what it wants by then. Envoy subscribes to each new listener's filter
            # on its own, so answering each of these would send a first push of N
            # listeners O(N^2) filter configs; this way it is one response per round trip.
            return Received(answer)
        if answer is None and state.subscribed and request.names == state.names:
            state.sent_names = None  # a repeated request: answer it again
        state.subscribed = True
        state.names = request.names
        response = self._respond(state)
        return Received(answer, (response,) if response is not None else ())

    def offer(self, type_url: str, resources: dict[str, Resource]) -> tuple[Response | None, str]:
        """Make ``resources`` the desired set; the response to send (None: nothing new to
        send) and the nonce whose answer settles the offer ("" when none is awaited)."""
        state = self._types[type_url]
        state.set_desired(resources, self._digest)
        response = self._respond(state)
        if response is not None:
            return response, response.nonce
        pending = state.sent_nonce if state.sent_nonce in state.inflight else ""
        return None, pending if state.sent_version == state.desired_version else ""

    def _answer(self, state: _TypeState, request: Request) -> Answer | None:
        entry = state.inflight.pop(request.nonce, None)
        if entry is None:
            return None
        version, resources = entry
        if request.error is not None:
            error = request.error or "rejected without a message"
            self.node.nacks[state.type_url] = Nack(
                state.type_url, version, self.node.pending, error, self._clock()
            )
            if state.accepted:
                state.set_desired(state.good, self._digest)
                state.sent_names = None
            return Answer(state.type_url, request.nonce, version, error)
        state.good = resources
        state.accepted = True
        self.node.acked[state.type_url] = version
        return Answer(state.type_url, request.nonce, version, None)

    def _respond(self, state: _TypeState) -> Response | None:
        if not state.subscribed or state.desired is None:
            return None
        names = state.names_to_send()
        if state.sent_version == state.desired_version and state.sent_names == names:
            return None
        nonce = str(next(self._nonces))
        desired = state.desired
        state.inflight[nonce] = (state.desired_version, desired)
        state.sent_version, state.sent_names, state.sent_nonce = (
            state.desired_version,
            names,
            nonce,
        )
        return Response(
            state.type_url,
            state.desired_version,
            nonce,
            tuple((n, desired[n]) for n in sorted(names)),
        )
