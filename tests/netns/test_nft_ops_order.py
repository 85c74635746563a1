"""The delta planner's order on the real kernel: removing a verdict map together with the
chains it jumps to is one delta (nft refuses to delete a chain a map still names)."""

from __future__ import annotations

import pytest

from pycalico.felix.dataplane import NftTable
from pycalico.felix.dataplane.runner import SubprocessNftRunner
from pycalico.felix.rules import NftSet, TableSpec, make_chain
from tests.fixtures.netns import NetnsFactory

pytestmark = [pytest.mark.netns]


def _spec(with_map: bool) -> TableSpec:
    chains = {"b": make_chain("b", ["iifname vmap @m"] if with_map else ["accept"])}
    sets = {}
    if with_map:
        chains["a"] = make_chain("a", ["drop"])
        sets["m"] = NftSet("m", "ifname", frozenset({'"cali1" : jump a'}), (), "verdict")
    return TableSpec("ip", "calico", chains, sets)


def test_map_and_its_chains_go_in_one_delta(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.netns("ops")
    t = NftTable(SubprocessNftRunner(netns=ns.name), "ip")
    t.set_desired(_spec(True))
    t.apply()
    assert "vmap @m" in ns.exec("nft", "list", "table", "ip", "calico").stdout
    t.set_desired(_spec(False))
    t.apply()
    listing = ns.exec("nft", "list", "table", "ip", "calico").stdout
    assert "map m" not in listing and "chain a" not in listing
    assert t.stats.full_replaces == 1 and t.stats.deltas == 1  # no fallback replace
