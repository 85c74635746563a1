"""KernelRoutes (effects) against a stateful fake kernel behind the ProcessRunner seam:
minimal deltas, drift repair on full applies, ownership (only proto 80 routes and our device's
entries are ever deleted), failure handling, NAT table rendering, MTU detection and the MTU
file. (Felix driving it: tests/unit/test_felix_pipeline.py; tunnel addresses:
tests/unit/test_node_tunnels.py.)"""

from __future__ import annotations

import ipaddress
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.felix.calc.routetypes import DesiredState, IpipSpec, Route, Vtep, VxlanSpec
from pycalico.felix.natout import render
from pycalico.felix.routes.kernel import KernelRoutes, parse_route, route_delta
from pycalico.felix.routes.mtu import host_mtu, write_mtu_file
from pycalico.system.process import Completed
from pycalico.system.sysctl import FakeSysctl

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


@dataclass
class FakeKernel:
    """Just enough of ip/bridge/nft for KernelRoutes: routes by dst (with proto), links,
    addresses, neighbours and FDB entries of vxlan.calico, one nft table."""

    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    neigh: dict[str, str] = field(default_factory=dict)
    fdb: set[tuple[str, str]] = field(default_factory=set)
    nft: str | None = None
    batches: list[list[str]] = field(default_factory=list)
    fail: str | None = None  # a batch line containing this fails

    def __post_init__(self) -> None:
        self.links["eth0"] = {"ifname": "eth0", "mtu": 1500, "flags": ["UP"],
                              "addr_info": [{"family": "inet", "local": "198.18.0.1",
                                             "prefixlen": 24}]}  # fmt: skip

    def __call__(self, argv: tuple[str, ...], stdin: str | None) -> Completed:
        a = list(argv)
        if a[:2] in (["ip", "-4"], ["ip", "-6"]):  # a family instance's batches
            a = ["ip", *a[2:]]
        if a[:3] == ["ip", "-j", "-6"]:  # one table for both families in this fake
            a[2] = "-4"
        ok = Completed(argv, 0, "", "")
        if a[:2] == ["ip", "-j"] and a[2:4] == ["addr", "show"]:
            return Completed(argv, 0, json.dumps(list(self.links.values())))
        if a[:4] == ["ip", "-j", "link", "show"]:
            return Completed(argv, 0, json.dumps([{"ifname": n} for n in self.links]))
        if a[:4] == ["ip", "-j", "-d", "link"]:
            link = self.links.get(a[-1])
            if link is None:
                return Completed(argv, 1, "", "Device does not exist")
            return Completed(argv, 0, json.dumps([link]))
        if a[:5] == ["ip", "-j", "-4", "addr", "show"]:
            return Completed(argv, 0, json.dumps([self.links.get(a[-1], {"addr_info": []})]))
        if a[:5] == ["ip", "-j", "-4", "route", "show"]:
            out = [r for r in self.routes.values() if r["proto"] == a[-1]]
            return Completed(argv, 0, json.dumps(out))
        if a[:5] == ["ip", "-j", "-4", "neigh", "show"]:
            recs = [{"dst": k, "lladdr": v, "state": ["PERMANENT"]} for k, v in self.neigh.items()]
            return Completed(argv, 0, json.dumps(recs))
        if a[:3] == ["bridge", "-j", "fdb"]:
            return Completed(argv, 0, json.dumps([{"mac": m, "dst": d} for m, d in self.fdb]))
        if a[1:] == ["-force", "-batch", "-"]:
            lines = (stdin or "").strip().splitlines()
            self.batches.append(lines)
            bad = [x for x in lines if self.fail and self.fail in x]
            for line in lines:
                if line not in bad and self._apply(a[0], shlex.split(line)) is False:
                    bad.append(line)
            return Completed(argv, 1, "", "failed") if bad else ok
        if a[:2] == ["nft", "list"]:
            return Completed(argv, 0, self.nft) if self.nft else Completed(argv, 1, "", "nope")
        if a[:2] == ["nft", "-f"]:
            self.nft = stdin if "chain" in (stdin or "") else None
            return ok
        if a[:3] == ["ip", "link", "del"]:
            self._apply("ip", a[1:])
            return ok
        raise AssertionError(f"unexpected command {argv}")

    def _apply(self, tool: str, w: list[str]) -> bool | None:
        if tool == "bridge":
            if w[1] == "replace":
                self.fdb.add((w[2], w[6]))
            else:
                self.fdb.discard((w[2], w[6]))
            return None
        if w[0] == "route":
            if w[1] == "del":
                dst = w[3] if w[2] == "blackhole" else w[2]
                return self.routes.pop(dst, None) is not None  # RTNETLINK: No such process
            rest = w[2:]
            rec: dict[str, Any] = {"flags": [], "proto": rest[rest.index("proto") + 1]}
            if rest[0] == "blackhole":
                rec.update(type="blackhole", dst=rest[1])
            else:
                rec["dst"] = rest[0]
                if "via" in rest:
                    rec["gateway"] = rest[rest.index("via") + 1]
                if "dev" in rest:
                    rec["dev"] = rest[rest.index("dev") + 1]
                if "onlink" in rest:
                    rec["flags"] = ["onlink"]
                if "scope" in rest:
                    rec["scope"] = rest[rest.index("scope") + 1]
            self.routes[rec["dst"]] = rec
        elif w[0] == "neigh":
            if w[1] == "del":
                self.neigh.pop(w[2], None)
            elif w[2] != "0.0.0.0":
                self.neigh[w[2]] = w[4]
        elif w[0] == "link" and w[1] == "add":
            self.links[w[2]] = {"ifname": w[2], "mtu": 1500, "flags": [], "addr_info": [],
                                "linkinfo": {"info_kind": "vxlan", "info_data": {
                                    "id": int(w[6]), "local": w[8], "link": w[10],
                                    "port": int(w[12]), "learning": False}}}  # fmt: skip
        elif w[0] == "link" and w[1] == "del":
            self.links.pop(w[2], None)
            self.neigh.clear()
            self.fdb.clear()
        elif w[0] == "link" and w[1] == "set":
            link = self.links[w[3]]
            if "up" in w:
                link["flags"] = ["UP"]
            if "mtu" in w:
                link["mtu"] = int(w[w.index("mtu") + 1])
            if "address" in w:
                link["address"] = w[w.index("address") + 1]
        elif w[0] == "addr":
            addr, plen = w[2].split("/")
            info = self.links[w[4]].setdefault("addr_info", [])
            info[:] = [x for x in info if x["local"] != addr]
            if w[1] == "replace":
                info.append({"family": "inet", "local": addr, "prefixlen": int(plen)})
        return None


