"""The tcp-echo protocol without sockets: bytes in, replies out."""

from __future__ import annotations

import asyncio
import io

from tcpmesh.runtime.tcpecho import EchoProtocol, LineLog


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def _connect(prefix: bytes = b"one") -> tuple[EchoProtocol, FakeTransport, io.BytesIO]:
    out = io.BytesIO()
    protocol = EchoProtocol(prefix, LineLog(out))
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport, out


def test_complete_lines_are_answered_in_order_in_one_write() -> None:
    protocol, transport, _ = _connect()
    protocol.data_received(b"a\nbb\n")
    assert transport.written == b"one a\none bb\n"


def test_a_line_split_across_chunks_is_answered_once_whole() -> None:
    protocol, transport, _ = _connect()
    for chunk in (b"hel", b"lo", b" wor", b"ld\nnext"):
        protocol.data_received(chunk)
    assert transport.written == b"one hello world\n"
    protocol.data_received(b"\n")
    assert transport.written == b"one hello world\none next\n"


def test_eof_closes_and_drops_the_partial_line() -> None:
    protocol, transport, _ = _connect()
    protocol.data_received(b"done\npartial")
    assert protocol.eof_received() is False  # asyncio then closes the transport
    assert transport.written == b"one done\n"


def test_carriage_returns_and_empty_lines_are_kept() -> None:
    protocol, transport, _ = _connect(b"p")
    protocol.data_received(b"x\r\n\n")
    assert transport.written == b"p x\r\np \n"


def test_requests_and_responses_are_logged() -> None:
    protocol, _, out = _connect(b"two")
    protocol.data_received(b"hi\n")
    assert out.getvalue() == b"request: hi\nresponse: two hi\n"


def test_a_slow_reader_pauses_reading_until_replies_drain() -> None:
    protocol, transport, _ = _connect()
    protocol.pause_writing()
    assert transport.reading is False
    protocol.resume_writing()
    assert transport.reading is True


def test_a_read_error_is_logged() -> None:
    protocol, _, out = _connect()
    protocol.connection_lost(ConnectionResetError("reset by peer"))
    assert out.getvalue() == b"failed to read data, err: reset by peer\n"
