"""The token bucket and the fair queue of the load balancer's bandwidth cap, without I/O."""

from __future__ import annotations

import pytest

from tcpmesh.dataplane.shaping import (
    Shaper,
    TokenBucket,
    burst_for,
    bytes_per_second,
    quantum_for,
)

RATE = bytes_per_second(20)  # 2.5 MB/s


def test_megabits_are_decimal() -> None:
    assert bytes_per_second(20) == 2_500_000
    assert bytes_per_second(5) == 625_000


def test_bucket_starts_full_and_never_exceeds_its_burst() -> None:
    bucket = TokenBucket.full(RATE, now=0.0)
    assert bucket.tokens == bucket.burst == burst_for(RATE)
    bucket.refill(100.0)
    assert bucket.tokens == bucket.burst


def test_bucket_grants_what_it_has_and_goes_no_lower_than_zero() -> None:
    bucket = TokenBucket.full(RATE, now=0.0)
    assert bucket.take(10**9, now=0.0) == int(burst_for(RATE))
    assert bucket.take(1, now=0.0) == 0
    assert bucket.tokens >= 0


def test_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(RATE, now=0.0)
    bucket.take(10**9, now=0.0)
    assert bucket.take(10**9, now=0.01) == 25_000
    assert bucket.seconds_until(25_000, now=0.01) == pytest.approx(0.01)


def test_a_clock_that_goes_back_earns_nothing() -> None:
    bucket = TokenBucket.full(RATE, now=5.0)
    bucket.take(10**9, now=5.0)
    assert bucket.take(10**9, now=4.0) == 0
    assert bucket.take(10**9, now=5.0) == 0


def test_retune_keeps_what_accrued_at_the_old_rate_and_clamps_to_the_new_burst() -> None:
    bucket = TokenBucket.full(RATE, now=0.0)
    bucket.take(10**9, now=0.0)
    low = bytes_per_second(5)
    bucket.retune(low, now=0.1)  # 250,000 bytes earned at 20 Mbit/s, more than 5's burst
    assert bucket.rate == low
    assert bucket.tokens == bucket.burst == burst_for(low)
    bucket.take(10**9, now=0.1)
    assert bucket.take(10**9, now=0.12) == pytest.approx(low * 0.02, abs=1)


def test_quantum_scales_with_the_rate_within_bounds() -> None:
    assert quantum_for(bytes_per_second(1)) == 4096
    assert quantum_for(RATE) == 25_000
    assert quantum_for(bytes_per_second(5000)) == 256 * 1024


def test_first_request_is_served_from_the_burst() -> None:
    shaper: Shaper[str] = Shaper(RATE, now=0.0)
    assert shaper.request("a", 1000, now=0.0) == 1000
    assert shaper.waiting() == ()
    assert shaper.wake_in(now=0.0) is None


def test_what_the_bucket_cannot_cover_waits_and_is_granted_later() -> None:
    shaper: Shaper[str] = Shaper(RATE, now=0.0)
    burst = int(shaper.bucket.burst)
    assert shaper.request("a", burst + 60_000, now=0.0) == burst
    assert shaper.waiting() == ("a",)
    assert shaper.grants(now=0.0) == []
    assert shaper.wake_in(now=0.0) == pytest.approx(0.01)  # one 25,000-byte quantum
    assert shaper.grants(now=0.01) == [("a", 25_000)]
    assert shaper.grants(now=0.03) == [("a", 25_000), ("a", 10_000)]
    assert shaper.waiting() == ()


def test_waiting_flows_are_served_in_turn_a_quantum_each() -> None:
    shaper: Shaper[str] = Shaper(RATE, now=0.0)
    shaper.request("a", 10**6, now=0.0)
    shaper.request("b", 10**6, now=0.0)
    shaper.request("c", 10**6, now=0.0)
    assert shaper.waiting() == ("a", "b", "c")
    granted = shaper.grants(now=0.03)
    assert [key for key, _ in granted] == ["a", "b", "c"]
    assert {size for _, size in granted} == {25_000}
    assert shaper.waiting() == ("a", "b", "c")


def test_a_newcomer_queues_behind_waiting_flows_even_when_tokens_are_there() -> None:
    shaper: Shaper[str] = Shaper(RATE, now=0.0)
    shaper.request("a", 10**6, now=0.0)
    assert shaper.request("b", 10, now=1.0) == 0
    assert shaper.waiting() == ("a", "b")


def test_a_flow_asks_once_until_it_is_served() -> None:
    shaper: Shaper[str] = Shaper(RATE, now=0.0)
    shaper.request("a", 10**6, now=0.0)
    assert shaper.request("a", 5, now=0.0) == 0
    assert shaper.withdraw("a") == 10**6 - int(shaper.bucket.burst)


def test_withdrawn_flows_get_nothing_more() -> None:
    shaper: Shaper[str] = Shaper(RATE, now=0.0)
    shaper.request("a", 10**6, now=0.0)
    shaper.request("b", 10**6, now=0.0)
    shaper.withdraw("a")
    assert [key for key, _ in shaper.grants(now=0.02)] == ["b", "b"]


def test_over_a_long_run_the_aggregate_is_the_rate() -> None:
    shaper: Shaper[int] = Shaper(RATE, now=0.0)
    sent = 0
    for key in range(4):
        sent += shaper.request(key, 10**9, now=0.0)
    now = 0.0
    while now < 10.0:
        wait = shaper.wake_in(now)
        assert wait is not None
        now += max(wait, 0.001)
        sent += sum(size for _, size in shaper.grants(now))
    assert abs(sent - RATE * now) <= burst_for(RATE) + quantum_for(RATE)


def test_a_new_rate_applies_to_flows_already_waiting() -> None:
    shaper: Shaper[str] = Shaper(RATE, now=0.0)
    shaper.request("a", 10**9, now=0.0)
    shaper.grants(now=1.0)
    low = bytes_per_second(5)
    shaper.retune(low, now=1.0)
    shaper.bucket.take(10**9, now=1.0)
    granted = sum(size for step in range(1, 101) for _, size in shaper.grants(1.0 + step / 100))
    assert granted == pytest.approx(low, abs=quantum_for(low))
