"""The bundled tcp-echo server, behaving like istio/istio ``samples/tcp-echo/src/main.go``.

Usage: ``python -m tcpmesh.runtime.tcpecho <port[,port...]> <prefix>``. Every
``\\n``-terminated line read is answered with ``prefix + " " + line`` (newline kept), many
lines per connection, until the client closes; a last line without ``\\n`` gets no reply.
It listens on ``$POD_IP`` (default ``0.0.0.0``) rather than every interface, so that each
pod of the mesh can bind the same port on its own loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import BinaryIO, cast

USAGE = (
    "you should run it like: 'main [PORTS...] prefix' , please notice PORTS are "
    "comma-delineated , like  port 1[,port 2]  "
)


class LineLog:
    """Stdout flushed at once, so a pod's log file follows the traffic."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self._out.write(data)
            self._out.flush()

    def text(self, message: str) -> None:
        self.write(os.fsencode(message) + b"\n")


class EchoProtocol(asyncio.Protocol):
    """One connection: answer each complete line; drop a trailing partial line at EOF."""

    def __init__(self, prefix: bytes, log: LineLog) -> None:
        self._prefix = prefix + b" "
        self._log = log
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        # Only the new bytes can hold a newline: the buffered ones were scanned already.
        scan_from = len(self._buffer)
        self._buffer += data
        start = 0
        replies: list[bytes] = []
        logged: list[bytes] = []
        while (end := self._buffer.find(b"\n", scan_from)) >= 0:
            line = bytes(self._buffer[start : end + 1])
            reply = self._prefix + line
            replies.append(reply)
            logged += (b"request: ", line, b"response: ", reply)
            start = scan_from = end + 1
        if start:
            del self._buffer[:start]
        if replies:
            self._transport.write(b"".join(replies))
            # One log write per read, not two per line: the log must not slow the echo.
            self._log.write(b"".join(logged))

    def eof_received(self) -> bool:
        # Returning False closes the transport once pending replies are written.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._log.text(f"failed to read data, err: {exc}")

    # Back-pressure: a client that does not read its replies stops being read from.
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()


def _format_addr(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(ports: Sequence[str], prefix: str, host: str, log: LineLog) -> int:
    """Listen on every port and serve forever; return 1 if a port cannot be listened on."""
    loop = asyncio.get_running_loop()
    prefix_bytes = os.fsencode(prefix)
    servers: list[asyncio.Server] = []
    try:
        for port in ports:
            try:
                server = await loop.create_server(
                    lambda: EchoProtocol(prefix_bytes, log), host, int(port)
                )
            except (ValueError, OverflowError):
                log.text(
                    f"failed to create listener, err: listen tcp: address tcp/{port}: unknown port"
                )
                return 1
            except OSError as exc:
                reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                log.text(
                    f"failed to create listener, err: listen tcp {host}:{port}: bind: {reason}"
                )
                return 1
            servers.append(server)
            for sock in server.sockets:
                log.text(f"listening on {_format_addr(sock.getsockname())}, prefix: {prefix}")
        await asyncio.Event().wait()
        return 0
    finally:
        for server in servers:
            server.close()


def _run(coro_args: tuple[Sequence[str], str, str, LineLog]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(*coro_args))
    result: int = uvloop.run(serve(*coro_args))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    log = LineLog(sys.stdout.buffer)
    if len(args) != 2:
        log.text(USAGE)
        return 1
    ports, prefix = args[0].split(","), args[1]
    host = os.environ.get("POD_IP") or "0.0.0.0"
    try:
        return _run((ports, prefix, host, log))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
