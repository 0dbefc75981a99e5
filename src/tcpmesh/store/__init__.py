"""The only owner of state: versioned, watchable objects, in SQLite (the embedded default)
or in etcd (a cluster several hosts share), behind one contract (`StoreBackend`)."""

from __future__ import annotations

from pathlib import Path

from tcpmesh.store.contract import StoreBackend
from tcpmesh.store.etcdconn import EtcdConfig, client_library_installed, parse_etcd_url
from tcpmesh.store.objects import (
    AlreadyExists,
    ApplyResult,
    Conflict,
    Expired,
    NotFound,
    StoreError,
    Unavailable,
    WatchEvent,
)
from tcpmesh.store.sqlite import EVENT_HISTORY, Store

SQLITE_FILE = "store.db"


def check_store_spec(spec: str | None) -> EtcdConfig | None:
    """The etcd configuration ``--store`` names (None: SQLite), or StoreError saying what is wrong.

    Checks the spelling and the client library without connecting, so ``up`` refuses a bad
    ``--store`` at once, before it starts anything.
    """
    if spec is None or spec == "sqlite":
        return None
    if not spec.startswith("etcd://"):
        raise StoreError(f"--store {spec}: expected sqlite or etcd://HOST:PORT[,HOST:PORT...]")
    config = parse_etcd_url(spec)
    if not client_library_installed():
        raise StoreError(
            "--store etcd:// needs the etcd client library: pip install 'tcpmesh[etcd]'"
        )
    return config


def open_store(spec: str | None, state_dir: Path) -> StoreBackend:
    """The store ``--store`` names: ``sqlite`` (default, in the state directory) or etcd://..."""
    config = check_store_spec(spec)
    if config is None:
        return Store(state_dir / SQLITE_FILE)
    from tcpmesh.store.etcd import EtcdStore

    return EtcdStore(config)


__all__ = [
    "EVENT_HISTORY",
    "SQLITE_FILE",
    "AlreadyExists",
    "ApplyResult",
    "Conflict",
    "EtcdConfig",
    "Expired",
    "NotFound",
    "Store",
    "StoreBackend",
    "StoreError",
    "Unavailable",
    "WatchEvent",
    "check_store_spec",
    "open_store",
    "parse_etcd_url",
]
