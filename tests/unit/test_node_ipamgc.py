"""calico-node's IPAM leak repair: lease decision logic, the lease over the memory store, and
the IpamGcComponent (leader-only, grace period, takeover), all with a fake clock."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pycalico.datastore.base import Datastore, NotFound, Unavailable
from pycalico.datastore.memory import MemoryDatastore
from pycalico.ipam import IPAM
from pycalico.node.ipamgc import (
    IpamGcComponent,
    IpamGcConfigError,
    components_from_env,
    grace_period,
    parse_seconds,
)
from pycalico.node.leader import Action, LeaderLease, decide, lease_object
from tests.kit.builders import ip_pool, node, resource
from tests.kit.fakes import seed


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def ds() -> MemoryDatastore:
    d = MemoryDatastore()
    seed(d, [ip_pool("p", "10.0.0.0/24"), node("n1"), node("n2")])
    return d


def alloc(ds: Datastore, container: str, node: str = "n1") -> str:
    v4, _ = IPAM(ds).auto_assign(
        1, 0, f"k8s-pod-network.{container}", {"pod": container, "node": node}, node
    )
    return str(v4[0].ip)


def wep(ds: Datastore, name: str, container: str, ip: str) -> None:
    spec = {"containerID": container, "ipNetworks": [f"{ip}/32"], "node": "n1"}
    ds.create(resource("WorkloadEndpoint", name, spec, namespace="default"))


def _all_ips(ds: Datastore) -> list[str]:
    from pycalico.ipam.store import IPAMStore

    return [str(addr) for sb in IPAMStore(ds).blocks() for addr, _ in sb.block.allocated()]


# --- decide ---------------------------------------------------------------------------------


def lease(holder: str, renew: float, duration: float = 30.0) -> dict[str, Any]:
    return lease_object("ipam-gc", holder, renew, duration, renew, 0)


def test_decide_no_lease_creates() -> None:
    assert decide(None, 100.0, "a") is Action.CREATE


def test_decide_live_lease_of_other_waits_and_own_renews() -> None:
    cur = lease("a", 100.0, 30.0)
    assert decide(cur, 110.0, "b") is Action.WAIT
    assert decide(cur, 130.0, "b") is Action.WAIT  # exactly at expiry: still held
    assert decide(cur, 110.0, "a") is Action.RENEW


def test_decide_expired_released_or_malformed_is_taken_over() -> None:
    assert decide(lease("a", 100.0, 30.0), 130.5, "b") is Action.TAKEOVER
    assert decide(lease("a", 100.0, 30.0), 131.0, "a") is Action.TAKEOVER
    assert decide(lease("", 100.0, 30.0), 101.0, "b") is Action.TAKEOVER
    bad = lease("a", 100.0)
    bad["spec"]["renewTime"] = "yesterday"
    assert decide(bad, 101.0, "b") is Action.TAKEOVER
    assert decide({"kind": "Lease", "metadata": {"name": "x"}}, 1.0, "b") is Action.TAKEOVER


# --- LeaderLease over the memory store ------------------------------------------------------


def test_lease_exclusive_and_takeover_after_expiry() -> None:
    ds = MemoryDatastore()
    clk = Clock()
    a = LeaderLease(ds, "ipam-gc", "a", 30.0, clock=clk)
    b = LeaderLease(ds, "ipam-gc", "b", 30.0, clock=clk)
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    stored = ds.get("Lease", "ipam-gc")
    assert stored["apiVersion"] == "pycalico.org/v1"
    assert stored["spec"]["holder"] == "a"
    assert stored["spec"]["renewTime"] == clk.t
    assert stored["spec"]["leaseDurationSeconds"] == 30.0
    clk.advance(20)
    assert a.try_acquire() is True  # renew
    clk.advance(20)
    assert b.try_acquire() is False  # renewed 20s ago: still live
    assert a.is_leader()
    clk.advance(31)  # a stops renewing
    assert not a.is_leader()  # a steps down on its own clock at its deadline
    assert b.try_acquire() is True
    assert ds.get("Lease", "ipam-gc")["spec"]["holder"] == "b"
    assert ds.get("Lease", "ipam-gc")["spec"]["leaseTransitions"] == 1
    assert a.try_acquire() is False


def test_lost_cas_race_means_not_leader() -> None:
    ds = MemoryDatastore()
    clk = Clock()
    a = LeaderLease(ds, "ipam-gc", "a", 30.0, clock=clk)
    assert a.try_acquire()
    clk.advance(40)
    # b reads the expired lease, but a's renewal (a takeover of its own expired lease)
    # lands first: b's CAS on the stale revision must fail.
    stale = ds.get("Lease", "ipam-gc")
    assert a.try_acquire()
    obj = lease_object("ipam-gc", "b", clk.t, 30.0, clk.t, 1)
    obj["metadata"] = stale["metadata"]
    from pycalico.datastore.base import Conflict

    with pytest.raises(Conflict):
        ds.update(obj)
    b = LeaderLease(ds, "ipam-gc", "b", 30.0, clock=clk)
    assert b.try_acquire() is False


def test_release_lets_another_take_over_at_once() -> None:
    ds = MemoryDatastore()
    clk = Clock()
    a = LeaderLease(ds, "ipam-gc", "a", 30.0, clock=clk)
    b = LeaderLease(ds, "ipam-gc", "b", 30.0, clock=clk)
    assert a.try_acquire()
    a.release()
    assert not a.is_leader()
    assert b.try_acquire()


def test_lease_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="holder"):
        LeaderLease(MemoryDatastore(), "x", "", 30.0)
    with pytest.raises(ValueError, match="duration"):
        LeaderLease(MemoryDatastore(), "x", "a", 0)


# --- settings -------------------------------------------------------------------------------


def test_parse_seconds() -> None:
    assert parse_seconds("15m", "x") == 900.0
    assert parse_seconds("1h30m", "x") == 5400.0
    assert parse_seconds("90", "x") == 90.0
    assert parse_seconds(0, "x") == 0.0
    with pytest.raises(IpamGcConfigError, match="CALICO_IPAM_GC_INTERVAL"):
        parse_seconds("soon", "CALICO_IPAM_GC_INTERVAL")
    with pytest.raises(IpamGcConfigError, match="negative"):
        parse_seconds("-5s", "x")


def test_grace_period_sources(ds: MemoryDatastore) -> None:
    assert grace_period(ds, {}) == 900.0
    assert grace_period(ds, {"CALICO_IPAM_GC_GRACE_PERIOD": "2m"}) == 120.0
    ds.create(resource("KubeControllersConfiguration", "default", {"controllers": {"node": {}}}))
    assert grace_period(ds, {"CALICO_IPAM_GC_GRACE_PERIOD": "2m"}) == 120.0
    kcc = ds.get("KubeControllersConfiguration", "default")
    kcc["spec"] = {"controllers": {"node": {"leakGracePeriod": "5m"}}}
    ds.update(kcc)
    assert grace_period(ds, {"CALICO_IPAM_GC_GRACE_PERIOD": "2m"}) == 300.0


def test_components_from_env(ds: MemoryDatastore) -> None:
    assert [c.name for c in components_from_env(ds, "n1", {})] == ["ipam-gc"]
    assert components_from_env(ds, "n1", {"CALICO_IPAM_GC_ENABLED": "false"}) == []
    assert components_from_env(ds, "n1", {"CALICO_IPAM_GC_INTERVAL": "never"}) == []


# --- the component --------------------------------------------------------------------------


def component(ds: Datastore, node: str, clk: Clock, **env: str) -> IpamGcComponent:
    e = {"CALICO_IPAM_GC_LEASE_DURATION": "30", **env}
    return IpamGcComponent(ds, node, e, clock=clk, monotonic=clk)


def run_for(comps: list[IpamGcComponent], clk: Clock, seconds: float, tick: float = 5.0) -> None:
    end = clk.t + seconds
    while clk.t < end:
        for c in comps:
            c.step()
        clk.advance(tick)


def test_leak_released_only_after_grace_and_live_one_never(ds: MemoryDatastore) -> None:
    clk = Clock()
    leaked = alloc(ds, "dead")
    live = alloc(ds, "alive")
    wep(ds, "w-alive", "alive", live)
    gc = component(ds, "n1", clk, CALICO_IPAM_GC_GRACE_PERIOD="60s")
    run_for([gc], clk, 55)
    assert gc.lease.is_leader()
    assert gc.interval() == 30.0  # half the grace period
    assert leaked in _all_ips(ds)  # seen leaked, but not for the whole grace period yet
    run_for([gc], clk, 40)  # >= 60s since first seen, at a run
    assert leaked not in _all_ips(ds)
    assert live in _all_ips(ds)
    assert gc.released_total == 1
    run_for([gc], clk, 600)
    assert live in _all_ips(ds)
    assert gc.released_total == 1
    with pytest.raises(NotFound):
        ds.get("IPAMHandle", "k8s-pod-network.dead")


def test_only_leader_collects_and_other_takes_over(ds: MemoryDatastore) -> None:
    clk = Clock()
    env = {"CALICO_IPAM_GC_GRACE_PERIOD": "60s", "CALICO_IPAM_GC_INTERVAL": "10"}
    a = component(ds, "n1", clk, **env)
    b = component(ds, "n2", clk, **env)
    a.step()
    b.step()
    assert a.lease.is_leader() and not b.lease.is_leader()
    leaked = alloc(ds, "dead")
    # a runs; b never does while a renews.
    run_for([a, b], clk, 50)
    assert a.runs >= 4 and b.runs == 0
    assert leaked in _all_ips(ds)
    # a stops renewing (hung/killed, no release); b takes over once the lease expires ...
    run_for([b], clk, 20)  # a's last renewal (t+40) expires at t+70
    assert not b.lease.is_leader() and b.runs == 0
    run_for([b], clk, 15)  # b notices within one renew period (10s)
    assert b.lease.is_leader() and not a.lease.is_leader()
    assert ds.get("Lease", "ipam-gc")["spec"]["holder"] == "n2"
    # ... and, with a fresh collector, waits its own full grace period before releasing.
    run_for([b], clk, 50)
    assert b.runs >= 4 and leaked in _all_ips(ds)
    run_for([b], clk, 20)
    assert leaked not in _all_ips(ds)
    assert a.released_total == 0 and b.released_total == 1
    # a comes back: it must not collect while b holds the lease.
    runs_before = a.runs
    run_for([a, b], clk, 100)
    assert a.runs == runs_before and not a.lease.is_leader()


def test_grace_zero_disables(ds: MemoryDatastore) -> None:
    clk = Clock()
    leaked = alloc(ds, "dead")
    spec = {"controllers": {"node": {"leakGracePeriod": "0s"}}}
    ds.create(resource("KubeControllersConfiguration", "default", spec))
    gc = component(ds, "n1", clk, CALICO_IPAM_GC_INTERVAL="10")
    run_for([gc], clk, 3600)
    assert gc.lease.is_leader() and gc.runs == 0
    assert leaked in _all_ips(ds)


def test_component_protocol_thread_start_stop(ds: MemoryDatastore) -> None:
    gc = IpamGcComponent(ds, "n1", {"CALICO_IPAM_GC_GRACE_PERIOD": "60s"})
    assert not gc.alive() and not gc.in_sync()
    gc.start()
    try:
        assert gc.alive() and gc.in_sync()
        for _ in range(200):
            if gc.runs:
                break
            time.sleep(0.01)
        assert gc.runs >= 1
        assert ds.get("Lease", "ipam-gc")["spec"]["holder"] == "n1"
    finally:
        gc.stop()
    assert not gc.alive()
    assert ds.get("Lease", "ipam-gc")["spec"]["holder"] == ""  # released on stop


class FlakyStore:
    """Wraps a store; every call raises Unavailable while ``down``."""

    def __init__(self, inner: Datastore) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            if self.down:
                raise Unavailable("datastore down")
            return attr(*a, **kw)

        return call


def test_datastore_outage_drops_leadership_and_recovers(ds: MemoryDatastore) -> None:
    clk = Clock()
    flaky = FlakyStore(ds)
    gc = component(flaky, "n1", clk, CALICO_IPAM_GC_GRACE_PERIOD="60s")  # type: ignore[arg-type]
    run_for([gc], clk, 20)
    assert gc.lease.is_leader() and gc.runs == 1
    flaky.down = True
    run_for([gc], clk, 60)
    assert not gc.lease.is_leader()
    assert "datastore down" in gc.last_error
    flaky.down = False
    leaked = alloc(ds, "dead")
    run_for([gc], clk, 15)
    assert gc.lease.is_leader()
    run_for([gc], clk, 90)
    assert leaked not in _all_ips(ds)
