"""Reading the server name (SNI) from a TLS ClientHello without terminating TLS.

A sans-IO parser, as Envoy's ``tls_inspector`` listener filter is a peek: the proxy feeds
it the bytes it has read from a new connection and asks whether it knows enough yet.
Nothing is consumed: the proxy keeps the bytes (:attr:`ClientHelloReader.buffered`) and
relays them unchanged to the backend it picks, so the client and the backend complete the
handshake end to end (TLS passthrough) with each other's certificates.

It is bounded in the two ways a peek must be. The bytes it holds are capped
(``limit``, 64 KiB by default, the size Envoy's inspector accepts): a client that keeps
sending fragments without completing a ClientHello gets ``TOO_LARGE``, not unbounded
memory. Time is the caller's to bound (the proxy closes a connection that does not
complete its ClientHello in time); a parser cannot wait.

Only what routing needs is read: the record layer (handshake records may fragment one
ClientHello over several records, RFC 8446 §5.1), the handshake header and the
``server_name`` extension (RFC 6066 §3). Everything else is skipped by its length, so a
TLS 1.2 or 1.3 ClientHello with any extensions is read the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_LIMIT = 64 * 1024

_HANDSHAKE_RECORD = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME_EXTENSION = 0x0000
_HOST_NAME = 0x00
_RECORD_HEADER = 5
_MAX_RECORD = 2**14 + 2048  # RFC 8446 §5.2: a TLSCiphertext is at most 2^14 + 2048 bytes


class Outcome(enum.Enum):
    """What the bytes read so far say about the connection."""

    NEED_MORE = "need-more"  # a ClientHello has started and is not complete yet
    SNI = "sni"  # a complete ClientHello naming a host
    NO_SNI = "no-sni"  # a complete ClientHello without a server_name extension
    NOT_TLS = "not-tls"  # the bytes are not the start of a TLS handshake
    TOO_LARGE = "too-large"  # no complete ClientHello within the size limit


@dataclass(frozen=True)
class Peek:
    """The reader's answer; ``server_name`` is set only for ``Outcome.SNI``.

    ``server_name`` is lowercased: host names compare without case (RFC 6066 §3 says the
    name is a DNS host name), and Envoy's ``server_names`` match is case-insensitive too.
    """

    outcome: Outcome
    server_name: str | None = None
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.NEED_MORE


class _Malformed(Exception):
    pass


class ClientHelloReader:
    """Feed it bytes as they arrive; it answers once the answer is known, then stays put.

    Once an answer other than ``NEED_MORE`` is given, further ``feed`` calls only append
    to :attr:`buffered` (so the caller still relays everything) and return that answer.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < _RECORD_HEADER:
            raise ValueError(f"limit {limit} is smaller than a TLS record header")
        self._limit = limit
        self._buffer = bytearray()
        self._answer: Peek | None = None

    @property
    def buffered(self) -> bytes:
        """Every byte fed so far, in order: what the proxy sends on to the backend."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> Peek:
        self._buffer += data
        if self._answer is None:
            self._answer = self._judge()
        return self._answer if self._answer is not None else Peek(Outcome.NEED_MORE)

    def _judge(self) -> Peek | None:
        try:
            hello = _handshake_message(self._buffer)
        except _Malformed as exc:
            return Peek(Outcome.NOT_TLS, reason=str(exc))
        if hello is None:
            if len(self._buffer) >= self._limit:
                return Peek(Outcome.TOO_LARGE, reason=f"no ClientHello in {self._limit} bytes")
            return None
        try:
            name = _server_name(hello)
        except _Malformed as exc:
            return Peek(Outcome.NOT_TLS, reason=str(exc))
        if name is None:
            return Peek(Outcome.NO_SNI)
        return Peek(Outcome.SNI, server_name=name)


def read_server_name(data: bytes, limit: int = DEFAULT_LIMIT) -> Peek:
    """The answer for a buffer read at once (a convenience over :class:`ClientHelloReader`)."""
    return ClientHelloReader(limit).feed(data)


def _handshake_message(buffer: bytearray) -> bytes | None:
    """The complete ClientHello body reassembled from handshake records, or None if short."""
    payload = bytearray()
    offset = 0
    while True:
        if len(buffer) - offset < 1:
            return None
        if buffer[offset] != _HANDSHAKE_RECORD:
            raise _Malformed(f"record type {buffer[offset]} is not a handshake")
        if len(buffer) - offset >= 2 and buffer[offset + 1] != 0x03:
            raise _Malformed(f"record version major {buffer[offset + 1]} is not TLS")
        if len(buffer) - offset < _RECORD_HEADER:
            return None
        length = int.from_bytes(buffer[offset + 3 : offset + 5], "big")
        if length == 0 or length > _MAX_RECORD:
            raise _Malformed(f"handshake record length {length}")
        start = offset + _RECORD_HEADER
        payload += buffer[start : start + length]
        if payload and payload[0] != _CLIENT_HELLO:
            raise _Malformed(f"handshake message type {payload[0]} is not a ClientHello")
        if len(payload) >= 4:
            body_length = int.from_bytes(payload[1:4], "big")
            if len(payload) >= 4 + body_length:
                return bytes(payload[4 : 4 + body_length])
        if len(buffer) < start + length:
            return None
        offset = start + length


class _Cursor:
    """Length-prefixed reads over one ClientHello; any overrun means a malformed hello."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._at

    def take(self, count: int) -> bytes:
        if count > self.remaining:
            raise _Malformed("ClientHello is truncated")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def number(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def vector(self, width: int) -> _Cursor:
        return _Cursor(self.take(self.number(width)))


def _server_name(hello: bytes) -> str | None:
    cursor = _Cursor(hello)
    cursor.take(2 + 32)  # legacy_version, random
    cursor.vector(1)  # legacy_session_id
    cursor.vector(2)  # cipher_suites
    cursor.vector(1)  # legacy_compression_methods
    if cursor.remaining == 0:
        return None  # a ClientHello may end before the extensions (RFC 5246 §7.4.1.2)
    extensions = cursor.vector(2)
    while extensions.remaining:
        kind = extensions.number(2)
        body = extensions.vector(2)
        if kind == _SERVER_NAME_EXTENSION:
            return _host_name(body)
    return None


def _host_name(extension: _Cursor) -> str | None:
    names = extension.vector(2)
    while names.remaining:
        name_type = names.number(1)
        name = names.vector(2)
        if name_type != _HOST_NAME:
            continue
        raw = name.take(name.remaining)
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Malformed("server name is not ASCII") from None
        if not host:
            raise _Malformed("server name is empty")
        return host.lower()
    return None
