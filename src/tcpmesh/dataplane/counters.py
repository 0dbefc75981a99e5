"""Per-cluster counters shared by every worker process of one proxy, as Envoy's are.

Envoy keeps a cluster's circuit-breaker counts (``ResourceManager``), its hosts' active
request counts and its outlier detector once per cluster, shared by all worker threads.
tcpmesh's workers are processes (SO_REUSEPORT), so the same numbers live in one memory
mapped file that the supervisor creates and every worker maps: ``maxConnections: 1``
admits one connection for the whole proxy, and five failed connects eject a host once.

Why a mapped file with byte-range locks rather than a coordinator process: every
decision stays inside the worker that accepted the connection (no round trip, nothing
to restart), and a read-modify-write costs two ``fcntl`` calls (a few microseconds)
instead of a message exchange. Plain reads (the least-request load of two candidates)
take no lock: a value read while another worker changes it is at most one connection
off, which only nudges a choice; every check-and-change (the breaker's
check-then-count, the failure count that ejects) runs under the cluster's lock, so it
is exact. POSIX record locks are released by the kernel when a worker dies, so a
killed worker cannot wedge the others.

Layout: a header, then ``CLUSTER_SLOTS`` cluster slots found by open addressing on a
BLAKE2 digest of the cluster name; each holds ``ENDPOINT_SLOTS`` endpoint slots keyed
by a digest of ``address:port``. A cluster or endpoint that finds no free slot keeps
its counters in the worker (logged once): the proxy still works, only that cluster's
numbers are per worker again.

After the cluster slots come ``RECORD_SLOTS`` records: small named byte strings (up to
``RECORD_BYTES``) that workers read and replace whole under the record's lock, for
rare proxy-wide decisions that need more than a counter (``dataplane.rebalance`` keeps
a route's current rebalance plan in one). They are found by the same open addressing.

``LocalCounters`` has the same interface in plain Python objects, for a proxy that
runs in one process (tests, ``--workers 1``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger("tcpmesh.dataplane")

SHARED_STATE_ENV = "TCPMESH_SHARED_STATE_FD"
CLUSTER_SLOTS = 512
ENDPOINT_SLOTS = 128

RECORD_SLOTS = 64
RECORD_BYTES = 4096 - 24

_MAGIC = b"tcpmeshD"
_HEADER = struct.Struct("<8sII")  # magic, cluster slots, endpoint slots
_HEADER_SIZE = 64
_DIGEST = 16
# A cluster slot: digest, open connections, round-robin position.
_CLUSTER = struct.Struct("<16siI")
_CLUSTER_HEAD = 32
# An endpoint slot: digest, active connections, consecutive failures, ejections,
# ejected until (CLOCK_MONOTONIC seconds, the same clock in every process).
_ENDPOINT = struct.Struct("<16siiixxxxd")
_ENDPOINT_SIZE = 48
_CLUSTER_SIZE = _CLUSTER_HEAD + ENDPOINT_SLOTS * _ENDPOINT_SIZE
# A record slot: digest, length of the data that follows (padding to 24 bytes).
_RECORD = struct.Struct("<16sIxxxx")
_RECORD_SIZE = _RECORD.size + RECORD_BYTES
_RECORDS_AT = _HEADER_SIZE + CLUSTER_SLOTS * _CLUSTER_SIZE
_EMPTY = bytes(_DIGEST)

EndpointKey = tuple[str, int]


class EndpointCounters(Protocol):
    active: int
    failures: int
    ejections: int
    ejected_until: float


class ClusterCounters(Protocol):
    """One cluster's counters; change them inside ``locked()`` when the change must be exact."""

    open: int
    rr_next: int

    def locked(self) -> contextlib.AbstractContextManager[None]: ...

    def endpoint(self, key: EndpointKey) -> EndpointCounters: ...

    def known_endpoint(self, key: EndpointKey) -> EndpointCounters | None: ...


class SharedRecord(Protocol):
    """A named byte string shared by the workers; read-modify-write it inside ``locked()``."""

    def locked(self) -> contextlib.AbstractContextManager[None]: ...

    def load(self) -> bytes: ...

    def store(self, data: bytes) -> None: ...


