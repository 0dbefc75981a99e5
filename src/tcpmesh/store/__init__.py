"""The only owner of state: versioned, watchable objects in a SQLite file."""

from tcpmesh.store.sqlite import (
    EVENT_HISTORY,
    AlreadyExists,
    ApplyResult,
    Conflict,
    Expired,
    NotFound,
    Store,
    StoreError,
    WatchEvent,
)

__all__ = [
    "EVENT_HISTORY",
    "AlreadyExists",
    "ApplyResult",
    "Conflict",
    "Expired",
    "NotFound",
    "Store",
    "StoreError",
    "WatchEvent",
]
