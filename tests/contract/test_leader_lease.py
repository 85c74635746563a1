"""The datastore leader lease on every backend: three contenders, each with its own client
(its own connection for sqlite/etcd), in threads on the real clock.

Each contender records the leadership window ``[write start, write start + duration]`` of
every successful acquire/renew; windows of different holders must never overlap (exactly one
leader at any time), and when the leader stops renewing (no release, as if killed) another
contender takes over within one lease duration plus one renew period.
"""

from __future__ import annotations

import threading
import time

import pytest

from pycalico.datastore.base import Datastore, DatastoreError
from pycalico.node.leader import LeaderLease
from tests.contract.conftest import Backend
from tests.kit import wait_for

DURATION = 1.0
RENEW = 0.2


class Contender:
    def __init__(self, name: str, ds: Datastore) -> None:
        self.name = name
        self.lease = LeaderLease(ds, "ipam-gc", name, DURATION)
        self.windows: list[tuple[float, float]] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.lease.try_acquire():
                    until = self.lease.valid_until
                    self.windows.append((until - DURATION, until))
            except DatastoreError:
                self.errors += 1
            self.stop.wait(RENEW)

    def leading(self) -> bool:
        return self.lease.is_leader()


def holders_now(cs: list[Contender]) -> list[str]:
    return [c.name for c in cs if c.thread.is_alive() and c.leading()]


def wait_for_leader(cs: list[Contender], timeout: float) -> str:
    what = f"a leader among {[c.name for c in cs]}"
    return wait_for(lambda: holders_now(cs), timeout, 0.02, what=what)[0]


def assert_exclusive(cs: list[Contender]) -> None:
    spans = [(s, e, c.name) for c in cs for s, e in c.windows]
    for s1, e1, n1 in spans:
        for s2, e2, n2 in spans:
            if n1 != n2:
                assert e1 < s2 or e2 < s1, (
                    f"{n1} [{s1:.3f}, {e1:.3f}] overlaps {n2} [{s2:.3f}, {e2:.3f}]"
                )


@pytest.mark.slow
def test_one_leader_at_a_time_and_takeover(backend: Backend) -> None:
    cs = [Contender(f"node-{i}", backend.open()) for i in range(3)]
    for c in cs:
        c.thread.start()
    try:
        first = wait_for_leader(cs, 5.0)
        time.sleep(2 * DURATION)  # renewals keep the same leader; nobody else gets in
        assert holders_now(cs) == [first]
        others = [c for c in cs if c.name != first]
        assert all(not c.windows for c in others), "a non-leader won the lease while held"
        # The leader stops renewing (as if it hung or was killed): no release.
        leader = next(c for c in cs if c.name == first)
        leader.stop.set()
        leader.thread.join(5)
        stopped_at = time.monotonic()
        rest = [c for c in cs if c is not leader]
        second = wait_for_leader(rest, DURATION + 4 * RENEW + 3.0)
        took = time.monotonic() - stopped_at
        assert second != first
        assert took <= DURATION + RENEW + 3.0
        assert backend.store.get("Lease", "ipam-gc")["spec"]["holder"] == second
        # And again: the third takes over from the second.
        nxt = next(c for c in rest if c.name == second)
        nxt.stop.set()
        nxt.thread.join(5)
        last = [c for c in rest if c is not nxt]
        third = wait_for_leader(last, DURATION + 4 * RENEW + 3.0)
        assert third not in (first, second)
        assert backend.store.get("Lease", "ipam-gc")["spec"]["leaseTransitions"] == 2
    finally:
        for c in cs:
            c.stop.set()
        for c in cs:
            c.thread.join(5)
    assert_exclusive(cs)
    assert all(c.windows for c in cs)


def test_release_hands_over_without_waiting_for_expiry(backend: Backend) -> None:
    a = LeaderLease(backend.open(), "ipam-gc", "a", 60.0)
    b = LeaderLease(backend.open(), "ipam-gc", "b", 60.0)
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()
    assert not a.try_acquire()
    assert backend.store.get("Lease", "ipam-gc")["spec"]["holder"] == "b"
