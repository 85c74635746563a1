"""Felix's routes on a real kernel: node namespaces on an underlay (one subnet, or two joined
by a router namespace), workloads wired Calico-style with IPs from IPAM and a
WorkloadEndpoint each, one Felix process per node (``python -m pycalico.felix.cli`` under
``ip netns exec``: one syncer, one owner loop programming nftables and routes, as calico-node
runs it) against a shared sqlite datastore; tunnel addresses come from calico-node's
TunnelAddressComponent (run in the test process, it only touches the datastore).

Covers: VXLAN (routes, VTEP neighbour/FDB, device, cross-node TCP, VNI 4096 on the wire),
CrossSubnet (only traffic crossing the router is encapsulated), userspace IPIP (protocol 4 on
the wire, cross-node TCP), NAT-outgoing (a server outside the pools sees the node IP, a pod
sees the pod IP), borrowed /32s, and repair of routes/FDB entries deleted by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.sqlite import SqliteDatastore
from pycalico.felix.calc.routetypes import ROUTE_PROTO
from pycalico.ipam import IPAM
from pycalico.node.tunnels import TunnelAddressComponent
from tests.fixtures.netns import Netns, NetnsFactory
from tests.kit import felix_configuration, ip_pool, wait_time, workload_endpoint
from tests.kit.builders import node as calico_node

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

POOL_CIDR = "10.244.0.0/16"
ECHO_PORT = 7777
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.settimeout(10)
    data = b""
    try:
        while True:
            b = c.recv(1 << 20)
            if not b: break
            data += b
        c.sendall(peer[0].encode() + b" " + data)
    except OSError:
        pass
    c.close()
"""
CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
c.sendall(b"x" * int(sys.argv[3])); c.shutdown(socket.SHUT_WR)
out = b""
while True:
    b = c.recv(65536)
    if not b: break
    out += b
