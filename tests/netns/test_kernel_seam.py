"""The typed kernel seam on a real kernel: IpRouteKernel passes the same contract as the
FakeKernel (links incl. a VXLAN device on a veth, addresses, proto-80 routes, permanent
neighbours, FDB, partial batch failures), and RouteDataplane converges two nodes' DesiredStates
in their own namespaces (VXLAN traffic flows between them), repairs a hand-deleted route and
a hand-deleted VTEP FDB entry on a full apply, and never touches foreign routes."""

from __future__ import annotations

import ipaddress
import os

import pytest

from pycalico.felix.calc.routetypes import DesiredState, Route, Vtep, VxlanSpec
from pycalico.felix.dataplane.routing import RouteDataplane
from pycalico.system.kernel import IpRouteKernel
from pycalico.system.process import SubprocessRunner
from pycalico.system.sysctl import FakeSysctl
from tests.fixtures.netns import Netns, NetnsFactory, run
from tests.unit.test_fakekernel import kernel_contract

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


def _pair(f: NetnsFactory) -> tuple[Netns, Netns]:
    a, b = f.netns("ks1"), f.netns("ks2")
    f.veth(a, "eth0", b, "eth0", a_addr="198.18.0.1/24", b_addr="198.18.0.2/24")
    return a, b


def test_ip_route_kernel_passes_the_fake_kernel_contract(netns_factory: NetnsFactory) -> None:
    a, _ = _pair(netns_factory)
    kernel_contract(IpRouteKernel(SubprocessRunner(), netns=a.name), "eth0", "198.18.0.1")


def _state(me: int, other: int) -> DesiredState:
    vx = VxlanSpec(4096, 4789, A(f"198.18.0.{me}"), "eth0", f"66:00:00:00:00:0{me}",
                   A(f"10.244.{me}.0"), 1450)  # fmt: skip
    vtep = Vtep(f"n{other}", A(f"10.244.{other}.0"), f"66:00:00:00:00:0{other}",
                A(f"198.18.0.{other}"))  # fmt: skip
    remote = Route(N(f"10.244.{other}.0/26"), "unicast", A(f"10.244.{other}.0"), "vxlan.calico",
                   True)  # fmt: skip
    bh = Route(N(f"10.244.{me}.0/26"), kind="blackhole")
    return DesiredState(routes={remote.dst: remote, bh.dst: bh}, vteps=(vtep,), vxlan=vx)


def test_route_dataplane_converges_and_repairs_drift(netns_factory: NetnsFactory) -> None:
    a, b = _pair(netns_factory)
    ka = IpRouteKernel(SubprocessRunner(), netns=a.name)
    kb = IpRouteKernel(SubprocessRunner(), netns=b.name)
    a.ip("route", "add", "10.250.0.0/16", "via", "198.18.0.2", "proto", "12")  # BIRD's
    dpa = RouteDataplane(ka, FakeSysctl(), nat=False)
    dpb = RouteDataplane(kb, FakeSysctl(), nat=False)
    want_a, want_b = _state(1, 2), _state(2, 1)
    assert dpa.facts(A("198.18.0.1"), r"^eth").underlay_iface == "eth0"
    assert dpa.apply(want_a, full=True) == []
    assert dpb.apply(want_b, full=True) == []

    vx = a.ip_json("-d", "link", "show", "dev", "vxlan.calico")[0]
    assert vx["mtu"] == 1450 and vx["address"] == "66:00:00:00:00:01"
    assert vx["linkinfo"]["info_data"]["id"] == 4096 and "UP" in vx["flags"]
    assert "10.244.1.0/32" in a.addresses("vxlan.calico")
    ours = {r["dst"]: r for r in a.routes("proto", "80")}
    assert set(ours) == {"10.244.1.0/26", "10.244.2.0/26"}
    assert ours["10.244.2.0/26"]["dev"] == "vxlan.calico" and ours["10.244.1.0/26"]["type"] == (
        "blackhole"
    )
    neigh = a.ip_json("neigh", "show", "dev", "vxlan.calico")
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [
        ("10.244.2.0", "66:00:00:00:00:02", ["PERMANENT"])
    ]
    fdb = run(["bridge", "-n", a.name, "-j", "fdb", "show", "dev", "vxlan.calico"]).stdout
    assert '"mac":"66:00:00:00:00:02","dst":"198.18.0.2"' in fdb
    assert a.ping("10.244.2.0")  # VXLAN between the two nodes, from their tunnel addresses

    # Incremental and idle: no process at all.
    spawned = ka.processes
    assert dpa.apply(want_a, full=False) == [] and ka.processes == spawned
    # A full apply with nothing to repair reads but writes nothing.
    writes = dpa.writes
    assert dpa.apply(want_a, full=True) == [] and dpa.writes == writes

    # Drift by hand: a route and the VTEP's FDB entry deleted.
    a.ip("route", "del", "10.244.2.0/26")
    run(["bridge", "-n", a.name, "fdb", "del", "66:00:00:00:00:02", "dev", "vxlan.calico",
         "dst", "198.18.0.2", "self"])  # fmt: skip
    assert not a.ping("10.244.2.0", attempts=1, timeout_s=1)
    assert dpa.apply(want_a, full=False) == []  # trusts its view: nothing re-read
    assert "10.244.2.0/26" not in {r["dst"] for r in a.routes("proto", "80")}
    assert dpa.apply(want_a, full=True) == []
    assert "10.244.2.0/26" in {r["dst"] for r in a.routes("proto", "80")}
    fdb = run(["bridge", "-n", a.name, "-j", "fdb", "show", "dev", "vxlan.calico"]).stdout
    assert '"mac":"66:00:00:00:00:02","dst":"198.18.0.2"' in fdb
    assert a.ping("10.244.2.0")
    assert [r["dst"] for r in a.routes("proto", "12")] == ["10.250.0.0/16"]  # untouched

    # Everything removed: device, entries and our routes go; BIRD's route stays.
    assert dpa.apply(DesiredState(), full=False) == []
    assert "vxlan.calico" not in a.links() and a.routes("proto", "80") == []
    assert [r["dst"] for r in a.routes("proto", "12")] == ["10.250.0.0/16"]
