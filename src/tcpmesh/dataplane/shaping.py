"""Bandwidth shaping, sans-IO: a token bucket and the fair queue of flows waiting on it.

A load balancer's bandwidth cap is an aggregate: every connection of the Service, in one
direction, draws from one bucket. Shaping only ever *delays*: a flow that finds the
bucket empty keeps the bytes it read, stops reading its source (so TCP's own
back-pressure reaches the sender) and is granted tokens later, in arrival order, a
quantum at a time, so that parallel connections share the rate evenly and nothing is
dropped or reordered. The I/O around it (``dataplane.loadbalancer``) asks ``Shaper``
what it may send now and when to ask again; nothing here reads a clock or a socket.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

BITS_PER_MEGABIT = 1_000_000
# A flow is granted at most this share of a second's rate at once: small enough that
# parallel flows interleave finely, large enough that wake-ups stay under ~100 per second.
QUANTUM_SECONDS = 0.01
MIN_QUANTUM = 4096
MAX_QUANTUM = 256 * 1024
# The bucket holds at most this much of a second's rate (and at least two quanta): a
# short burst, so that a cap is visible within a fraction of a second.
BURST_SECONDS = 0.2

# The kernel's receive buffer of a shaped socket holds this much of a second's rate: the
# TCP window a sender sees, enough for one connection to reach the cap at up to this
# round-trip time. Fixed (no autotuning): a buffer the kernel keeps growing absorbs the
# sender's bytes for seconds before back-pressure reaches it, and each refill of a large
# one lets the sender jump ahead by that much at once.
RECEIVE_BUFFER_SECONDS = 0.025
MIN_RECEIVE_BUFFER = 32 * 1024
MAX_RECEIVE_BUFFER = 4 * 1024 * 1024

K = TypeVar("K", bound=Hashable)


def bytes_per_second(mbps: int) -> float:
    """Mbit/s (10^6 bits per second, as cloud load balancers count) to bytes per second."""
    return mbps * BITS_PER_MEGABIT / 8


def quantum_for(rate: float) -> int:
    return int(min(MAX_QUANTUM, max(MIN_QUANTUM, rate * QUANTUM_SECONDS)))


def receive_buffer_for(rate: float) -> int:
    return int(min(MAX_RECEIVE_BUFFER, max(MIN_RECEIVE_BUFFER, rate * RECEIVE_BUFFER_SECONDS)))


def burst_for(rate: float) -> float:
    return max(2.0 * quantum_for(rate), rate * BURST_SECONDS)


@dataclass
class TokenBucket:
    """``rate`` bytes per second, at most ``burst`` saved up; never below zero (no debt)."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        burst = burst_for(rate)
        return cls(rate=rate, burst=burst, tokens=burst, stamp=now)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def retune(self, rate: float, now: float) -> None:
        """A new rate from ``now`` on: what accrued so far was earned at the old rate."""
        self.refill(now)
        self.rate = rate
        self.burst = burst_for(rate)
        self.tokens = min(self.tokens, self.burst)

    def take(self, want: int, now: float) -> int:
        """Take up to ``want`` whole tokens; returns how many were taken."""
        self.refill(now)
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return max(granted, 0)

    def seconds_until(self, want: int, now: float) -> float:
        """How long until ``want`` tokens are saved up (0: they are there now)."""
        self.refill(now)
        deficit = min(want, self.burst) - self.tokens
        return max(0.0, deficit / self.rate)


class Shaper(Generic[K]):
    """One bucket and the flows queued on it, first come first served, a quantum each.

    A flow asks with ``request`` when it has bytes; what it cannot send at once it keeps
    and waits for. ``grants`` hands out tokens to the queue in order (a flow that still
    wants more after its quantum goes to the back); ``wake_in`` says when the head of the
    queue can next be served. A flow that arrives while others wait queues behind them
    even if tokens are there, so a newcomer never overtakes.
    """

    def __init__(self, rate: float, now: float) -> None:
        self.bucket = TokenBucket.full(rate, now)
        self._waiting: dict[K, int] = {}  # insertion order is the queue

    @property
    def quantum(self) -> int:
        return quantum_for(self.bucket.rate)

    def retune(self, rate: float, now: float) -> None:
        self.bucket.retune(rate, now)

    def waiting(self) -> tuple[K, ...]:
        return tuple(self._waiting)

    def request(self, key: K, size: int, now: float) -> int:
        """Bytes ``key`` may send now out of ``size``; the rest waits for ``grants``."""
        if key in self._waiting or size <= 0:
            return 0
        granted = 0 if self._waiting else self.bucket.take(size, now)
        if granted < size:
            self._waiting[key] = size - granted
        return granted

    def withdraw(self, key: K) -> int:
        """Leave the queue (the flow closed, or its sink pushes back); what it still wanted."""
        return self._waiting.pop(key, 0)

    def grants(self, now: float) -> list[tuple[K, int]]:
        """Tokens for the waiting flows, in queue order, while the bucket has them."""
        out: list[tuple[K, int]] = []
        quantum = self.quantum
        while self._waiting:
            key, wanted = next(iter(self._waiting.items()))
            share = min(wanted, quantum)
            if self.bucket.seconds_until(share, now) > 0:
                break
            granted = self.bucket.take(share, now)
            del self._waiting[key]
            if wanted > granted:
                self._waiting[key] = wanted - granted  # to the back of the queue
            out.append((key, granted))
        return out

    def wake_in(self, now: float) -> float | None:
        """Seconds until the head of the queue can be served; None when nobody waits."""
        if not self._waiting:
            return None
        wanted = next(iter(self._waiting.values()))
        return self.bucket.seconds_until(min(wanted, self.quantum), now)