class Runner:
    def __init__(self, k: FakeKernel) -> None:
        self.k = k
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Any, *, input: str | None = None, env: Any = None,
            timeout: float | None = None) -> Completed:  # fmt: skip
        self.calls.append(tuple(argv))
        return self.k(tuple(argv), input)


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


VX = VxlanSpec(4096, 4789, A("198.18.0.1"), "eth0", "66:00:00:00:00:01", A("10.244.1.0"), 1450)
VTEP2 = Vtep("n2", A("10.244.2.0"), "66:00:00:00:00:02", A("198.18.0.2"))
R2 = Route(N("10.244.2.0/26"), "unicast", A("10.244.2.0"), "vxlan.calico", True)
BH = Route(N("10.244.1.0/26"), kind="blackhole")


def kernel(k: FakeKernel, tmp: Path | None = None) -> KernelRoutes:
    return KernelRoutes(Runner(k), FakeSysctl(), mtu_file=str(tmp / "mtu") if tmp else None,
                        ipip_factory=FakeTunnel)  # type: ignore[arg-type]  # fmt: skip


def test_first_apply_creates_device_vteps_routes_then_nothing(tmp_path: Path) -> None:
    k = FakeKernel()
    kr = kernel(k, tmp_path)
    want = DesiredState(routes={R2.dst: R2, BH.dst: BH}, vteps=(VTEP2,), vxlan=VX, pod_mtu=1450)
    assert kr.apply(want, full=True) == []
    assert k.links["vxlan.calico"]["mtu"] == 1450
    assert k.links["vxlan.calico"]["address"] == "66:00:00:00:00:01"
    assert k.neigh == {"10.244.2.0": "66:00:00:00:00:02"}
    assert k.fdb == {("66:00:00:00:00:02", "198.18.0.2")}
    assert {parse_route(r) for r in k.routes.values()} == {R2, BH}
    assert all(r["proto"] == "80" for r in k.routes.values())
    assert (tmp_path / "mtu").read_text() == "1450\n"
    assert kr.sysctl.read("net.ipv4.ip_forward") == "1"  # type: ignore[attr-defined]
    n = len(k.batches)
    calls = len(kr.runner.calls)  # type: ignore[attr-defined]
    assert kr.apply(want, full=False) == []
    assert len(k.batches) == n  # incremental, nothing changed: no writes ...
    assert len(kr.runner.calls) == calls  # type: ignore[attr-defined]  # ... and no reads
    assert kr.apply(want, full=True) == []
    assert len(k.batches) == n  # full re-read, kernel matches: still no writes


