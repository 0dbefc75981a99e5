"""The connection to an etcd cluster: TLS, auth, failover between its members.

The client library is etcd-sdk-python (``pyetcd``, the maintained fork of python-etcd3):
synchronous gRPC like the store's contract, TLS and user/password auth, several endpoints
with failover, and etcd's generated protobuf messages and stubs, so tcpmesh never ships
etcd's .proto code of its own. Only this module and the etcd store's import it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from tcpmesh.store.etcdurl import EtcdConfig
from tcpmesh.store.objects import StoreError, Unavailable

# How long a call keeps trying other endpoints before the store reports etcd unavailable.
CALL_DEADLINE = 10.0
_RPC_TIMEOUT = 5.0
# A failed endpoint is tried again this soon (the library's default is 300 s).
_ENDPOINT_RETRY = 1.0
_RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
T = TypeVar("T")


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

    def __init__(self, config: EtcdConfig, rpc_timeout: float = _RPC_TIMEOUT) -> None:
        import pyetcd
        import pyetcd.events
        import pyetcd.exceptions

        self.config = config
        # Per call: past it the endpoint counts as failed and the next try goes elsewhere.
        self.rpc_timeout = rpc_timeout
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
                    timeout=self.rpc_timeout,
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
    def endpoint(self) -> str:
        """HOST:PORT of the member this connection talks to now."""
        return str(self._client.endpoint_in_use.netloc)

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
