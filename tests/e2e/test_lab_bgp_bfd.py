"""calico-lab e2e: BGP advertisements seen by the FRR ToR, and BFD failover of the mesh.

One 3-node lab with the FRR ToR and one pod per node.
- Advertisements: BGPConfiguration service ranges (cluster, external, load balancer) reach the
  ToR from every node, with the communities ``prefixAdvertisements`` attach (standard and
  large); IPPool ``disableBGPExport`` withdraws the pool's blocks from the ToR and re-enabling
  it brings them back.
- Next hops and peer options at the ToR: every path of a block points at the node hosting it
  (not at the mesh node relaying it); a BGPFilter's AddCommunity and PrependASPath reach the
  ToR and its community + AS-path-prefix import match rejects the ToR's tagged route;
  ``reachableBy`` becomes a kernel route to the peer via the gateway;
  ``numAllowedLocalASNumbers`` lets a path containing the node's own AS in.
- BFD (last: it kills node1's underlay): with ``nodeMeshFailureDetectionMode:
  BFDIfDirectlyConnected`` for the mesh, ``failureDetectionMode`` on the ToR's BGPPeer (and
  FRR's ``bfdd`` told to peer single-hop), BFD timers 100 ms x 5, setting node1's ``eth0``
  down inside its namespace withdraws node1's block on node2, node3 and the ToR in under
  1 s each (timed by the kernel route deletion seen by ``ip -ts monitor`` against the moment
  of the link change). Before that, node1's BIRD is killed (calico-node restarts it) and then
  node1's calico-node is restarted (SIGTERM: BIRD leaves with ``graceful restart``): node2,
  node3 and the ToR never lose node1's block (graceful restart, and the agent's BFD guard
  telling a restarting peer from a dead one; gaps printed).
- BFD with a route reflector (its own 3-node lab, node1 reflecting): BIRD killed on a client
  and on the reflector never unroutes the client's block on the other client; the client's
  link cut withdraws it on the reflector and the other client in under 1 s.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Lab, wait_for
from tests.e2e.failover import route_gaps, withdrawal_times

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

SERVICES = {"10.96.0.0/12", "192.0.2.0/24", "198.51.100.0/24"}
ADVERTS = """
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceExternalIPs: [{cidr: 192.0.2.0/24}]
  serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}]
  communities: [{name: pods, value: "64512:100"}]
  prefixAdvertisements:
  - {cidr: 10.244.0.0/16, communities: [pods]}
  - {cidr: 10.96.0.0/12, communities: ["64512:300", "64512:7:9"]}
"""
BFD = """
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  nodeMeshFailureDetectionMode: BFDIfDirectlyConnected
---
apiVersion: projectcalico.org/v3
kind: BFDConfiguration
metadata: {name: lab}
spec:
  interfaces: [{matchPattern: eth0, idleSendInterval: 1s}]