def test_full_apply_repairs_drift_and_sweeps_only_ours() -> None:
    k = FakeKernel()
    kr = kernel(k)
    want = DesiredState(routes={R2.dst: R2, BH.dst: BH}, vteps=(VTEP2,), vxlan=VX)
    kr.apply(want, full=True)
    del k.routes["10.244.2.0/26"]
    k.fdb.clear()
    k.neigh["10.244.9.0"] = "66:00:00:00:00:09"  # stray entry on our device
    k.routes["10.9.0.0/16"] = {"dst": "10.9.0.0/16", "gateway": "1.2.3.4", "proto": "80"}
    k.routes["10.8.0.0/16"] = {"dst": "10.8.0.0/16", "gateway": "1.2.3.4", "proto": "12"}
    kr.apply(want, full=False)  # incremental trusts its cache
    assert "10.244.2.0/26" not in k.routes
    assert kr.apply(want, full=True) == []
    assert parse_route(k.routes["10.244.2.0/26"]) == R2
    assert "10.9.0.0/16" not in k.routes  # proto 80: ours, unwanted -> swept
    assert "10.8.0.0/16" in k.routes  # BIRD's: untouched
    assert k.fdb == {("66:00:00:00:00:02", "198.18.0.2")}
    assert k.neigh == {"10.244.2.0": "66:00:00:00:00:02"}


def test_removal_and_minimal_delta() -> None:
    k = FakeKernel()
    kr = kernel(k)
    kr.apply(DesiredState(routes={R2.dst: R2, BH.dst: BH}, vteps=(VTEP2,), vxlan=VX), full=True)
    k.batches.clear()
    kr.apply(DesiredState(routes={BH.dst: BH}, vxlan=VX), full=False)
    assert k.batches == [
        ["fdb del 66:00:00:00:00:02 dev vxlan.calico dst 198.18.0.2 self"],
        ["neigh del 10.244.2.0 dev vxlan.calico"],
        ["route del 10.244.2.0/26 proto 80"],
    ]
    kr.apply(DesiredState(), full=False)  # no pools at all: device and blackhole go
    assert "vxlan.calico" not in k.links and k.routes == {}


def test_vxlan_device_with_wrong_vni_is_recreated() -> None:
    k = FakeKernel()
    kr = kernel(k)
    kr.apply(DesiredState(vxlan=VX), full=True)
    k.links["vxlan.calico"]["linkinfo"]["info_data"]["id"] = 1
    k.batches.clear()
    kr.apply(DesiredState(vxlan=VX), full=True)
    assert k.batches[0][0] == "link del vxlan.calico"
    assert k.links["vxlan.calico"]["linkinfo"]["info_data"]["id"] == 4096


def test_failed_batch_is_reported_and_next_apply_is_full() -> None:
    k = FakeKernel(fail="10.244.2.0/26")
    kr = kernel(k)
    want = DesiredState(routes={R2.dst: R2, BH.dst: BH})
    errs = kr.apply(want, full=True)
    assert errs and "routes" in errs[0]
    assert "10.244.1.0/26" in k.routes  # -force: the other lines still applied
    k.fail = None
    assert kr.apply(want, full=False) == []
    assert parse_route(k.routes["10.244.2.0/26"]) == R2


