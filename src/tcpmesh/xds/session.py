"""The ACK/NACK and version logic of one ADS stream, without I/O (sans-IO, as h11).

``AdsSession`` is fed Envoy's requests (``receive``) and the server's wishes (``offer``)
and returns what to send and which responses Envoy answered; it never touches gRPC,
asyncio or a clock it was not given. ``xds.server`` drives it over a real stream, and
the rules below are tested as transcripts of requests in and responses out.

The rules (state of the world, per type URL):

- A response carries resources, a version and a fresh nonce. Listeners and clusters
  (the wildcard types) go as the whole desired set, as the protocol requires; every
  other type (endpoints, filter configs, secrets: resources Envoy subscribes to by name)
  carries only the subscribed resources Envoy has not been sent as they are now, so a
  weight change is one filter config, not a thousand. Nothing is sent twice while Envoy
  has (or is being sent) it: resources are compared by identity (a Snapshot part a
  rebuild reused keeps its translation), then by digest (a rebuilt but equal one).
- The version labels the desired set: a new set gets a new label, the last accepted set
  offered again gets its old one. It is not a digest of the set, so offering a set costs
  what changed in it, not its size.
- A request whose ``response_nonce`` names an unanswered response answers it: an ACK
  without ``error_detail``, a NACK with it. An ACK makes that response's resources the
  type's last accepted ("good") set (wildcard types), or part of it (the others). A
  NACK is recorded on the node, and, if anything was accepted on this stream, the good
  set becomes the desired one again and the rejected resources count as unknown to Envoy
  (it may have applied the valid part of a rejected response): their good versions are
  offered at once.
- A request with a nonce other than the last one sent is stale (a newer response is on
  its way): it changes nothing and is not answered.
- A request that repeats the last one (same names, nothing answered) is answered again
  with everything subscribed: Envoy sends it for a cluster updated by CDS, which stays
  warming until its endpoints come once more.
- A cluster a CDS response changes gets its endpoints again, changed or not: Envoy keeps
  a changed cluster warming (unused) until its ClusterLoadAssignment comes once more.
- A name Envoy no longer subscribes to is forgotten: subscribed again, it is sent again.
- ``resend`` forgets what Envoy was sent of a type and offers all of it again: the server
  calls it when a response went unanswered for too long.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tcpmesh.xds.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    PUSH_ORDER,
    SHORT_NAMES,
    Resource,
)

WILDCARD_TYPES = (LISTENER_TYPE, CLUSTER_TYPE)


Digest = Callable[[Resource], str]


def resource_digest(resource: Resource) -> str:
    """A digest of one resource's content."""
    body = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


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
    # How often a response went unanswered for the ACK timeout and was sent again.
    resends: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "connected": self.streams > 0,
            "streamsOpened": self.opened,
            "appliedSnapshot": self.applied,
            "pendingSnapshot": self.pending,
            "acked": {SHORT_NAMES.get(t, t): v for t, v in self.acked.items()},
            "nacks": [n.to_dict() for n in self.nacks.values()],
            "resends": self.resends,
        }


