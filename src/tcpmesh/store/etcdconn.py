"""The connection to an etcd cluster: where it is (an ``etcd://`` URL), TLS, auth, failover.

The client library is etcd-sdk-python (``pyetcd``, the maintained fork of python-etcd3):
synchronous gRPC like the store's contract, TLS and user/password auth, several endpoints
with failover, and etcd's generated protobuf messages and stubs, so tcpmesh never ships
etcd's .proto code of its own. This module is the only one that imports it.

A store URL is ``etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?OPTIONS]`` with the options
``ca``, ``cert``, ``key`` (PEM files: TLS, and a client certificate), ``user`` and
``password-file`` (etcd auth; the ``TCPMESH_ETCD_PASSWORD`` variable instead of the file),
``max-txn-ops`` and ``max-request-bytes`` (the server's limits, when it was started with
other values than etcd's defaults, 128 and 1.5 MiB).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import grpc

from tcpmesh.store.objects import StoreError, Unavailable

# etcd's defaults (embed.DefaultMaxTxnOps, embed.DefaultMaxRequestBytes).
DEFAULT_MAX_TXN_OPS = 128
DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
DEFAULT_PREFIX = "/tcpmesh"
PASSWORD_ENV = "TCPMESH_ETCD_PASSWORD"
# How long a call keeps trying other endpoints before the store reports etcd unavailable.
CALL_DEADLINE = 10.0
_RPC_TIMEOUT = 5.0
# A failed endpoint is tried again this soon (the library's default is 300 s).
_ENDPOINT_RETRY = 1.0
_RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
T = TypeVar("T")
_OPTIONS = ("ca", "cert", "key", "user", "password-file", "max-txn-ops", "max-request-bytes")


def client_library_installed() -> bool:
    try:
        import pyetcd  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[tuple[str, int], ...]
    prefix: str = DEFAULT_PREFIX
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    user: str | None = None
    password: str | None = None
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    def describe(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.endpoints)
        return f"etcd://{hosts}{self.prefix}"


def _endpoint(text: str, url: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StoreError(f"--store {url}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _positive(options: dict[str, list[str]], name: str, default: int, url: str) -> int:
    values = options.get(name)
    if not values:
        return default
    if not values[-1].isdigit() or int(values[-1]) <= 0:
        raise StoreError(f"--store {url}: {name}={values[-1]!r} is not a positive integer")
    return int(values[-1])


def parse_etcd_url(url: str) -> EtcdConfig:
    """The configuration an ``etcd://`` URL names, or StoreError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.netloc:
        raise StoreError(f"--store {url}: expected etcd://HOST:PORT[,HOST:PORT...]")
    endpoints = tuple(_endpoint(item, url) for item in parts.netloc.split(",") if item)
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise StoreError(f"--store {url}: unknown option {unknown[0]!r} (known: {_OPTIONS})")

    def path(name: str) -> Path | None:
        values = options.get(name)
        return Path(values[-1]) if values else None

    password = os.environ.get(PASSWORD_ENV)
    password_file = path("password-file")
    if password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            raise StoreError(f"--store {url}: cannot read {password_file}: {exc}") from None
    users = options.get("user")
    user = users[-1] if users else None
    if user and password is None:
        raise StoreError(f"--store {url}: user={user} needs password-file= or ${PASSWORD_ENV}")
    ca, cert, key = path("ca"), path("cert"), path("key")
    if (cert is None) != (key is None):
        raise StoreError(f"--store {url}: cert= and key= go together")
    if cert is not None and ca is None:
        raise StoreError(f"--store {url}: a client certificate needs ca= (TLS)")
    return EtcdConfig(
        endpoints=endpoints,
        prefix="/" + parts.path.strip("/") if parts.path.strip("/") else DEFAULT_PREFIX,
        ca=ca,
        cert=cert,
        key=key,
        user=user or None,
        password=password if user else None,
        max_txn_ops=_positive(options, "max-txn-ops", DEFAULT_MAX_TXN_OPS, url),
        max_request_bytes=_positive(options, "max-request-bytes", DEFAULT_MAX_REQUEST_BYTES, url),
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None


class EtcdConnection:
    """One client for the cluster; calls fail over between endpoints until a deadline.

    Calls are synchronous (the store's contract is), safe from any thread. A call that
    cannot reach any endpoint within CALL_DEADLINE raises Unavailable; etcd's own refusals
    (too many operations, request too large, permission denied) raise StoreError with
    etcd's message.
    """

    def __init__(self, config: EtcdConfig) -> None:
        import pyetcd
        import pyetcd.events
        import pyetcd.exceptions

        self.config = config
        self._pyetcd = pyetcd
        self._lock = threading.Lock()
        self._client: Any = None
        self._connect()

    def _connect(self) -> None:
        config = self.config
        creds = None
        if config.ca is not None:
            creds = grpc.ssl_channel_credentials(
                _read(config.ca),
                _read(config.key) if config.key else None,
                _read(config.cert) if config.cert else None,
            )
        # Lists of many objects exceed gRPC's 4 MiB default for a received message.
        options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        endpoints = [
            self._pyetcd.Endpoint(
                host,
                port,
                secure=creds is not None,
                creds=creds,
                time_retry=_ENDPOINT_RETRY,
                opts=options,
            )
            for host, port in config.endpoints
        ]
        deadline = time.monotonic() + CALL_DEADLINE
        while True:
            try:
                # The constructor authenticates (a round trip) when a user is given.
                self._client = self._pyetcd.MultiEndpointEtcd3Client(
                    endpoints=endpoints,
                    timeout=_RPC_TIMEOUT,
                    user=config.user,
                    password=config.password,
                    failover=True,
                )
                return
            except grpc.RpcError as exc:
                if exc.code() not in _RETRY_CODES or time.monotonic() > deadline:
                    raise self._error(exc) from None
                time.sleep(0.2)

    @property
    def errors(self) -> Any:
        """The library's exception classes (a module)."""
        return self._pyetcd.exceptions

    @property
    def events(self) -> Any:
        """The library's watch event classes (a module)."""
        return self._pyetcd.events

    @property
    def client(self) -> Any:
        """The library's client, for its watcher and leases."""
        return self._client

    def _error(self, exc: grpc.RpcError) -> StoreError:
        code, details = exc.code(), str(exc.details())
        if code in _RETRY_CODES:
            return Unavailable(f"etcd at {self.config.describe()} is unavailable: {details}")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return StoreError(f"etcd refused access to {self.config.prefix}: {details}")
        if code == grpc.StatusCode.UNAUTHENTICATED or "authentication failed" in details:
            who = f"user {self.config.user}" if self.config.user else "no user given"
            return StoreError(f"etcd authentication failed ({who}): {details}")
        return StoreError(f"etcd: {details}")

    def run(self, operation: Callable[[Any], T]) -> T:
        """``operation(client)``, tried again on another endpoint after a transport error.

        The library marks the endpoint that failed and moves to the next one, but leaves
        repeating the request to its caller. Every write tcpmesh sends is guarded by
        compares, so repeating one whose first try did land cannot apply it twice: the
        repeat fails its compare and the store re-reads.
        """
        errors = self._pyetcd.exceptions
        deadline = time.monotonic() + CALL_DEADLINE
        reauthenticated = False
        while True:
            client = self._client
            try:
                return operation(client)
            except (
                errors.ConnectionFailedError,
                errors.ConnectionTimeoutError,
                errors.NoServerAvailableError,
                errors.InternalServerError,
            ) as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"etcd at {self.config.describe()} is unavailable ({exc})"
                    ) from None
                time.sleep(0.05)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED or reauthenticated:
                    raise self._error(exc) from None
                # Simple tokens die with the member that issued them: log in again.
                reauthenticated = True
                with self._lock:
                    if self._client is client:
                        self._connect()

    def close(self) -> None:
        self._client.close()