class CounterStore(Protocol):
    def cluster(self, name: str) -> ClusterCounters: ...

    def record(self, name: str) -> SharedRecord: ...


# ---------------------------------------------------------------- one process

# One process needs no lock; one shared no-op context spares an object per use.
_NO_LOCK: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


@dataclass
class _LocalEndpoint:
    active: int = 0
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


@dataclass
class _LocalCluster:
    open: int = 0
    rr_next: int = 0
    endpoints: dict[EndpointKey, _LocalEndpoint] = field(default_factory=dict)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return _NO_LOCK

    def endpoint(self, key: EndpointKey) -> _LocalEndpoint:
        found = self.endpoints.get(key)
        if found is None:
            found = self.endpoints[key] = _LocalEndpoint()
        return found

    def known_endpoint(self, key: EndpointKey) -> _LocalEndpoint | None:
        return self.endpoints.get(key)


@dataclass
class _LocalRecord:
    data: bytes = b""

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return _NO_LOCK

    def load(self) -> bytes:
        return self.data

    def store(self, data: bytes) -> None:
        _check_record(data)
        self.data = bytes(data)


def _check_record(data: bytes) -> None:
    if len(data) > RECORD_BYTES:
        raise ValueError(f"a shared record holds at most {RECORD_BYTES} bytes, not {len(data)}")


class LocalCounters:
    """Counters of a proxy that is a single process."""

    def __init__(self) -> None:
        self._clusters: dict[str, _LocalCluster] = {}
        self._records: dict[str, _LocalRecord] = {}

    def cluster(self, name: str) -> _LocalCluster:
        found = self._clusters.get(name)
        if found is None:
            found = self._clusters[name] = _LocalCluster()
        return found

    def record(self, name: str) -> _LocalRecord:
        found = self._records.get(name)
        if found is None:
            found = self._records[name] = _LocalRecord()
        return found


# ---------------------------------------------------------------- shared by processes


def _digest(text: str) -> bytes:
    raw = hashlib.blake2b(text.encode(), digest_size=_DIGEST).digest()
    return raw if raw != _EMPTY else b"\x01" + raw[1:]


class _SharedEndpoint:
    """Fields of one endpoint slot, read and written in place in the mapping."""

    __slots__ = ("_buf", "_offset")

    def __init__(self, buf: mmap.mmap, offset: int) -> None:
        self._buf = buf
        self._offset = offset

    def _set(self, fmt: str, delta: int, value: int | float) -> None:
        struct.pack_into(fmt, self._buf, self._offset + delta, value)

    @property
    def active(self) -> int:
        return struct.unpack_from("<i", self._buf, self._offset + 16)[0]  # type: ignore[no-any-return]

    @active.setter
    def active(self, value: int) -> None:
        self._set("<i", 16, value)

    @property
    def failures(self) -> int:
        return struct.unpack_from("<i", self._buf, self._offset + 20)[0]  # type: ignore[no-any-return]

    @failures.setter
    def failures(self, value: int) -> None:
        self._set("<i", 20, value)

    @property
    def ejections(self) -> int:
        return struct.unpack_from("<i", self._buf, self._offset + 24)[0]  # type: ignore[no-any-return]

    @ejections.setter
    def ejections(self, value: int) -> None:
        self._set("<i", 24, value)

    @property
    def ejected_until(self) -> float:
        return struct.unpack_from("<d", self._buf, self._offset + 32)[0]  # type: ignore[no-any-return]

    @ejected_until.setter
    def ejected_until(self, value: float) -> None:
        self._set("<d", 32, value)


class _ByteLock:
    """An exclusive POSIX record lock on one byte of the table's file, as a context.

    A plain class, made once per cluster: a generator-based context manager cost a
    generator and two frames per use, on every connection's open and close."""

    __slots__ = ("_byte", "_fd")

    def __init__(self, fd: int, byte: int) -> None:
        self._fd = fd
        self._byte = byte

    def __enter__(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, self._byte)

    def __exit__(self, *_: object) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._byte)


