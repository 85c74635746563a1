"""calico-lab e2e: ``--tor`` adds an FRR top-of-rack router peering over eBGP with every node.

One 3-node lab with one pod per node: FRR learns every pod block from the node that owns it
(``show ip bgp json``), FRR's own prefix reaches every node's kernel through BIRD, and every
node reports its global peer Established.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

TOR_IP = "198.18.0.253"
TOR_PREFIX = "203.0.113.0/24"


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    lab = lab_factory()
    lab.up("--nodes", "3", "--tor")
    for i in (1, 2, 3):
        lab.pod(f"node{i}", f"default/p{i}")
    yield lab


def _tor_routes(lab: Lab) -> dict[str, Any]:
    out = lab.run("tor", "show ip bgp json").stdout
    routes: dict[str, Any] = json.loads(out)["routes"]
    return routes


def test_every_node_peers_with_the_tor(lab: Lab) -> None:
    st = lab.status()
    assert st["tor"]["ip"] == TOR_IP and st["tor"]["as"] == 64513
    assert st["tor"]["peers"] == dict.fromkeys(["198.18.0.1", "198.18.0.2", "198.18.0.3"],
                                               "Established")  # fmt: skip
    for n in st["nodes"]:
        glob = [b for b in n["bgp"] if b["peer"] == TOR_IP]
        assert len(glob) == 1, n["bgp"]
        assert glob[0]["type"] == "global"
        assert glob[0]["info"] == "Established"
    summary = json.loads(lab.run("tor", "show bgp summary json").stdout)
    peers = summary["ipv4Unicast"]["peers"]
    assert sorted(peers) == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert {p["state"] for p in peers.values()} == {"Established"}
    assert {p["remoteAs"] for p in peers.values()} == {64512}


def test_tor_learns_every_pod_block_from_its_node(lab: Lab) -> None:
    state = lab.state()
    nodes = {n["name"]: n["ip"].split("/")[0] for n in state["nodes"]}
    want = {}
    for p in state["pods"]:
        ip = ipaddress.ip_address(p["ips"][0].split("/")[0])
        block = ipaddress.ip_network(f"{ip}/26", strict=False)
        want[str(block)] = nodes[p["node"]]
    assert len(want) == 3

    routes: dict[str, Any] = {}

    def learned() -> bool:
        nonlocal routes
        routes = _tor_routes(lab)
        return all(b in routes for b in want)

    assert wait_for(learned, 15, 0.5), sorted(routes)
    for block, owner in want.items():
        hops = {h["ip"] for path in routes[block] for h in path.get("nexthops", [])}
        assert hops == {owner}, (block, owner, hops)  # relayed paths keep the owner's hop
        assert all(path["path"].split()[-1] == "64512" for path in routes[block])
    # and the ToR's kernel got a route to each block (zebra), so it reaches the pods
    kroutes = lab.exec("tor", "ip", "route", "show", "proto", "bgp").stdout
    for block in want:
        assert block in kroutes, kroutes
    pod_ip = state["pods"][0]["ips"][0].split("/")[0]
    assert lab.exec("tor", "ping", "-c", "1", "-W", "2", pod_ip, check=False).returncode == 0


def test_tor_prefix_reaches_every_node_kernel(lab: Lab) -> None:
    for i in (1, 2, 3):
        out = ""

        def present(node: str = f"node{i}") -> bool:
            nonlocal out
            out = lab.exec(node, "ip", "route", "show", TOR_PREFIX).stdout
            return f"via {TOR_IP}" in out

        assert wait_for(present, 15, 0.5), (i, out)
        assert "proto bird" in out


def test_down_stops_frr(lab: Lab) -> None:
    pids = lab.state()["tor_pids"]
    assert len(pids) == 3
    for pid in pids:
        assert Path(f"/proc/{pid}/comm").read_text().strip() in ("zebra", "bgpd", "bfdd")
    runtime = (lab.dir / lab.name / "tor").resolve()
    lab.down()
    assert not runtime.exists()
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        assert stat == "Z", (pid, stat)
