"""The syncer against every backend: initial snapshot, live changes from another client,
changes after idle periods (the watch is re-established), and a clean stop."""

from __future__ import annotations

import time
from collections.abc import Callable

from pycalico.datastore import Resource, key_for
from pycalico.datastore.syncer import Syncer, SyncStatus
from tests.contract.conftest import Backend
from tests.contract.syncview import SyncView
from tests.kit import ip_pool


def pool(name: str, cidr: str = "10.0.0.0/16") -> Resource:
    return ip_pool(name, cidr)


def test_syncer_follows_changes(backend: Backend) -> None:
    writer = backend.open()
    writer.create(pool("a"))
    writer.create({"kind": "Node", "metadata": {"name": "n1"}, "spec": {}})
    sv = SyncView(forbid_empty=False)
    syncer = Syncer.for_kinds(backend.store, ["IPPool", "Node"], sv.cb, poll_interval=0.2)
    view, statuses = sv.view, sv.statuses

    def drain(until: Callable[[], bool]) -> None:
        sv.drain(until, timeout=10)

    syncer.start()
    try:
        drain(lambda: statuses[-1:] == [SyncStatus.IN_SYNC])
        assert statuses == [SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.RESYNC, SyncStatus.IN_SYNC]
        assert set(view) == {key_for("IPPool", "a"), key_for("Node", "n1")}
        a = writer.get("IPPool", "a")
        a["spec"]["cidr"] = "10.1.0.0/16"
        writer.update(a)
        writer.delete("Node", "n1")
        drain(
            lambda: len(view) == 1 and view[key_for("IPPool", "a")]["spec"]["cidr"] != "10.0.0.0/16"
        )
        time.sleep(0.5)  # longer than poll_interval: the watch is re-established meanwhile
        writer.create(pool("b"))
        drain(lambda: key_for("IPPool", "b") in view)
        assert statuses[-1] is SyncStatus.IN_SYNC and syncer.resyncs == 1
    finally:
        t = time.monotonic()
        syncer.stop()
        assert time.monotonic() - t < 3
