"""Where an etcd cluster is and how to reach it: the ``etcd://`` URL of ``--store``.

Pure (no gRPC): ``up`` checks a ``--store`` before anything starts, and the SQLite-only
install, which has no gRPC, still imports the store package.

A store URL is ``etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?OPTIONS]`` with the options
``ca``, ``cert``, ``key`` (PEM files: TLS, and a client certificate), ``user`` and
``password-file`` (etcd auth; the ``TCPMESH_ETCD_PASSWORD`` variable instead of the file),
``max-txn-ops`` and ``max-request-bytes`` (the server's limits, when it was started with
other values than etcd's defaults, 128 and 1.5 MiB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tcpmesh.store.objects import StoreError

# etcd's defaults (embed.DefaultMaxTxnOps, embed.DefaultMaxRequestBytes).
DEFAULT_MAX_TXN_OPS = 128
DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
DEFAULT_PREFIX = "/tcpmesh"
PASSWORD_ENV = "TCPMESH_ETCD_PASSWORD"
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
