"""memory backend specifics: the history knob, closing."""

from __future__ import annotations

import threading

import pytest

from pycalico.datastore import Compacted, Unavailable, prefix_for
from pycalico.datastore.memory import MemoryDatastore


def test_history_limit_compacts_old_events() -> None:
    ds = MemoryDatastore(history=3)
    obj = ds.create({"kind": "IPPool", "metadata": {"name": "a"}, "spec": {}})
    for _ in range(5):
        obj = ds.update(obj)
    with pytest.raises(Compacted):
        list(ds.watch(prefix_for("IPPool"), 0, timeout=0.1))
    evs = list(ds.watch(prefix_for("IPPool"), ds.revision - 3, timeout=0.1))
    assert len(evs) == 3


def test_close_ends_watch_and_rejects_calls() -> None:
    ds = MemoryDatastore()
    done = threading.Event()

    def run() -> None:
        list(ds.watch("/", 0))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    ds.close()
    assert done.wait(2)
    with pytest.raises(Unavailable):
        ds.list("IPPool")
