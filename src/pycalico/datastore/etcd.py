"""Placeholder for the etcd backend (being written)."""

from __future__ import annotations

from typing import Any

from pycalico.datastore.base import Unavailable


class EtcdDatastore:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise Unavailable("etcd backend not implemented yet")
