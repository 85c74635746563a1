"""Backends the contract suite runs against: memory, sqlite (temp file) and etcd (real server).

Every test gets an empty store through the ``backend`` fixture, a :class:`Backend` that can also
open further independent clients of the *same* store (``backend.open()``), compact its
history, and describe itself as a :class:`DatastoreConfig` for child processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycalico.config import DatastoreConfig
from pycalico.datastore import Datastore, open_datastore
from pycalico.datastore.memory import MemoryDatastore


@dataclass
class Backend:
    name: str
    store: Datastore
    config: DatastoreConfig | None  # None: not shareable across processes
    compact: Callable[[int], None]
    _opener: Callable[[], Datastore]
    _opened: list[Datastore] = field(default_factory=list)

    def open(self) -> Datastore:
        """Another client of the same store (the same object for memory)."""
        ds = self._opener()
        if ds is not self.store:
            self._opened.append(ds)
        return ds

    def close_all(self) -> None:
        for ds in self._opened:
            ds.close()
        self.store.close()


BACKENDS = ["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.etcd)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name: str = request.param
    b: Backend
    if name == "memory":
        mem = MemoryDatastore()
        b = Backend(name, mem, None, mem.compact, lambda: mem)
    elif name == "sqlite":
        cfg = DatastoreConfig(datastore_type="sqlite", datastore_path=str(tmp_path / "c.db"))
        from pycalico.datastore.sqlite import SqliteDatastore

        sq = open_datastore(cfg)
        assert isinstance(sq, SqliteDatastore)
        b = Backend(name, sq, cfg, sq.compact, lambda: open_datastore(cfg))
    else:
        server: Any = request.getfixturevalue("etcd_server")
        server.wipe()
        cfg = server.config()
        from pycalico.datastore.etcd import EtcdDatastore

        et = open_datastore(cfg)
        assert isinstance(et, EtcdDatastore)
        b = Backend(name, et, cfg, et.compact, lambda: open_datastore(cfg))
    try:
        yield b
    finally:
        b.close_all()
