"""One contract every Datastore backend keeps: CRUD, CAS, metadata, copies, watch, compaction,
and CAS that holds under concurrency (threads, and processes for shared backends)."""

from __future__ import annotations

import multiprocessing
import re
import threading
import uuid
from typing import Any

import pytest

from pycalico.config import DatastoreConfig
from pycalico.datastore import (
    AlreadyExists,
    Compacted,
    Conflict,
    Datastore,
    EventType,
    InvalidObject,
    NotFound,
    Resource,
    WatchEvent,
    key_for,
    open_datastore,
    prefix_for,
)
from tests.contract.conftest import Backend
from tests.kit import resource


def pool(name: str, cidr: str = "10.0.0.0/16", **meta: Any) -> Resource:
    return resource("IPPool", name, {"cidr": cidr}, **meta)


def policy(name: str, ns: str, order: float = 1.0) -> Resource:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"order": order, "selector": "all()"},
    }


def collect(ds: Datastore, prefix: str, since: int, n: int, timeout: float = 5) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    for ev in ds.watch(prefix, since, timeout=timeout):
        out.append(ev)
        if len(out) >= n:
            break
    return out


# -- CRUD and metadata -------------------------------------------------------------------


def test_create_stamps_metadata_and_get_roundtrips(backend: Backend) -> None:
    ds = backend.store
    created = ds.create(pool("p1", resourceVersion="999", uid="mine", labels={"a": "b"}))
    meta = created["metadata"]
    assert int(meta["resourceVersion"]) > 0
    assert meta["uid"] != "mine"
    uuid.UUID(meta["uid"])  # raises unless a uuid
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["labels"] == {"a": "b"}
    got = ds.get("IPPool", "p1")
    assert got == created
    assert got["spec"] == {"cidr": "10.0.0.0/16"}


def test_create_existing_is_already_exists(backend: Backend) -> None:
    ds = backend.store
    ds.create(pool("p1"))
    with pytest.raises(AlreadyExists):
        ds.create(pool("p1", "10.1.0.0/16"))
    assert ds.get("IPPool", "p1")["spec"]["cidr"] == "10.0.0.0/16"


def test_get_missing_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.store.get("IPPool", "nope")
    with pytest.raises(NotFound):
        backend.store.get("NetworkPolicy", "nope", "ns1")


def test_invalid_objects_are_rejected(backend: Backend) -> None:
    ds = backend.store
    with pytest.raises(InvalidObject, match="kind"):
        ds.create({"metadata": {"name": "x"}, "spec": {}})
    with pytest.raises(InvalidObject, match=r"metadata\.name"):
        ds.create({"kind": "IPPool", "metadata": {}, "spec": {}})
    ds.create(pool("p1"))
    with pytest.raises(InvalidObject, match="resourceVersion"):
        ds.update(pool("p1", "10.9.0.0/16"))


def test_update_is_cas_and_keeps_uid(backend: Backend) -> None:
    ds = backend.store
    v1 = ds.create(pool("p1"))
    v1["spec"]["cidr"] = "10.2.0.0/16"
    v2 = ds.update(v1)
    assert int(v2["metadata"]["resourceVersion"]) > int(v1["metadata"]["resourceVersion"])
    assert v2["metadata"]["uid"] == v1["metadata"]["uid"]
    assert v2["metadata"]["creationTimestamp"] == v1["metadata"]["creationTimestamp"]
    assert ds.get("IPPool", "p1")["spec"]["cidr"] == "10.2.0.0/16"
    # the stale copy now conflicts, and nothing changes
    v1["spec"]["cidr"] = "10.3.0.0/16"
    with pytest.raises(Conflict):
        ds.update(v1)
    assert ds.get("IPPool", "p1") == v2


def test_update_cannot_change_uid(backend: Backend) -> None:
    ds = backend.store
    v1 = ds.create(pool("p1"))
    v1["metadata"]["uid"] = "forged"
    v2 = ds.update(v1)
    assert v2["metadata"]["uid"] != "forged"
    assert ds.get("IPPool", "p1")["metadata"]["uid"] == v2["metadata"]["uid"]


def test_update_missing_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.store.update(pool("ghost", resourceVersion="1"))


def test_delete_plain_and_cas(backend: Backend) -> None:
    ds = backend.store
    v1 = ds.create(pool("p1"))
    v1["spec"]["cidr"] = "10.5.0.0/16"
    v2 = ds.update(v1)
    with pytest.raises(Conflict):
        ds.delete("IPPool", "p1", revision=v1["metadata"]["resourceVersion"])
    gone = ds.delete("IPPool", "p1", revision=v2["metadata"]["resourceVersion"])
    assert gone["spec"]["cidr"] == "10.5.0.0/16"
    with pytest.raises(NotFound):
        ds.get("IPPool", "p1")
    with pytest.raises(NotFound):
        ds.delete("IPPool", "p1")
    ds.create(pool("p2"))
    assert ds.delete("IPPool", "p2")["metadata"]["name"] == "p2"


def test_returned_objects_are_copies(backend: Backend) -> None:
    ds = backend.store
    obj = pool("p1", labels={"x": "1"})
    created = ds.create(obj)
    obj["spec"]["cidr"] = "1.1.1.0/24"
    created["metadata"]["labels"]["x"] = "evil"
    got = ds.get("IPPool", "p1")
    assert got["metadata"]["labels"] == {"x": "1"}
    got["spec"]["cidr"] = "2.2.2.0/24"
    assert ds.list("IPPool").items[0]["spec"]["cidr"] == "10.0.0.0/16"


