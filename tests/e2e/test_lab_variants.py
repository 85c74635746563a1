"""calico-lab e2e variants: route reflector over etcd, VXLAN, VXLAN CrossSubnet.

Each variant is its own small lab (3 nodes, one pod per node): every pod must reach every
other, and the BGP sessions must match the topology. The route-reflector lab has the FRR ToR
too: every path it holds for a block points at the node hosting it (issue 17: it used to
prefer the reflector's relayed path, next hop the reflector).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]


def _pods(lab: Lab, n: int = 3) -> None:
    for i in range(1, n + 1):
        lab.pod(f"node{i}", f"default/p{i}")


def _all_allowed(lab: Lab, n: int = 3) -> None:
    m = lab.matrix_settled(lambda m: set(m.values()) == {"allow"})
    assert len(m) == n * (n - 1)
    assert sorted(k for k, v in m.items() if v != "allow") == []


def test_route_reflector_over_etcd(lab_factory: Callable[[], Lab]) -> None:
    lab = lab_factory()
    lab.up("--nodes", "3", "--route-reflectors", "1", "--datastore", "etcd", "--tor")
    nodes = {n["name"]: n for n in lab.status()["nodes"]}
    rr_ip = nodes["node1"]["ip"]
    cluster = {n: [b for b in nodes[n]["bgp"] if b["type"] != "global"] for n in nodes}
    # clients peer only with the reflector (and the ToR); the reflector with both clients
    for name in ("node2", "node3"):
        assert [(b["peer"], b["info"]) for b in cluster[name]] == [(rr_ip, "Established")]
    assert sorted(b["peer"] for b in cluster["node1"]) == sorted(
        [nodes["node2"]["ip"], nodes["node3"]["ip"]]
    )
    assert all(b["type"] != "node-to-node mesh" for n in nodes.values() for b in n["bgp"])
    _pods(lab)
    _all_allowed(lab)
    # The ToR hears every block from all three nodes (the reflector and the clients relay
    # them) and every path's next hop is the node hosting the block, not the relay.
    hosts = {}
    for p in lab.state()["pods"]:
        ip = ipaddress.ip_address(p["ips"][0].split("/")[0])
        block = str(ipaddress.ip_network(f"{ip}/26", strict=False))
        hosts[block] = nodes[p["node"]]["ip"]
    seen: dict[str, set[str]] = {}

    def tor_paths_settled() -> bool:
        routes = json.loads(lab.run("tor", "show bgp ipv4 unicast json").stdout)["routes"]
        for block in hosts:
            paths = routes.get(block, [])
            seen[block] = {h["ip"] for path in paths for h in path.get("nexthops", [])}
            if len(paths) != 3:
                return False
        return True

    assert wait_for(tor_paths_settled, 30, 0.5), seen
    assert seen == {b: {ip} for b, ip in hosts.items()}, (seen, hosts)
    # the Node resources came from etcd and carry the addresses calico-node wrote
    out = lab.calicoctl("get", "nodes", "-o", "yaml").stdout
    assert "routeReflectorClusterID: 244.0.0.1" in out
    assert "ipv4Address: 198.18.0.2/24" in out


def test_vxlan(lab_factory: Callable[[], Lab]) -> None:
    lab = lab_factory()
    lab.up("--nodes", "3", "--encap", "vxlan")
    _pods(lab)
    _all_allowed(lab)
    out = lab.calicoctl("get", "node", "node1", "-o", "yaml").stdout
    assert "ipv4VXLANTunnelAddr:" in out and "vxlanTunnelMACAddr:" in out
    # pod traffic between nodes leaves through vxlan.calico on node1
    routes = lab.exec("node1", "ip", "route", "show", "dev", "vxlan.calico").stdout
    assert routes.count("onlink") >= 2, routes


def test_vxlan_crosssubnet_over_two_subnets(lab_factory: Callable[[], Lab]) -> None:
    lab = lab_factory()
    # node1, node2 on 198.18.0.0/24; node3 on 198.18.1.0/24 behind the lab router
    lab.up("--nodes", "3", "--subnets", "2", "--encap", "vxlan-crosssubnet")
    _pods(lab)
    _all_allowed(lab)
    ips = {p["node"]: str(p["ips"][0]).split("/")[0] for p in lab.state()["pods"]}

    def dev(dst: str) -> str:
        out = lab.exec("node1", "ip", "route", "get", dst).stdout.split()
        return out[out.index("dev") + 1]

    assert dev(ips["node2"]) == "eth0"  # same subnet: routed natively
    assert dev(ips["node3"]) == "vxlan.calico"  # other subnet: encapsulated