"""


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    lab = lab_factory()
    lab.up("--nodes", "3", "--tor")
    for i in (1, 2, 3):
        lab.pod(f"node{i}", f"default/p{i}")
    yield lab


def _apply(lab: Lab, yaml: str) -> None:
    lab.run("calicoctl", "--name", lab.name, "apply", "-f", "-", input=yaml)


def _blocks(lab: Lab) -> dict[str, str]:
    """Pod block -> node underlay IP."""
    state = lab.state()
    nodes = {n["name"]: n["ip"].split("/")[0] for n in state["nodes"]}
    out = {}
    for p in state["pods"]:
        ip = ipaddress.ip_address(p["ips"][0].split("/")[0])
        out[str(ipaddress.ip_network(f"{ip}/26", strict=False))] = nodes[p["node"]]
    return out


def _tor_routes(lab: Lab) -> dict[str, Any]:
    routes: dict[str, Any] = json.loads(lab.run("tor", "show bgp ipv4 unicast json").stdout)[
        "routes"
    ]
    return routes


def _tor_paths(lab: Lab, prefix: str) -> list[dict[str, Any]]:
    out = json.loads(lab.run("tor", f"show bgp ipv4 unicast {prefix} json").stdout)
    paths: list[dict[str, Any]] = out.get("paths", [])
    return paths


def test_tor_sees_service_ranges_communities_and_disable_bgp_export(lab: Lab) -> None:
    _apply(lab, ADVERTS)
    blocks = _blocks(lab)
    routes: dict[str, Any] = {}

    def advertised() -> bool:
        nonlocal routes
        routes = _tor_routes(lab)
        return SERVICES | set(blocks) <= set(routes)

    assert wait_for(advertised, 20, 0.5), sorted(routes)
    # every node originates every service range
    nodes = {n["ip"].split("/")[0] for n in lab.state()["nodes"]}
    for cidr in SERVICES:
        hops = {h["ip"] for path in routes[cidr] for h in path.get("nexthops", [])}
        assert hops == nodes, (cidr, hops)
    # communities: standard + large on the cluster IP range, the named one on pod blocks
    for path in _tor_paths(lab, "10.96.0.0/12"):
        assert path["community"]["string"] == "64512:300", path
        assert path["largeCommunity"]["string"] == "64512:7:9", path
    block = next(iter(blocks))
    for path in _tor_paths(lab, block):
        assert path["community"]["string"] == "64512:100", path
        assert "largeCommunity" not in path
    for path in _tor_paths(lab, "192.0.2.0/24"):
        assert "community" not in path, path
    # disableBGPExport: the pool's blocks leave the ToR, the service ranges stay
    lab.calicoctl(
        "patch", "ippool", "default-ipv4-ippool", "-p", '{"spec":{"disableBGPExport":true}}'
    )
    try:
        assert wait_for(lambda: not set(blocks) & set(_tor_routes(lab)), 20, 0.5)
        assert set(_tor_routes(lab)) >= SERVICES
    finally:
        lab.calicoctl(
            "patch", "ippool", "default-ipv4-ippool", "-p", '{"spec":{"disableBGPExport":false}}'
        )
    assert wait_for(lambda: set(blocks) <= set(_tor_routes(lab)), 20, 0.5)


PEER_OPTIONS = """
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: tor-policy}
spec:
  exportV4:
  - action: Accept
    cidr: 10.244.0.0/16
    matchOperator: In
    operations:
    - addCommunity: {value: "64512:555"}
    - prependASPath: {prefix: [65001, 65002]}
  importV4:
  - {action: Reject, asPathPrefix: [64513], communities: {values: ["64513:7"]}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: far-rr}
