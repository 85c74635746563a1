"""Felix (its route driver) next to real BIRD 2 on the same nodes: each owns its routes and
never touches the other's. A VXLAN pool (Felix: protocol 80) and a no-encap pool (BIRD:
protocol bird) side by side; a pod in one pool talks to a pod in the other across nodes; BIRD
reloads and our full resyncs leave both route sets in place."""

from __future__ import annotations

import ipaddress
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.bgp import BirdManager, compute_bird_config, inputs_from_datastore
from pycalico.ipam import IPAM
from tests.kit import ip_pool
from tests.netns.test_routes_netns import POOL_CIDR as POOL
from tests.netns.test_routes_netns import Cluster, cluster_factory, wait_for

__all__ = ["cluster_factory"]  # the fixture, re-exported for this module's tests

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed"),
]
PLAIN = "10.96.0.0/16"


@pytest.fixture
def birds(tmp_path: Path) -> Iterator[list[BirdManager]]:
    managers: list[BirdManager] = []
    yield managers
    for m in managers:
        m.stop()


def _bird_routes(c: Cluster, node: str) -> dict[str, dict[str, Any]]:
    out = {}
    for r in c.nodes[node].routes("proto", "bird"):
        dst = r["dst"] if "/" in r["dst"] else r["dst"] + "/32"
        out[dst] = r
    return out


def test_felix_and_bird_routes_coexist(
    cluster_factory: Callable[..., Cluster], birds: list[BirdManager], tmp_path: Path
) -> None:
    c = cluster_factory({"vxlanMode": "Always"}, nodes=2)
    c.ds.create(ip_pool("plain", PLAIN, block_size=26))
    c.start_agents()
    ipam = IPAM(c.ds, lock_path=str(tmp_path / "ipam.lock"))
    plain_block = {}
    for i, n in enumerate(c.nodes, start=1):
        net = ipaddress.ip_network(f"10.96.{i}.0/26")
        ipam.claim_affinity(net, n)
        plain_block[n] = str(net)
    for n, ns in c.nodes.items():
        d = tmp_path / f"bird-{n}"
        d.mkdir()
        m = BirdManager(str(d / "bird.cfg"), str(d / "bird.ctl"),
                        command_prefix=["ip", "netns", "exec", ns.name],
                        log_path=str(d / "bird.log"))  # fmt: skip
        birds.append(m)
        m.write_config(_render(c, n))
        m.start()
    ip1 = c.add_pod("p1", "n1")  # from the VXLAN pool (Felix's routes)
    ip2 = c.add_pod("p2", "n2", ip=str(ipaddress.ip_network(plain_block["n2"])[7]))  # BIRD's
    c.serve(c.pods["p2"][0])
    c.wait_converged()
    wait_for("BIRD route to n2's plain block",
             lambda: plain_block["n2"] in _bird_routes(c, "n1"), timeout=20)  # fmt: skip

    def check() -> None:
        ours, bird = c.routes("n1"), _bird_routes(c, "n1")
        vx = ipaddress.ip_network(POOL)
        # BIRD programs nothing inside the Felix-owned VXLAN pool ...
        assert not [d for d in bird if ipaddress.ip_network(d).subnet_of(vx)], bird
        # ... and we program nothing inside its no-encap pool (except workload /32s).
        assert not [d for d, r in ours.items()
                    if ipaddress.ip_network(d).subnet_of(ipaddress.ip_network(PLAIN))
                    and r.get("scope") != "link"], ours  # fmt: skip
        assert bird[plain_block["n2"]]["gateway"] == c.node_ip["n2"]
        assert bird[plain_block["n1"]]["type"] == "blackhole"
        assert ours[c.blocks_of("n2")[0]]["dev"] == "vxlan.calico"

    check()
    assert c.tcp(c.pods["p1"][0], ip2) == (ip1, 100)
    # BIRD reconfigures and rescans (scan time 2 s); we run full resyncs (1 s): nothing moves.
    for m in birds:
        m.reload()
    c.agents["n1"].send_signal(signal.SIGHUP)
    time.sleep(2.5)
    check()
    assert c.tcp(c.pods["p1"][0], ip2) == (ip1, 100)


def _render(c: Cluster, node: str) -> str:
    from pycalico.bgp import render_bird_config

    cfg = compute_bird_config(node, **inputs_from_datastore(c.ds, node))
    return render_bird_config(cfg)
