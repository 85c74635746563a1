"""One Felix per node: one syncer, one calc graph (policy + routes), one owner loop driving the
nft tables AND the route drivers. Ported RouteAgent lifecycle assertions (RouteDataplane over the
stateful FakeKernel) and the acceptance check that a policy update and a new IPAM block reach
their drivers through the same owner thread. Refresh and back-off schedules run on a FakeClock:
virtual time only moves when a test advances it, and ``Felix.barrier()`` makes the owner loop
act on the new time, so "not yet" and "now" are both asserted exactly."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.agent import FELIX_KINDS, Felix
from pycalico.felix.calc.routetypes import Addr, DesiredState, HostFacts
from pycalico.felix.dataplane import FakeNftRunner
from pycalico.felix.dataplane.runner import TablePart
from pycalico.felix.dataplane.watch import route_topic
from pycalico.ipam import IPAM
from pycalico.node.tunnels import ensure_tunnel_addresses
from pycalico.system.clock import Clock, FakeClock, RealClock
from pycalico.system.fakekernel import FakeKernel
from tests.kit import ip_pool, namespace, network_policy, node, wait_for, workload_endpoint
from tests.unit.test_dataplane_routing import dataplane, host


@pytest.fixture
def ds() -> MemoryDatastore:
    d = MemoryDatastore()
    d.create(ip_pool("p", "10.244.0.0/16", vxlan_mode="Always"))
    for i in (1, 2):
        d.create(node(f"n{i}", f"198.18.0.{i}/24"))
    return d


def test_watches_the_union_of_kinds_with_one_syncer() -> None:
    assert {"IPPool", "Node", "IPAMBlock", "FelixConfiguration", "WorkloadEndpoint"} <= set(
        FELIX_KINDS
    )
    assert {"NetworkPolicy", "GlobalNetworkPolicy", "Profile"} <= set(FELIX_KINDS)
    assert len(FELIX_KINDS) == len(set(FELIX_KINDS))


def test_lifecycle_sync_incremental_and_resync(ds: MemoryDatastore) -> None:
    """The former RouteAgent's lifecycle, now inside Felix's one loop."""
    for n in ("n1", "n2"):
        ensure_tunnel_addresses(ds, n)
    IPAM(ds).auto_assign(1, 0, "pod-a", {"node": "n2"}, "n2")
    k: FakeKernel = host()
    clock = FakeClock()
    felix = Felix("n1", ds, FakeNftRunner(), routes=dataplane(k)[0], route_refresh_interval=3600,
                  syncer_poll_interval=0.05, clock=clock)  # fmt: skip
    assert felix.routes is not None
    loop = felix.routes

    def routes() -> dict[str, str | None]:
        return {str(d): r.dev for d, r in k.routes.items() if r.proto == 80}

    felix.start()
    try:
        assert felix.wait_in_sync(5), felix.error
        assert loop.full_applies == 1
        n2_blocks = [b["spec"]["cidr"] for b in ds.list("IPAMBlock").items
                     if b["spec"]["affinity"] == "host:n2"]  # fmt: skip
        assert n2_blocks and all(routes()[b] == "vxlan.calico" for b in n2_blocks)
        assert len(k.fdb) == 1 and "vxlan.calico" in k.links
        # A new remote block arrives through the watch: incremental apply.
        IPAM(ds).claim_affinity(ipaddress.ip_network("10.244.200.0/26"), "n2")
        wait_for(lambda: "10.244.200.0/26" in routes(), 5.0, 0.01)
        assert loop.full_applies == 1
        # Drift is only repaired by a full apply (here requested; normally periodic).
        del k.routes[ipaddress.ip_network("10.244.200.0/26")]
        felix.resync()
        wait_for(lambda: "10.244.200.0/26" in routes(), 5.0, 0.01)
        assert loop.full_applies == 2
        # ... and periodically, every routeRefreshInterval of (virtual) time.
        del k.routes[ipaddress.ip_network("10.244.200.0/26")]
        clock.advance(3599.9)
        assert felix.barrier()
        assert "10.244.200.0/26" not in routes() and loop.full_applies == 2
        clock.advance(0.2)
        assert felix.barrier()
        assert "10.244.200.0/26" in routes() and loop.full_applies == 3
        # A malformed resource is ignored, the rest keeps routing.
        ds.create(ip_pool("bad", "10.250.0.0/16", vxlan_mode="Bogus"))
        ds.delete("Node", "n2")
        wait_for(lambda: "vxlan.calico" not in routes().values(), 5.0, 0.01)
        assert k.fdb == {}
        st = felix.stats()["routes"]
        assert st["in_sync"] and st["vteps"] == 0 and st["applies"] >= 3 and felix.alive()
        assert felix.stats()["in_sync"]
        # Felix never writes to the datastore (tunnel addresses are calico-node's).
        assert "ipv4VXLANTunnelAddr" in ds.get("Node", "n1")["spec"]
    finally:
        felix.stop()
    assert not felix.alive()
    assert k.links["vxlan.calico"]  # stop leaves the dataplane in place
    assert HostFacts().host_mtu == 1460


class ThreadNft(FakeNftRunner):
    """FakeNftRunner recording which thread sent each transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def transact_many(self, parts: Sequence[TablePart]) -> None:
        self.threads.append(threading.current_thread().name)
        super().transact_many(parts)