def test_idle_incremental_apply_spawns_nothing_without_devices() -> None:
    k = FakeKernel()
    kr = kernel(k)
    want = DesiredState(routes={BH.dst: BH})
    kr.apply(want, full=True)
    calls = len(kr.runner.calls)  # type: ignore[attr-defined]
    for _ in range(3):
        assert kr.apply(want, full=False) == []
    assert len(kr.runner.calls) == calls  # type: ignore[attr-defined]


def test_ipip_tunnel_lifecycle() -> None:
    FakeTunnel.instances.clear()
    k = FakeKernel()
    k.links["tunl0"] = {"ifname": "tunl0", "mtu": 1500, "flags": [], "addr_info": []}
    kr = kernel(k)
    r = Route(N("10.244.2.0/26"), "unicast", A("198.18.0.2"), "tunl0", True)
    want = DesiredState(routes={r.dst: r}, ipip=IpipSpec(A("198.18.0.1"), A("10.244.1.1"), 1480),
                        ipip_next_hops=((r.dst, A("198.18.0.2")),))  # fmt: skip
    assert kr.apply(want, full=True) == []
    (t,) = FakeTunnel.instances
    assert t.running and t.hops == [(r.dst, A("198.18.0.2"))] and t.local_ip == "198.18.0.1"
    assert k.links["tunl0"]["mtu"] == 1480 and k.links["tunl0"]["flags"] == ["UP"]
    assert k.links["tunl0"]["addr_info"][0]["local"] == "10.244.1.1"
    kr.apply(DesiredState(), full=False)
    assert not t.running and t.removed
    # A TUN tunl0 left by an earlier run is removed when IPIP is not wanted; a non-TUN one
    # (not ours) is left alone.
    k.links["tunl0"] = {"ifname": "tunl0", "linkinfo": {"info_kind": "tun"}}
    kr.apply(DesiredState(), full=True)
    assert "tunl0" not in k.links
    k.links["tunl0"] = {"ifname": "tunl0", "linkinfo": {"info_kind": "ipip"}}
    kr.apply(DesiredState(), full=True)
    assert "tunl0" in k.links


def test_workload_routes_wait_for_their_interface() -> None:
    k = FakeKernel()
    kr = kernel(k)
    local = Route(N("10.244.1.5/32"), dev="cali12345678901", scope_link=True)
    want = DesiredState(routes={local.dst: local, BH.dst: BH})
    assert kr.apply(want, full=True) == []
    assert "10.244.1.5/32" not in k.routes and "10.244.1.0/26" in k.routes
    k.links["cali12345678901"] = {"ifname": "cali12345678901", "flags": ["UP"]}
    assert kr.apply(want, full=True) == []
    assert parse_route(k.routes["10.244.1.5/32"]) == local
    k.routes.pop("10.244.1.5/32")  # gone with its interface: deleting it is not an error
    assert kr.apply(DesiredState(routes={BH.dst: BH}), full=False) == []


def test_route_delta_is_pure_and_minimal() -> None:
    other = Route(N("10.244.3.0/26"), "unicast", A("10.244.3.0"), "vxlan.calico", True)
    put, dele = route_delta({R2.dst: R2, BH.dst: BH}, {R2.dst: R2, other.dst: other})
    assert put == [other] and dele == [BH]


def test_host_mtu_pattern_and_fallback(tmp_path: Path) -> None:
    links = [
        {"ifname": "eth0", "mtu": 9000, "flags": ["UP"]},
        {"ifname": "ens3", "mtu": 1400, "flags": ["UP"]},
        {"ifname": "eth1", "mtu": 1200, "flags": []},  # down: ignored
        {"ifname": "cali123", "mtu": 1000, "flags": ["UP"]},  # not matching
    ]
    pat = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
    assert host_mtu(links, pat) == 1400
    assert host_mtu(links[3:], pat) == 1460
    p = str(tmp_path / "sub" / "mtu")
    assert write_mtu_file(1450, p) and not write_mtu_file(1450, p)
    assert Path(p).read_text() == "1450\n"


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
    k = FakeKernel()
    kr = kernel(k)
    kr.apply(DesiredState(masq_pools=(N("10.244.0.0/16"),), all_pools=(N("10.244.0.0/16"),)),
             full=True)  # fmt: skip
    assert k.nft and "masquerade" in k.nft
    kr.apply(DesiredState(), full=False)
    assert k.nft is None


