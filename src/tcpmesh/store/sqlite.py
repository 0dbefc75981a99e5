"""The SQLite store: durable, versioned, watchable objects in Kubernetes JSON shape."""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import threading
from collections.abc import AsyncGenerator, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tcpmesh.store.objects import (
    AlreadyExists,
    ApplyResult,
    EventType,
    Expired,
    NotFound,
    Obj,
    StoreError,
    WatchEvent,
    applied,
    check_version,
    describe,
    key_of,
    matches,
    new_object,
    same,
    updated_object,
    with_status,
)

# Watchers that fall further behind than this get Expired, as with a compacted etcd.
EVENT_HISTORY = 10_000
_WATCH_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY, type TEXT NOT NULL, kind TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, json TEXT NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
"""


class Store:
    """Objects keyed by (kind key, namespace, name) in one SQLite file in WAL mode.

    Thread-safe; writes notify the watchers, which live on asyncio loops of this process.
    Every write gets the next global revision and exactly one event, so the event log is
    gap-free and a watcher can tell when history it needs has been trimmed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only a power cut may lose the tail.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._revision: int = self._db.execute(
            "SELECT value FROM meta WHERE key = 'revision'"
        ).fetchone()[0]
        self._watchers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            self._notify()

    @property
    def revision(self) -> int:
        return self._revision

    # ------------------------------------------------------------------ reads

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._get(kind, namespace, name)

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        return self.list_with_revision(kind, namespace, label_selector)[0]

    def list_with_revision(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> tuple[builtins.list[Obj], int]:
        """The objects and the revision they reflect, for a list-then-watch without gaps."""
        sql = "SELECT json FROM objects WHERE kind = ?"
        args: list[str] = [kind]
        if namespace is not None:
            sql += " AND namespace = ?"
            args.append(namespace)
        sql += " ORDER BY namespace, name"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            revision = self._revision
        objs = (json.loads(row[0]) for row in rows)
        return [o for o in objs if matches(o, label_selector)], revision

    def _get(self, kind: str, namespace: str, name: str) -> Obj | None:
        row = self._db.execute(
            "SELECT json FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (kind, namespace, name),
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # ------------------------------------------------------------------ writes

    def apply(self, objects: Sequence[Obj], *, dry_run: bool = False) -> builtins.list[ApplyResult]:
        """Create or update each object (kubectl apply), all of them or none."""
        with self._transaction(dry_run=dry_run) as tx:
            return [self._apply_one(tx, obj) for obj in objects]

    def create(self, obj: Obj) -> Obj:
        key = key_of(obj)
        with self._transaction() as tx:
            if self._get(*key) is not None:
                raise AlreadyExists(f"{describe(*key)} already exists")
            return tx.write("ADDED", new_object(obj))

    def replace(self, obj: Obj, *, expected_resource_version: str | None = None) -> Obj:
        """Replace everything but the status and the server-owned metadata."""
        key = key_of(obj)
        with self._transaction() as tx:
            current = self._get(*key)
            if current is None:
                raise NotFound(f"{describe(*key)} not found")
            check_version(current, expected_resource_version, key)
            if same(obj, current):
                return current
            return tx.write("MODIFIED", updated_object(current, obj))

    def update_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: Obj,
        *,
        expected_resource_version: str | None = None,
    ) -> Obj:
        key = (kind, namespace, name)
        with self._transaction() as tx:
            current = self._get(*key)
            if current is None:
                raise NotFound(f"{describe(*key)} not found")
            check_version(current, expected_resource_version, key)
            if current.get("status") == status:
                return current
            return tx.write("MODIFIED", with_status(current, status))

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        key = (kind, namespace, name)
        with self._transaction() as tx:
            current = self._get(*key)
            if current is None:
                raise NotFound(f"{describe(*key)} not found")
            return tx.write("DELETED", current)

    def _apply_one(self, tx: _Tx, obj: Obj) -> ApplyResult:
        current = self._get(*key_of(obj))
        new, action = applied(current, obj)
        if action == "unchanged":
            return ApplyResult(new, action)
        return ApplyResult(tx.write("ADDED" if current is None else "MODIFIED", new), action)

    @contextmanager
    def _transaction(self, *, dry_run: bool = False) -> Iterator[_Tx]:
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            self._db.execute("BEGIN IMMEDIATE")
            tx = _Tx(self._db, self._revision)
            try:
                yield tx
                if dry_run or tx.revision == self._revision:
                    self._db.execute("ROLLBACK")
                    return
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (tx.revision,))
                self._db.execute(
                    "DELETE FROM events WHERE revision <= ?", (tx.revision - EVENT_HISTORY,)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._revision = tx.revision
            # Still under the lock so every watcher sees the writes in revision order.
            self._notify()

    # ------------------------------------------------------------------ watch

    def _notify(self) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, event in list(self._watchers):
            if loop is running:
                event.set()
            else:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # that loop is closed; its watcher is gone
                    self._watchers.discard((loop, event))

    async def watch(
        self, kinds: Collection[str] | None = None, since: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events after revision ``since`` (default: from now on), then live ones.

        Ends when the store is closed; raises Expired when the events it needs are gone.
        """
        wake = asyncio.Event()
        watcher = (asyncio.get_running_loop(), wake)
        kind_filter = ""
        args: list[Any] = []
        if kinds is not None:
            kind_filter = f" AND kind IN ({','.join('?' * len(kinds))})"
            args = list(kinds)
        with self._lock:
            self._watchers.add(watcher)
            last = self._revision if since is None else since
        try:
            while True:
                # Clear before reading: a write after the read sets it again, so no wakeup
                # is lost between the read and the wait.
                wake.clear()
                with self._lock:
                    if self._closed:
                        return
                    oldest = self._db.execute("SELECT min(revision) FROM events").fetchone()[0]
                    if last < self._revision and (oldest is None or oldest > last + 1):
                        raise Expired(f"too old resource version: {last} (oldest kept: {oldest})")
                    rows = self._db.execute(
                        "SELECT revision, type, json FROM events WHERE revision > ?"
                        f"{kind_filter} ORDER BY revision LIMIT {_WATCH_BATCH}",
                        [last, *args],
                    ).fetchall()
                    # Skipped kinds still advance the position, so the gap check stays exact.
                    last = self._revision if len(rows) < _WATCH_BATCH else rows[-1][0]
                for revision, type_, text in rows:
                    yield WatchEvent(type_, json.loads(text), revision)
                if not rows:
                    await wake.wait()
        finally:
            with self._lock:
                self._watchers.discard(watcher)


class _Tx:
    """The writes of one transaction; each gets the next revision and one event."""

    def __init__(self, db: sqlite3.Connection, revision: int) -> None:
        self._db = db
        self.revision = revision

    def write(self, type_: EventType, obj: Obj) -> Obj:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        kind, namespace, name = key_of(obj)
        text = json.dumps(obj, separators=(",", ":"), sort_keys=True)
        if type_ == "DELETED":
            self._db.execute(
                "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (kind, namespace, name),
            )
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO objects (kind, namespace, name, json) VALUES (?,?,?,?)",
                (kind, namespace, name, text),
            )
        self._db.execute(
            "INSERT INTO events (revision, type, kind, namespace, name, json) VALUES (?,?,?,?,?,?)",
            (self.revision, type_, kind, namespace, name, text),
        )
        return obj
