"""The load balancer's shaped relay driven through fake transports: hold, grant, FIN, loss."""

from __future__ import annotations

import asyncio
from typing import Any

from tcpmesh.dataplane.pump import DOWNSTREAM, UPSTREAM
from tcpmesh.dataplane.slb import ShapedRelay


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.eof = False
        self.closed = False
        self.writes_after_eof = 0

    def write(self, data: Any) -> None:
        if self.eof:
            self.writes_after_eof += 1
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class FakeBucket:
    """Grants ``allowance`` bytes in total, then holds everything back."""

    def __init__(self, allowance: int) -> None:
        self.allowance = allowance
        self.withdrawn: list[int] = []
        self.receive_buffer = 65536

    def request(self, relay: ShapedRelay, direction: int, size: int) -> int:
        granted = min(size, self.allowance)
        self.allowance -= granted
        return granted

    def withdraw(self, relay: ShapedRelay, direction: int) -> None:
        self.withdrawn.append(direction)


def relay(allowance: int) -> tuple[ShapedRelay, FakeTransport, FakeTransport, FakeBucket]:
    bucket = FakeBucket(allowance)
    done: list[bool] = []
    shaped = ShapedRelay(lambda: bucket, lambda: done.append(True))  # type: ignore[arg-type,return-value]
    client, upstream = FakeTransport(), FakeTransport()
    shaped.side_made(DOWNSTREAM, client)
    assert not client.reading  # nothing is read before the upstream is there
    shaped.side_made(UPSTREAM, upstream)
    assert client.reading
    return shaped, client, upstream, bucket


def test_what_the_shaper_holds_back_waits_and_the_source_stops_being_read() -> None:
    shaped, client, upstream, _ = relay(allowance=3)
    shaped.received(DOWNSTREAM, b"hello")
    assert bytes(upstream.written) == b"hel"
    assert not client.reading
    shaped.granted(DOWNSTREAM, 1)
    assert bytes(upstream.written) == b"hell" and not client.reading
    shaped.granted(DOWNSTREAM, 1)
    assert bytes(upstream.written) == b"hello" and client.reading


def test_bytes_that_arrive_while_held_queue_behind_in_order() -> None:
    shaped, _, upstream, _ = relay(allowance=2)
    shaped.received(DOWNSTREAM, b"abc")
    shaped.received(DOWNSTREAM, b"def")  # delivered after pause_reading()
    shaped.granted(DOWNSTREAM, 4)
    assert bytes(upstream.written) == b"abcdef"


def test_a_fin_follows_the_held_bytes() -> None:
    shaped, _, upstream, _ = relay(allowance=1)
    shaped.received(DOWNSTREAM, b"xy")
    shaped.eof(DOWNSTREAM)
    assert not upstream.eof
    shaped.granted(DOWNSTREAM, 1)
    assert upstream.eof and bytes(upstream.written) == b"xy" and upstream.writes_after_eof == 0


def test_a_full_sink_pauses_its_source() -> None:
    shaped, client, upstream, _ = relay(allowance=100)
    shaped.sink_paused(UPSTREAM, True)  # the upstream transport is above its mark
    assert not client.reading
    shaped.sink_paused(UPSTREAM, False)
    assert client.reading
    assert upstream.reading


def test_a_lost_client_drops_what_was_held_for_it_and_closes_the_upstream() -> None:
    shaped, client, upstream, bucket = relay(allowance=0)
    shaped.received(UPSTREAM, b"reply")  # held: nothing granted
    shaped.lost(DOWNSTREAM)
    assert upstream.closed and client.written == b""
    assert UPSTREAM in bucket.withdrawn
    shaped.lost(UPSTREAM)
    assert shaped.done


def test_what_a_closed_client_sent_still_goes_out_before_the_upstream_closes() -> None:
    shaped, _, upstream, _ = relay(allowance=2)
    shaped.received(DOWNSTREAM, b"last")
    shaped.lost(DOWNSTREAM)
    assert not upstream.closed
    shaped.granted(DOWNSTREAM, 2)
    assert bytes(upstream.written) == b"last" and upstream.closed
