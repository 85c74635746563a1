"""Syncer over the memory store, with a fault-injecting wrapper (down / paused watch)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pycalico.datastore import (
    EventType,
    ListResult,
    Resource,
    Unavailable,
    WatchEvent,
    key_for,
    prefix_for,
)
from pycalico.datastore.memory import MemoryDatastore
from pycalico.datastore.syncer import QueueCallbacks, Syncer, SyncStatus, SyncUpdate
from tests.kit import ip_pool, node, poll


class FlakyDatastore:
    """Wraps a MemoryDatastore. ``down``: every call raises Unavailable; ``paused``: watch
    delivers nothing (as if the stream stalled)."""

    def __init__(self, inner: MemoryDatastore) -> None:
        self.inner = inner
        self.down = False
        self.paused = False
        self.lists = 0

    def _check(self) -> None:
        if self.down:
            raise Unavailable("injected: datastore down")

    def get(self, kind: str, name: str, namespace: str = "") -> Resource:
        self._check()
        return self.inner.get(kind, name, namespace)

    def list(self, kind: str, namespace: str | None = None) -> ListResult:
        self._check()
        return self.inner.list(kind, namespace)

    def list_prefix(self, prefix: str) -> ListResult:
        self._check()
        self.lists += 1
        return self.inner.list_prefix(prefix)

    def create(self, obj: Resource) -> Resource:
        return self.inner.create(obj)

    def update(self, obj: Resource) -> Resource:
        return self.inner.update(obj)

    def delete(
        self, kind: str, name: str, namespace: str = "", revision: str | None = None
    ) -> Resource:
        return self.inner.delete(kind, name, namespace, revision)

    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        self._check()
        if self.paused:
            time.sleep(timeout or 0.1)
            return
        for ev in self.inner.watch(prefix, from_revision, timeout):
            self._check()
            yield ev

    def close(self) -> None:
        self.inner.close()


def pool(name: str, cidr: str = "10.0.0.0/16") -> Resource:
    return ip_pool(name, cidr)


class Collector:
    def __init__(self, cb: QueueCallbacks) -> None:
        self.q = cb.queue
        self.statuses: list[SyncStatus] = []
        self.updates: list[SyncUpdate] = []
        self.view: dict[str, Resource] = {}

    def drain(self, until: Any, timeout: float = 5.0) -> None:
        """Consume messages until ``until(self)`` holds."""
        deadline = time.monotonic() + timeout
        while not until(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timeout; statuses={self.statuses} updates={self.updates}")
            try:
                msg = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(msg, SyncStatus):
                self.statuses.append(msg)
            else:
                for u in msg:
                    self.updates.append(u)
                    if u.type is EventType.DELETED:
                        del self.view[u.key]
                    else:
                        self.view[u.key] = u.obj
                    assert self.view or u.type is EventType.DELETED


@pytest.fixture
def setup() -> Iterator[tuple[MemoryDatastore, FlakyDatastore, Collector, Syncer]]:
    mem = MemoryDatastore()
    flaky = FlakyDatastore(mem)
    cb = QueueCallbacks()
    syncer = Syncer.for_kinds(
        flaky, ["IPPool", "Node"], cb, poll_interval=0.05, retry_interval=0.05
    )
    try:
        yield mem, flaky, Collector(cb), syncer
    finally:
        syncer.stop()
        mem.close()


def names(updates: list[SyncUpdate]) -> list[tuple[str, str]]:
    return [(u.type.value, u.obj["metadata"]["name"]) for u in updates]


def test_status_sequence_initial_snapshot_then_live(setup: Any) -> None:
    mem, _, col, syncer = setup
    mem.create(pool("a"))
    mem.create(node("n1"))
    mem.create({"kind": "HostEndpoint", "metadata": {"name": "h"}, "spec": {}})  # not synced
    syncer.start()
    col.drain(lambda c: SyncStatus.IN_SYNC in c.statuses)
    assert col.statuses == [SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.RESYNC, SyncStatus.IN_SYNC]
    assert sorted(names(col.updates)) == [("created", "a"), ("created", "n1")]
    assert syncer.wait_in_sync(1)
    a = mem.get("IPPool", "a")
    a["spec"]["cidr"] = "10.9.0.0/16"
    mem.update(a)
    mem.delete("Node", "n1")
    mem.create(pool("b"))
    col.drain(lambda c: len(c.updates) == 5)
    assert names(col.updates[2:]) == [("updated", "a"), ("deleted", "n1"), ("created", "b")]
    assert col.view[key_for("IPPool", "a")]["spec"]["cidr"] == "10.9.0.0/16"
    assert (
        set(col.view) == set(syncer.snapshot()) == {key_for("IPPool", "a"), key_for("IPPool", "b")}
    )


def test_compacted_relists_and_emits_only_the_difference(setup: Any) -> None:
    mem, flaky, col, syncer = setup
    for n in ("keep", "change", "drop"):
        mem.create(pool(n))
    syncer.start()
    col.drain(lambda c: SyncStatus.IN_SYNC in c.statuses and len(c.updates) == 3)
    flaky.paused = True
    time.sleep(0.15)  # the syncer's watch is now stalled at the old revision
    ch = mem.get("IPPool", "change")
    ch["spec"]["cidr"] = "10.1.0.0/16"
    mem.update(ch)
    mem.delete("IPPool", "drop")
    mem.create(pool("new"))
    mem.compact()
    lists_before = flaky.lists
    flaky.paused = False
    col.drain(lambda c: len(c.updates) == 6)
    assert sorted(names(col.updates[3:])) == [
        ("created", "new"),
        ("deleted", "drop"),
        ("updated", "change"),
    ]
    assert flaky.lists > lists_before  # it really relisted
    assert SyncStatus.RESYNC in col.statuses[3:]
    time.sleep(0.2)
    assert col.q.empty() or all(isinstance(m, SyncStatus) for m in list(col.q.queue))
    assert {k.rsplit("/", 1)[1] for k in col.view} == {"keep", "change", "new"}


def test_outage_goes_wait_for_datastore_then_recovers_without_empty_state(setup: Any) -> None:
    mem, flaky, col, syncer = setup
    mem.create(pool("a"))
    mem.create(pool("b"))
    syncer.start()
    col.drain(lambda c: SyncStatus.IN_SYNC in c.statuses and len(c.updates) == 2)
    flaky.down = True
    col.drain(lambda c: c.statuses[-1] is SyncStatus.WAIT_FOR_DATASTORE)
    mem.delete("IPPool", "a")
    mem.create(pool("c"))
    flaky.down = False
    col.drain(lambda c: c.statuses[-1] is SyncStatus.IN_SYNC and len(c.updates) == 4)
    assert sorted(names(col.updates[2:])) == [("created", "c"), ("deleted", "a")]
    assert set(col.view) == {key_for("IPPool", "b"), key_for("IPPool", "c")}
    # and it keeps streaming after recovery
    mem.create(pool("d"))
    col.drain(lambda c: len(c.updates) == 5)
    assert names(col.updates[4:]) == [("created", "d")]


def test_multiple_prefixes_no_duplicates(setup: Any) -> None:
    mem, _, col, syncer = setup
    for i in range(5):
        mem.create(pool(f"p{i}"))
        mem.create(node(f"n{i}"))
    syncer.start()
    col.drain(lambda c: SyncStatus.IN_SYNC in c.statuses and len(c.updates) == 10)
    mem.create(node("late"))
    col.drain(lambda c: len(c.updates) == 11)
    time.sleep(0.2)
    assert col.q.empty()
    assert len({u.key for u in col.updates}) == 11


def test_stop_is_prompt(setup: Any) -> None:
    _, _, col, syncer = setup
    syncer.start()
    col.drain(lambda c: SyncStatus.IN_SYNC in c.statuses)
    t = time.monotonic()
    syncer.stop()
    assert not syncer._thread.is_alive()
    assert time.monotonic() - t < 2


def test_prefixes_required() -> None:
    with pytest.raises(ValueError):
        Syncer(MemoryDatastore(), [], QueueCallbacks())


def test_one_watch_on_the_common_prefix(setup: Any) -> None:
    assert setup[3]._watch_prefix == "/calico/resources/v3/projectcalico.org/"
    one = Syncer(MemoryDatastore(), [prefix_for("IPPool")], QueueCallbacks())
    assert one._watch_prefix == prefix_for("IPPool")


def test_updates_whose_callback_raised_are_reemitted() -> None:
    mem = MemoryDatastore()
    mem.create(pool("a"))
    seen: list[str] = []

    class Flaky:
        failed = False

        def on_status(self, status: SyncStatus) -> None:
            pass

        def on_updates(self, updates: list[SyncUpdate]) -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("consumer hiccup")
            seen.extend(u.obj["metadata"]["name"] for u in updates)

    syncer = Syncer(mem, [prefix_for("IPPool")], Flaky(), retry_interval=0.05).start()
    try:
        poll(lambda: seen == ["a"], 5, 0.02)
        assert seen == ["a"]
    finally:
        syncer.stop()


@pytest.mark.parametrize("page", [500, 11])  # 11: the write spans exactly 11 full pages
def test_one_multi_object_write_is_delivered_as_one_batch(
    tmp_path: Any, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write transaction of many objects (here: 120 pools created, one of them deleted
    again, in ONE sqlite transaction) reaches the callbacks as one list, so Felix never
    programs half of it, also when the watch reads it in pages; the create+delete of one
    key inside it nets out."""
    from pycalico.datastore import sqlite
    from pycalico.datastore._common import encode, obj_key, stamp_new
    from pycalico.datastore.sqlite import SqliteDatastore

    monkeypatch.setattr(sqlite, "_WATCH_BATCH", page)
    ds = SqliteDatastore(str(tmp_path / "ds.db"))
    cb = QueueCallbacks()
    syncer = Syncer.for_kinds(ds, ["IPPool"], cb, poll_interval=0.05).start()
    c = Collector(cb)
    try:
        c.drain(lambda s: SyncStatus.IN_SYNC in s.statuses)
        objs = [pool(f"p{i}", f"10.{i}.0.0/16") for i in range(120)]
        conn = ds._conn()
        with ds._txn(conn):
            for obj in objs:
                ds._write(conn, EventType.CREATED, obj_key(obj), encode(stamp_new(obj, False)))
            ds._write(conn, EventType.DELETED, obj_key(objs[0]), encode(stamp_new(objs[0], False)))
        ds._notify()
        batch = cb.queue.get(timeout=5)
        assert isinstance(batch, list)
        assert len(batch) == 121  # whole: every event of the transaction in one list
        assert [u.type for u in batch[:2]] == [EventType.CREATED] * 2
        assert batch[-1].type is EventType.DELETED and batch[-1].key == obj_key(objs[0])
        ds.create(pool("later", "10.200.0.0/16"))
        later = cb.queue.get(timeout=5)
        assert isinstance(later, list) and [u.type for u in later] == [EventType.CREATED]
    finally:
        syncer.stop()
        ds.close()
