"""SyncerHub against every backend: subscribers split by kind, one started before the hub and
one after it is in sync (replay, then live), changes from another client after idle periods,
a relist after compaction seen as differences only, and a clean stop."""

from __future__ import annotations

import time

from pycalico.datastore import key_for
from pycalico.datastore.hub import SyncerHub
from pycalico.datastore.syncer import SyncStatus
from tests.contract.conftest import Backend
from tests.contract.syncview import SyncView
from tests.contract.test_syncer_contract import pool
from tests.unit.test_syncer import FlakyDatastore


def node(name: str) -> dict[str, object]:
    return {"kind": "Node", "metadata": {"name": name}, "spec": {}}


def test_hub_fans_out_one_syncer(backend: Backend) -> None:
    writer = backend.open()
    writer.create(pool("a"))
    writer.create(node("n1"))
    ds = FlakyDatastore(backend.store)  # type: ignore[arg-type]  # any Datastore will do
    hub = SyncerHub(ds, ["IPPool", "Node"], poll_interval=0.2, name="contract-hub")
    early, late = SyncView(forbid_empty=True), SyncView(forbid_empty=True)
    s_early = hub.syncer_for(["IPPool"], early.cb, "early").start()
    hub.start()
    s_late = None
    try:
        early.drain(lambda: early.statuses[-1:] == [SyncStatus.IN_SYNC])
        assert early.statuses == [
            SyncStatus.WAIT_FOR_DATASTORE,
            SyncStatus.RESYNC,
            SyncStatus.IN_SYNC,
        ]
        assert set(early.view) == {key_for("IPPool", "a")}
        s_late = hub.syncer_for(["IPPool", "Node"], late.cb, "late").start()
        late.drain(lambda: late.statuses[-1:] == [SyncStatus.IN_SYNC])
        assert late.statuses == [SyncStatus.IN_SYNC]  # replay first, then the hub's status
        assert set(late.view) == {key_for("IPPool", "a"), key_for("Node", "n1")}

        a = writer.get("IPPool", "a")
        a["spec"]["cidr"] = "10.1.0.0/16"
        writer.update(a)
        writer.delete("Node", "n1")
        late.drain(lambda: set(late.view) == {key_for("IPPool", "a")})
        time.sleep(0.5)  # longer than poll_interval: the watch is re-established meanwhile
        writer.create(pool("b"))
        writer.create(node("n2"))
        want = {key_for("IPPool", "a"), key_for("IPPool", "b"), key_for("Node", "n2")}
        late.drain(lambda: set(late.view) == want)
        early.drain(lambda: set(early.view) == {key_for("IPPool", "a"), key_for("IPPool", "b")})
        assert early.view[key_for("IPPool", "a")]["spec"]["cidr"] == "10.1.0.0/16"
        assert hub.resyncs == 1

        # history compacted while the hub's watch is stalled: it relists, and subscribers
        # see only the differences (never an empty view: forbid_empty)
        ds.paused = True
        time.sleep(0.5)
        writer.delete("IPPool", "b")
        c = writer.create(pool("c"))
        backend.compact(int(c["metadata"]["resourceVersion"]))
        lists = ds.lists
        n_early, n_late = len(early.statuses), len(late.statuses)
        ds.paused = False
        want = {key_for("IPPool", "a"), key_for("IPPool", "c"), key_for("Node", "n2")}
        late.drain(lambda: set(late.view) == want and late.statuses[-1] is SyncStatus.IN_SYNC)
        early.drain(lambda: set(early.view) == {key_for("IPPool", "a"), key_for("IPPool", "c")})
        assert ds.lists > lists and hub.resyncs == 2
        assert late.statuses[n_late:] == [SyncStatus.RESYNC, SyncStatus.IN_SYNC]
        early.drain(lambda: early.statuses[n_early:] == [SyncStatus.RESYNC, SyncStatus.IN_SYNC])
        assert s_late.snapshot() == late.view and s_early.snapshot() == early.view
    finally:
        t = time.monotonic()
        if s_late is not None:
            s_late.stop()
        s_early.stop()
        hub.stop()
        assert time.monotonic() - t < 3
        assert not hub.alive()