class FakeRoutes:
    """A route driver recording desired states, full flags and threads; ``fail`` makes that
    many applies report a problem."""

    def __init__(self, iface: str = "eth0", mtu: int = 1500, clock: Clock | None = None) -> None:
        self.applied: list[tuple[DesiredState, bool]] = []
        self.clock: Clock = clock if clock is not None else RealClock()
        self.times: list[float] = []  # clock time of each apply
        self.threads: list[str] = []
        self.facts_calls: list[tuple[Addr | None, str]] = []
        self.iface, self.mtu = iface, mtu
        self.fail = 0
        self.closed = False
        self.resyncs: list[str] = []

    def request_resync(self, part: str) -> None:
        self.resyncs.append(part)

    def facts(self, node_ip: Addr | None, mtu_pattern: str) -> HostFacts:
        self.facts_calls.append((node_ip, mtu_pattern))
        return HostFacts(self.iface if node_ip is not None else None, self.mtu)

    def apply(self, want: DesiredState, *, full: bool) -> list[str]:
        self.threads.append(threading.current_thread().name)
        self.applied.append((want, full))
        self.times.append(self.clock.monotonic())
        if self.fail > 0:
            self.fail -= 1
            return ["routes: injected"]
        return []

    def close(self) -> None:
        self.closed = True

    def last(self) -> DesiredState:
        return self.applied[-1][0]


def _wep(name: str, ip: str, labels: dict[str, str]) -> dict[str, Any]:
    from tests.unit.test_rules_renderer import HTTP_PORT

    return workload_endpoint(
        name, namespace="ns1", node="n1", ip=ip, labels=labels, ports=[HTTP_PORT]
    )


def _policy(port: int) -> dict[str, Any]:
    return network_policy(
        "allow", namespace="ns1", selector="app == 'b'", types=["Ingress"],
        ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [port]}}],
    )  # fmt: skip