# ------------------------------------------------------------------ sequences of states

_ROUTES = [
    R2,
    BH,
    Route(N("10.244.3.0/26"), "unicast", A("10.244.3.0"), "vxlan.calico", True),
    Route(N("10.244.3.0/26"), "unicast", A("198.18.0.3"), "eth0", True),  # same dst, other hop
    Route(N("10.244.2.7/32"), "unicast", A("10.244.3.0"), "vxlan.calico", True),
]
_VTEPS = [VTEP2, Vtep("n3", A("10.244.3.0"), "66:00:00:00:00:03", A("198.18.0.3"))]


def _kernel_view(k: FakeKernel) -> tuple[set[Route], set[tuple[str, str]], set[tuple[str, str]]]:
    routes = {parse_route(r) for r in k.routes.values() if r["proto"] == "80"}
    return {r for r in routes if r}, set(k.neigh.items()), set(k.fdb)


_state = st.builds(
    lambda rs, vs, vx: DesiredState(
        routes={r.dst: r for r in rs},
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
    k = FakeKernel()
    k.routes["10.8.0.0/16"] = {"dst": "10.8.0.0/16", "gateway": "1.2.3.4", "proto": "12"}
    kr = kernel(k)
    for want, drift, full in steps:
        if drift:
            for dst in list(k.routes)[:1]:
                if k.routes[dst]["proto"] == "80":
                    del k.routes[dst]
            k.fdb = set(list(k.fdb)[1:])
        assert kr.apply(want, full=full) == []
        if drift and not full:
            assert kr.apply(want, full=True) == []
        want_neigh = {(str(v.tunnel_ip), v.mac) for v in want.vteps}
        want_fdb = {(v.mac, str(v.node_ip)) for v in want.vteps}
        assert _kernel_view(k) == (set(want.routes.values()), want_neigh, want_fdb)
        assert ("vxlan.calico" in k.links) == (want.vxlan is not None)
        assert "10.8.0.0/16" in k.routes  # never ours


def test_ipv6_instance_uses_its_device_family_and_table() -> None:
    k = FakeKernel()
    runner = Runner(k)
    kr = KernelRoutes(runner, FakeSysctl(), version=6)
    I6, A6 = ipaddress.IPv6Network, ipaddress.IPv6Address
    vx = VxlanSpec(4096, 4789, A6("fd00:18::1"), "eth0", "66:00:00:00:01:01",
                   A6("fd00:244:0:1::"), 1430, device="vxlan-v6.calico")  # fmt: skip
    r = Route(I6("fd00:244:0:2::/122"), "unicast", A6("fd00:244:0:2::"), "vxlan-v6.calico", True)
    v = Vtep("n2", A6("fd00:244:0:2::"), "66:00:00:00:01:02", A6("fd00:18::2"))
    pools = (I6("fd00:244::/48"),)
    want = DesiredState(
        routes={r.dst: r}, vteps=(v,), vxlan=vx, version=6, masq_pools=pools, all_pools=pools
    )
    assert kr.apply(want, full=True) == []
    assert "vxlan-v6.calico" in k.links and "vxlan.calico" not in k.links
    assert k.links["vxlan-v6.calico"]["addr_info"][-1]["local"] == "fd00:244:0:1::"
    assert parse_route(k.routes["fd00:244:0:2::/122"]) == r
    assert k.fdb == {("66:00:00:00:01:02", "fd00:18::2")}
    assert kr.sysctl.read("net.ipv6.conf.all.forwarding") == "1"  # type: ignore[attr-defined]
    assert any(c[:2] == ("ip", "-6") for c in runner.calls)
    assert ("nft", "list", "table", "ip6", "calico-nat") in runner.calls
    assert k.nft and "table ip6 calico-nat" in k.nft and "ip6 saddr @masq-ipam-pools" in k.nft
    assert "type ipv6_addr" in k.nft
