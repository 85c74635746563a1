"""Issue 19 "Health tells the truth": the SyncerHub's sync state and since-when, and calico-node
readiness built on it (grace period honoured, ready again after the resync, liveness
unaffected), over a MemoryDatastore that can be switched "down" (raises DatastoreError) and
virtual time for the grace period."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.base import ListResult, Unavailable, WatchEvent
from pycalico.datastore.hub import SyncerHub, SyncState
from pycalico.datastore.syncer import SyncStatus
from pycalico.node.agent import NodeAgent, datastore_grace
from pycalico.node.status import (
    DEFAULT_DATASTORE_GRACE,
    check,
    datastore_health,
    read_status,
)
from tests.kit.builders import ip_pool
from tests.kit.fakes import FakeClock, memory_datastore
from tests.kit.waiting import wait_for


class FlakyDatastore:
    """A MemoryDatastore whose list/watch raise ``Unavailable`` while :attr:`down`."""

    def __init__(self) -> None:
        self.inner = memory_datastore(ip_pool("p1", "10.244.0.0/16"))
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _check(self) -> None:
        if self.down:
            raise Unavailable("connection refused (test)")

    def list_prefix(self, prefix: str) -> ListResult:
        self._check()
        return self.inner.list_prefix(prefix)

    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        self._check()
        yield from self.inner.watch(prefix, from_revision, timeout)
        self._check()


class Alive:
    """A component that is always alive and in sync (liveness must not follow the store)."""

    name = "fake"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def alive(self) -> bool:
        return True

    def in_sync(self) -> bool:
        return True


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[FlakyDatastore, SyncerHub, NodeAgent, FakeClock]]:
    clock = FakeClock(1000.0)
    ds = FlakyDatastore()
    hub = SyncerHub(
        ds,  # type: ignore[arg-type]
        ["IPPool"],
        poll_interval=0.05,
        retry_interval=0.02,
        max_retry_interval=0.05,
        monotonic=clock.monotonic,
    )
    agent = NodeAgent(
        "n1", str(tmp_path), [Alive()], hub=hub, datastore_grace=10.0, monotonic=clock.monotonic
    )
    hub.start()
    try:
        assert hub.wait_in_sync(5)
        yield ds, hub, agent, clock
    finally:
        hub.stop()


def status_is(hub: SyncerHub, status: SyncStatus) -> bool:
    return hub.sync_state.status is status


def test_hub_sync_state_records_since_when() -> None:
    clock = FakeClock(50.0)
    ds = FlakyDatastore()
    hub = SyncerHub(ds, ["IPPool"], poll_interval=0.05, retry_interval=0.02,  # type: ignore[arg-type]
                    max_retry_interval=0.05, monotonic=clock.monotonic)  # fmt: skip
    st = hub.sync_state
    assert st == SyncState(None, 50.0, 50.0, False) and not st.in_sync
    hub.start()
    try:
        wait_for(lambda: status_is(hub, SyncStatus.IN_SYNC), 5)
        assert hub.sync_state == SyncState(SyncStatus.IN_SYNC, 50.0, None, True)
        clock.advance(7)
        ds.down = True
        wait_for(lambda: status_is(hub, SyncStatus.WAIT_FOR_DATASTORE), 5)
        assert hub.sync_state == SyncState(SyncStatus.WAIT_FOR_DATASTORE, 57.0, 57.0, True)
        clock.advance(3)  # retries while down keep the original since-when
        threading.Event().wait(0.2)
        assert hub.sync_state.unsynced_since == 57.0 and hub.sync_state.since == 57.0
        ds.down = False
        wait_for(lambda: status_is(hub, SyncStatus.IN_SYNC), 5)
        assert hub.sync_state == SyncState(SyncStatus.IN_SYNC, 60.0, None, True)
    finally:
        hub.stop()


def test_datastore_health_rule() -> None:
    in_sync = SyncState(SyncStatus.IN_SYNC, 5.0, None, True)
    assert datastore_health(in_sync, 10, 100)[0] is True
    assert datastore_health(in_sync, 10, 100)[2] is None
    down = SyncState(SyncStatus.WAIT_FOR_DATASTORE, 90.0, 90.0, True)
    assert datastore_health(down, 10, 99.9)[:3:2] == (True, None)  # within the grace
    ok, info, reason = datastore_health(down, 10, 102.2)
    assert (ok, reason) == (False, "datastore unreachable for 12s")
    assert info["status"] == "wait-for-datastore" and info["unsynced_for"] == 12.2
    resync = SyncState(SyncStatus.RESYNC, 101.0, 90.0, True)  # came back, still listing
    assert datastore_health(resync, 10, 102.0)[2] == "datastore resyncing for 12s"
    # never in sync: not ready at once (no grace before the first sync)
    assert datastore_health(SyncState(None, 0.0, 0.0, False), 10, 1)[:3:2] == (
        False,
        "datastore not in sync yet",
    )
    never = SyncState(SyncStatus.WAIT_FOR_DATASTORE, 0.0, 0.0, False)
    assert datastore_health(never, 10, 3)[0] is False


def test_grace_env() -> None:
    assert datastore_grace({}) == DEFAULT_DATASTORE_GRACE == 10.0
    assert datastore_grace({"CALICO_NODE_DATASTORE_GRACE_PERIOD": "30s"}) == 30.0
    assert datastore_grace({"CALICO_NODE_DATASTORE_GRACE_PERIOD": "2.5"}) == 2.5
    assert datastore_grace({"CALICO_NODE_DATASTORE_GRACE_PERIOD": "soon"}) == 10.0


def test_readiness_drops_after_grace_and_returns_after_resync(
    rig: tuple[FlakyDatastore, SyncerHub, NodeAgent, FakeClock], tmp_path: Path
) -> None:
    ds, hub, agent, clock = rig
    st = agent.tick()
    assert st.ready and st.datastore_ready is True and st.errors == []
    assert agent.readiness()[0] and agent.liveness()[0]

    ds.down = True
    wait_for(lambda: status_is(hub, SyncStatus.WAIT_FOR_DATASTORE), 5)
    clock.advance(9.0)  # inside the grace period: still ready
    st = agent.tick()
    assert st.ready and st.datastore_ready is True and st.errors == []

    clock.advance(3.0)  # 12 s unreachable
    st = agent.tick()
    assert not st.ready and st.datastore_ready is False
    assert "datastore unreachable for 12s" in st.errors
    ready, detail = agent.readiness()
    assert not ready and detail["datastore"]["reason"] == "datastore unreachable for 12s"
    assert agent.liveness()[0]  # alive: it will resync by itself
    data = read_status(str(tmp_path))
    assert data is not None and data["ready"] is False
    assert check(data, felix_ready=True) == [
        "calico/node is not ready: felix is not ready: readiness probe reporting 503"
        " (datastore unreachable for 12s)"
    ]
    assert check(data, felix_live=True, bird_live=True) == []

    ds.down = False
    wait_for(lambda: status_is(hub, SyncStatus.IN_SYNC), 5)
    st = agent.tick()
    assert st.ready and st.datastore_ready is True and st.errors == []
    assert check(read_status(str(tmp_path)), felix_ready=True) == []


def test_short_blip_never_flaps_readiness(
    rig: tuple[FlakyDatastore, SyncerHub, NodeAgent, FakeClock],
) -> None:
    ds, hub, agent, clock = rig
    for _ in range(3):
        ds.down = True
        wait_for(lambda: status_is(hub, SyncStatus.WAIT_FOR_DATASTORE), 5)
        clock.advance(6.0)
        assert agent.tick().ready
        ds.down = False
        wait_for(lambda: status_is(hub, SyncStatus.IN_SYNC), 5)
        assert agent.tick().ready  # the grace starts over after each resync


def test_no_hub_keeps_the_old_rule(tmp_path: Path) -> None:
    agent = NodeAgent("n1", str(tmp_path), [Alive()])
    st = agent.tick()
    assert st.ready and st.datastore_ready is None and st.to_json()["datastore_ready"] is None


def test_not_ready_before_the_first_status(tmp_path: Path) -> None:
    """/readiness must not say ready before anything was collected (status.json is not
    written yet, so `--felix-ready` would disagree)."""
    agent = NodeAgent("n1", str(tmp_path), [Alive()])
    ready, body = agent.readiness()
    assert not ready and any("starting" in e for e in body["errors"])
    agent.tick()
    assert agent.readiness()[0]
    assert (tmp_path / "status.json").is_file()