def test_policy_update_and_new_block_reach_their_drivers_through_one_loop(
    ds: MemoryDatastore,
) -> None:
    for n in ("n1", "n2"):
        ensure_tunnel_addresses(ds, n)
    ds.create(namespace("ns1"))
    ds.create(_wep("b", "10.244.1.2", {"app": "b"}))
    ds.create(_policy(80))
    nft, r4, r6 = ThreadNft(), FakeRoutes(), FakeRoutes()
    felix = Felix("n1", ds, nft, routes=r4, routes6=r6, syncer_poll_interval=0.05)
    felix.start()
    try:
        assert felix.wait_in_sync(5), felix.error
        assert r4.applied[0][1] is True  # the first route apply is full
        assert r4.last().routes[ipaddress.ip_network("10.244.1.2/32")].dev == "calib"
        assert r4.facts_calls[0] == (ipaddress.ip_address("198.18.0.1"), r4.facts_calls[0][1])
        n_nft, n_routes = len(nft.transactions), len(r4.applied)
        # A policy update and a new remote block, in one burst.
        pol = ds.get("NetworkPolicy", "allow", "ns1")
        pol["spec"]["ingress"][0]["destination"]["ports"] = [8080]
        ds.update(pol)
        IPAM(ds).claim_affinity(ipaddress.ip_network("10.244.200.0/26"), "n2")
        block = ipaddress.ip_network("10.244.200.0/26")
        wait_for(lambda: block in r4.last().routes, 5.0, 0.01)
        wait_for(
            lambda: any("8080" in repr(ops) for _f, _t, ops in nft.transactions[n_nft:]), 5.0, 0.01
        )
        assert len(r4.applied) > n_routes and r4.applied[-1][1] is False  # incremental
        # Both drivers were driven by the one owner thread, and only by it.
        assert set(nft.threads) == set(r4.threads) == {"felix-n1"}
        assert set(r6.threads) <= {"felix-n1"} and r6.applied
        # One MTU file: IPv4 carries the smaller pod MTU over both families.
        assert r4.last().pod_mtu == 1450
    finally:
        felix.stop()
    assert r4.closed and r6.closed


def test_a_route_event_rereads_the_routes_only(ds: MemoryDatastore) -> None:
    """A deleted or added route of ours (``ip monitor``'s ``[ROUTE]`` line) asks the route
    drivers to re-read their routes, in an incremental apply: host facts, devices, VTEPs,
    sysctls and NAT are not re-read (the full apply's work); a link event still is full; a
    VTEP neighbour or FDB event re-reads the VXLAN part only."""
    ensure_tunnel_addresses(ds, "n1")
    r4 = FakeRoutes()
    felix = Felix("n1", ds, ThreadNft(), routes=r4, syncer_poll_interval=0.05, watch=False)
    felix.start()
    try:
        assert felix.wait_in_sync(5), felix.error
        applied, facts = len(r4.applied), len(r4.facts_calls)
        felix.kernel_event(route_topic("[ROUTE]Deleted 10.244.1.2 dev calib proto 80 scope link"))
        wait_for(lambda: r4.resyncs == ["routes"] and len(r4.applied) > applied, 5.0, 0.01)
        assert r4.applied[-1][1] is False and len(r4.facts_calls) == facts
        felix.kernel_event(route_topic("[LINK]Deleted 7: vxlan.calico: <BROADCAST> mtu 1450"))
        wait_for(lambda: r4.applied[-1][1] is True, 5.0, 0.01)
        assert r4.resyncs == ["routes"] and len(r4.facts_calls) > facts
        n = len(r4.applied)
        felix.kernel_event(route_topic("[NEIGH]Deleted 10.96.201.0 dev vxlan.calico lladdr "
                                       "66:cb:0d:0c:00:02 PERMANENT"))  # fmt: skip
        wait_for(lambda: r4.resyncs == ["routes", "vxlan"] and len(r4.applied) > n, 5.0, 0.01)
        assert r4.applied[-1][1] is False
    finally:
        felix.stop()


