"""pycalico.datastore: the Datastore protocol, its backends (memory, sqlite, etcdv3) and
:func:`open_datastore`, the one way commands obtain a store from a :class:`DatastoreConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycalico.datastore.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    Datastore,
    DatastoreError,
    EventType,
    InvalidObject,
    ListResult,
    NotFound,
    Resource,
    Unavailable,
    WatchEvent,
    key_for,
    prefix_for,
    storage_kind,
)

if TYPE_CHECKING:
    from pycalico.config import DatastoreConfig


def open_datastore(cfg: DatastoreConfig | None = None, *, create: bool = True) -> Datastore:
    """Open the backend ``cfg`` names (default: :func:`pycalico.config.load_config()`).

    ``create=False`` (read-only callers such as ``calicoctl get``): an embedded store whose
    directory does not exist is :class:`Unavailable` instead of being created.

    Raises :class:`Unavailable` when the store cannot be opened.
    """
    if cfg is None:
        from pycalico.config import load_config

        cfg = load_config()
    if cfg.datastore_type == "memory":
        from pycalico.datastore.memory import MemoryDatastore

        return MemoryDatastore()
    if cfg.datastore_type == "sqlite":
        from pycalico.datastore.sqlite import SqliteDatastore

        return SqliteDatastore(cfg.datastore_path, create_dirs=create)
    if cfg.datastore_type == "etcdv3":
        from pycalico.datastore.etcd import EtcdDatastore

        return EtcdDatastore(
            list(cfg.etcd_endpoints),
            ca_cert=cfg.etcd_ca_cert_file,
            cert=cfg.etcd_cert_file,
            key=cfg.etcd_key_file,
        )
    raise Unavailable(f"unknown datastore type {cfg.datastore_type!r}")


__all__ = [
    "AlreadyExists",
    "Compacted",
    "Conflict",
    "Datastore",
    "DatastoreError",
    "EventType",
    "InvalidObject",
    "ListResult",
    "NotFound",
    "Resource",
    "Unavailable",
    "WatchEvent",
    "key_for",
    "open_datastore",
    "prefix_for",
    "storage_kind",
]
