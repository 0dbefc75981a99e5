"""The built-in cloud load balancer: serves capped LoadBalancer ports and shapes them.

``python -m tcpmesh.dataplane.slb`` runs in the pod ``kube-system/tcpmesh-slb`` (see
``tcpmesh.control.loadbalancer`` for what it serves and why it exists). It follows its
Snapshot like any proxy; each listener names its ``BandwidthLimit``, and every
connection of one bucket draws from the same two ``Shaper`` s (one per direction), so the
cap is the Service's aggregate. A new Snapshot re-rates the shapers in place: the change
reaches open connections at once. A bucket that leaves the Snapshot releases its waiting
bytes and its connections run unshaped until they end.

One process, one event loop: the shapers are plain objects shared by every connection,
with no cross-process state. The stock asyncio loop (not uvloop): a capped relay moves
at most a few hundred Mbit/s, and its ``write_eof`` flushes before the FIN without the
uvloop defect ``dataplane.pump`` works around.

Environment: POD_NAMESPACE/POD_NAME (the node), TCPMESH_STATE_DIR (the API's address),
POD_IP and TCPMESH_STATUS_PORT (answered once the first Snapshot is applied, so the
kubelet's TCP probe means "has its table", which the control plane waits for before it
moves a port here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tcpmesh.control import BandwidthLimit, Cluster, Listener, Snapshot
from tcpmesh.dataplane.feed import SnapshotFeed
from tcpmesh.dataplane.pump import DOWNSTREAM, UPSTREAM
from tcpmesh.dataplane.shaping import Shaper, bytes_per_second, receive_buffer_for

log = logging.getLogger("tcpmesh.slb")

HIGH_WATER = 64 * 1024
BACKLOG = 1024
# Never wake a shaper sooner than this: the loop's clock is no finer anyway.
MIN_WAKE = 0.001

Key = tuple["ShapedRelay", int]


class _Bucket:
    """The two shapers of one Service (index: the direction's source side) and their
    wake-up timers; ``release`` lets every waiting byte go when the cap is removed."""

    def __init__(self, limit: BandwidthLimit, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        now = loop.time()
        rate = bytes_per_second(limit.mbps)
        self.shapers: tuple[Shaper[Key], Shaper[Key]] = (Shaper(rate, now), Shaper(rate, now))
        self.timers: list[asyncio.TimerHandle | None] = [None, None]
        self.released = False
        self.receive_buffer = receive_buffer_for(rate)

    def retune(self, limit: BandwidthLimit) -> None:
        now = self.loop.time()
        rate = bytes_per_second(limit.mbps)
        self.receive_buffer = receive_buffer_for(rate)
        for direction, shaper in enumerate(self.shapers):
            shaper.retune(rate, now)
            self.schedule(direction, reset=True)

    def request(self, relay: ShapedRelay, direction: int, size: int) -> int:
        if self.released:
            return size
        granted = self.shapers[direction].request((relay, direction), size, self.loop.time())
        if granted < size:
            self.schedule(direction)
        return granted

    def withdraw(self, relay: ShapedRelay, direction: int) -> None:
        self.shapers[direction].withdraw((relay, direction))

    def schedule(self, direction: int, *, reset: bool = False) -> None:
        timer = self.timers[direction]
        if timer is not None and not reset:
            return
        if timer is not None:
            timer.cancel()
        wait = self.shapers[direction].wake_in(self.loop.time())
        self.timers[direction] = (
            None
            if wait is None
            else self.loop.call_later(max(wait, MIN_WAKE), self._wake, direction)
        )

    def _wake(self, direction: int) -> None:
        self.timers[direction] = None
        for (relay, _), size in self.shapers[direction].grants(self.loop.time()):
            relay.granted(direction, size)
        self.schedule(direction)

    def release(self) -> None:
        self.released = True
        for direction, shaper in enumerate(self.shapers):
            timer = self.timers[direction]
            if timer is not None:
                timer.cancel()
            for key in shaper.waiting():
                size = shaper.withdraw(key)
                key[0].granted(direction, size)


class _Side(asyncio.Protocol):
    """One socket of a relayed connection; everything is the relay's business."""

    def __init__(self, relay: ShapedRelay, index: int) -> None:
        self.relay = relay
        self.index = index

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.side_made(self.index, transport)

    def data_received(self, data: bytes) -> None:
        self.relay.received(self.index, data)

    def eof_received(self) -> bool:
        self.relay.eof(self.index)
        return True

    def pause_writing(self) -> None:
        self.relay.sink_paused(self.index, True)

    def resume_writing(self) -> None:
        self.relay.sink_paused(self.index, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self.index)


class ShapedRelay:
    """Both directions of one connection; direction ``d`` flows from side ``d`` to the other.

    A direction holds at most one read that the shaper has not let through yet, and does
    not read its source while it holds one, nor while its sink is above the high-water
    mark: the sender's TCP window closes, which is the back-pressure. A FIN follows the
    held bytes; order is kept because nothing overtakes the held bytes.
    """

    def __init__(self, bucket: Callable[[], _Bucket | None], on_done: Callable[[], None]) -> None:
        self._bucket = bucket
        self._on_done = on_done
        self.sides: list[asyncio.Transport | None] = [None, None]
        self._held: list[memoryview | None] = [None, None]
        self._fin: list[bool] = [False, False]  # the source sent FIN
        self._sink_paused = [False, False]  # indexed by the sink's side
        self._lost = [False, False]
        self.done = False

    def side_made(self, index: int, transport: asyncio.BaseTransport) -> None:
        side = transport if isinstance(transport, asyncio.Transport) else None
        self.sides[index] = side
        if side is not None:
            side.set_write_buffer_limits(high=HIGH_WATER, low=HIGH_WATER // 4)
            bucket = self._bucket()
            sock = side.get_extra_info("socket")
            if bucket is not None and sock is not None:
                # Fixed, so the sender meets the shaper's pace within a window's worth.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bucket.receive_buffer)
        if index == DOWNSTREAM and self.sides[UPSTREAM] is None and side is not None:
            side.pause_reading()  # nothing is read until the upstream is there
        elif index == UPSTREAM:
            early, self._held[DOWNSTREAM] = self._held[DOWNSTREAM], None
            if early is not None:
                self._offer(DOWNSTREAM, early)
            else:
                self._update_reading(DOWNSTREAM)

    def received(self, direction: int, data: bytes) -> None:
        held = self._held[direction]
        if held is not None or self.sides[1 - direction] is None:
            # Delivered after pause_reading(), or before the upstream is there: keep it
            # behind what is already held.
            self._held[direction] = memoryview(bytes(held or b"") + data)
            return
        self._offer(direction, memoryview(data))

    def _offer(self, direction: int, view: memoryview) -> None:
        """Send what the shaper allows now; hold the rest and stop reading the source."""
        bucket = self._bucket()
        granted = bucket.request(self, direction, len(view)) if bucket else len(view)
        if granted:
            self._write(direction, view[:granted])
        self._held[direction] = view[granted:] if granted < len(view) else None
        self._update_reading(direction)

    def granted(self, direction: int, size: int) -> None:
        held = self._held[direction]
        if held is None:
            return
        self._write(direction, held[:size])
        rest = held[size:]
        self._held[direction] = rest if len(rest) else None
        if self._held[direction] is None:
            if self._fin[direction]:
                self._send_fin(direction)
            self._update_reading(direction)

    def eof(self, direction: int) -> None:
        self._fin[direction] = True
        if self._held[direction] is None:
            self._send_fin(direction)

    def sink_paused(self, sink: int, paused: bool) -> None:
        self._sink_paused[sink] = paused
        self._update_reading(1 - sink)

    def lost(self, index: int) -> None:
        """Side ``index`` is closed: what it sent still goes out (then the other side is
        closed); what was held for it is dropped."""
        self._lost[index] = True
        self._held[1 - index] = None
        bucket = self._bucket()
        if bucket is not None:
            bucket.withdraw(self, 1 - index)
        self._fin[index] = True
        if self._held[index] is None:
            self._send_fin(index)
        if all(self._lost) or self.sides[1 - index] is None:
            self._finish()

    def abort(self) -> None:
        for side in self.sides:
            if side is not None:
                side.abort()

    def _write(self, direction: int, data: memoryview) -> None:
        sink = self.sides[1 - direction]
        if sink is not None and not self._lost[1 - direction]:
            sink.write(data)

    def _send_fin(self, direction: int) -> None:
        sink = self.sides[1 - direction]
        if sink is None or sink.is_closing():
            return
        if self._lost[direction] or (
            self._fin[1 - direction] and self._held[1 - direction] is None
        ):
            # The source is gone, or both directions ended: close, which flushes first.
            sink.close()
            source = self.sides[direction]
            if source is not None and not source.is_closing():
                source.close()
            return
        if sink.can_write_eof():
            sink.write_eof()

    def _update_reading(self, direction: int) -> None:
        source = self.sides[direction]
        if source is None or source.is_closing() or self.sides[1 - direction] is None:
            return
        want = self._held[direction] is None and not self._sink_paused[1 - direction]
        if want and not self._fin[direction]:
            source.resume_reading()
        elif not want:
            source.pause_reading()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        bucket = self._bucket()
        if bucket is not None:
            bucket.withdraw(self, DOWNSTREAM)
            bucket.withdraw(self, UPSTREAM)
        self._on_done()


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


class LoadBalancerProxy:
    """Applies the load balancer's Snapshots: listeners, buckets, and the connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.snapshot = Snapshot.build((), ())
        self._listeners: dict[tuple[str, int], Listener] = {}
        self._servers: dict[tuple[str, int], asyncio.Server] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._next: dict[str, int] = {}  # round robin position per cluster
        self.relays: set[ShapedRelay] = set()

    async def apply(self, snapshot: Snapshot) -> None:
        """New connections see the new listeners; every open one sees the new rates now."""
        self.snapshot = snapshot
        self._listeners = {(lst.address, lst.port): lst for lst in snapshot.listeners}
        limits = {
            lst.bandwidth.bucket: lst.bandwidth for lst in snapshot.listeners if lst.bandwidth
        }
        for name in [n for n in self._buckets if n not in limits]:
            self._buckets.pop(name).release()
        for name, limit in limits.items():
            bucket = self._buckets.get(name)
            if bucket is None:
                self._buckets[name] = _Bucket(limit, self._loop)
            else:
                bucket.retune(limit)
        for key in [k for k in self._servers if k not in self._listeners]:
            self._servers.pop(key).close()  # stops accepting; open connections go on
        await self.bind_missing()

    async def bind_missing(self) -> bool:
        """Bind the listeners not bound yet (a port still held elsewhere is retried)."""
        complete = True
        for key in self._listeners:
            if key in self._servers:
                continue
            try:
                sock = _bind(*key)
            except OSError as exc:
                log.warning("cannot listen on %s:%d: %s; retrying", *key, exc)
                complete = False
                continue
            server = await self._loop.create_server(partial(self._accept, key), sock=sock)
            self._servers[key] = server
            log.info("listening on %s:%d", *key)
        return complete

    def _accept(self, key: tuple[str, int]) -> asyncio.Protocol:
        listener = self._listeners.get(key)
        limit = listener.bandwidth if listener is not None else None
        name = limit.bucket if limit is not None else ""
        relay = ShapedRelay(lambda: self._buckets.get(name), lambda: self.relays.discard(relay))
        self.relays.add(relay)
        self._loop.create_task(self._connect(relay, listener))
        return _Side(relay, DOWNSTREAM)

    def _pick(self, cluster: Cluster | None) -> tuple[str, int] | None:
        ready = cluster.ready_endpoints if cluster is not None else ()
        if cluster is None or not ready:
            return None
        index = self._next.get(cluster.name, 0) % len(ready)
        self._next[cluster.name] = index + 1
        return ready[index].address, ready[index].port

    async def _connect(self, relay: ShapedRelay, listener: Listener | None) -> None:
        route = listener.routes[0] if listener is not None else None
        cluster = self.snapshot.cluster(route.destinations[0].cluster_name) if route else None
        target = self._pick(cluster)
        if target is None or cluster is None:
            relay.abort()  # UH: no ready endpoint
            return
        try:
            transport, _ = await asyncio.wait_for(
                self._loop.create_connection(lambda: _Side(relay, UPSTREAM), *target),
                cluster.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.info("connect to %s:%d failed: %s", *target, exc)
            relay.abort()  # UF
            return
        if relay.done:
            transport.close()

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for relay in list(self.relays):
            relay.abort()
        for bucket in self._buckets.values():
            bucket.release()


async def _serve_status(host: str, port: int) -> asyncio.Server:
    """A TCP readiness probe's target: it answers once the first Snapshot is applied."""

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-length: 6\r\n\r\nready\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port, reuse_port=True)


async def serve(node: str, state_dir: Path | None, pod_ip: str, status_port: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    proxy = LoadBalancerProxy(loop)
    status: asyncio.Server | None = None

    async def follow() -> None:
        nonlocal status
        async for snapshot in SnapshotFeed(None, None, node, state_dir=state_dir):
            log.info("applying snapshot %s", snapshot.version)
            await proxy.apply(snapshot)
            if status is None and status_port is not None:
                status = await _serve_status(pod_ip, status_port)

    async def rebind() -> None:
        while True:
            await asyncio.sleep(1.0)
            await proxy.bind_missing()

    tasks = [loop.create_task(follow()), loop.create_task(rebind())]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await proxy.close()
    if status is not None:
        status.close()


def main() -> int:
    env = os.environ
    logging.basicConfig(
        level=env.get("TCPMESH_LOG_LEVEL", "INFO"),
        format="%(asctime)s slb %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    state_dir = env.get("TCPMESH_STATE_DIR")
    status_port = env.get("TCPMESH_STATUS_PORT")
    node = f"{env.get('POD_NAMESPACE', 'kube-system')}/{env.get('POD_NAME', 'tcpmesh-slb')}"
    asyncio.run(
        serve(
            node,
            Path(state_dir) if state_dir else None,
            env.get("POD_IP") or "127.0.0.1",
            int(status_port) if status_port else None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