class _SharedCluster:
    __slots__ = ("_buf", "_endpoints", "_fd", "_index", "_local", "_lock", "_offset")

    def __init__(self, buf: mmap.mmap, fd: int, index: int) -> None:
        self._buf = buf
        self._fd = fd
        self._index = index
        self._offset = _HEADER_SIZE + index * _CLUSTER_SIZE
        self._endpoints: dict[EndpointKey, EndpointCounters] = {}
        self._local = _LocalCluster()
        # Byte index+1 of the file stands for this cluster (byte 0 for slot allocation).
        self._lock = _ByteLock(fd, index + 1)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return self._lock

    @property
    def open(self) -> int:
        return struct.unpack_from("<i", self._buf, self._offset + 16)[0]  # type: ignore[no-any-return]

    @open.setter
    def open(self, value: int) -> None:
        struct.pack_into("<i", self._buf, self._offset + 16, value)

    @property
    def rr_next(self) -> int:
        return struct.unpack_from("<I", self._buf, self._offset + 20)[0]  # type: ignore[no-any-return]

    @rr_next.setter
    def rr_next(self, value: int) -> None:
        struct.pack_into("<I", self._buf, self._offset + 20, value % 2**32)

    def known_endpoint(self, key: EndpointKey) -> EndpointCounters | None:
        found = self._endpoints.get(key)
        if found is None:
            offset = self._find(_digest(f"{key[0]}:{key[1]}"), insert=False)
            if offset is not None:
                found = self._endpoints[key] = _SharedEndpoint(self._buf, offset)
        return found

    def endpoint(self, key: EndpointKey) -> EndpointCounters:
        found = self.known_endpoint(key)
        if found is not None:
            return found
        with self.locked():
            offset = self._find(_digest(f"{key[0]}:{key[1]}"), insert=True)
        if offset is None:
            log.warning("shared counters: no endpoint slot left for %s:%d", *key)
            self._endpoints[key] = self._local.endpoint(key)
        else:
            self._endpoints[key] = _SharedEndpoint(self._buf, offset)
        return self._endpoints[key]

    def _find(self, digest: bytes, *, insert: bool) -> int | None:
        start = int.from_bytes(digest[:4], "little") % ENDPOINT_SLOTS
        base = self._offset + _CLUSTER_HEAD
        for probe in range(ENDPOINT_SLOTS):
            offset = base + ((start + probe) % ENDPOINT_SLOTS) * _ENDPOINT_SIZE
            stored = self._buf[offset : offset + _DIGEST]
            if stored == digest:
                return offset
            if stored == _EMPTY:
                if not insert:
                    return None
                _ENDPOINT.pack_into(self._buf, offset, digest, 0, 0, 0, 0.0)
                return offset
        return None


class _SharedRecord:
    __slots__ = ("_buf", "_fd", "_index", "_offset")

    def __init__(self, buf: mmap.mmap, fd: int, index: int) -> None:
        self._buf = buf
        self._fd = fd
        self._index = index
        self._offset = _RECORDS_AT + index * _RECORD_SIZE

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        # Bytes after the clusters' lock bytes stand for the records.
        byte = 1 + CLUSTER_SLOTS + self._index
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, byte)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, byte)

    def load(self) -> bytes:
        _, length = _RECORD.unpack_from(self._buf, self._offset)
        start = self._offset + _RECORD.size
        return bytes(self._buf[start : start + min(length, RECORD_BYTES)])

    def store(self, data: bytes) -> None:
        _check_record(data)
        start = self._offset + _RECORD.size
        self._buf[start : start + len(data)] = data
        struct.pack_into("<I", self._buf, self._offset + _DIGEST, len(data))


