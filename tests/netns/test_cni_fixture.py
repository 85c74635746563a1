"""Self-test of the shared netns fixture plugin (tests/fixtures/netns.py): namespaces,
veth pairs, the 198.18.0.0/15 underlay, background processes and cleanup."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.netns import NetnsFactory, sweep_stale

pytestmark = pytest.mark.netns


def test_underlay_nodes_reach_each_other_and_cleanup_removes_all() -> None:
    with NetnsFactory() as f:
        ul = f.underlay(2)
        assert ul.node_ips == ["198.18.0.1", "198.18.0.2"]
        assert ul.nodes[0].ping(ul.node_ips[1])
        assert ul.nodes[1].ping(ul.gateway or "")
        assert ul.nodes[0].read_sysctl("net.ipv4.ip_forward") == "1"
        names = [n.name for n in f.namespaces]
        assert all(os.path.exists(f"/run/netns/{n}") for n in names)
        proc = ul.nodes[0].popen("sleep", "60")
    assert proc.poll() is not None
    assert not any(os.path.exists(f"/run/netns/{n}") for n in names)


def test_veth_and_helpers(netns_factory: NetnsFactory) -> None:
    a = netns_factory.netns("a")
    b = netns_factory.netns("a")
    assert a.name != b.name and a.name.startswith(f"pct{os.getpid()}-")
    netns_factory.veth(a, "va", b, "vb", a_addr="198.19.0.1/30", b_addr="198.19.0.2/30")
    assert "198.19.0.1/30" in a.addresses("va")
    assert a.links()["va"]["operstate"] in ("UP", "LOWERLAYERDOWN", "UNKNOWN")
    assert b.ping("198.19.0.1")
    assert [r["dst"] for r in a.routes()] == ["198.19.0.0/30"]


def test_sweep_only_touches_dead_pids(netns_factory: NetnsFactory) -> None:
    mine = netns_factory.netns("live")
    assert mine.name not in sweep_stale()
    assert mine.exists()