spec: {peerIP: 203.0.113.7, asNumber: 64513, reachableBy: 198.18.0.253, nodeSelector: all()}
"""
TOR_OUT = [  # the ToR tags its 203.0.113.0/24 towards node1 with 64513:7
    "configure terminal",
    "route-map b2tag permit 10",
    "set community 64513:7",
    "exit",
    "router bgp 64513",
    "address-family ipv4 unicast",
    "neighbor 198.18.0.1 route-map b2tag out",
    "end",
    "clear bgp ipv4 unicast 198.18.0.1 soft out",
]


def _bird_route(lab: Lab, node: str, prefix: str) -> str:
    sock = lab.dir / lab.name / node / "bird.ctl"
    return lab.exec(
        node, "birdc", "-s", str(sock), "show", "route", prefix, "all", check=False
    ).stdout


def test_tor_sees_hosting_node_next_hops_and_peer_options(lab: Lab) -> None:
    """Every path the ToR holds for a block points at the node hosting it (the mesh relays
    it too); BGPFilter operations and matches, reachableBy and numAllowedLocalASNumbers."""
    blocks = _blocks(lab)
    assert wait_for(lambda: set(blocks) <= set(_tor_routes(lab)), 20, 0.5)
    for block, host in blocks.items():
        hops = {h["ip"] for p in _tor_paths(lab, block) for h in p.get("nexthops", [])}
        assert hops == {host}, (block, hops)
    _apply(lab, PEER_OPTIONS)
    lab.calicoctl("patch", "bgppeer", "tor", "-p", '{"spec":{"filters":["tor-policy"]}}')
    lab.run("tor", *TOR_OUT)
    try:
        block = next(b for b, ip in blocks.items() if ip == "198.18.0.1")

        def exported() -> bool:
            paths = _tor_paths(lab, block)
            return bool(paths) and all(
                p["aspath"]["string"] == "64512 65001 65002"
                and "64512:555" in p.get("community", {}).get("string", "").split()
                for p in paths
            )

        assert wait_for(exported, 20, 0.5), _tor_paths(lab, block)
        hops = {h["ip"] for p in _tor_paths(lab, block) for h in p.get("nexthops", [])}
        assert hops == {"198.18.0.1"}, hops
        # reachableBy: node1 routes the far peer via the ToR (a static route BIRD programs)
        assert wait_for(
            lambda: (
                "via 198.18.0.253" in lab.exec("node1", "ip", "route", "show", "203.0.113.7").stdout
            ),
            20,
            0.5,
        )
        # import: the ToR's tagged route (community 64513:7, path starting 64513) is rejected
        # on node1; node2 gets it untagged and keeps it
        assert wait_for(lambda: "64513" in _bird_route(lab, "node2", "203.0.113.0/24"), 20, 0.5)
        assert wait_for(
            lambda: "Global_" not in _bird_route(lab, "node1", "203.0.113.0/24"), 20, 0.5
        )
        # numAllowedLocalASNumbers: without the filter, node1 takes the path with its own AS
        # in it only with "allow local as"
        lab.calicoctl("patch", "bgppeer", "tor", "-p", '{"spec":{"filters":[]}}')
        assert wait_for(lambda: "Global_" in _bird_route(lab, "node1", "203.0.113.0/24"), 20, 0.5)
        lab.run(
            "tor",
            "configure terminal",
            "route-map b2tag permit 10",
            "set as-path prepend 64512",
            "end",
            "clear bgp ipv4 unicast 198.18.0.1 soft out",
        )
        assert wait_for(
            lambda: "Global_" not in _bird_route(lab, "node1", "203.0.113.0/24"), 20, 0.5
        )
        lab.calicoctl("patch", "bgppeer", "tor", "-p", '{"spec":{"numAllowedLocalASNumbers":1}}')
        assert wait_for(
            lambda: "64513 64512" in _bird_route(lab, "node1", "203.0.113.0/24"), 30, 0.5
        ), _bird_route(lab, "node1", "203.0.113.0/24")
    finally:
        lab.calicoctl(
            "patch", "bgppeer", "tor", "-p", '{"spec":{"filters":[],"numAllowedLocalASNumbers":0}}'
        )
        lab.calicoctl("delete", "bgppeer", "far-rr")
        lab.run(
            "tor",
            "configure terminal",
            "router bgp 64513",
            "address-family ipv4 unicast",
            "no neighbor 198.18.0.1 route-map b2tag out",
            "end",
            "clear bgp ipv4 unicast 198.18.0.1 soft out",
        )


TOR_BFD = [
    "configure terminal",
    "bfd",
    "profile fast",
    "receive-interval 100",
    "transmit-interval 100",
    "detect-multiplier 5",
    "exit",
    "exit",
    "router bgp 64513",
] + [
    line
    for ip in ("198.18.0.1", "198.18.0.2", "198.18.0.3")
    for line in (f"no neighbor {ip} ebgp-multihop", f"neighbor {ip} bfd profile fast")
]


def test_bfd_withdraws_a_dead_nodes_routes_in_under_a_second(lab: Lab) -> None:
    _apply(lab, BFD)
    lab.calicoctl(
        "patch",
        "bgppeer",
        "tor",
        "-p",
        '{"spec":{"failureDetectionMode":"BFDIfDirectlyConnected"}}',
    )
    lab.run("tor", *TOR_BFD)
    sock = lab.dir / lab.name / "node2" / "bird.ctl"
    out = ""

    def bfd_up() -> bool:
        nonlocal out
        out = lab.exec("node2", "birdc", "-s", str(sock), "show", "bfd", "sessions").stdout
        return out.count(" Up ") == 3  # node1, node3 and the ToR

    assert wait_for(bfd_up, 30, 0.5), out
    tor_bfd = ""

    def tor_bfd_up() -> bool:
        nonlocal tor_bfd
        tor_bfd = lab.run("tor", "show bfd peers brief").stdout
        return tor_bfd.count(" up ") == 3

    assert wait_for(tor_bfd_up, 30, 0.5), tor_bfd
    block = next(b for b, ip in _blocks(lab).items() if ip == "198.18.0.1")
    routes = ""

    def routed() -> bool:  # the sessions restarted as single-hop: wait for the re-learn
        nonlocal routes
        routes = lab.exec("node2", "ip", "route", "show", block).stdout
        routes += lab.exec("tor", "ip", "route", "show", block).stdout
        return routes.count("via 198.18.0.1") == 2

    assert wait_for(routed, 20, 0.5), routes
    # BIRD killed, then the agent restarted, on node1: every peer sees the BGP session close
    # before BFD times out and keeps node1's routes (FRR ignores a BFD down during graceful
    # restart; the BIRD peers' BFD guard too), until the new BIRD has re-sent them.
    watchers = ["node2", "node3", "tor"]
    restarts: list[tuple[str, Callable[[], object]]] = [
        ("BIRD kill -9", lambda: _kill_bird(lab, "node1")),
        ("calico-node restart", lambda: lab.run("node", "restart", "node1")),
    ]
    for what, fault in restarts:
        gaps = route_gaps(lab, watchers, block, fault, 8)
        print(f"\n{what} on node1 with BFD: {block} unrouted for {gaps}")
        assert all(g == 0 for g in gaps.values()), (what, gaps)
        assert wait_for(bfd_up, 30, 0.5), out
        assert wait_for(tor_bfd_up, 30, 0.5), tor_bfd
        assert wait_for(lambda: _mesh_established(lab, "node2", "Mesh_198_18_0_1"), 30, 0.5)
        assert wait_for(routed, 20, 0.5), routes
    secs = withdrawal_times(lab, "node1", ["node2", "node3", "tor"], block, limit=10)
    print(f"\nBFD withdrawal of {block}: " + ", ".join(f"{k} {v:.3f} s" for k, v in secs.items()))
    assert all(0 < s < 1.0 for s in secs.values()), secs


def _mesh_established(lab: Lab, node: str, proto: str) -> bool:
    sock = lab.dir / lab.name / node / "bird.ctl"
    out = lab.exec(node, "birdc", "-s", str(sock), "show", "protocols", proto, check=False)
    return "Established" in out.stdout


def _kill_bird(lab: Lab, node: str) -> None:
    os.kill(int((lab.dir / lab.name / node / "bird.pid").read_text().split()[0]), signal.SIGKILL)


def test_bfd_with_route_reflector_fast_failover_and_hitless_restarts(
    lab_factory: Callable[[], Lab],
) -> None:
    """Route reflector lab (node1 reflects for node2 and node3), BFD on the reflector
    sessions: BIRD killed on a client (node2) and on the reflector never unroutes node2's
    block on node3 (which learns it only through the reflector); node2's link cut withdraws
    it on the reflector and on node3 in under 1 s."""
    lab = lab_factory()
    lab.up("--nodes", "3", "--route-reflectors", "1")
    lab.pod("node2", "default/p2")
    lab.pod("node3", "default/p3")
    _apply(lab, BFD.split("---")[1])  # the BFDConfiguration only: the mesh stays off
    lab.calicoctl(
        "patch",
        "bgppeer",
        "peer-with-route-reflectors",
        "-p",
        '{"spec":{"failureDetectionMode":"BFDIfDirectlyConnected"}}',
    )
    block = next(b for b, ip in _blocks(lab).items() if ip == "198.18.0.2")

    def settled() -> bool:
        bfd = {
            n: lab.exec(
                n, "birdc", "-s", str(lab.dir / lab.name / n / "bird.ctl"), "show", "bfd",
                "sessions", check=False,
            ).stdout.count(" Up ")
            for n in ("node1", "node2", "node3")
        }  # fmt: skip
        routed = "via 198.18.0.2" in lab.exec("node3", "ip", "route", "show", block).stdout
        return (
            bfd == {"node1": 2, "node2": 1, "node3": 1}
            and routed
            and all(
                _mesh_established(lab, n, p)
                for n, p in (("node1", "Node_198_18_0_2"), ("node3", "Node_198_18_0_1"))
            )
        )

    assert wait_for(settled, 60, 0.5)
    for victim in ("node2", "node1"):
        gaps = route_gaps(lab, ["node1", "node3"], block, lambda v=victim: _kill_bird(lab, v), 8)
        print(f"\nBIRD kill -9 on {victim} (RR lab, BFD): {block} unrouted for {gaps}")
        assert all(g == 0 for g in gaps.values()), (victim, gaps)
        assert wait_for(settled, 60, 0.5)
    secs = withdrawal_times(lab, "node2", ["node1", "node3"], block, limit=10)
    print(
        f"\nBFD withdrawal of {block} (RR lab): "
        + ", ".join(f"{k} {v:.3f} s" for k, v in secs.items())
    )
    assert all(0 < s < 1.0 for s in secs.values()), secs
