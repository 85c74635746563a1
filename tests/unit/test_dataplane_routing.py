"""RouteDataplane (the route/VXLAN/IPIP/sysctl/NAT/MTU drivers behind one facade) on the
stateful FakeKernel: minimal deltas, no reads or writes when idle, drift repair on full
applies, ownership (only proto 80 routes and our device's entries are ever deleted; foreign
routes and links untouched), failures reported and followed by a full apply, the IPv6
instance, NAT table rendering, MTU detection and the MTU file. Ported from
test_routes_kernel.py (KernelRoutes) with the same assertions about the kernel's contents."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.felix.calc.routes import host_mtu
from pycalico.felix.calc.routetypes import DesiredState, IpipSpec, Route, Vtep, VxlanSpec
from pycalico.felix.dataplane.mtu import write_mtu_file
from pycalico.felix.dataplane.natout import render
from pycalico.felix.dataplane.routes import RouteDriver, from_kernel
from pycalico.felix.dataplane.routing import RouteDataplane
from pycalico.system.fakekernel import FakeKernel
from pycalico.system.kernel import FdbEntry, KernelRoute, Link, Neighbour, VxlanAttrs
from pycalico.system.process import Completed, FakeProcessRunner
from pycalico.system.sysctl import FakeSysctl

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address

VX = VxlanSpec(4096, 4789, A("198.18.0.1"), "eth0", "66:00:00:00:00:01", A("10.244.1.0"), 1450)
VTEP2 = Vtep("n2", A("10.244.2.0"), "66:00:00:00:00:02", A("198.18.0.2"))
R2 = Route(N("10.244.2.0/26"), "unicast", A("10.244.2.0"), "vxlan.calico", True)
BH = Route(N("10.244.1.0/26"), kind="blackhole")


class Nft:
    """Just enough of ``nft`` for NatOutgoing: one table, list and -f."""

    def __init__(self) -> None:
        self.table: str | None = None
        self.runner = FakeProcessRunner(handlers=[self])

    def __call__(self, argv: tuple[str, ...], stdin: str | None) -> Completed:
        if argv[:2] == ("nft", "list"):
            if self.table:
                return Completed(argv, 0, self.table)
            return Completed(argv, 1, "", "No such file or directory")
        assert argv[:2] == ("nft", "-f"), argv
        self.table = stdin if "chain" in (stdin or "") else None
        return Completed(argv, 0)


class FakeTunnel:
    instances: ClassVar[list[FakeTunnel]] = []

    def __init__(self, name: str, local_ip: str) -> None:
        self.name, self.local_ip = name, local_ip
        self.running = False
        self.removed = False
        self.hops: list[Any] = []
        FakeTunnel.instances.append(self)

    def start(self) -> None:
        self.running = True

    def stop(self, remove: bool = False) -> None:
        self.running = False
        self.removed = remove

    def set_next_hops(self, hops: Any) -> None:
        self.hops = list(hops)


def host(v6: bool = False) -> FakeKernel:
    k = FakeKernel()
    addrs = ["198.18.0.1/24"] + (["fd00:18::1/64"] if v6 else [])
    k.add_link(Link("eth0", "veth", 1500, "02:00:00:00:00:01", True), *addrs)
    return k


def dataplane(
    k: FakeKernel, tmp: Path | None = None, version: int = 4
) -> tuple[RouteDataplane, Nft]:
    nft = Nft()
    dp = RouteDataplane(
        k,
        FakeSysctl(),
        mtu_file=str(tmp / "mtu") if tmp else None,
        ipip_factory=FakeTunnel,  # type: ignore[arg-type]
        version=version,
        runner=nft.runner,
    )
    return dp, nft


def routes80(k: FakeKernel) -> dict[str, Route]:
    return {str(d): from_kernel(r) for d, r in k.routes.items() if r.proto == 80}


def neighs(k: FakeKernel, dev: str = "vxlan.calico") -> set[tuple[str, str | None]]:
    return {(str(n.ip), n.lladdr) for (d, _), n in k.neighs.items() if d == dev}


def fdb(k: FakeKernel, dev: str = "vxlan.calico") -> set[tuple[str, str]]:
    return {(e.mac, str(e.dst)) for (d, _), e in k.fdb.items() if d == dev}


def test_first_apply_creates_device_vteps_routes_then_nothing(tmp_path: Path) -> None:
    k = host()
    dp, nft = dataplane(k, tmp_path)
    want = DesiredState(routes={R2.dst: R2, BH.dst: BH}, vteps=(VTEP2,), vxlan=VX, pod_mtu=1450)
    assert dp.apply(want, full=True) == []
    link = k.links["vxlan.calico"]
    assert link.mtu == 1450 and link.mac == "66:00:00:00:00:01" and link.up
    assert link.vxlan == VxlanAttrs(4096, 4789, A("198.18.0.1"), "eth0", False)
    assert [str(a.ip) for a in k.addrs["vxlan.calico"] if not a.scope_link] == ["10.244.1.0/32"]
    assert neighs(k) == {("10.244.2.0", "66:00:00:00:00:02")}
    assert all(n.permanent for n in k.neighs.values())
    assert fdb(k) == {("66:00:00:00:00:02", "198.18.0.2")}
    assert set(routes80(k).values()) == {R2, BH}
    assert (tmp_path / "mtu").read_text() == "1450\n"
    assert dp.sysctl.read("net.ipv4.ip_forward") == "1"
    assert dp.sysctl.read("net.ipv4.conf.all.forwarding") == "1"
    batches, reads, calls, writes = len(k.batches), len(k.reads), len(nft.runner.calls), dp.writes
    assert dp.apply(want, full=False) == []
    assert len(k.batches) == batches  # incremental, nothing changed: no writes ...
    assert len(k.reads) == reads and len(nft.runner.calls) == calls  # ... and no reads
    assert dp.apply(want, full=True) == []
    assert len(k.batches) == batches and dp.writes == writes  # full re-read, no writes
    assert len(k.reads) > reads


def test_full_apply_repairs_drift_and_sweeps_only_ours() -> None:
    k = host()
    dp, _ = dataplane(k)
    want = DesiredState(routes={R2.dst: R2, BH.dst: BH}, vteps=(VTEP2,), vxlan=VX)
    dp.apply(want, full=True)
    foreign = k.add_link(Link("vxlan.other", "vxlan", 1400, "02:00:00:00:00:99", True))
    del k.routes[R2.dst]
    k.fdb.clear()
    stray = A("10.244.9.0")
    k.replace_neigh(Neighbour("vxlan.calico", stray, "66:00:00:00:00:09", True))
    k.routes[N("10.9.0.0/16")] = KernelRoute(N("10.9.0.0/16"), gateway=A("1.2.3.4"), proto=80)
    k.routes[N("10.8.0.0/16")] = KernelRoute(N("10.8.0.0/16"), gateway=A("1.2.3.4"), proto=12)
    k.batches.clear()
    assert dp.apply(want, full=False) == []  # incremental trusts its view
    assert R2.dst not in k.routes and k.batches == []
    assert dp.apply(want, full=True) == []
    assert from_kernel(k.routes[R2.dst]) == R2
    assert N("10.9.0.0/16") not in k.routes  # proto 80: ours, unwanted -> swept
    assert k.routes[N("10.8.0.0/16")].proto == 12  # BIRD's: untouched
    assert fdb(k) == {("66:00:00:00:00:02", "198.18.0.2")}
    assert neighs(k) == {("10.244.2.0", "66:00:00:00:00:02")}
    assert k.links["vxlan.other"] == foreign  # a foreign link: untouched
    assert not [op for op in k.ops if getattr(op.target, "name", "") == "vxlan.other"]


def test_removal_and_minimal_delta() -> None:
    k = host()
    dp, _ = dataplane(k)
    dp.apply(DesiredState(routes={R2.dst: R2, BH.dst: BH}, vteps=(VTEP2,), vxlan=VX), full=True)
    k.batches.clear()
    dp.apply(DesiredState(routes={BH.dst: BH}, vxlan=VX), full=False)
    assert [[(op.name, op.target) for op in b] for b in k.batches] == [
        [
            ("del_neigh", Neighbour("vxlan.calico", A("10.244.2.0"))),
            ("del_fdb", FdbEntry("vxlan.calico", "66:00:00:00:00:02", A("198.18.0.2"))),
        ],
        [("del_route", KernelRoute(R2.dst, proto=80))],
    ]
    assert set(routes80(k).values()) == {BH} and neighs(k) == set() and fdb(k) == set()
    dp.apply(DesiredState(), full=False)  # no pools at all: device and blackhole go
    assert "vxlan.calico" not in k.links and k.routes == {}


def test_vxlan_device_with_wrong_vni_is_recreated_with_its_routes_and_vteps() -> None:
    k = host()
    dp, _ = dataplane(k)
    want = DesiredState(routes={R2.dst: R2}, vteps=(VTEP2,), vxlan=VX)
    dp.apply(want, full=True)
    link = k.links["vxlan.calico"]
    assert link.vxlan is not None
    k.links["vxlan.calico"] = Link(link.name, "vxlan", link.mtu, link.mac, link.up,
                                   VxlanAttrs(1, 4789, A("198.18.0.1"), "eth0"))  # fmt: skip
    k.batches.clear()
    assert dp.apply(want, full=True) == []
    assert k.batches[0][0].name == "del_link" and k.batches[0][1].name == "add_vxlan"
    assert k.links["vxlan.calico"].vxlan == VxlanAttrs(4096, 4789, A("198.18.0.1"), "eth0")
    # The old device took its route and entries with it; the same apply restored them.
    assert set(routes80(k).values()) == {R2}
    assert fdb(k) == {("66:00:00:00:00:02", "198.18.0.2")}
    assert neighs(k) == {("10.244.2.0", "66:00:00:00:00:02")}


def test_failed_write_is_reported_and_next_apply_is_full() -> None:
    k = host()
    k.fail_writes(lambda op: isinstance(op.target, KernelRoute) and op.target.dst == R2.dst)
    dp, _ = dataplane(k)
    want = DesiredState(routes={R2.dst: R2, BH.dst: BH}, vxlan=VX)
    errs = dp.apply(want, full=True)
    assert errs and "routes" in errs[0] and "10.244.2.0/26" in errs[0]
    assert BH.dst in k.routes  # -force: the other ops still applied
    reads = len(k.reads)
    assert dp.apply(want, full=False) == []
    assert "list_routes" in k.reads[reads:]  # the apply after a failure re-read the kernel
    assert from_kernel(k.routes[R2.dst]) == R2


def test_failed_read_is_reported_and_next_apply_is_full() -> None:
    k = host()
    dp, _ = dataplane(k)
    want = DesiredState(routes={BH.dst: BH}, vteps=(VTEP2,), vxlan=VX)
    k.fail_reads(1, "get_link")
    errs = dp.apply(want, full=True)
    assert errs[0].startswith("vxlan device: get_link: injected")  # (then vteps: no device)
    assert dp.apply(want, full=False) == []
    assert fdb(k) == {("66:00:00:00:00:02", "198.18.0.2")} and BH.dst in k.routes


def test_idle_incremental_apply_touches_nothing_without_devices() -> None:
    k = host()
    dp, nft = dataplane(k)
    want = DesiredState(routes={BH.dst: BH})
    dp.apply(want, full=True)
    reads, batches, calls = len(k.reads), len(k.batches), len(nft.runner.calls)
    for _ in range(3):
        assert dp.apply(want, full=False) == []
    assert (len(k.reads), len(k.batches), len(nft.runner.calls)) == (reads, batches, calls)


def test_ipip_tunnel_lifecycle() -> None:
    FakeTunnel.instances.clear()
    k = host()
    k.add_link(Link("tunl0", "tun", 1500, None, False))
    dp, _ = dataplane(k)
    r = Route(N("10.244.2.0/26"), "unicast", A("198.18.0.2"), "tunl0", True)
    want = DesiredState(routes={r.dst: r}, ipip=IpipSpec(A("198.18.0.1"), A("10.244.1.1"), 1480),
                        ipip_next_hops=((r.dst, A("198.18.0.2")),))  # fmt: skip
    assert dp.apply(want, full=True) == []
    (t,) = FakeTunnel.instances
    assert dp.ipip is t  # type: ignore[comparison-overlap]
    assert t.running and t.hops == [(r.dst, A("198.18.0.2"))] and t.local_ip == "198.18.0.1"
    assert k.links["tunl0"].mtu == 1480 and k.links["tunl0"].up
    assert [str(a.ip) for a in k.addrs["tunl0"]] == ["10.244.1.1/32"]
    assert neighs(k, "tunl0") == {("0.0.0.0", None)}
    assert k.neighs[("tunl0", A("0.0.0.0"))].permanent
    assert from_kernel(k.routes[r.dst]) == r
    dp.apply(DesiredState(), full=False)
    assert not t.running and t.removed and dp.ipip is None
    # A TUN tunl0 left by an earlier run is removed when IPIP is not wanted; a non-TUN one
    # (not ours) is left alone.
    k.links["tunl0"] = Link("tunl0", "tun")
    dp.apply(DesiredState(), full=True)
    assert "tunl0" not in k.links
    k.links["tunl0"] = Link("tunl0", "ipip")
    dp.apply(DesiredState(), full=True)
    assert "tunl0" in k.links


def test_workload_routes_wait_for_their_interface() -> None:
    k = host()
    dp, _ = dataplane(k)
    local = Route(N("10.244.1.5/32"), dev="cali12345678901", scope_link=True)
    want = DesiredState(routes={local.dst: local, BH.dst: BH})
    assert dp.apply(want, full=True) == []
    assert local.dst not in k.routes and BH.dst in k.routes
    k.add_link(Link("cali12345678901", "veth", 1500, "ee:ee:ee:ee:ee:ee", True))
    assert dp.apply(want, full=True) == []
    assert from_kernel(k.routes[local.dst]) == local
    del k.routes[local.dst]  # gone with its interface: deleting it is not an error
    assert dp.apply(DesiredState(routes={BH.dst: BH}), full=False) == []


def test_route_delta_is_minimal() -> None:
    other = Route(N("10.244.3.0/26"), "unicast", A("10.244.3.0"), "vxlan.calico", True)
    drv = RouteDriver(FakeKernel())
    drv.tracker.replace_all_dataplane({R2.dst: R2, BH.dst: BH})
    drv.set_desired({R2.dst: R2, other.dst: other})
    assert dict(drv.tracker.pending_updates) == {other.dst: other}
    assert drv.tracker.pending_deletes == {BH.dst}


def test_host_mtu_pattern_and_fallback(tmp_path: Path) -> None:
    links = [
        Link("eth0", "veth", 9000, up=True),
        Link("ens3", None, 1400, up=True),
        Link("eth1", None, 1200, up=False),  # down: ignored
        Link("cali123", "veth", 1000, up=True),  # not matching
    ]
    pat = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
    assert host_mtu(links, pat) == 1400
    assert host_mtu(links[3:], pat) == 1460
    p = str(tmp_path / "sub" / "mtu")
    assert write_mtu_file(1450, p) and not write_mtu_file(1450, p)
    assert Path(p).read_text() == "1450\n"
    assert [x.name for x in (tmp_path / "sub").iterdir()] == ["mtu"]  # no temp file left


def test_facts_underlay_interface_and_host_mtu() -> None:
    k = host()
    k.add_link(Link("ens4", None, 1400, up=True), "198.18.1.1/24")
    dp, _ = dataplane(k)
    f = dp.facts(A("198.18.1.1"), r"^(eth|ens).*")
    assert f.underlay_iface == "ens4" and f.host_mtu == 1400
    assert dp.facts(None, r"^none$").underlay_iface is None


def test_nat_table_render_and_reconcile() -> None:
    text = render([N("10.244.0.0/16")], [N("10.244.0.0/16"), N("10.96.0.0/16")])
    assert "table ip calico-nat" in text
    assert "elements = { 10.244.0.0/16 }" in text
    assert "elements = { 10.96.0.0/16, 10.244.0.0/16 }" in text
    assert "ip saddr @masq-ipam-pools ip daddr != @network-ip-pools" in text
    t2 = render([N("10.244.0.0/16")], [N("10.244.0.0/16")],
                exclude_hosts=[N("198.18.0.1/32")], snat_to="198.18.0.99")  # fmt: skip
    assert "set all-hosts-net" in t2 and "elements = { 198.18.0.1/32 }" in t2
    assert "ip daddr != @all-hosts-net" in t2 and t2.rstrip().endswith("}")
    assert "snat to 198.18.0.99" in t2 and "masquerade" not in t2
    k = host()
    dp, nft = dataplane(k)
    dp.apply(DesiredState(masq_pools=(N("10.244.0.0/16"),), all_pools=(N("10.244.0.0/16"),)),
             full=True)  # fmt: skip
    assert nft.table and "masquerade" in nft.table
    dp.apply(DesiredState(), full=False)
    assert nft.table is None


# ------------------------------------------------------------------ sequences of states

_ROUTES = [
    R2,
    BH,
    Route(N("10.244.3.0/26"), "unicast", A("10.244.3.0"), "vxlan.calico", True),
    Route(N("10.244.3.0/26"), "unicast", A("198.18.0.3"), "eth0", True),  # same dst, other hop
    Route(N("10.244.2.7/32"), "unicast", A("10.244.3.0"), "vxlan.calico", True),
]
_VTEPS = [VTEP2, Vtep("n3", A("10.244.3.0"), "66:00:00:00:00:03", A("198.18.0.3"))]

_state = st.builds(
    lambda rs, vs, vx: DesiredState(
        # a route through vxlan.calico needs the device (the calc never emits one without it)
        routes={r.dst: r for r in rs if vx or r.dev != "vxlan.calico"},
        vteps=tuple(sorted(set(vs))) if vx else (),
        vxlan=VX if vx else None,
    ),
    st.lists(st.sampled_from(_ROUTES), max_size=5),
    st.lists(st.sampled_from(_VTEPS), max_size=2),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_state, st.booleans(), st.booleans()), min_size=1, max_size=6))
def test_any_sequence_of_states_converges(steps: list[tuple[DesiredState, bool, bool]]) -> None:
    """Whatever the order of desired states, incremental applies keep the kernel equal to
    the desired state; drift (a deleted route and FDB entry) is repaired by the next full."""
    k = host()
    k.routes[N("10.8.0.0/16")] = KernelRoute(N("10.8.0.0/16"), gateway=A("1.2.3.4"), proto=12)
    dp, _ = dataplane(k)
    for want, drift, full in steps:
        if drift:
            for dst in [d for d, r in k.routes.items() if r.proto == 80][:1]:
                del k.routes[dst]
            for key in list(k.fdb)[:1]:
                del k.fdb[key]
        assert dp.apply(want, full=full) == []
        if drift and not full:
            assert dp.apply(want, full=True) == []
        want_neigh = {(str(v.tunnel_ip), v.mac) for v in want.vteps}
        want_fdb = {(v.mac, str(v.node_ip)) for v in want.vteps}
        assert set(routes80(k).values()) == set(want.routes.values())
        assert (neighs(k), fdb(k)) == (want_neigh, want_fdb)
        assert ("vxlan.calico" in k.links) == (want.vxlan is not None)
        assert k.routes[N("10.8.0.0/16")].proto == 12  # never ours


def test_ipv6_instance_uses_its_device_family_and_table() -> None:
    k = host(v6=True)
    dp, nft = dataplane(k, version=6)
    I6, A6 = ipaddress.IPv6Network, ipaddress.IPv6Address
    vx = VxlanSpec(4096, 4789, A6("fd00:18::1"), "eth0", "66:00:00:00:01:01",
                   A6("fd00:244:0:1::"), 1430, device="vxlan-v6.calico")  # fmt: skip
    r = Route(I6("fd00:244:0:2::/122"), "unicast", A6("fd00:244:0:2::"), "vxlan-v6.calico", True)
    v = Vtep("n2", A6("fd00:244:0:2::"), "66:00:00:00:01:02", A6("fd00:18::2"))
    pools = (I6("fd00:244::/48"),)
    want = DesiredState(
        routes={r.dst: r}, vteps=(v,), vxlan=vx, version=6, masq_pools=pools, all_pools=pools
    )
    assert dp.apply(want, full=True) == []
    assert "vxlan-v6.calico" in k.links and "vxlan.calico" not in k.links
    assert k.links["vxlan-v6.calico"].mtu == 1430
    glob = [str(a.ip) for a in k.addrs["vxlan-v6.calico"] if not a.scope_link]
    assert glob == ["fd00:244:0:1::/128"]
    assert from_kernel(k.routes[r.dst]) == r
    assert fdb(k, "vxlan-v6.calico") == {("66:00:00:00:01:02", "fd00:18::2")}
    assert neighs(k, "vxlan-v6.calico") == {("fd00:244:0:2::", "66:00:00:00:01:02")}
    assert dp.sysctl.read("net.ipv6.conf.all.forwarding") == "1"
    assert dp.ipip is None and dp.tunnel is None
    assert ("nft", "list", "table", "ip6", "calico-nat") in [c[0] for c in nft.runner.calls]
    assert nft.table and "table ip6 calico-nat" in nft.table
    assert "ip6 saddr @masq-ipam-pools" in nft.table and "type ipv6_addr" in nft.table
    # The IPv4 instance of the same kernel leaves IPv6 routes alone, and vice versa.
    dp4, _ = dataplane(k)
    assert dp4.apply(DesiredState(routes={BH.dst: BH}), full=True) == []
    assert r.dst in k.routes and BH.dst in k.routes
    assert dp.apply(want, full=True) == [] and BH.dst in k.routes


def test_full_apply_restores_the_sysctls_of_workload_interfaces() -> None:
    """As Calico's Felix configures each workload interface it routes to: proxy ARP (the
    pod's 169.254.1.1 gateway), no proxy delay, forwarding, route_localnet; turned off by
    hand, they come back at the next full apply (what ``ip monitor netconf`` triggers). An
    interface whose sysctls are gone (pod being deleted) is skipped, not an error."""
    k = host()
    dp, _ = dataplane(k)
    sc = dp.sysctl
    assert isinstance(sc, FakeSysctl)
    here = {f"net.ipv4.conf.calia.{k}": v for k, v in
            {"proxy_arp": "0", "forwarding": "0", "route_localnet": "1"}.items()}  # fmt: skip
    sc.values.update(here | {"net.ipv4.neigh.calia.proxy_delay": "80"})
    local = Route(N("10.244.1.5/32"), dev="calia", scope_link=True)
    gone = Route(N("10.244.1.6/32"), dev="calib", scope_link=True)
    k.add_link(Link("calia", "veth", 1500, "ee:ee:ee:ee:ee:ee", True))
    k.add_link(Link("calib", "veth", 1500, "ee:ee:ee:ee:ee:ee", True))
    want = DesiredState(routes={local.dst: local, gone.dst: gone})
    assert dp.apply(want, full=True) == []
    assert sc.read("net.ipv4.conf.calia.proxy_arp") == "1"
    assert sc.read("net.ipv4.conf.calia.forwarding") == "1"
    assert sc.read("net.ipv4.neigh.calia.proxy_delay") == "0"
    assert not any("calib" in key for key in sc.values)
    writes = dp.sysctls.writes
    assert dp.apply(want, full=True) == [] and dp.sysctls.writes == writes  # settled
    sc.values["net.ipv4.conf.calia.proxy_arp"] = "0"
    assert dp.apply(want, full=False) == [] and sc.read("net.ipv4.conf.calia.proxy_arp") == "0"
    assert dp.apply(want, full=True) == [] and sc.read("net.ipv4.conf.calia.proxy_arp") == "1"


def test_nat_table_changed_between_our_write_and_its_read_is_rewritten() -> None:
    """Felix re-reads calico-nat right after writing it, to compare later checks with. If
    someone flushed the chain in between, that read must not become "our state" (every
    later check would then find no drift): the next reconcile rewrites the table."""
    from pycalico.felix.dataplane.natout import NatOutgoing

    kernel = {"listing": ""}
    writes: list[str] = []

    def nft(argv: tuple[str, ...], stdin: str | None) -> Completed | None:
        if argv[:2] == ("nft", "-f"):
            writes.append(stdin or "")
            return Completed(argv, 0, "", "")
        return Completed(argv, 0, kernel["listing"], "")

    nat = NatOutgoing(FakeProcessRunner(handlers=[nft]))
    pools = (N("10.244.0.0/16"),)
    kernel["listing"] = "table ip calico-nat { chain nat-POSTROUTING { } }"  # flushed at once
    assert nat.reconcile(pools, pools) and len(writes) == 1
    assert nat.reconcile(pools, pools, check=True) and len(writes) == 2  # rewritten
    kernel["listing"] = "table ip calico-nat { chain nat-POSTROUTING { masquerade } }"
    assert nat.reconcile(pools, pools) and len(writes) == 3
    assert not nat.reconcile(pools, pools, check=True) and len(writes) == 3  # settled