peer, _, body = out.partition(b" ")
print(peer.decode(), len(body))
"""


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 20.0) -> float:
    """Seconds until ``pred()`` held: the kit's ``wait_time`` in this file's argument order."""
    return wait_time(pred, timeout, 0.05, what=what)


class Cluster:
    """Nodes + agents + pods over a shared sqlite file."""

    def __init__(self, factory: NetnsFactory, tmp: Path, pool: dict[str, Any]) -> None:
        self.f = factory
        self.tmp = tmp
        self.db = str(tmp / "calico.db")
        self.ds = SqliteDatastore(self.db)
        self.ds.create(ip_pool("pool1", POOL_CIDR, block_size=26, **pool))
        # Pods reach their node (the readiness ping below); policy itself is not under test.
        self.ds.create(felix_configuration(defaultEndpointToHostAction="Accept"))
        self.tunnels: dict[str, TunnelAddressComponent] = {}
        self.nodes: dict[str, Netns] = {}
        self.node_ip: dict[str, str] = {}
        self.agents: dict[str, subprocess.Popen[str]] = {}
        self.pods: dict[str, tuple[Netns, str, str]] = {}  # name -> (ns, ip, node)

    def close(self) -> None:
        for t in self.tunnels.values():
            t.stop()
        self.ds.close()

    def add_node(self, name: str, ns: Netns, ip: str, plen: int) -> None:
        self.nodes[name] = ns
        self.node_ip[name] = ip
        self.ds.create(calico_node(name, f"{ip}/{plen}"))

    def start_agents(self, names: list[str] | None = None) -> None:
        env = {**os.environ, "DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": self.db,
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        names = list(self.nodes) if names is None else names
        for name in names:  # calico-node allocates tunnel addresses before Felix runs
            if name not in self.tunnels:
                self.tunnels[name] = TunnelAddressComponent(self.ds, name, poll_interval=0.1)
                self.tunnels[name].start()
            wait_for(f"{name} tunnel addresses", self.tunnels[name].in_sync)
        for name in names:
            log = open(self.tmp / f"{name}.log", "a")  # noqa: SIM115 - closed by the process end
            self.agents[name] = self.nodes[name].popen(
                sys.executable, "-m", "pycalico.felix.cli", "--node", name,
                "--mtu-file", str(self.tmp / f"{name}.mtu"), "--route-refresh-interval", "1",
                stdout=subprocess.PIPE, stderr=log, env=env,
            )  # fmt: skip
        for name in names:
            p = self.agents[name]
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            assert line == "in-sync", f"agent {name}: {line!r}; log: {self.log(name)}"

    def stop_agent(self, name: str) -> int:
        p = self.agents.pop(name)
        p.terminate()
        return p.wait(10)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def mtu(self, name: str) -> int:
        return int((self.tmp / f"{name}.mtu").read_text())

    def add_pod(self, name: str, node: str, ip: str | None = None) -> str:
        """A workload on ``node`` (IP from IPAM, or the given one assigned with IPAM)."""
        ipam = IPAM(self.ds, lock_path=str(self.tmp / "ipam.lock"))
        attrs = {"node": node, "pod": name, "namespace": "default"}
        if ip is None:
            v4, _ = ipam.auto_assign(1, 0, f"h-{name}", attrs, node)
            ip = str(v4[0].ip)
        else:
            ipam.assign_ip(ip, f"h-{name}", attrs, node)
        host_if = "cali" + hashlib.sha1(name.encode()).hexdigest()[:11]
        pod = self.f.netns(name)
        node_ns = self.nodes[node]
        self.f.veth(pod, "eth0", node_ns, host_if, mtu=self.mtu(node), up=False)
        node_ns.batch([f"link set {host_if} address ee:ee:ee:ee:ee:ee", f"link set {host_if} up"])
        for key in (f"net.ipv4.conf.{host_if}.proxy_arp", f"net.ipv4.conf.{host_if}.forwarding"):
            node_ns.sysctl(key, 1)
        node_ns.sysctl(f"net.ipv4.neigh.{host_if}.proxy_delay", 0)
        node_ns.ip("route", "replace", f"{ip}/32", "dev", host_if, "scope", "link")
        pod.batch([
            f"addr add {ip}/32 dev eth0", "link set eth0 up",
            "route add 169.254.1.1 dev eth0 scope link",
            "route add default via 169.254.1.1 dev eth0",
            # Static neighbours on both sides, as Calico's CNI/Felix program them (and robust
            # against a full global neighbour table when many namespaces exist).
            "neigh replace 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent",
        ])  # fmt: skip
        mac = pod.links()["eth0"]["address"]
        node_ns.ip("neigh", "replace", ip, "lladdr", mac, "dev", host_if, "nud", "permanent")
        self.pods[name] = (pod, ip, node)
        wep = workload_endpoint(name, namespace="default", node=node, ip=f"{ip}/32",
                                interface_name=host_if, profiles=["projectcalico-default-allow"],
                                ports=None, name=f"{node}-k8s-{name}-eth0")  # fmt: skip
        self.ds.create(wep)
        # The very first packet of a fresh veth can fail with ENOBUFS while ARP for the
        # gateway resolves; make sure the pod reaches its node before using it.
        wait_for(f"{name} reaches its node", lambda: pod.ping(self.node_ip[node], timeout_s=1))
        return ip

    def serve(self, ns: Netns) -> None:
        p = ns.popen("/usr/bin/python3", "-c", SERVER, str(ECHO_PORT), stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def tcp(
        self, src: Netns, dst_ip: str, size: int = 100, timeout: float = 3.0
    ) -> tuple[str, int] | None:
        """Connect from ``src`` to the echo server; (peer address it saw, bytes echoed)."""
        argv = ["/usr/bin/python3", "-c", CLIENT, dst_ip, str(ECHO_PORT), str(size), str(timeout)]
        r = src.exec(*argv, check=False, timeout=15 + timeout)
        if r.returncode != 0:
            return None
        peer, n = r.stdout.split()
        return peer, int(n)

    def routes(self, node: str) -> dict[str, dict[str, Any]]:
        recs = self.nodes[node].routes("proto", str(ROUTE_PROTO))
        out = {}
        for r in recs:
            dst = r["dst"] if "/" in r["dst"] else r["dst"] + "/32"
            out[dst] = r
        return out

    def wait_converged(self, timeout: float = 20.0) -> float:
        """Until every node routes every other node's blocks."""

        def ok() -> bool:
            return all(
                b in self.routes(n)
                for n in self.nodes
                for m in self.nodes
                if m != n
                for b in self.blocks_of(m)
            )

        return wait_for("all nodes route all remote blocks", ok, timeout)

    def blocks_of(self, node: str, pool: str = POOL_CIDR) -> list[str]:
        """``node``'s affine blocks inside ``pool``."""
        net = ipaddress.ip_network(pool)
        return sorted(
            b["spec"]["cidr"]
            for b in self.ds.list("IPAMBlock").items
            if b["spec"].get("affinity") == f"host:{node}"
            and ipaddress.ip_network(b["spec"]["cidr"]).subnet_of(net)  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def capture(ns: Netns, iface: str, bpf: str) -> Iterator[list[str]]:
    """tcpdump in ``ns`` while the block runs; the list is filled with its lines afterwards."""
    p = ns.popen("tcpdump", "-i", iface, "-nn", "-l", "-v", "-U", bpf,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stderr is not None
    line = ""
    while "listening" not in line:  # "tcpdump: listening on ..."
        line = p.stderr.readline()
        assert line, "tcpdump exited"
    lines: list[str] = []
    try:
        yield lines
    finally:
        time.sleep(0.3)
        p.terminate()
        out, _ = p.communicate(timeout=10)
        lines += out.splitlines()


def pin_segment(members: list[tuple[Netns, str, str]]) -> None:
    """Permanent neighbour entries between all (ns, dev, ip) members of one L2 segment.

    Test scaffolding only: the kernel's neighbour table limit (gc_thresh3) is global across
    namespaces, so on a busy shared machine dynamic ARP entries can fail with ENOBUFS.
    """
    macs = {(ns.name, dev): ns.links()[dev]["address"] for ns, dev, _ in members}
    for a, adev, _ in members:
        lines = [
            f"neigh replace {ip} lladdr {macs[(b.name, bdev)]} dev {adev} nud permanent"
            for b, bdev, ip in members
            if (b.name, bdev) != (a.name, adev)
        ]
        a.batch(lines)


@pytest.fixture
def cluster_factory(
    netns_factory: NetnsFactory, tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(pool: dict[str, Any], *, nodes: int = 2, two_subnets: bool = False) -> Cluster:
        c = Cluster(netns_factory, tmp_path, pool)
        made.append(c)
        if not two_subnets:
            ul = netns_factory.underlay(nodes, subnet="198.18.0.0/24")
            for i, ns in enumerate(ul.nodes):
                c.add_node(f"n{i + 1}", ns, ul.node_ips[i], ul.prefixlen)
            c.router = ul.bridge  # type: ignore[attr-defined]
            members = [(ns, "eth0", ip) for ns, ip in zip(ul.nodes, ul.node_ips, strict=True)]
            pin_segment([*members, (ul.bridge, "br0", str(ul.gateway))])
            return c
        # Router namespace with two bridges: n1, n2 on 198.18.1.0/24, n3 on 198.18.2.0/24.
        r = netns_factory.netns("rtr")
        r.batch(["link add bra type bridge", "link set bra up", "addr add 198.18.1.254/24 dev bra",
                 "link add brb type bridge", "link set brb up",
                 "addr add 198.18.2.254/24 dev brb"])  # fmt: skip
        r.sysctl("net.ipv4.ip_forward", 1)
        for i, (subnet, br) in enumerate((("1", "bra"), ("1", "bra"), ("2", "brb"))):
            ns = netns_factory.netns(f"n{i + 1}")
            ip = f"198.18.{subnet}.{i + 1}"
            netns_factory.veth(ns, "eth0", r, f"ul{i + 1}", a_addr=f"{ip}/24")
            r.ip("link", "set", f"ul{i + 1}", "master", br)
            ns.ip("route", "add", "default", "via", f"198.18.{subnet}.254", "dev", "eth0")
            ns.sysctl("net.ipv4.ip_forward", 1)
            c.add_node(f"n{i + 1}", ns, ip, 24)
        c.router = r  # type: ignore[attr-defined]
        nodes_ = list(c.nodes.values())
        pin_segment([(nodes_[0], "eth0", "198.18.1.1"), (nodes_[1], "eth0", "198.18.1.2"),
                     (r, "bra", "198.18.1.254")])  # fmt: skip
        pin_segment([(nodes_[2], "eth0", "198.18.2.3"), (r, "brb", "198.18.2.254")])
        return c

    yield make
    for c in made:
        c.close()


def _vtep_state(c: Cluster, node: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    ns = c.nodes[node]
    neigh = {(n["dst"], n["lladdr"]) for n in ns.ip_json("neigh", "show", "dev", "vxlan.calico")}
    out = subprocess.run(["bridge", "-j", "-n", ns.name, "fdb", "show", "dev", "vxlan.calico"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    import json

    fdb = {(e["mac"], e["dst"]) for e in json.loads(out or "[]") if e.get("dst")}
    return neigh, fdb


def test_vxlan_routes_vteps_tcp_and_repair(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory({"vxlanMode": "Always"}, nodes=3)
    c.start_agents()
    nodes = {n["metadata"]["name"]: n["spec"] for n in c.ds.list("Node").items}
    for spec in nodes.values():
        assert ipaddress.ip_address(spec["ipv4VXLANTunnelAddr"]) in ipaddress.ip_network(POOL_CIDR)
        assert len(spec["vxlanTunnelMACAddr"]) == 17
    assert c.mtu("n1") == 1450  # eth0 1500 - 50
    ips = {n: c.add_pod(f"p{n[1]}", n) for n in c.nodes}
    for p in c.pods.values():
        c.serve(p[0])

    c.wait_converged()
    r1 = c.routes("n1")
    for n in ("n2", "n3"):
        for b in c.blocks_of(n):
            assert r1[b]["dev"] == "vxlan.calico"
            assert r1[b]["gateway"] == nodes[n]["ipv4VXLANTunnelAddr"]
            assert "onlink" in r1[b]["flags"]
    for b in c.blocks_of("n1"):
        assert r1[b]["type"] == "blackhole"
    neigh, fdb = _vtep_state(c, "n1")
    want_neigh = {(nodes[n]["ipv4VXLANTunnelAddr"], nodes[n]["vxlanTunnelMACAddr"])
                  for n in ("n2", "n3")}  # fmt: skip
    want_fdb = {(nodes[n]["vxlanTunnelMACAddr"], c.node_ip[n]) for n in ("n2", "n3")}
    assert neigh == want_neigh and fdb == want_fdb
    dev = c.nodes["n1"].ip_json("-d", "link", "show", "dev", "vxlan.calico")[0]
    data = dev["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local"], data["learning"]) == (
        4096, 4789, c.node_ip["n1"], False)  # fmt: skip
    assert dev["mtu"] == 1450 and dev["address"] == nodes["n1"]["vxlanTunnelMACAddr"]
    v4 = [a for a in c.nodes["n1"].addresses("vxlan.calico") if ":" not in a]
    assert v4 == [f"{nodes['n1']['ipv4VXLANTunnelAddr']}/32"]

    p1 = c.pods["p1"][0]
    with capture(c.nodes["n2"], "eth0", "udp port 4789") as lines:
        for n in ("n2", "n3"):
            got = c.tcp(p1, ips[n], size=20000)
            assert got == (ips["n1"], 20000), f"p1 -> {n}: {got}"
    assert any("vni 4096" in line for line in lines), lines[:10]
    assert any(f"{ips['n1']}." in line and f"{ips['n2']}." in line for line in lines)

    # Deleting a route, an FDB entry and a neighbour by hand is repaired on resync (1 s).
    victim = c.blocks_of("n2")[0]
    n1 = c.nodes["n1"]
    n1.ip("route", "del", victim, "proto", str(ROUTE_PROTO))
    mac2 = nodes["n2"]["vxlanTunnelMACAddr"]
    subprocess.run(["bridge", "-n", n1.name, "fdb", "del", mac2, "dev", "vxlan.calico",
                    "dst", c.node_ip["n2"], "self"], check=True)  # fmt: skip
    n1.ip("neigh", "del", nodes["n2"]["ipv4VXLANTunnelAddr"], "dev", "vxlan.calico")
    assert victim not in c.routes("n1")
    t = wait_for("route repaired", lambda: victim in c.routes("n1"), timeout=10)
    wait_for("vteps repaired", lambda: _vtep_state(c, "n1") == (want_neigh, want_fdb), 10)
    assert t < 5
    assert c.tcp(p1, ips["n2"]) == (ips["n1"], 100)

    # A workload route deleted by hand is re-created from its WorkloadEndpoint.
    host_if = next(x for x in n1.links() if x.startswith("cali"))
    wait_for("local route adopted", lambda: f"{ips['n1']}/32" in c.routes("n1"))
    n1.ip("route", "del", f"{ips['n1']}/32")
    wait_for("local route repaired", lambda: f"{ips['n1']}/32" in c.routes("n1"), timeout=10)
    local = c.routes("n1")[f"{ips['n1']}/32"]
    assert (local["dev"], local.get("scope")) == (host_if, "link")
    assert c.tcp(c.pods["p2"][0], ips["n1"]) == (ips["n2"], 100)

    # A stray proto-80 route (ours by mark, not wanted) is swept; other protocols are not.
    n1.ip("route", "add", "10.244.250.0/24", "via", c.node_ip["n2"], "proto", str(ROUTE_PROTO))
    n1.ip("route", "add", "10.244.251.0/24", "via", c.node_ip["n2"], "proto", "static")
    wait_for("stray swept", lambda: "10.244.250.0/24" not in c.routes("n1"), timeout=10)
    assert n1.routes("10.244.251.0/24")

    # Borrowed /32: an address from n2's block used by a pod on n3 is routed to n3.
    borrowed = str(ipaddress.ip_network(c.blocks_of("n2")[0])[40])
    c.add_pod("pb", "n3", ip=borrowed)
    c.serve(c.pods["pb"][0])
    wait_for("borrowed /32", lambda: f"{borrowed}/32" in c.routes("n1"))
    assert c.routes("n1")[f"{borrowed}/32"]["gateway"] == nodes["n3"]["ipv4VXLANTunnelAddr"]
    assert c.tcp(p1, borrowed) == (ips["n1"], 100)
    assert c.tcp(c.pods["p2"][0], borrowed) == (ips["n2"], 100)

    # A node leaving: its routes and VTEP go.
    for b in c.ds.list("IPAMBlock").items:
        if b["spec"].get("affinity") == "host:n3":
            c.ds.delete("IPAMBlock", b["metadata"]["name"])
    c.ds.delete("Node", "n3")
    wait_for("n3 gone", lambda: not any(b in c.routes("n1") for b in c.blocks_of("n3"))
             and len(_vtep_state(c, "n1")[1]) == 1)  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "dev", "bpf", "marker"),
    [
        ("vxlanMode", "vxlan.calico", "udp port 4789", "vni 4096"),
        ("ipipMode", "tunl0", "ip proto 4", "proto IPIP (4)"),
    ],
)
def test_crosssubnet_only_router_crossing_is_encapsulated(
    cluster_factory: Callable[..., Cluster], mode: str, dev: str, bpf: str, marker: str
) -> None:
    c = cluster_factory({mode: "CrossSubnet"}, two_subnets=True)
    c.start_agents()
    ips = {n: c.add_pod(f"p{n[1]}", n) for n in c.nodes}
    for p in c.pods.values():
        c.serve(p[0])
    c.wait_converged()
    r1 = c.routes("n1")
    b2, b3 = c.blocks_of("n2")[0], c.blocks_of("n3")[0]
    assert (r1[b2]["dev"], r1[b2]["gateway"]) == ("eth0", c.node_ip["n2"])
    assert r1[b3]["dev"] == dev
    p1 = c.pods["p1"][0]
    router: Netns = c.router  # type: ignore[attr-defined]
    with capture(router, "bra", bpf) as enc_a:
        assert c.tcp(p1, ips["n2"]) == (ips["n1"], 100)
    with capture(router, "bra", f"host {ips['n1']}") as plain_a:
        assert c.tcp(p1, ips["n2"]) == (ips["n1"], 100)
    with capture(router, "brb", bpf) as enc_b:
        assert c.tcp(p1, ips["n3"], size=50000) == (ips["n1"], 50000)
    # Same subnet: plain pod-to-pod packets on the wire, nothing encapsulated.
    assert not [x for x in enc_a if marker in x], enc_a[:5]
    assert any(f"{ips['n1']}." in x and f"{ips['n2']}.{ECHO_PORT}" in x for x in plain_a)
    # Across the router: encapsulated, carrying the pod addresses.
    assert any(marker in x for x in enc_b), enc_b[:5]
    assert any(f"{ips['n1']}." in x and f"{ips['n3']}.{ECHO_PORT}" in x for x in enc_b)


def test_ipip_userspace_tunnel(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory({"ipipMode": "Always"}, nodes=2)
    c.start_agents()
    nodes = {n["metadata"]["name"]: n["spec"] for n in c.ds.list("Node").items}
    tun_ip = nodes["n1"]["bgp"]["ipv4IPIPTunnelAddr"]
    assert ipaddress.ip_address(tun_ip) in ipaddress.ip_network(POOL_CIDR)
    assert c.mtu("n1") == 1480
    n1 = c.nodes["n1"]
    link = n1.ip_json("-d", "link", "show", "dev", "tunl0")[0]
    assert link["mtu"] == 1480 and link["linkinfo"]["info_kind"] == "tun"
    assert [a for a in n1.addresses("tunl0") if ":" not in a] == [f"{tun_ip}/32"]
    ips = {n: c.add_pod(f"p{n[1]}", n) for n in c.nodes}
    for p in c.pods.values():
        c.serve(p[0])
    c.wait_converged()
    r = c.routes("n1")[c.blocks_of("n2")[0]]
    assert (r["dev"], r["gateway"], "onlink" in r["flags"]) == ("tunl0", c.node_ip["n2"], True)
    p1 = c.pods["p1"][0]
    with capture(c.nodes["n2"], "eth0", "ip proto 4") as lines:
        assert p1.ping(ips["n2"], count=2)
        got = c.tcp(p1, ips["n2"], size=200000)
        assert got == (ips["n1"], 200000), got
    outer = [x for x in lines if f"{c.node_ip['n1']} > {c.node_ip['n2']}" in x]
    assert outer, lines[:10]
    assert any("proto IPIP (4)" in x for x in lines)
    assert any(f"{ips['n1']}" in x and f"{ips['n2']}" in x for x in lines)  # inner headers
    # Host-to-remote-pod traffic leaves from the tunnel address.
    assert n1.ping(ips["n2"])
    assert n1.ip("route", "get", ips["n2"]).split("src ")[1].split()[0] == tun_ip

    # A tunnel route deleted by hand is repaired.
    victim = c.blocks_of("n2")[0]
    n1.ip("route", "del", victim, "proto", str(ROUTE_PROTO))
    wait_for("tunl0 route repaired", lambda: victim in c.routes("n1"), timeout=10)
    assert c.tcp(p1, ips["n2"]) == (ips["n1"], 100)

    # Stopping the agent leaves the (persistent) tunl0 and its routes; a new agent adopts them.
    assert c.stop_agent("n1") == 0
    assert "tunl0" in n1.links() and c.blocks_of("n2")[0] in c.routes("n1")
    assert c.tcp(p1, ips["n2"], timeout=0.5) is None  # nobody runs the tunnel meanwhile
    c.start_agents(["n1"])
    c.wait_converged()
    assert c.tcp(p1, ips["n2"]) == (ips["n1"], 100)

    # Live switch of the pool from IPIP to VXLAN: tunl0 goes, vxlan.calico comes, traffic
    # keeps flowing through the new tunnel.
    pool = c.ds.get("IPPool", "pool1")
    pool["spec"]["ipipMode"], pool["spec"]["vxlanMode"] = "Never", "Always"
    c.ds.update(pool)
    b2 = c.blocks_of("n2")[0]
    wait_for(
        "routes via vxlan.calico", lambda: c.routes("n1").get(b2, {}).get("dev") == "vxlan.calico"
    )
    wait_for("tunl0 gone", lambda: "tunl0" not in n1.links())
    assert "ipv4IPIPTunnelAddr" not in c.ds.get("Node", "n1")["spec"].get("bgp", {})
    wait_for(
        "n2 switched",
        lambda: c.routes("n2").get(c.blocks_of("n1")[0], {}).get("dev") == "vxlan.calico",
    )
    assert c.tcp(p1, ips["n2"]) == (ips["n1"], 100)


def test_nat_outgoing(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory({"vxlanMode": "Always", "natOutgoing": True}, nodes=2)
    c.start_agents()
    ips = {n: c.add_pod(f"p{n[1]}", n) for n in c.nodes}
    ext = c.router  # type: ignore[attr-defined]
    c.serve(ext)
    c.serve(c.pods["p2"][0])
    n1 = c.nodes["n1"]
    table = n1.exec("nft", "list", "table", "ip", "calico-nat").stdout
    assert "masq-ipam-pools" in table and POOL_CIDR in table and "masquerade" in table
    p1 = c.pods["p1"][0]
    gw = "198.18.0.254"
    assert c.tcp(p1, gw) == (c.node_ip["n1"], 100)  # the outside sees the node
    c.wait_converged()
    assert c.tcp(p1, ips["n2"]) == (ips["n1"], 100)  # pods see pods

    # The table deleted (or edited) by hand is restored on resync.
    def nat_table() -> str:
        r = n1.exec("nft", "list", "table", "ip", "calico-nat", check=False)
        return r.stdout if r.returncode == 0 else ""

    n1.exec("nft", "delete", "table", "ip", "calico-nat")
    wait_for("nat table restored", lambda: "masquerade" in nat_table(), timeout=30)
    n1.exec("nft", "flush", "chain", "ip", "calico-nat", "nat-POSTROUTING")
    wait_for("nat rule restored", lambda: "masquerade" in nat_table(), timeout=30)
    assert c.tcp(p1, gw) == (c.node_ip["n1"], 100)
    # Turning natOutgoing off removes the table (and the masquerade).
    pool = c.ds.get("IPPool", "pool1")
    pool["spec"]["natOutgoing"] = False
    c.ds.update(pool)
    wait_for("table removed", lambda: n1.exec("nft", "list", "table", "ip", "calico-nat",
                                              check=False).returncode != 0)  # fmt: skip
    assert c.tcp(p1, gw, timeout=0.5) is None  # the outside has no route back to the pod
