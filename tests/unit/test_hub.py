"""SyncerHub over the memory store: fan-out by kind, late-subscriber replay without gaps or
duplicates, status propagation, exception isolation and re-delivery, stop, and relists
after Compacted seen as differences only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pycalico.datastore import EventType, Resource, WatchEvent, key_for
from pycalico.datastore.hub import HubError, HubKindsError, SyncerHub
from pycalico.datastore.memory import MemoryDatastore
from pycalico.datastore.syncer import SyncStatus, SyncUpdate
from tests.unit.test_syncer import FlakyDatastore, node, pool


class CountingDatastore(FlakyDatastore):
    """FlakyDatastore that also counts watch calls."""

    def __init__(self, inner: MemoryDatastore) -> None:
        super().__init__(inner)
        self.watches = 0

    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        self.watches += 1
        return super().watch(prefix, from_revision, timeout)


class Recorder:
    """Callbacks recording statuses, updates and the resulting view; ``fail`` raises on the
    next ``fail`` on_updates calls."""

    def __init__(self, fail: int = 0) -> None:
        self.lock = threading.Lock()
        self.statuses: list[SyncStatus] = []
        self.updates: list[SyncUpdate] = []
        self.view: dict[str, Resource] = {}
        self.fail = fail
        self.threads: set[str] = set()
        self.concurrent = False
        self._busy = False

    def on_status(self, status: SyncStatus) -> None:
        with self.lock:
            self.statuses.append(status)

    def on_updates(self, updates: list[SyncUpdate]) -> None:
        assert updates, "empty batch"
        if self._busy:
            self.concurrent = True
        self._busy = True
        try:
            with self.lock:
                self.threads.add(threading.current_thread().name)
                if self.fail:
                    self.fail -= 1
                    raise RuntimeError("subscriber hiccup")
                for u in updates:
                    self.updates.append(u)
                    if u.type is EventType.DELETED:
                        del self.view[u.key]
                    else:
                        self.view[u.key] = u.obj
                    assert self.view or u.type is EventType.DELETED, "view emptied"
        finally:
            self._busy = False

    def names(self, kind: str | None = None) -> set[str]:
        with self.lock:
            return {o["metadata"]["name"] for o in self.view.values() if kind in (None, o["kind"])}


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timeout")
        time.sleep(0.01)


@pytest.fixture
def env() -> Iterator[tuple[MemoryDatastore, CountingDatastore, SyncerHub]]:
    mem = MemoryDatastore()
    ds = CountingDatastore(mem)
    hub = SyncerHub(
        ds,
        ["IPPool", "Node", "WorkloadEndpoint"],
        poll_interval=0.05,
        retry_interval=0.05,
        name="test-hub-syncer",
    )
    try:
        yield mem, ds, hub
    finally:
        hub.stop()
        mem.close()


def in_sync(r: Recorder) -> Callable[[], bool]:
    return lambda: r.statuses[-1:] == [SyncStatus.IN_SYNC]


def test_fan_out_by_kind(env: Any) -> None:
    mem, ds, hub = env
    mem.create(pool("p1"))
    mem.create(node("n1"))
    pools, nodes, both = Recorder(), Recorder(), Recorder()
    sp = hub.syncer_for(["IPPool"], pools, "pools").start()
    sn = hub.syncer_for(["Node"], nodes, "nodes").start()
    sb = hub.syncer_for(["Node", "IPPool"], both, "both").start()
    hub.start()
    for r in (pools, nodes, both):
        wait_for(in_sync(r))
        assert r.statuses == [SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.RESYNC, SyncStatus.IN_SYNC]
    mem.create(pool("p2"))
    mem.delete("Node", "n1")
    mem.create(node("n2"))
    wait_for(lambda: both.names() == {"p1", "p2", "n2"})
    wait_for(lambda: pools.names() == {"p1", "p2"} and nodes.names() == {"n2"})
    assert {u.obj["kind"] for u in pools.updates} == {"IPPool"}
    assert {u.obj["kind"] for u in nodes.updates} == {"Node"}
    assert [(u.type, u.obj["metadata"]["name"]) for u in nodes.updates] == [
        (EventType.CREATED, "n1"),
        (EventType.DELETED, "n1"),
        (EventType.CREATED, "n2"),
    ]
    assert set(sp.snapshot()) == {key_for("IPPool", "p1"), key_for("IPPool", "p2")}
    assert set(sn.snapshot()) == {key_for("Node", "n2")}
    assert sb.snapshot() == both.view
    # one Syncer thread and one watch stream for three subscribers
    assert [t.name for t in threading.enumerate() if "syncer" in t.name] == ["test-hub-syncer"]
    assert ds.watches >= 1 and hub.resyncs == 1
    assert all(s.alive() for s in (sp, sn, sb))


def test_key_filter(env: Any) -> None:
    mem, _, hub = env
    hub.start()
    r = Recorder()
    hub.syncer_for(["Node"], r, "mine", key_filter=lambda k: k.endswith("/me")).start()
    mem.create(node("me"))
    mem.create(node("other"))
    mem.delete("Node", "other")
    time.sleep(0.2)
    assert [u.obj["metadata"]["name"] for u in r.updates] == ["me"]


def test_late_subscriber_replay_then_live_no_gaps_no_duplicates(env: Any) -> None:
    mem, _, hub = env
    hub.start()
    early = Recorder()
    hub.syncer_for(["IPPool"], early, "early").start()
    wait_for(in_sync(early))
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            mem.create(pool(f"w{i}"))
            if i % 3 == 0:
                p = mem.get("IPPool", f"w{i}")
                p["spec"]["cidr"] = "10.9.0.0/16"
                mem.update(p)
            if i % 5 == 4:
                mem.delete("IPPool", f"w{i - 2}")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    lates: list[Recorder] = []
    try:
        for _ in range(5):
            time.sleep(0.03)
            r = Recorder()
            hub.syncer_for(["IPPool"], r, f"late{len(lates)}").start()
            lates.append(r)
    finally:
        stop.set()
        t.join()
    final = {key_for("IPPool", o["metadata"]["name"]): o for o in mem.list("IPPool").items}
    for r in [early, *lates]:
        wait_for(lambda r=r: r.view == final)  # type: ignore[misc]
        assert r.statuses[-1] is SyncStatus.IN_SYNC
        assert not r.concurrent
        # per key: created once (unless deleted in between), revisions strictly increasing
        seen: dict[str, int] = {}
        live: set[str] = set()
        for u in r.updates:
            if u.type is EventType.CREATED:
                assert u.key not in live, f"duplicate create of {u.key}"
                live.add(u.key)
            elif u.type is EventType.UPDATED:
                assert u.key in live, f"update of unknown {u.key}"
            else:
                assert u.key in live, f"delete of unknown {u.key}"
                live.discard(u.key)
            assert u.revision > seen.get(u.key, -1), f"{u.key} out of order"
            seen[u.key] = u.revision
    for r in lates:
        assert r.statuses == [SyncStatus.IN_SYNC]  # joined an in-sync hub: replay, then IN_SYNC


def test_status_propagation_through_an_outage(env: Any) -> None:
    mem, ds, hub = env
    mem.create(pool("a"))
    hub.start()
    r = Recorder()
    hub.syncer_for(["IPPool"], r, "r").start()
    wait_for(in_sync(r))
    ds.down = True
    wait_for(lambda: r.statuses[-1] is SyncStatus.WAIT_FOR_DATASTORE)
    during = Recorder()
    hub.syncer_for(["IPPool"], during, "during").start()
    assert during.statuses == [SyncStatus.WAIT_FOR_DATASTORE]
    assert during.names() == {"a"}  # the last good view, never an empty one
    mem.delete("IPPool", "a")
    mem.create(pool("b"))
    ds.down = False
    for x in (r, during):
        wait_for(lambda x=x: x.statuses[-1] is SyncStatus.IN_SYNC and x.names() == {"b"})  # type: ignore[misc]
    assert r.statuses[-3:] == [
        SyncStatus.WAIT_FOR_DATASTORE,
        SyncStatus.RESYNC,
        SyncStatus.IN_SYNC,
    ]


def test_callback_exception_is_contained_and_redelivered(env: Any) -> None:
    mem, _, hub = env
    mem.create(pool("a"))
    hub.start()
    good, bad = Recorder(), Recorder(fail=2)
    hub.syncer_for(["IPPool"], good, "good").start()
    sbad = hub.syncer_for(["IPPool"], bad, "bad").start()  # replay raises
    wait_for(in_sync(good))
    mem.create(pool("b"))  # bad is backing off: raises again on re-delivery, then recovers
    wait_for(lambda: good.names() == {"a", "b"})
    wait_for(lambda: bad.names() == {"a", "b"} and bad.statuses[-1:] == [SyncStatus.IN_SYNC])
    assert sbad.redeliveries >= 2
    mem.create(pool("c"))
    mem.delete("IPPool", "a")
    wait_for(lambda: good.names() == bad.names() == {"b", "c"})
    assert sbad.snapshot() == bad.view
    assert [u.obj["metadata"]["name"] for u in good.updates] == ["a", "b", "c", "a"]
    assert len({u.key for u in bad.updates if u.type is EventType.CREATED}) == 3


def test_stop_delivers_nothing_more(env: Any) -> None:
    mem, _, hub = env
    hub.start()
    r, other = Recorder(), Recorder()
    sub = hub.syncer_for(["IPPool"], r, "r").start()
    hub.syncer_for(["IPPool"], other, "other").start()
    mem.create(pool("a"))
    wait_for(lambda: r.names() == {"a"})
    sub.stop()
    assert not sub.alive() and sub not in hub.subscriptions
    mem.create(pool("b"))
    wait_for(lambda: other.names() == {"a", "b"})
    time.sleep(0.1)
    assert r.names() == {"a"}
    with pytest.raises(HubError):
        sub.start()


def test_stop_from_inside_a_callback(env: Any) -> None:
    mem, _, hub = env
    hub.start()
    seen: list[str] = []
    box: list[Any] = []

    class StopOnFirst:
        def on_status(self, status: SyncStatus) -> None:
            pass

        def on_updates(self, updates: list[SyncUpdate]) -> None:
            seen.extend(u.obj["metadata"]["name"] for u in updates)
            box[0].stop()

    box.append(hub.syncer_for(["IPPool"], StopOnFirst(), "s").start())
    mem.create(pool("a"))
    mem.create(pool("b"))
    time.sleep(0.2)
    assert seen == ["a"]


def test_compacted_relist_is_seen_as_differences_only(env: Any) -> None:
    mem, ds, hub = env
    for n in ("keep", "change", "drop"):
        mem.create(pool(n))
    mem.create(node("n1"))
    hub.start()
    r = Recorder()
    hub.syncer_for(["IPPool"], r, "r").start()
    wait_for(lambda: in_sync(r)() and len(r.updates) == 3)
    ds.paused = True
    time.sleep(0.1)  # the hub's watch is now stalled at the old revision
    ch = mem.get("IPPool", "change")
    ch["spec"]["cidr"] = "10.1.0.0/16"
    mem.update(ch)
    mem.delete("IPPool", "drop")
    mem.create(pool("new"))
    mem.delete("Node", "n1")
    mem.compact()
    lists_before, n_status = ds.lists, len(r.statuses)
    ds.paused = False
    wait_for(lambda: len(r.updates) == 6)
    assert sorted((u.type.value, u.obj["metadata"]["name"]) for u in r.updates[3:]) == [
        ("created", "new"),
        ("deleted", "drop"),
        ("updated", "change"),
    ]
    assert ds.lists > lists_before and hub.resyncs == 2
    wait_for(in_sync(r))
    assert r.statuses[n_status:] == [SyncStatus.RESYNC, SyncStatus.IN_SYNC]
    time.sleep(0.1)
    assert len(r.updates) == 6


def test_kinds_outside_the_hub_raise_a_typed_error(env: Any) -> None:
    _, _, hub = env
    with pytest.raises(HubKindsError, match="BGPPeer"):
        hub.syncer_for(["IPPool", "BGPPeer"], Recorder(), "bgp")
    with pytest.raises(HubKindsError):
        hub.syncer_for([], Recorder(), "none")


def test_lifecycle_errors(env: Any) -> None:
    _, _, hub = env
    hub.start()
    with pytest.raises(HubError):
        hub.start()
    sub = hub.syncer_for(["IPPool"], Recorder(), "x").start()
    with pytest.raises(HubError):
        sub.start()
    hub.stop()
    assert not hub.alive() and not sub.alive()
    with pytest.raises(HubError):
        hub.syncer_for(["IPPool"], Recorder(), "y").start()