@dataclass
class _TypeState:
    type_url: str
    wildcard: bool
    subscribed: bool = False
    names: frozenset[str] = frozenset()
    desired: dict[str, Resource] | None = None
    # The desired set's label; "" until a response carries it (then a new one is made).
    version: str = ""
    # What Envoy has or is being sent: the whole set of the last response (wildcard
    # types), or the last resource sent by name (the others).
    sent: dict[str, Resource] = field(default_factory=dict)
    sent_nonce: str = ""
    # What Envoy accepted last: the whole set (wildcard types), or by name.
    good: dict[str, Resource] = field(default_factory=dict)
    good_version: str = ""
    accepted: bool = False
    # Some resource Envoy has was forgotten (``sent``) for another reason than a new
    # desired set (a changed cluster's endpoints): the next offer responds even unchanged.
    forgotten: bool = False
    # Unanswered responses: nonce -> (version, resources).
    inflight: dict[str, tuple[str, dict[str, Resource]]] = field(default_factory=dict)

    def subscribe(self, names: frozenset[str]) -> None:
        """Envoy's subscription now: what it dropped is forgotten (a later subscription
        to the same name is then sent the resource again)."""
        if not self.wildcard and self.names and not names >= self.names:
            for name in self.names - names:
                self.sent.pop(name, None)
                self.good.pop(name, None)
        self.subscribed = True
        self.names = names

    def wanted(self) -> Iterable[str]:
        """The desired names Envoy asks for."""
        assert self.desired is not None
        if self.wildcard or "*" in self.names:
            return self.desired
        desired = self.desired
        return (n for n in self.names if n in desired)


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
        self._types = {t: _TypeState(t, t in WILDCARD_TYPES) for t in PUSH_ORDER}
        self._nonces = itertools.count(1)
        self._versions = itertools.count(1)

    def serves(self, type_url: str) -> bool:
        return type_url in self._types

    def good(self, type_url: str) -> dict[str, Resource]:
        """The resources of the type Envoy accepted last on this stream (do not change)."""
        return self._types[type_url].good

    def waiting(self, type_url: str, nonce: str) -> bool:
        """Whether a request of the type with ``nonce`` is one ``receive`` sets aside
        without reading its names (see there): the server then skips decoding them,
        which during a first push of N listeners is N requests of up to N names."""
        state = self._types.get(type_url)
        return state is not None and not nonce and state.sent_nonce in state.inflight

    def resources(self) -> list[Resource]:
        """Every resource the session holds (desired, sent, accepted or in flight)."""
        out: list[Resource] = []
        for state in self._types.values():
            for held in (state.desired or {}, state.sent, state.good):
                out.extend(held.values())
            for _, resources in state.inflight.values():
                out.extend(resources.values())
        return out

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
            state.sent = {}  # a repeated request: answer it again, in full
        state.subscribe(request.names)
        response = self._respond(state)
        return Received(answer, (response,) if response is not None else ())

    def offer(self, type_url: str, resources: dict[str, Resource]) -> tuple[Response | None, str]:
        """Make ``resources`` the desired set; the response to send (None: nothing new to
        send) and the nonce whose answer settles the offer ("" when none is awaited).

        The session keeps ``resources`` as it is (never changed): offering the very dict
        of the last offer again costs nothing."""
        state = self._types[type_url]
        # What else changes what to send (a subscription, a NACK, a resend) responds there.
        response = None
        if resources is not state.desired:
            state.desired = resources
            state.version = state.good_version if resources is state.good else ""
            response = self._respond(state)
        elif state.forgotten:
            response = self._respond(state)
        if response is not None:
            return response, response.nonce
        return None, state.sent_nonce if state.sent_nonce in state.inflight else ""

    def resend(self, type_url: str) -> Response | None:
        """Everything desired of the type again, as if Envoy had nothing of it: for a
        response it never answered (lost, or its answer was), so that the node converges
        on the current state rather than waiting for the next change."""
        state = self._types[type_url]
        state.sent = {}
        return self._respond(state)

    def _answer(self, state: _TypeState, request: Request) -> Answer | None:
        entry = state.inflight.pop(request.nonce, None)
        if entry is None:
            return None
        version, resources = entry
        if request.error is not None:
            return self._rejected(state, request, version, resources)
        if state.wildcard:
            state.good = resources
        else:
            state.good = {**state.good, **resources}
        state.good_version = version
        state.accepted = True
        self.node.acked[state.type_url] = version
        return Answer(state.type_url, request.nonce, version, None)

    def _rejected(
        self, state: _TypeState, request: Request, version: str, resources: dict[str, Resource]
    ) -> Answer:
        error = request.error or "rejected without a message"
        self.node.nacks[state.type_url] = Nack(
            state.type_url, version, self.node.pending, error, self._clock()
        )
        if state.accepted:
            state.desired, state.version = state.good, state.good_version
            if state.wildcard:
                state.sent = {}
            else:
                for name in resources:
                    state.sent.pop(name, None)
        return Answer(state.type_url, request.nonce, version, error)

    def _respond(self, state: _TypeState) -> Response | None:
        if not state.subscribed or state.desired is None:
            return None
        state.forgotten = False
        desired = state.desired
        if state.wildcard:
            if self._same_set(state.sent, desired):
                return None
            # The whole set, kept as the very dict offered: offering it again is free.
            sent = desired
            if state.type_url == CLUSTER_TYPE:
                self._cluster_changes(state.sent, sent)
        else:
            changed = sorted(
                n for n in state.wanted() if not self._same(state.sent.get(n), desired[n])
            )
            if not changed:
                return None
            sent = {n: desired[n] for n in changed}
            state.sent.update(sent)
        if not state.version:
            state.version = str(next(self._versions))
        nonce = str(next(self._nonces))
        state.inflight[nonce] = (state.version, sent)
        if state.wildcard:
            state.sent = sent
        state.sent_nonce = nonce
        return Response(
            state.type_url, state.version, nonce, tuple((n, sent[n]) for n in sorted(sent))
        )

    def _cluster_changes(self, before: dict[str, Resource], after: dict[str, Resource]) -> None:
        """Forget the endpoints Envoy was sent for every cluster this CDS response changes:
        Envoy warms a changed cluster until its ClusterLoadAssignment comes again, and
        would otherwise wait for its EDS initial fetch timeout (15 s) with the new
        cluster unused (Istio likewise pushes EDS with a cluster's update)."""
        endpoints = self._types[ENDPOINT_TYPE]
        for name, cluster in after.items():
            if name in endpoints.sent and not self._same(before.get(name), cluster):
                del endpoints.sent[name]
                endpoints.forgotten = True

    def _same(self, sent: Resource | None, resource: Resource) -> bool:
        """Whether Envoy has (or is being sent) ``resource`` as it is."""
        if sent is resource:
            return True
        return sent is not None and self._digest(sent) == self._digest(resource)

    def _same_set(self, sent: dict[str, Resource], desired: dict[str, Resource]) -> bool:
        if sent is desired:
            return True
        if len(sent) != len(desired):
            return False
        return all(n in sent and self._same(sent[n], r) for n, r in desired.items())
