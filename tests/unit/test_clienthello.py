"""The SNI peek, fed real ClientHellos that Python's ssl module writes into a MemoryBIO."""

from __future__ import annotations

import ssl

import pytest

from tcpmesh.dataplane.clienthello import ClientHelloReader, Outcome, read_server_name


def client_hello(
    server_hostname: str | None,
    *,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    alpn: list[str] | None = None,
) -> bytes:
    """The first flight of a real client: exactly the bytes it would write to the socket."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def refragment(hello: bytes, cut: int) -> bytes:
    """The same handshake message split over two records, as RFC 8446 §5.1 allows."""
    assert hello[0] == 0x16
    header, body = hello[:5], hello[5:]
    first, second = body[:cut], body[cut:]

    def record(chunk: bytes) -> bytes:
        return header[:3] + len(chunk).to_bytes(2, "big") + chunk

    return record(first) + record(second)


def test_sni_of_a_tls13_client_hello_read_at_once() -> None:
    peek = read_server_name(client_hello("a.example.com"))
    assert peek.outcome is Outcome.SNI
    assert peek.server_name == "a.example.com"


def test_sni_of_a_tls12_client_hello() -> None:
    hello = client_hello("db.internal.example.org", maximum=ssl.TLSVersion.TLSv1_2)
    assert read_server_name(hello).server_name == "db.internal.example.org"


def test_server_name_is_lowercased() -> None:
    assert read_server_name(client_hello("MQTT.Example.COM")).server_name == "mqtt.example.com"


def test_byte_by_byte_needs_more_until_the_last_byte() -> None:
    hello = client_hello("a.example.com")
    reader = ClientHelloReader()
    for index, byte in enumerate(hello):
        peek = reader.feed(bytes([byte]))
        if index < len(hello) - 1:
            assert peek.outcome is Outcome.NEED_MORE, index
    assert peek.outcome is Outcome.SNI
    assert peek.server_name == "a.example.com"
    assert reader.buffered == hello


def test_bytes_after_the_answer_are_kept_for_the_relay() -> None:
    hello = client_hello("a.example.com")
    reader = ClientHelloReader()
    assert reader.feed(hello).outcome is Outcome.SNI
    assert reader.feed(b"early data").outcome is Outcome.SNI
    assert reader.buffered == hello + b"early data"


def test_no_server_hostname_is_no_sni() -> None:
    peek = read_server_name(client_hello(None))
    assert peek.outcome is Outcome.NO_SNI
    assert peek.server_name is None


def test_an_ip_address_sends_no_sni() -> None:
    # RFC 6066: literal IP addresses are not permitted in server_name; ssl omits it.
    assert read_server_name(client_hello("127.0.0.1")).outcome is Outcome.NO_SNI


@pytest.mark.parametrize("cut", [1, 3, 4, 40, 100])
def test_a_client_hello_fragmented_over_two_records(cut: int) -> None:
    hello = refragment(client_hello("split.example.com"), cut)
    peek = read_server_name(hello)
    assert peek.outcome is Outcome.SNI
    assert peek.server_name == "split.example.com"
    reader = ClientHelloReader()
    assert reader.feed(hello[: 5 + cut + 3]).outcome is Outcome.NEED_MORE


def test_a_large_client_hello_with_many_alpn_protocols() -> None:
    alpn = [f"protocol-{i:04d}-" + "x" * 40 for i in range(100)]
    hello = client_hello("big.example.com", alpn=alpn)
    assert len(hello) > 4000
    assert read_server_name(hello).server_name == "big.example.com"


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"hello\n", b"\x16\x01", b"\x00"],
)
def test_plaintext_is_not_tls(data: bytes) -> None:
    assert read_server_name(data).outcome is Outcome.NOT_TLS


def test_a_handshake_that_is_not_a_client_hello_is_not_tls() -> None:
    hello = bytearray(client_hello("a.example.com"))
    hello[5] = 0x02  # ServerHello
    assert read_server_name(bytes(hello)).outcome is Outcome.NOT_TLS


def test_a_cut_client_hello_waits_for_the_rest() -> None:
    hello = client_hello("a.example.com")
    # A real client could still send the rest: the reader waits instead of guessing.
    assert ClientHelloReader().feed(hello[:-10]).outcome is Outcome.NEED_MORE


def test_a_handshake_length_that_cuts_the_extensions_is_not_tls() -> None:
    hello = bytearray(client_hello("a.example.com"))
    body_length = int.from_bytes(hello[6:9], "big")
    hello[6:9] = (body_length - 20).to_bytes(3, "big")  # the extension block overruns it
    peek = read_server_name(bytes(hello))
    assert peek.outcome is Outcome.NOT_TLS
    assert "truncated" in peek.reason


def test_the_size_limit_ends_an_endless_client_hello() -> None:
    hello = client_hello("a.example.com")
    reader = ClientHelloReader(limit=64)
    peek = reader.feed(hello[:64])
    assert peek.outcome is Outcome.TOO_LARGE
    assert "64 bytes" in peek.reason


def test_a_complete_hello_within_the_limit_is_read() -> None:
    hello = client_hello("a.example.com")
    assert read_server_name(hello, limit=len(hello) + 1).outcome is Outcome.SNI


def test_a_limit_below_a_record_header_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller than a TLS record header"):
        ClientHelloReader(limit=4)
