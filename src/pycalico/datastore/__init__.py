"""pycalico.datastore: the Datastore protocol and its backends (memory, sqlite, etcdv3)."""

from pycalico.datastore.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    Datastore,
    DatastoreError,
    EventType,
    ListResult,
    NotFound,
    Resource,
    Unavailable,
    WatchEvent,
    key_for,
    prefix_for,
)

__all__ = [
    "AlreadyExists",
    "Compacted",
    "Conflict",
    "Datastore",
    "DatastoreError",
    "EventType",
    "ListResult",
    "NotFound",
    "Resource",
    "Unavailable",
    "WatchEvent",
    "key_for",
    "prefix_for",
]
