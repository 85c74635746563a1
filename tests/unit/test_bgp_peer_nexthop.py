"""BGPPeer next hops and reachability in the computed and rendered BIRD config:
``keepOriginalNextHop`` (Keep towards eBGP peers only, as Calico), ``reachableBy`` (a static
route to the peer via the gateway), ``numAllowedLocalASNumbers`` (``allow local as``), and the
third-party next hop towards eBGP peers on the node's own subnet (relayed routes keep the next
hop of the node hosting the block)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.bgp import BgpInputError, compute_bird_config, render_bird_config
from tests.unit.test_bgp_helpers import node, peer, pool
from tests.unit.test_bgp_render import _bird_parse, _protocol

NODES = [node("n1", "198.18.0.1", "fd00::1"), node("n2", "198.18.0.2", "fd00::2")]
POOLS = [pool("p", "10.244.0.0/16")]


def _text(*peers: dict[str, object]) -> str:
    return render_bird_config(compute_bird_config("n1", nodes=NODES, pools=POOLS, peers=peers))


def test_keep_original_next_hop_applies_to_ebgp_peers_only(tmp_path: Path) -> None:
    text = _text(
        peer("ext", peerIP="192.0.2.1", asNumber=64513, keepOriginalNextHop=True),
        peer("int", peerIP="192.0.2.2", asNumber=64512, keepOriginalNextHop=True),
    )
    assert "next hop keep;" in _protocol(text, "Global_192_0_2_1")
    assert "next hop" not in _protocol(text, "Global_192_0_2_2")
    _bird_parse(text, tmp_path)


def test_ebgp_peer_on_our_subnet_gets_the_hosting_nodes_next_hop(tmp_path: Path) -> None:
    text = _text(
        peer("tor", peerIP="198.18.0.254", asNumber=64513),
        peer("tor6", peerIP="fd00::fe", asNumber=64513),
        peer("far", peerIP="192.0.2.1", asNumber=64513),
        peer("ibgp", peerIP="198.18.0.250", asNumber=64512),
        peer("self", peerIP="198.18.0.253", asNumber=64513, nextHopMode="Self"),
    )
    keep = "if ( defined(bgp_next_hop) && bgp_next_hop ~ {} ) then bgp_next_hop = bgp_next_hop;"
    assert keep.format("198.18.0.0/24") in _protocol(text, "Global_198_18_0_254")
    assert keep.format("fd00::/64") in _protocol(text, "Global_fd00__fe")
    for name in ("Global_192_0_2_1", "Global_198_18_0_250", "Global_198_18_0_253"):
        assert "bgp_next_hop" not in _protocol(text, name), name
    _bird_parse(text, tmp_path)


def test_reachable_by_renders_a_static_route_to_the_peer(tmp_path: Path) -> None:
    text = _text(
        peer("rr", peerIP="10.225.0.4", asNumber=65515, reachableBy="198.18.0.254"),
        peer("rr6", peerIP="fd01::4", asNumber=65515, reachableBy="fd00::fe"),
    )
    assert "route 10.225.0.4/32 via 198.18.0.254;" in text
    assert "route fd01::4/128 via fd00::fe;" in text
    _bird_parse(text, tmp_path)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"peerIP": "10.225.0.4", "reachableBy": "fd00::1"}, "spec.reachableBy"),
        ({"peerIP": "10.225.0.4", "reachableBy": "nope"}, "spec.reachableBy"),
        ({"peerIP": "10.225.0.4", "numAllowedLocalASNumbers": -1}, "spec.numAllowedLocalASNumbers"),
        ({"peerIP": "10.225.0.4", "numAllowedLocalASNumbers": True}, "numAllowedLocalASNumbers"),
    ],
)
def test_bad_peer_fields_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(BgpInputError, match=field):
        _text(peer("bad", asNumber=65515, **spec))


def test_num_allowed_local_as_numbers(tmp_path: Path) -> None:
    text = _text(peer("ext", peerIP="192.0.2.1", asNumber=64513, numAllowedLocalASNumbers=2))
    assert "allow local as 2;" in _protocol(text, "Global_192_0_2_1")
    _bird_parse(text, tmp_path)


def test_restart_mode_long_lived_uses_max_restart_time_as_stale_time(tmp_path: Path) -> None:
    text = _text(
        peer("gr", peerIP="192.0.2.1", asNumber=64513, maxRestartTime="90s"),
        peer(
            "llgr",
            peerIP="192.0.2.2",
            asNumber=64513,
            restartMode="LongLivedGracefulRestart",
            maxRestartTime="2h",
        ),
        peer("llgr0", peerIP="192.0.2.3", asNumber=64513, restartMode="LongLivedGracefulRestart"),
    )
    gr = _protocol(text, "Global_192_0_2_1")
    assert "graceful restart time 90;" in gr and "long lived" not in gr
    llgr = _protocol(text, "Global_192_0_2_2")
    assert "long lived graceful restart on;" in llgr and "long lived stale time 7200;" in llgr
    assert "graceful restart time" not in llgr
    llgr0 = _protocol(text, "Global_192_0_2_3")
    assert "long lived graceful restart on;" in llgr0 and "stale time" not in llgr0
    _bird_parse(text, tmp_path)
    with pytest.raises(BgpInputError, match=r"spec\.restartMode"):
        _text(peer("bad", peerIP="192.0.2.1", asNumber=64513, restartMode="Never"))