def test_route_failure_backs_off_without_blocking_nft(ds: MemoryDatastore) -> None:
    from pycalico.felix.routeloop import MAX_BACKOFF_S, MIN_BACKOFF_S

    ensure_tunnel_addresses(ds, "n1")
    ds.create(namespace("ns1"))
    ds.create(_wep("b", "10.244.1.2", {"app": "b"}))
    clock = FakeClock()
    nft, r4 = ThreadNft(), FakeRoutes(clock=clock)
    r4.fail = 10**6
    felix = Felix("n1", ds, nft, routes=r4, syncer_poll_interval=0.05, clock=clock)
    assert felix.routes is not None
    loop = felix.routes
    felix.start()
    try:
        # nft is programmed while the route apply fails; virtual time stands still: no retry.
        wait_for(lambda: bool(nft.transactions) and len(r4.applied) >= 1, 5.0, 0.01)
        assert felix.barrier()
        assert len(r4.applied) == 1 and len(nft.transactions) >= 1
        assert not felix.wait_in_sync(0)
        assert felix.stats()["routes"]["last_errors"] == ["routes: injected"]
        # Retries back off, doubling from 0.1 s up to 5 s: never before the deadline.
        backoffs = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
        assert (backoffs[0], backoffs[-1]) == (MIN_BACKOFF_S, MAX_BACKOFF_S)
        for i, b in enumerate(backoffs):
            assert loop.retry_at == pytest.approx(r4.times[-1] + b)
            clock.advance(b - 0.01)
            assert felix.barrier()
            assert len(r4.applied) == i + 1  # not yet
            clock.advance(0.02)
            assert felix.barrier()
            assert len(r4.applied) == i + 2  # retried
        assert all(full for _w, full in r4.applied)  # every retry is a full apply
        assert r4.times[4] - r4.times[2] >= 0.3  # back-off: 0.4 s + 0.8 s between these
        assert not felix.wait_in_sync(0)
        r4.fail = 0
        clock.advance(MAX_BACKOFF_S)
        assert felix.barrier()
        assert felix.wait_in_sync(0)
        assert felix.stats()["routes"]["last_errors"] == []
        assert loop.retry_at is None
        assert set(nft.threads) == set(r4.threads) == {"felix-n1"}
    finally:
        felix.stop()


def test_without_route_drivers_felix_is_policy_only(ds: MemoryDatastore) -> None:
    felix = Felix("n1", ds, FakeNftRunner(), syncer_poll_interval=0.05).start()
    try:
        assert felix.wait_in_sync(5)
        assert felix.routes is None and "routes" not in felix.stats()
    finally:
        felix.stop()


def test_hub_is_used_instead_of_an_own_syncer(ds: MemoryDatastore) -> None:
    from pycalico.datastore.syncer import Syncer

    calls: list[tuple[tuple[str, ...], str]] = []

    class Hub:
        def syncer_for(self, kinds: Sequence[str], callbacks: Any, name: str) -> Any:
            calls.append((tuple(kinds), name))
            return Syncer.for_kinds(ds, kinds, callbacks, poll_interval=0.05)

    felix = Felix("n1", ds, FakeNftRunner(), hub=Hub()).start()
    try:
        assert felix.wait_in_sync(5)
        assert calls == [(FELIX_KINDS, "felix-n1")]
    finally:
        felix.stop()


def test_no_route_programmed_before_in_sync(ds: MemoryDatastore) -> None:
    from pycalico.datastore import EventType, key_for
    from pycalico.datastore.syncer import SyncStatus, SyncUpdate

    ensure_tunnel_addresses(ds, "n1")
    r4 = FakeRoutes()
    felix = Felix("n1", ds, FakeNftRunner(), routes=r4)  # threads not started: drive the loop
    items = [*ds.list("IPPool").items, *ds.list("Node").items, *ds.list("IPAMBlock").items]
    updates = [
        SyncUpdate(EventType.CREATED, key_for(r["kind"], r["metadata"]["name"]), r, i + 1)
        for i, r in enumerate(items)
    ]
    felix._process([SyncStatus.RESYNC, updates])
    felix._maybe_apply_routes()
    assert r4.applied == [] and r4.facts_calls == []
    felix._process([SyncStatus.IN_SYNC])
    felix._maybe_apply()
    assert not felix.wait_in_sync(0)  # nft is programmed, routes not yet
    felix._maybe_apply_routes()
    felix._check_in_sync()
    assert [full for _w, full in r4.applied] == [True] and felix.wait_in_sync(0)
    assert r4.last().vxlan is not None  # this node's VTEP from its Node resource


def test_barrier_waits_for_a_whole_iteration_and_fails_once_stopped(ds: MemoryDatastore) -> None:
    felix = Felix("n1", ds, FakeNftRunner(), syncer_poll_interval=0.05, clock=FakeClock())
    assert not felix.barrier(0.05)  # the loop is not running
    felix.start()
    try:
        assert felix.wait_in_sync(5)
        before = felix.stats()["iterations"]
        assert felix.barrier()
        assert felix.stats()["iterations"] >= before + 1
    finally:
        felix.stop()
    assert not felix.barrier(0.05)
