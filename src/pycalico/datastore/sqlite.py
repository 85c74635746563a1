"""Placeholder for the sqlite backend (being written)."""

from __future__ import annotations

from typing import Any

from pycalico.datastore.base import Unavailable


class SqliteDatastore:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise Unavailable("sqlite backend not implemented yet")
