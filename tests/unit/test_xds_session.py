"""ADS ACK/NACK rules as transcripts: requests in (>>), responses and answers out (<<).

No gRPC, no sockets: ``AdsSession`` is the protocol state of one stream (xds/session.py).
"""

from __future__ import annotations

from tcpmesh.xds.session import AdsSession, Answer, NodeState, Received, Request
from tcpmesh.xds.translate import CLUSTER_TYPE, ENDPOINT_TYPE

CDS, EDS = CLUSTER_TYPE, ENDPOINT_TYPE
A = {"a": {"name": "a"}}
AB = {"a": {"name": "a"}, "b": {"name": "b"}}


def session() -> tuple[AdsSession, NodeState]:
    node = NodeState("istio-system/gw-1", pending="snap-2")
    return AdsSession(node, clock=lambda: 100.0), node


def subscribed(s: AdsSession, type_url: str = CDS, names: frozenset[str] = frozenset()) -> None:
    # >> the first request of a type: nothing desired yet, so nothing to send
    assert s.receive(Request(type_url, names=names)) == Received(None)


def test_an_offer_is_sent_once_and_an_ack_makes_it_the_good_set() -> None:
    s, node = session()
    subscribed(s)
    response, awaited = s.offer(CDS, A)
    assert response is not None and response.names == ["a"] and awaited == response.nonce
    # The same offer again: Envoy is being sent exactly this; wait for the same answer.
    assert s.offer(CDS, A) == (None, response.nonce)
    # >> ACK
    received = s.receive(Request(CDS, nonce=response.nonce, version=response.version))
    assert received == Received(Answer(CDS, response.nonce, response.version, None))
    assert s.good(CDS) == A and node.acked[CDS] == response.version
    # Nothing is awaited any more for what Envoy has.
    assert s.offer(CDS, A) == (None, "")


def test_a_nack_is_recorded_and_the_last_good_set_is_offered_again() -> None:
    s, node = session()
    subscribed(s)
    first, _ = s.offer(CDS, A)
    assert first is not None
    s.receive(Request(CDS, nonce=first.nonce, version=first.version))
    bad, _ = s.offer(CDS, AB)
    assert bad is not None and bad.names == ["a", "b"]
    # >> NACK of the bad response (Envoy names the version it still runs)
    received = s.receive(Request(CDS, nonce=bad.nonce, version=first.version, error="no b"))
    assert received.answer == Answer(CDS, bad.nonce, bad.version, "no b")
    # << the good set again, under a new nonce, never the rejected one
    (again,) = received.responses
    assert (again.names, again.version) == (["a"], first.version)
    assert again.nonce not in (first.nonce, bad.nonce)
    (nack,) = node.nacks.values()
    assert (nack.type_url, nack.version, nack.snapshot, nack.error, nack.at) == (
        CDS,
        bad.version,
        "snap-2",
        "no b",
        100.0,
    )


def test_a_nack_before_anything_was_accepted_leaves_envoy_alone() -> None:
    s, node = session()
    subscribed(s)
    bad, _ = s.offer(CDS, AB)
    assert bad is not None
    received = s.receive(Request(CDS, nonce=bad.nonce, error="no"))
    # What Envoy runs is unknown on this stream: nothing is offered in its place.
    assert received == Received(Answer(CDS, bad.nonce, bad.version, "no"))
    assert CDS in node.nacks


def test_a_nack_without_a_message_still_counts() -> None:
    s, _ = session()
    subscribed(s)
    bad, _ = s.offer(CDS, A)
    assert bad is not None
    received = s.receive(Request(CDS, nonce=bad.nonce, error=""))
    assert received.answer is not None and received.answer.error == "rejected without a message"


def test_a_request_with_a_stale_nonce_changes_nothing() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"a"}))
    first, _ = s.offer(EDS, A)
    second, _ = s.offer(EDS, {"a": {"name": "a", "v": 2}})
    assert first is not None and second is not None
    # >> a request answering the older response, while the newer one is in flight
    received = s.receive(Request(EDS, nonce="999", names=frozenset({"a", "b"})))
    assert received == Received(None)  # not answered, no subscription change
    # The newer response is still the one awaited.
    assert s.offer(EDS, {"a": {"name": "a", "v": 2}}) == (None, second.nonce)


def test_subscriptions_sent_before_envoy_saw_a_response_wait_for_its_answer() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"a"}))
    first, _ = s.offer(EDS, AB)
    assert first is not None and first.names == ["a"]
    # >> Envoy subscribes to more names before the response reached it (no nonce yet)
    assert s.receive(Request(EDS, names=frozenset({"a", "b"}))) == Received(None)
    # >> its ACK of that response names everything it wants by then: one response for all
    received = s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a", "b"})))
    (second,) = received.responses
    assert received.answer is not None and received.answer.error is None
    assert second.names == ["a", "b"]


def test_a_repeated_request_is_answered_again() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"a"}))
    first, _ = s.offer(EDS, A)
    assert first is not None
    s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a"})))  # ACK
    # >> the same request again (a cluster updated by CDS waits for its endpoints)
    received = s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a"})))
    (again,) = received.responses
    assert received.answer is None and again.names == ["a"] and again.nonce != first.nonce


def test_non_wildcard_types_send_only_the_names_asked_for() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"b", "c"}))
    response, _ = s.offer(EDS, AB)
    assert response is not None and response.names == ["b"]