def test_list_by_kind_namespace_and_prefix(backend: Backend) -> None:
    ds = backend.store
    ds.create(pool("a"))
    ds.create(pool("b", "10.1.0.0/16"))
    ds.create(policy("p", "ns1"))
    ds.create(policy("q", "ns1"))
    last = ds.create(policy("p", "ns2"))
    res = ds.list("IPPool")
    assert [o["metadata"]["name"] for o in res.items] == ["a", "b"]
    assert res.revision >= int(last["metadata"]["resourceVersion"])
    assert len(ds.list("NetworkPolicy").items) == 3
    ns1 = ds.list("NetworkPolicy", "ns1").items
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in ns1} == {
        ("ns1", "p"),
        ("ns1", "q"),
    }
    assert ds.list("NetworkPolicy", "ns3").items == []
    assert len(ds.list_prefix(prefix_for("NetworkPolicy", "ns2")).items) == 1
    assert ds.list("HostEndpoint").items == []
    for o in res.items:
        assert o["metadata"]["resourceVersion"]


def test_revisions_strictly_increase(backend: Backend) -> None:
    ds = backend.store
    revs = [int(ds.create(pool(f"p{i}"))["metadata"]["resourceVersion"]) for i in range(5)]
    assert revs == sorted(revs) and len(set(revs)) == 5
    assert ds.list("IPPool").revision >= revs[-1]


# -- watch -------------------------------------------------------------------------------


def test_watch_yields_ordered_events_from_revision(backend: Backend) -> None:
    ds = backend.store
    start = ds.list("IPPool").revision
    a = ds.create(pool("a"))
    ds.create(policy("pol", "ns1"))  # outside the watched prefix
    a["spec"]["cidr"] = "10.7.0.0/16"
    a2 = ds.update(a)
    ds.delete("IPPool", "a")
    evs = collect(ds, prefix_for("IPPool"), start, 3)
    assert [e.type for e in evs] == [EventType.CREATED, EventType.UPDATED, EventType.DELETED]
    assert all(e.key == key_for("IPPool", "a") for e in evs)
    revs = [e.revision for e in evs]
    assert revs == sorted(revs)
    assert evs[1].obj == a2
    assert evs[1].revision == int(a2["metadata"]["resourceVersion"])
    assert evs[2].obj["spec"]["cidr"] == "10.7.0.0/16"  # last value before deletion
    # resume after the first event: only the later two
    resumed = collect(ds, prefix_for("IPPool"), evs[0].revision, 2)
    assert [e.revision for e in resumed] == revs[1:]


def test_watch_sees_live_changes_from_another_client(backend: Backend) -> None:
    ds = backend.store
    other = backend.open()
    start = ds.list("IPPool").revision
    got: list[WatchEvent] = []

    def run() -> None:
        got.extend(collect(ds, prefix_for("IPPool"), start, 3, timeout=10))

    t = threading.Thread(target=run)
    t.start()
    for i in range(3):
        other.create(pool(f"live{i}"))
    t.join(15)
    assert not t.is_alive()
    assert [e.obj["metadata"]["name"] for e in got] == ["live0", "live1", "live2"]


def test_watch_times_out_quietly(backend: Backend) -> None:
    ds = backend.store
    rev = ds.list("IPPool").revision
    assert list(ds.watch(prefix_for("IPPool"), rev, timeout=0.2)) == []


def test_watch_of_compacted_history_raises_compacted(backend: Backend) -> None:
    ds = backend.store
    start = ds.list("IPPool").revision
    for i in range(4):
        ds.create(pool(f"c{i}"))
    last = ds.list("IPPool").revision
    backend.compact(last)
    with pytest.raises(Compacted):
        list(ds.watch(prefix_for("IPPool"), start, timeout=1))
    # from the compaction point on, watching works again
    ds.create(pool("after"))
    evs = collect(ds, prefix_for("IPPool"), last, 1)
    assert evs[0].obj["metadata"]["name"] == "after"


# -- concurrency -------------------------------------------------------------------------


def increment(ds: Datastore, times: int) -> int:
    """CAS-increment spec.count ``times`` times; returns the number of conflicts seen."""
    conflicts = 0
    for _ in range(times):
        while True:
            obj = ds.get("IPPool", "counter")
            obj["spec"]["count"] += 1
            try:
                ds.update(obj)
                break
            except Conflict:
                conflicts += 1
    return conflicts


def test_concurrent_cas_increments_threads(backend: Backend) -> None:
    backend.store.create({"kind": "IPPool", "metadata": {"name": "counter"}, "spec": {"count": 0}})
    n, m = 4, 25
    stores = [backend.open() for _ in range(n)]
    threads = [threading.Thread(target=increment, args=(s, m)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert backend.store.get("IPPool", "counter")["spec"]["count"] == n * m


def _child(cfg: DatastoreConfig, times: int, q: Any) -> None:
    ds = open_datastore(cfg)
    try:
        q.put(increment(ds, times))
    finally:
        ds.close()


def test_concurrent_cas_increments_processes(backend: Backend) -> None:
    if backend.config is None:
        pytest.skip(f"{backend.name} is not shared between processes")
    backend.store.create({"kind": "IPPool", "metadata": {"name": "counter"}, "spec": {"count": 0}})
    n, m = 3, 40
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(backend.config, m, q)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    assert [p.exitcode for p in procs] == [0] * n
    assert backend.store.get("IPPool", "counter")["spec"]["count"] == n * m