class SharedCounters:
    """Counters in an unlinked file every worker maps through an inherited descriptor.

    The supervisor ``create``s the table and passes its descriptor to each worker
    (``pass_fds``; the number in ``TCPMESH_SHARED_STATE_FD``), which maps it with
    ``from_fd``. The file has no name from the start, so nothing is left behind when
    the proxy is killed, whatever the signal.
    """

    def __init__(self, fd: int, buf: mmap.mmap) -> None:
        self.fd = fd
        self._buf = buf
        self._clusters: dict[str, ClusterCounters] = {}
        self._records: dict[str, SharedRecord] = {}
        self._local = LocalCounters()

    @classmethod
    def create(cls, directory: Path | None = None) -> SharedCounters:
        """A new, zeroed table (sparse: untouched slots take no memory)."""
        fd, name = tempfile.mkstemp(prefix="tcpmesh-counters-", dir=directory or _shm())
        os.unlink(name)
        size = _RECORDS_AT + RECORD_SLOTS * _RECORD_SIZE
        os.ftruncate(fd, size)
        buf = mmap.mmap(fd, size)
        _HEADER.pack_into(buf, 0, _MAGIC, CLUSTER_SLOTS, ENDPOINT_SLOTS)
        return cls(fd, buf)

    @classmethod
    def from_fd(cls, fd: int) -> SharedCounters:
        size = os.fstat(fd).st_size
        buf = mmap.mmap(fd, size)
        magic, clusters, endpoints = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC or (clusters, endpoints) != (CLUSTER_SLOTS, ENDPOINT_SLOTS):
            buf.close()
            raise ValueError(f"descriptor {fd} is not a tcpmesh counter table of this version")
        return cls(fd, buf)

    def cluster(self, name: str) -> ClusterCounters:
        found = self._clusters.get(name)
        if found is None:
            index = self._slot(_digest(name))
            if index is None:
                log.warning("shared counters: no cluster slot left for %s; per worker", name)
                found = self._local.cluster(name)
            else:
                found = _SharedCluster(self._buf, self.fd, index)
            self._clusters[name] = found
        return found

    def record(self, name: str) -> SharedRecord:
        found = self._records.get(name)
        if found is None:
            index = self._record_slot(_digest(name))
            if index is None:
                log.warning("shared counters: no record slot left for %s; per worker", name)
                found = self._local.record(name)
            else:
                found = _SharedRecord(self._buf, self.fd, index)
            self._records[name] = found
        return found

    def _record_slot(self, digest: bytes) -> int | None:
        start = int.from_bytes(digest[:4], "little") % RECORD_SLOTS
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
        try:
            for probe in range(RECORD_SLOTS):
                index = (start + probe) % RECORD_SLOTS
                offset = _RECORDS_AT + index * _RECORD_SIZE
                stored = self._buf[offset : offset + _DIGEST]
                if stored == digest:
                    return index
                if stored == _EMPTY:
                    _RECORD.pack_into(self._buf, offset, digest, 0)
                    return index
            return None
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)

    def _slot(self, digest: bytes) -> int | None:
        found = self._probe(digest, insert=False)
        if found is not None:
            return found
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
        try:
            return self._probe(digest, insert=True)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)

    def _probe(self, digest: bytes, *, insert: bool) -> int | None:
        start = int.from_bytes(digest[:4], "little") % CLUSTER_SLOTS
        for probe in range(CLUSTER_SLOTS):
            index = (start + probe) % CLUSTER_SLOTS
            offset = _HEADER_SIZE + index * _CLUSTER_SIZE
            stored = self._buf[offset : offset + _DIGEST]
            if stored == digest:
                return index
            if stored == _EMPTY:
                if not insert:
                    return None
                _CLUSTER.pack_into(self._buf, offset, digest, 0, 0)
                return index
        return None

    def close(self) -> None:
        self._clusters.clear()
        self._records.clear()
        self._buf.close()
        os.close(self.fd)


def _shm() -> Path | None:
    """/dev/shm where it exists (memory, never disk), else the temp directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def store_from_env() -> CounterStore:
    """The supervisor's shared table when it passed one, else counters for this process."""
    fd = os.environ.get(SHARED_STATE_ENV, "").strip()
    if not fd:
        return LocalCounters()
    try:
        return SharedCounters.from_fd(int(fd))
    except (OSError, ValueError) as exc:
        log.error("shared counters unavailable (%s); this worker counts alone", exc)
        return LocalCounters()
