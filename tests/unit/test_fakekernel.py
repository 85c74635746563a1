"""FakeKernel behaves like the Linux kernel for the operations pycalico uses: the scenario
:func:`kernel_contract` runs here on the fake and in tests/netns/test_kernel_seam.py on
IpRouteKernel in a real namespace. Plus the fake's own failure injection and logs, and the
iproute2 rendering/parsing of IpRouteKernel (pure parts)."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.system.clock import FakeClock, RealClock
from pycalico.system.fakekernel import FakeKernel
from pycalico.system.kernel import (
    Address,
    FdbEntry,
    Kernel,
    KernelError,
    KernelRoute,
    Link,
    Neighbour,
    Op,
    VxlanAttrs,
    parse_batch_errors,
    parse_route,
    render,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network
VX = "vxlan.calico"
MAC = "66:00:00:00:00:01"
RMAC = "66:00:00:00:00:02"


def kernel_contract(k: Kernel, parent: str, local: str) -> None:
    """``parent`` exists, is up and holds ``local``/24 (IPv4) and nothing of ours exists."""
    attrs = VxlanAttrs(4096, 4789, ip(local), parent, False)
    assert k.get_link(VX) is None and k.get_link("nosuch0") is None
    assert k.list_addrs("nosuch0") == [] and k.list_neighs("nosuch0", 4) == []
    assert k.list_fdb("nosuch0") == []
    assert any(a.dev == parent and str(a.ip.ip) == local for a in k.list_addrs())

    k.add_vxlan(VX, attrs, mtu=1450, mac=MAC)
    link = k.get_link(VX)
    assert link == Link(VX, "vxlan", 1450, MAC, False, attrs)
    assert link in k.list_links()
    with pytest.raises(KernelError) as ei:
        k.add_vxlan(VX, attrs)
    assert [f.op.name for f in ei.value.failed] == ["add_vxlan"]

    via = KernelRoute(net("10.244.2.0/26"), "unicast", ip("10.244.2.0"), VX, True, False, 80)
    bh = KernelRoute(net("10.244.1.0/26"), "blackhole", proto=80)
    wl = KernelRoute(net("10.244.1.5/32"), dev=parent, scope_link=True, proto=80)
    bird = KernelRoute(net("10.250.0.0/16"), gateway=ip("198.18.0.254"), dev=parent, proto=12)
    v6 = KernelRoute(net("fd00:244::/64"), "blackhole", proto=80)
    addr = Address(VX, ipaddress.ip_interface("10.244.1.0/32"))
    nb = Neighbour(VX, ip("10.244.2.0"), RMAC, True)
    fe = FdbEntry(VX, RMAC, ip("198.18.0.2"))
    with k.batch() as b:
        b.set_link(VX, up=True)
        b.replace_addr(addr)
        b.replace_neigh(nb)
        b.replace_fdb(fe)
        for r in (via, bh, wl, bird, v6):
            b.replace_route(r)
    assert k.get_link(VX) == Link(VX, "vxlan", 1450, MAC, True, attrs)
    assert [a for a in k.list_addrs(VX, 4)] == [addr]
    assert all(a.scope_link for a in k.list_addrs(VX, 6))  # only the kernel's link-local
    assert sorted(k.list_routes(4, 80), key=str) == sorted([via, bh, wl], key=str)
    assert bird in k.list_routes(4) and k.list_routes(6, 80) == [v6]
    assert k.list_neighs(VX, 4) == [nb] and k.list_fdb(VX) == [fe]

    # Partial failure: every op runs, exactly the bad ones are reported.
    good = KernelRoute(net("10.244.3.0/26"), "unicast", ip("10.244.3.0"), VX, True, False, 80)
    with pytest.raises(KernelError) as ei, k.batch() as b:
        bad1 = b.replace_route(KernelRoute(net("10.9.0.0/24"), dev="nosuch0", proto=80))
        b.replace_route(good)
        bad2 = b.del_route(KernelRoute(net("10.9.9.0/24"), proto=80))
        bad3 = b.replace_fdb(FdbEntry("nosuch0", RMAC, ip("198.18.0.9")))
        b.replace_fdb(FdbEntry(VX, "66:00:00:00:00:03", ip("198.18.0.3")))
    assert ei.value.failed_ops == {bad1, bad2, bad3}
    assert good in k.list_routes(4, 80)
    assert len(k.list_fdb(VX)) == 2

    # FDB replace moves the MAC's remote; deletes need the exact entry.
    k.replace_fdb(FdbEntry(VX, RMAC, ip("198.18.0.7")))
    assert FdbEntry(VX, RMAC, ip("198.18.0.7")) in k.list_fdb(VX) and fe not in k.list_fdb(VX)
    k.del_fdb(fe)  # another remote of a known MAC: a no-op
    assert FdbEntry(VX, RMAC, ip("198.18.0.7")) in k.list_fdb(VX)
    k.del_fdb(FdbEntry(VX, RMAC, ip("198.18.0.7")))
    with pytest.raises(KernelError):  # an unknown MAC fails
        k.del_fdb(FdbEntry(VX, RMAC, ip("198.18.0.7")))
    k.del_neigh(nb)
    with pytest.raises(KernelError):
        k.del_neigh(nb)
    assert k.list_neighs(VX, 4) == []
    k.del_route(KernelRoute(bh.dst, "blackhole", proto=80))
    with pytest.raises(KernelError):
        k.del_route(KernelRoute(bh.dst, "blackhole", proto=80))
    with pytest.raises(KernelError):  # the mark must match
        k.del_route(KernelRoute(bird.dst, proto=80))
    k.replace_addr(Address(VX, ipaddress.ip_interface("10.244.9.9/32")))
    k.del_addr(addr)
    assert [str(a.ip) for a in k.list_addrs(VX, 4)] == ["10.244.9.9/32"]

    # Link changes; a down device loses its routes and takes no new ones.
    k.set_link(VX, mtu=1400, mac="66:00:00:00:00:0a")
    assert (k.get_link(VX) or Link("")).mtu == 1400
    assert (k.get_link(VX) or Link("")).mac == "66:00:00:00:00:0a"
    k.set_link(VX, up=False)
    assert via not in k.list_routes(4, 80) and good not in k.list_routes(4, 80)
    with pytest.raises(KernelError):
        k.replace_route(via)
    k.set_link(VX, up=True)
    k.replace_route(via)

    # Deleting the device deletes everything on it (and nothing else).
    k.replace_neigh(nb)
    k.del_link(VX)
    assert k.get_link(VX) is None and k.list_addrs(VX) == []
    assert k.list_neighs(VX, 4) == [] and k.list_fdb(VX) == []
    assert sorted(k.list_routes(4, 80), key=str) == [wl]
    with pytest.raises(KernelError):
        k.del_link(VX)
    k.del_route(wl)
    k.del_route(bird)
    k.del_route(v6)


def _host() -> FakeKernel:
    k = FakeKernel()
    k.add_link(Link("eth0", "veth", 1500, "02:00:00:00:00:01", True), "198.18.0.1/24")
    return k


def test_fake_kernel_contract() -> None:
    kernel_contract(_host(), "eth0", "198.18.0.1")


def test_fake_vxlan_defaults_and_lower_device_removal() -> None:
    k = _host()
    k.add_vxlan(VX, VxlanAttrs(4096, 4789, ip("198.18.0.1"), "eth0"))
    link = k.get_link(VX)
    assert link is not None and link.mtu == 1450 and link.mac and not link.up
    with pytest.raises(KernelError):  # parent must exist
        k.add_vxlan("vx2", VxlanAttrs(1, 4789, ip("198.18.0.1"), "nosuch0"))
    k.del_link("eth0")
    assert k.list_links() == []


def test_fake_failure_injection_and_logs() -> None:
    k = _host()
    k.fail_writes(lambda op: op.name == "replace_route", times=2)
    r = KernelRoute(net("10.244.1.0/26"), "blackhole", proto=80)
    for _ in range(2):
        with pytest.raises(KernelError) as ei:
            k.replace_route(r)
        assert "injected" in ei.value.failed[0].error
    k.replace_route(r)
    assert k.list_routes(4, 80) == [r]
    k.fail_reads(1, "list_routes")
    with pytest.raises(KernelError):
        k.list_routes(4)
    assert k.list_routes(4) == [r]
    k.fail_writes(lambda op: True, times=None)
    for _ in range(3):
        with pytest.raises(KernelError):
            k.del_route(r)
    k.clear_faults()
    k.del_route(r)
    assert [op.name for op in k.ops] == ["replace_route"] * 3 + ["del_route"] * 4
    assert k.reads.count("list_routes") == 3
    # Drift: tests edit the state directly; reads see it.
    k.routes[r.dst] = r
    assert k.list_routes(4, 80) == [r]
    with k.batch() as b:  # an empty batch writes nothing
        assert b.ops == []
    assert len(k.batches) == 7


def test_render_and_parse_iproute2() -> None:
    vx = Op("add_vxlan", Link(VX, "vxlan", 1450, MAC, False,
                              VxlanAttrs(4096, 4789, ip("198.18.0.1"), "eth0")))  # fmt: skip
    assert render(vx) == (
        f"link add {VX} address {MAC} mtu 1450 type vxlan id 4096 local 198.18.0.1 dev eth0 "
        "dstport 4789 nolearning"
    )
    r = KernelRoute(net("10.244.2.0/26"), "unicast", ip("10.244.2.0"), VX, True, False, 80)
    assert render(Op("replace_route", r)) == (
        "route replace 10.244.2.0/26 via 10.244.2.0 dev vxlan.calico onlink proto 80"
    )
    bh = KernelRoute(net("10.244.1.0/26"), "blackhole", proto=80)
    assert render(Op("del_route", bh)) == "route del blackhole 10.244.1.0/26 proto 80"
    nb = Neighbour("tunl0", ip("0.0.0.0"))
    assert render(Op("replace_neigh", nb)) == "neigh replace 0.0.0.0 dev tunl0 nud permanent"
    fe = FdbEntry(VX, RMAC, ip("198.18.0.2"))
    assert render(Op("replace_fdb", fe)) == (
        f"fdb replace {RMAC} dev {VX} dst 198.18.0.2 self permanent"
    )
    err = 'RTNETLINK answers: No such process\nCommand failed -:2\nCannot find device "x"\n'
    assert parse_batch_errors(err + "Command failed -:4\n", 5) == {
        1: "RTNETLINK answers: No such process",
        3: 'Cannot find device "x"',
    }
    rec = {"dst": "10.244.1.5", "dev": "cali1", "protocol": "80", "scope": "253", "flags": []}
    assert parse_route(rec, 4) == KernelRoute(net("10.244.1.5/32"), dev="cali1",
                                              scope_link=True, proto=80)  # fmt: skip
    assert parse_route({"type": "6", "dst": "default", "protocol": "2"}, 6) == KernelRoute(
        net("::/0"), "blackhole", proto=2
    )


def test_clocks() -> None:
    import threading

    c = FakeClock(100.0, autoadvance=True)
    ev = threading.Event()
    assert not c.wait(ev, 5) and c.monotonic() == 105.0
    c.sleep(2)
    assert c.monotonic() == 107.0 and c.sleeps == [5, 2]
    ev.set()
    assert c.wait(ev, 10) and c.monotonic() == 107.0
    m = FakeClock()
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(m.wait(threading.Event(), 3)))
    t.start()
    m.advance(1)
    assert t.is_alive()
    m.advance(2)
    t.join(2)
    assert out == [False]
    rc = RealClock()
    t0 = rc.monotonic()
    assert rc.wait(ev, 1) and rc.monotonic() - t0 < 1
