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
    # it does not have yet
    received = s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a", "b"})))
    (second,) = received.responses
    assert received.answer is not None and received.answer.error is None
    assert second.names == ["b"]


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


def test_non_wildcard_types_send_only_what_changed() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"a", "b"}))
    first, _ = s.offer(EDS, AB)
    assert first is not None and first.names == ["a", "b"]
    s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a", "b"})))  # ACK
    # A new set where only b changed, and a is a rebuilt but equal dict: b goes alone.
    changed, _ = s.offer(EDS, {"a": {"name": "a"}, "b": {"name": "b", "v": 2}})
    assert changed is not None and changed.names == ["b"]
    assert changed.version != first.version
    s.receive(Request(EDS, nonce=changed.nonce, names=frozenset({"a", "b"})))  # ACK
    # Equal content again: nothing to send, nothing awaited.
    assert s.offer(EDS, {"a": {"name": "a"}, "b": {"name": "b", "v": 2}}) == (None, "")
    assert s.good(EDS) == {"a": {"name": "a"}, "b": {"name": "b", "v": 2}}


def test_wildcard_types_send_the_whole_set_when_one_resource_changed() -> None:
    s, _ = session()
    subscribed(s)
    first, _ = s.offer(CDS, AB)
    assert first is not None
    s.receive(Request(CDS, nonce=first.nonce))  # ACK
    new = {"a": AB["a"], "b": {"name": "b", "v": 2}}
    changed, _ = s.offer(CDS, new)
    assert changed is not None and changed.names == ["a", "b"]
    # The very dict of the last offer again sends nothing, and awaits the same answer.
    assert s.offer(CDS, new) == (None, changed.nonce)
    # Back to the accepted set: its version again.
    back, _ = s.offer(CDS, s.good(CDS))
    assert back is not None and back.version == first.version


def test_a_changed_cluster_gets_its_unchanged_endpoints_again() -> None:
    """Envoy warms a cluster CDS changed until its ClusterLoadAssignment comes again: the
    endpoints of a changed cluster go with it, unchanged ones stay unsent."""
    s, _ = session()
    subscribed(s)
    subscribed(s, EDS, frozenset({"a", "b"}))
    clusters, _ = s.offer(CDS, AB)
    assert clusters is not None
    s.receive(Request(CDS, nonce=clusters.nonce))  # ACK
    endpoints = {"a": {"cluster_name": "a"}, "b": {"cluster_name": "b"}}
    first, _ = s.offer(EDS, endpoints)
    assert first is not None and first.names == ["a", "b"]
    s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a", "b"})))  # ACK
    changed, _ = s.offer(CDS, {"a": AB["a"], "b": {"name": "b", "outlier": 3}})
    assert changed is not None
    # The very endpoint dict of the last offer: only b's goes again.
    again, awaited = s.offer(EDS, endpoints)
    assert again is not None and again.names == ["b"] and awaited == again.nonce
    s.receive(Request(EDS, nonce=again.nonce, names=frozenset({"a", "b"})))  # ACK
    assert s.offer(EDS, endpoints) == (None, "")


def test_a_nack_of_a_partial_response_offers_the_good_versions_of_what_it_held() -> None:
    s, node = session()
    subscribed(s, EDS, frozenset({"a", "b"}))
    first, _ = s.offer(EDS, AB)
    assert first is not None
    s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a", "b"})))  # ACK
    bad, _ = s.offer(EDS, {"a": {"name": "a"}, "b": {"name": "b", "bad": True}})
    assert bad is not None and bad.names == ["b"]
    received = s.receive(Request(EDS, nonce=bad.nonce, names=frozenset({"a", "b"}), error="x"))
    # Envoy may hold either b now: the accepted one goes again, a (never rejected) stays.
    (again,) = received.responses
    assert again.resources == (("b", {"name": "b"}),)
    assert again.version == first.version and EDS in node.nacks


def test_a_name_subscribed_again_is_sent_again() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"a", "b"}))
    first, _ = s.offer(EDS, AB)
    assert first is not None
    s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a", "b"})))  # ACK
    # >> Envoy drops b (its listener went), then asks for it again
    assert s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a"}))) == Received(None)
    (again,) = s.receive(Request(EDS, nonce=first.nonce, names=frozenset({"a", "b"}))).responses
    assert again.names == ["b"]


def test_resend_offers_everything_desired_again() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"a", "b"}))
    lost, _ = s.offer(EDS, AB)
    assert lost is not None
    # No answer came: the whole current state goes again, under a new nonce.
    again = s.resend(EDS)
    assert again is not None and again.names == ["a", "b"] and again.nonce != lost.nonce
    # Its ACK settles it, and an ACK of the lost one arriving late is stale.
    s.receive(Request(EDS, nonce=again.nonce, names=frozenset({"a", "b"})))
    assert s.offer(EDS, AB) == (None, "")


def test_requests_set_aside_while_a_response_is_in_flight() -> None:
    s, _ = session()
    subscribed(s, EDS, frozenset({"a"}))
    assert not s.waiting(EDS, "")
    first, _ = s.offer(EDS, AB)
    assert first is not None
    assert s.waiting(EDS, "") and not s.waiting(EDS, first.nonce)
