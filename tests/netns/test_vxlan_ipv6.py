"""IPv6 VXLAN on a real kernel: dual-stack nodes (IPv4 + IPv6 underlay on one bridge), an IPv6
pool in VXLAN mode, one Felix per node (its IPv6 route driver next to the IPv4 one, in the one
owner loop); a pod's IPv6 TCP connection to a pod on another node goes through
``vxlan-v6.calico`` (VXLAN over the IPv6 underlay, VNI 4096 on the wire)."""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from collections.abc import Callable

import pytest

from pycalico.felix.calc.routetypes import ROUTE_PROTO
from pycalico.ipam import IPAM
from tests.fixtures.netns import Netns
from tests.kit import ip_pool, workload_endpoint
from tests.netns.test_routes_netns import (
    CLIENT,
    ECHO_PORT,
    Cluster,
    capture,
    cluster_factory,
    wait_for,
)

__all__ = ["cluster_factory"]

pytestmark = [pytest.mark.netns, pytest.mark.slow]

POOL6 = "fd00:244::/48"
HOST_LL = "fe80::ecee:eeff:feee:eeee"  # the link-local address of a host-side cali veth
SERVER6 = r"""
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    data = b""
    while True:
        b = c.recv(1 << 20)
        if not b: break
        data += b
    c.sendall(peer[0].encode() + b" " + data)
    c.close()
"""


def _no_dad(ns: Netns) -> None:
    for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
        ns.sysctl(key, 0)


def _pod6(c: Cluster, name: str, node: str) -> str:
    """A workload with only an IPv6 address (from IPAM), wired as Calico does for IPv6."""
    v6 = IPAM(c.ds, lock_path=str(c.tmp / "ipam.lock")).auto_assign(
        0, 1, f"h-{name}", {"node": node, "pod": name}, node
    )[1]
    ip = str(v6[0].ip)
    host_if = "cali" + hashlib.sha1(name.encode()).hexdigest()[:11]
    pod = c.f.netns(name)
    _no_dad(pod)
    node_ns = c.nodes[node]
    c.f.veth(pod, "eth0", node_ns, host_if, up=False)
    node_ns.batch([f"link set {host_if} address ee:ee:ee:ee:ee:ee", f"link set {host_if} up"])
    pod.batch([f"addr add {ip}/128 dev eth0 nodad", "link set eth0 up",
               f"neigh replace {HOST_LL} lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent",
               f"route add default via {HOST_LL} dev eth0"])  # fmt: skip
    mac = pod.links()["eth0"]["address"]
    node_ns.batch([f"route replace {ip}/128 dev {host_if}",
                   f"neigh replace {ip} lladdr {mac} dev {host_if} nud permanent"])  # fmt: skip
    wep = workload_endpoint(name, namespace="default", node=node, ip=f"{ip}/128",
                            interface_name=host_if, profiles=["projectcalico-default-allow"],
                            ports=None, name=f"{node}-k8s-{name}-eth0")  # fmt: skip
    c.ds.create(wep)
    wait_for(  # Felix polices the pod's interface (an unknown cali* interface is dropped)
        f"{name}'s endpoint chain",
        lambda: node_ns.exec("nft", "list", "chain", "ip6", "calico", f"cali-tw-{host_if}",
                             check=False).returncode == 0,
    )  # fmt: skip
    return ip


def test_ipv6_vxlan_cross_node_tcp(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory({"vxlanMode": "Always"}, nodes=2)
    c.ds.create(ip_pool("pool6", POOL6, block_size=122, vxlan_mode="Always"))
    ip6 = {}
    for i, (name, ns) in enumerate(c.nodes.items(), start=1):
        _no_dad(ns)
        ip6[name] = f"fd00:18::{i}"
        ns.ip("addr", "add", f"{ip6[name]}/64", "dev", "eth0", "nodad")
        node = c.ds.get("Node", name)
        node["spec"]["bgp"]["ipv6Address"] = f"{ip6[name]}/64"
        c.ds.update(node)
    macs = {n: ns.links()["eth0"]["address"] for n, ns in c.nodes.items()}
    for a, ns in c.nodes.items():  # static underlay neighbours (see pin_segment)
        for b in c.nodes:
            if a != b:
                ns.ip("neigh", "replace", ip6[b], "lladdr", macs[b], "dev", "eth0", "nud",
                      "permanent")  # fmt: skip
    c.start_agents()
    nodes = {n["metadata"]["name"]: n["spec"] for n in c.ds.list("Node").items}
    for spec in nodes.values():
        assert ipaddress.ip_address(spec["ipv6VXLANTunnelAddr"]) in ipaddress.ip_network(POOL6)
        assert len(spec["vxlanTunnelMACAddrV6"]) == 17
        assert spec["ipv4VXLANTunnelAddr"]  # the IPv4 pool still has its own VTEP
    assert c.mtu("n1") == 1430  # 1500 - 70: IPv6 VXLAN's overhead is the largest
    n1 = c.nodes["n1"]
    dev = n1.ip_json("-d", "link", "show", "dev", "vxlan-v6.calico")[0]
    data = dev["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local6"]) == (4096, 4789, ip6["n1"])
    assert dev["address"] == nodes["n1"]["vxlanTunnelMACAddrV6"] and dev["mtu"] == 1430

    p1, p2 = _pod6(c, "q1", "n1"), _pod6(c, "q2", "n2")
    srv = c.f.namespaces[-1].popen("/usr/bin/python3", "-c", SERVER6, str(ECHO_PORT),
                                   stdout=subprocess.PIPE)  # fmt: skip
    assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"

    def routes6(ns: Netns) -> dict[str, dict[str, object]]:
        return {r["dst"]: r for r in ns.routes("proto", str(ROUTE_PROTO), family="-6")}

    b2 = [b["spec"]["cidr"] for b in c.ds.list("IPAMBlock").items
          if b["spec"]["affinity"] == "host:n2" and ":" in b["spec"]["cidr"]]  # fmt: skip
    wait_for("IPv6 route to n2's block", lambda: b2[0] in routes6(n1))
    r = routes6(n1)[b2[0]]
    assert (r["dev"], r["gateway"]) == ("vxlan-v6.calico", nodes["n2"]["ipv6VXLANTunnelAddr"])
    neigh = n1.ip_json("-6", "neigh", "show", "dev", "vxlan-v6.calico")
    assert [(x["dst"], x["lladdr"]) for x in neigh] == [
        (nodes["n2"]["ipv6VXLANTunnelAddr"], nodes["n2"]["vxlanTunnelMACAddrV6"])
    ]
    q1 = c.f.namespaces[-2]
    with capture(c.nodes["n2"], "eth0", "ip6 and udp port 4789") as lines:
        out = q1.exec("/usr/bin/python3", "-c", CLIENT, p2, str(ECHO_PORT), "3000", "3",
                      check=False, timeout=20)  # fmt: skip
    assert out.stdout.split() == [p1, "3000"], (out.stdout, out.stderr)
    assert any("vni 4096" in x for x in lines), lines[:5]
    assert any(ip6["n1"] in x and ip6["n2"] in x for x in lines)
