"""The state of one relay direction, shared by the copying and the splicing relay.

Half-close is this machine: a FIN from a direction's source waits until the bytes queued
for its sink have left, then goes to the sink, while the other direction keeps flowing.
Both relays (``pump.Relay`` copying through user space, ``splice.Splicer`` through
pipes) drive the same table, so they cannot disagree about when a FIN goes out.
"""

from __future__ import annotations

from enum import IntEnum


class Flow(IntEnum):
    """The state of one relay direction: from its source peer to its sink peer.

    Each ``Relay`` has two: toward the upstream (source: the client) and toward the
    client (source: the upstream). Half-close is this machine: a FIN from the source
    waits until the bytes queued for the sink have left, then goes to the sink, while the
    other direction keeps flowing.
    """

    OPEN = 0  # bytes flow
    FIN_PENDING = 1  # the source sent FIN; it follows the bytes still queued for the sink
    FIN_SENT = 2  # the sink got FIN: this direction is done
    LOST = 3  # the sink is gone; nothing more can be delivered


class FlowEvent(IntEnum):
    EOF = 0  # the source sent FIN
    DRAINED = 1  # nothing is queued for the sink any more, and it can take a FIN
    LOST = 2  # the sink went away


# Every transition, in one table (h11's "Rule 1"): (state, event, bytes still queued)
# -> (next state, send FIN to the sink now). Pairs not listed leave the state as it is;
# LOST is reached from any state.
FLOW_TRANSITIONS: dict[tuple[Flow, FlowEvent, bool], tuple[Flow, bool]] = {
    (Flow.OPEN, FlowEvent.EOF, False): (Flow.FIN_SENT, True),
    (Flow.OPEN, FlowEvent.EOF, True): (Flow.FIN_PENDING, False),
    (Flow.FIN_PENDING, FlowEvent.DRAINED, False): (Flow.FIN_SENT, True),
}


def flow_step(state: Flow, event: FlowEvent, queued: bool) -> tuple[Flow, bool]:
    """The next state of a direction, and whether its sink gets a FIN now (pure)."""
    if event is FlowEvent.LOST:
        return Flow.LOST, False
    return FLOW_TRANSITIONS.get((state, event, queued), (state, False))


def fin_seen(state: Flow) -> bool:
    """Whether the direction's source has sent FIN (delivered to the sink or not)."""
    return state is Flow.FIN_PENDING or state is Flow.FIN_SENT
