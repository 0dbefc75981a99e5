"""The only owner of state: versioned, watchable objects, in SQLite (the embedded default)
or in etcd (a cluster several hosts share), behind one contract (`StoreBackend`)."""

from __future__ import annotations

from pathlib import Path

from tcpmesh.store.contract import Election, StoreBackend
from tcpmesh.store.etcdurl import EtcdConfig, client_library_installed, parse_etcd_url
from tcpmesh.store.objects import (
    CLUSTER_SCOPE,
    CLUSTER_SCOPED_KINDS,
    AlreadyExists,
    ApplyResult,
    Conflict,
    Expired,
    NotFound,
    NotLeader,
    StoreError,
    Unavailable,
    WatchEvent,
    group_of,
    kind_key,
    object_kind_key,
    split_kind_key,
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


def leader_election(
    store: StoreBackend, name: str, identity: str
) -> tuple[Election, StoreBackend] | None:
    """An election among the replicas sharing ``store``, and the store its leader writes with.

    None for SQLite: one process owns the file (the state directory's lock), so there is
    nobody to elect among.
    """
    from tcpmesh.store.sqlite import Store as SqliteStore

    if isinstance(store, SqliteStore):
        return None
    from tcpmesh.store.election import LeaderElection
    from tcpmesh.store.etcd import EtcdStore

    if not isinstance(store, EtcdStore):
        raise TypeError(f"no leader election for {type(store).__name__}")
    election = LeaderElection.for_store(store, name, identity)
    return election, election.fenced_store(store)


__all__ = [
    "CLUSTER_SCOPE",
    "CLUSTER_SCOPED_KINDS",
    "EVENT_HISTORY",
    "SQLITE_FILE",
    "AlreadyExists",
    "ApplyResult",
    "Conflict",
    "Election",
    "EtcdConfig",
    "Expired",
    "NotFound",
    "NotLeader",
    "Store",
    "StoreBackend",
    "StoreError",
    "Unavailable",
    "WatchEvent",
    "check_store_spec",
    "group_of",
    "kind_key",
    "leader_election",
    "object_kind_key",
    "open_store",
    "parse_etcd_url",
    "split_kind_key",
]
