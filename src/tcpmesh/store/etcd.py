"""The etcd store: the same contract as the SQLite store, on a cluster several hosts share.

Layout: one key per object, ``PREFIX/o/KIND/NAMESPACE/NAME`` (KIND: the kind key,
``Kind`` or ``Kind.group``, see ``objects.kind_key``), whose value is the object's
JSON without ``resourceVersion``: that is the key's ``mod_revision``, as in Kubernetes, so
it cannot disagree with etcd. Every write is one transaction guarded by compares on the
``mod_revision`` (or ``create_revision == 0``) of every key it read, which is optimistic
concurrency between any number of writers on any hosts. A multi-document apply is one
transaction, so all its objects share one revision; etcd bounds a transaction to
``--max-txn-ops`` operations (128 by default) and ``--max-request-bytes`` (1.5 MiB), and
an apply beyond either is refused whole, before anything is sent, with a message naming
the limit. Watches follow etcd's own history and raise Expired once etcd has compacted
the revision a watcher needs.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tcpmesh.store.etcdconn import EtcdConnection
from tcpmesh.store.etcdurl import EtcdConfig
from tcpmesh.store.objects import (
    AlreadyExists,
    ApplyResult,
    Conflict,
    EventType,
    Expired,
    Key,
    NotFound,
    NotLeader,
    Obj,
    StoreError,
    Unavailable,
    WatchEvent,
    applied,
    check_version,
    describe,
    key_of,
    matches,
    new_object,
    same,
    split_kind_key,
    updated_object,
    with_status,
)

# Writers that lose a compare re-read and try again; past this many rounds it is Conflict.
_WRITE_ROUNDS = 20
# The bytes a transaction operation adds to its key and value on the wire (an estimate
# with room to spare; the exact size is etcd's to judge, and its refusal is reported too).
_OP_OVERHEAD = 64
# Between two attempts to resume a broken watch stream.
_RESUME_PAUSE = 0.2
_CLOSED = object()
log = logging.getLogger("tcpmesh.store.etcd")


def _encode(obj: Obj) -> str:
    meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return json.dumps({**obj, "metadata": meta}, separators=(",", ":"), sort_keys=True)


def _decode(value: bytes, revision: int) -> Obj:
    obj: Obj = json.loads(value)
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


def _stamped(obj: Obj, revision: int) -> Obj:
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


class Fence(Protocol):
    """What makes a write conditional on holding a leadership (see election.py)."""

    def fence_compare(self) -> Any: ...

    def still_held(self) -> bool: ...


class EtcdStore:
    """Objects in etcd under one prefix; thread-safe, watchable from any asyncio loop."""

    def __init__(
        self,
        config: EtcdConfig,
        connection: EtcdConnection | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.config = config
        self._owns_connection = connection is None
        self._conn = connection or EtcdConnection(config)
        self._fence = fence
        self._prefix = config.prefix.rstrip("/") + "/o/"
        self._lock = threading.Lock()
        self._closers: set[Callable[[], None]] = set()
        self._closed = False

    @property
    def connection(self) -> EtcdConnection:
        """The cluster connection, for what else lives in etcd (leases, leader election)."""
        return self._conn

    def fenced(self, fence: Fence) -> EtcdStore:
        """This store for a leader's controllers: each write holds only while ``fence`` does.

        Reads and watches are the same; a write fails with NotLeader, writing nothing, once
        the leadership is gone (locally known, or found out by etcd's compare).
        """
        return EtcdStore(self.config, self._conn, fence)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            closers = list(self._closers)
        for close in closers:
            close()
        if self._owns_connection:
            self._conn.close()

    def _key(self, kind: str, namespace: str, name: str) -> str:
        return f"{self._prefix}{kind}/{namespace}/{name}"

    @property
    def revision(self) -> int:
        """etcd's current revision (one linearizable round trip)."""
        prefix = self._prefix
        response = self._conn.run(lambda c: c.get_response(prefix, count_only=True))
        return int(response.header.revision)

    # ------------------------------------------------------------------ reads

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._read(self._key(kind, namespace, name))[0]

    def _read(self, key: str) -> tuple[Obj | None, int]:
        """The object stored at ``key`` and its mod_revision (0: none)."""
        response = self._conn.run(lambda c: c.get_response(key))
        if not response.kvs:
            return None, 0
        kv = response.kvs[0]
        return _decode(kv.value, kv.mod_revision), int(kv.mod_revision)

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> builtins.list[Obj]:
        return self.list_with_revision(kind, namespace, label_selector)[0]

    def list_with_revision(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> tuple[builtins.list[Obj], int]:
        """The objects and the revision they reflect, for a list-then-watch without gaps."""
        prefix = f"{self._prefix}{kind}/" + ("" if namespace is None else f"{namespace}/")
        response = self._conn.run(lambda c: c.get_prefix_response(prefix))
        objs = [_decode(kv.value, kv.mod_revision) for kv in response.kvs]
        # Key order puts "a-b/" before "a/"; the contract is (namespace, name) order.
        objs.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return [o for o in objs if matches(o, label_selector)], int(response.header.revision)

    # ------------------------------------------------------------------ writes

    def _txn(self, compare: builtins.list[Any], success: builtins.list[Any]) -> tuple[bool, int]:
        """Run one guarded transaction: whether its compares held, and its revision."""

        def send(client: Any) -> tuple[bool, int]:
            succeeded, responses = client.transaction(compare=compare, success=success, failure=[])
            revision = 0
            for response in responses:
                for field in ("response_put", "response_delete_range"):
                    if response.HasField(field):
                        revision = int(getattr(response, field).header.revision)
            return bool(succeeded), revision

        fence = self._fence
        if fence is not None:
            compare = [fence.fence_compare(), *compare]
        succeeded, revision = self._conn.run(send)
        if not succeeded and fence is not None and not fence.still_held():
            raise NotLeader("this replica lost the leadership; write refused")
        return succeeded, revision

    def _guard(self, key: str, mod_revision: int) -> Any:
        t = self._conn.client.transactions
        if mod_revision == 0:
            return t.create(key) == 0
        return t.mod(key) == mod_revision

    def _put(self, key: str, obj: Obj) -> Any:
        return self._conn.client.transactions.put(key, _encode(obj))

    def create(self, obj: Obj) -> Obj:
        kind, namespace, name = key_of(obj)
        key = self._key(kind, namespace, name)
        new = new_object(obj)
        succeeded, revision = self._txn([self._guard(key, 0)], [self._put(key, new)])
        if succeeded:
            return _stamped(new, revision)
        stored, _ = self._read(key)
        if stored is not None and stored["metadata"]["uid"] == new["metadata"]["uid"]:
            return stored  # our own write, repeated after a lost answer
        raise AlreadyExists(f"{describe(kind, namespace, name)} already exists")

    def _update(self, key: Key, expected: str | None, change: Callable[[Obj], Obj | None]) -> Obj:
        """Read, ``change`` (None: nothing to write), write if nobody wrote in between."""
        etcd_key = self._key(*key)
        for _ in range(_WRITE_ROUNDS):
            current, mod_revision = self._read(etcd_key)
            if current is None:
                raise NotFound(f"{describe(*key)} not found")
            check_version(current, expected, key)
            new = change(current)
            if new is None:
                return current
            guard = [self._guard(etcd_key, mod_revision)]
            succeeded, revision = self._txn(guard, [self._put(etcd_key, new)])
            if succeeded:
                return _stamped(new, revision)
        raise Conflict(f"{describe(*key)} kept changing under {_WRITE_ROUNDS} writes; try again")

    def replace(self, obj: Obj, *, expected_resource_version: str | None = None) -> Obj:
        """Replace everything but the status and the server-owned metadata."""
        return self._update(
            key_of(obj),
            expected_resource_version,
            lambda current: None if same(obj, current) else updated_object(current, obj),
        )

    def update_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: Obj,
        *,
        expected_resource_version: str | None = None,
    ) -> Obj:
        return self._update(
            (kind, namespace, name),
            expected_resource_version,
            lambda current: (
                None if current.get("status") == status else with_status(current, status)
            ),
        )

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        key = self._key(kind, namespace, name)
        delete = self._conn.client.transactions.delete(key)
        for _ in range(_WRITE_ROUNDS):
            current, mod_revision = self._read(key)
            if current is None:
                raise NotFound(f"{describe(kind, namespace, name)} not found")
            succeeded, revision = self._txn([self._guard(key, mod_revision)], [delete])
            if succeeded:
                return _stamped(current, revision)
        raise Conflict(f"{describe(kind, namespace, name)} kept changing; try again")

    def apply(self, objects: Sequence[Obj], *, dry_run: bool = False) -> builtins.list[ApplyResult]:
        """Create or update each object (kubectl apply), all of them or none, in one txn."""
        keys = [key_of(obj) for obj in objects]
        distinct = list(dict.fromkeys(keys))
        self._check_txn_ops(len(distinct))
        for _ in range(_WRITE_ROUNDS):
            stored = self._read_many([self._key(*key) for key in distinct])
            state = {key: stored[self._key(*key)] for key in distinct}
            results: builtins.list[ApplyResult] = []
            written: dict[Key, Obj] = {}
            for key, obj in zip(keys, objects, strict=True):
                new, action = applied(state[key][0], obj)
                if action != "unchanged":
                    state[key] = (new, state[key][1])
                    written[key] = new
                results.append(ApplyResult(new, action))
            if dry_run or not written:
                return results
            puts = [self._put(self._key(*key), obj) for key, obj in written.items()]
            self._check_request_bytes(written, len(distinct))
            guards = [self._guard(self._key(*key), stored[self._key(*key)][1]) for key in distinct]
            succeeded, revision = self._txn(guards, puts)
            if succeeded:
                for obj in written.values():
                    _stamped(obj, revision)
                return results
        raise Conflict(f"the objects of this apply kept changing under {_WRITE_ROUNDS} tries")

    def _read_many(self, keys: builtins.list[str]) -> dict[str, tuple[Obj | None, int]]:
        """Every key's object and mod_revision, read at one revision (one transaction)."""
        get = self._conn.client.transactions.get
        found: dict[str, tuple[Obj | None, int]] = {key: (None, 0) for key in keys}

        def read(client: Any) -> builtins.list[Any]:
            _, responses = client.transaction(
                compare=[], success=[get(key) for key in keys], failure=[]
            )
            return list(responses)

        for response in self._conn.run(read):
            for value, meta in response:
                found[meta.key.decode()] = (_decode(value, meta.mod_revision), meta.mod_revision)
        return found

    def _check_txn_ops(self, count: int) -> None:
        limit = self.config.max_txn_ops
        if count > limit:
            raise StoreError(
                f"this apply has {count} objects; the etcd store writes at most {limit} in one "
                f"transaction (etcd --max-txn-ops={limit}): apply them in smaller parts"
            )

    def _check_request_bytes(self, written: Mapping[Key, Obj], guards: int) -> None:
        size = sum(len(self._key(*key)) + len(_encode(obj)) for key, obj in written.items())
        size += _OP_OVERHEAD * (len(written) + guards)
        limit = self.config.max_request_bytes
        if size > limit:
            raise StoreError(
                f"this apply is about {size} bytes; etcd takes at most {limit} bytes in one "
                f"request (etcd --max-request-bytes={limit}): apply it in smaller parts"
            )

    # ------------------------------------------------------------------ watch

    async def watch(
        self, kinds: Collection[str] | None = None, since: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events after revision ``since`` (default: from now on), then live ones.

        Ends when the store is closed; raises Expired when etcd has compacted the history
        it needs. A broken stream (an etcd member gone) resumes from the last revision seen,
        on another member, so no event is lost or repeated; while no member answers it
        waits and tries again rather than ending.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def deliver(item: Any) -> None:
            # RuntimeError: the watcher's loop is closed, and so is its generator.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        closer = lambda: deliver(_CLOSED)  # noqa: E731
        with self._lock:
            if self._closed:
                return
            self._closers.add(closer)
        start = since if since is not None else await asyncio.to_thread(lambda: self.revision)
        cursor = _Cursor(start)
        wanted = None if kinds is None else frozenset(kinds)
        try:
            while not self._closed:
                try:
                    watch_id = await self._subscribe(cursor.revision, deliver)
                except Unavailable as exc:
                    # Like a Kubernetes reflector: keep trying while etcd is away.
                    log.warning("etcd watch: %s; retrying", exc)
                    await asyncio.sleep(_RESUME_PAUSE)
                    continue
                try:
                    async for event in self._events(queue, cursor, wanted):
                        yield event
                    return
                except _StreamBroken:
                    await asyncio.sleep(_RESUME_PAUSE)
                finally:
                    if watch_id is not None:
                        await asyncio.to_thread(self._cancel, watch_id)
        finally:
            with self._lock:
                self._closers.discard(closer)

    async def _subscribe(self, position: int, deliver: Callable[[Any], None]) -> Any:
        prefix = self._prefix
        try:
            return await asyncio.to_thread(
                lambda: self._conn.run(
                    lambda c: c.add_watch_prefix_callback(
                        prefix, deliver, start_revision=position + 1, prev_kv=True
                    )
                )
            )
        except self._conn.errors.RevisionCompactedError as exc:
            raise Expired(
                f"too old resource version: {position} (compacted to {exc.compacted_revision})"
            ) from None

    def _cancel(self, watch_id: Any) -> None:
        # The stream may be gone already.
        with contextlib.suppress(StoreError, self._conn.errors.Etcd3Exception):
            self._conn.client.cancel_watch(watch_id)

    async def _events(
        self, queue: asyncio.Queue[Any], cursor: _Cursor, wanted: frozenset[str] | None
    ) -> AsyncGenerator[WatchEvent, None]:
        """The stream's events of the wanted kinds until the store closes; moves the cursor."""
        errors = self._conn.errors
        # A resumed stream starts after the cursor; nothing at or before it is new.
        resumed_at = cursor.revision
        while True:
            item = await queue.get()
            if item is _CLOSED:
                return
            if isinstance(item, errors.RevisionCompactedError):
                raise Expired(
                    f"too old resource version: {cursor.revision} "
                    f"(compacted to {item.compacted_revision})"
                )
            if item is None or isinstance(item, BaseException):
                # The stream failed (or the library closed it to fail over): resume it.
                raise _StreamBroken from item
            for raw in item.events:
                revision = int(raw.mod_revision)
                if revision <= resumed_at:
                    continue
                # Skipped kinds move the cursor too, so a resumed stream starts after them.
                cursor.revision = revision
                event = self._event(raw, revision, wanted)
                if event is not None:
                    yield event

    def _event(self, raw: Any, revision: int, wanted: frozenset[str] | None) -> WatchEvent | None:
        kind = raw.key.decode()[len(self._prefix) :].split("/", 1)[0]
        if wanted is not None and kind not in wanted:
            return None
        if isinstance(raw, self._conn.events.DeleteEvent):
            return WatchEvent("DELETED", self._deleted(raw, kind, revision), revision)
        type_: EventType = "ADDED" if raw.version == 1 else "MODIFIED"
        return WatchEvent(type_, _decode(raw.value, revision), revision)

    def _deleted(self, raw: Any, kind: str, revision: int) -> Obj:
        if raw.prev_value:
            return _decode(raw.prev_value, revision)
        # etcd omits the previous value once it is compacted; the key still names the object.
        # Its version is gone with the value: "group/" keeps the group, so key_of still
        # names the same kind.
        _, namespace, name = raw.key.decode()[len(self._prefix) :].split("/", 2)
        meta = {"name": name, "resourceVersion": str(revision)}
        if namespace:  # "kind//name": a cluster-scoped object has no namespace
            meta["namespace"] = namespace
        group, bare_kind = split_kind_key(kind)
        return {"apiVersion": f"{group}/" if group else "v1", "kind": bare_kind, "metadata": meta}


@dataclass
class _Cursor:
    """The revision of the last event a watcher has been handed (or skipped)."""

    revision: int


class _StreamBroken(Exception):
    """The watch stream ended without the store closing: resume it."""


__all__ = ["EtcdStore"]
