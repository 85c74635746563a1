"""BFD (failureDetectionMode, BFDConfiguration timers) and advertisements (service ranges,
prefixAdvertisements communities, disableBGPExport) in the computed and rendered BIRD config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode
from pycalico.bgp import BgpInputError, BirdConfig, compute_bird_config, render_bird_config
from tests.unit.test_bgp_helpers import affinity, bgpconfig, node, peer, pool, res
from tests.unit.test_bgp_render import _bird_parse, _protocol

NODES = [
    node("n1", "198.18.0.1", "fd00::1", labels={"rack": "a"}),
    node("n2", "198.18.0.2", "fd00::2"),
    node("n3", "10.9.0.3"),  # another subnet: not directly connected
]
POOLS = [pool("p", "10.244.0.0/16"), pool("noexp", "10.97.0.0/16", disableBGPExport=True)]
AFFS = [affinity("n1", "10.244.1.0/26"), affinity("n1", "10.97.1.0/26")]


def _cfg(**kw: Any) -> BirdConfig:
    args: dict[str, Any] = {"nodes": NODES, "pools": POOLS, "block_affinities": AFFS}
    args.update(kw)
    return compute_bird_config("n1", **args)


# -- BFD ---------------------------------------------------------------------------------------


def test_no_bfd_by_default() -> None:
    cfg = _cfg()
    assert not cfg.bfd
    text = render_bird_config(cfg)
    assert "protocol bfd" not in text and "bfd graceful" not in text


def test_mesh_bfd_only_towards_directly_connected_nodes(tmp_path: Path) -> None:
    cfg = _cfg(
        bgp_configurations=[bgpconfig(nodeMeshFailureDetectionMode="BFDIfDirectlyConnected")]
    )
    v4 = cfg.v4
    assert v4 is not None
    assert {p.name: p.bfd for p in v4.peers} == {"Mesh_198_18_0_2": True, "Mesh_10_9_0_3": False}
    text = render_bird_config(cfg)
    n2 = _protocol(text, "Mesh_198_18_0_2")
    assert "bfd graceful;" in n2 and "direct;" in n2 and "error wait time 1,4;" in n2
    n3 = _protocol(text, "Mesh_10_9_0_3")
    assert "bfd" not in n3 and "direct" not in n3
    assert "bfd graceful;" in _protocol(text, "Mesh_fd00__2")  # v6 too
    # Calico's BFDConfiguration defaults when no BFDConfiguration exists.
    assert (
        'interface "*" { min rx interval 10 ms; min tx interval 100 ms; '
        "idle tx interval 60000 ms; multiplier 5; };" in text
    )
    # Graceful restart stays as it was: BIRD -R recovery and the template's GR.
    assert "graceful restart wait 30;" in text and "  graceful restart;\n" in text
    _bird_parse(text, tmp_path)


def test_peer_failure_detection_mode_and_timers(tmp_path: Path) -> None:
    peers = [
        peer(
            "tor",
            peerIP="198.18.0.254",
            asNumber=64513,
            failureDetectionMode="BFDIfDirectlyConnected",
        ),
        peer(
            "far", peerIP="192.0.2.9", asNumber=64513, failureDetectionMode="BFDIfDirectlyConnected"
        ),
        peer("plain", peerIP="198.18.0.250", asNumber=64513),
    ]
    bfdcfgs = [
        res(
            "BFDConfiguration",
            "a-rack",
            nodeSelector="rack == 'a'",
            interfaces=[
                {"matchPattern": "eth*", "minimumRecvInterval": "50ms", "multiplier": 3},
                {"matchPattern": "*", "minimumSendInterval": "1s", "idleSendInterval": "2s"},
            ],
        ),
        res(
            "BFDConfiguration", "b-rack", nodeSelector="rack == 'b'", interfaces=[{"multiplier": 9}]
        ),
    ]
    cfg = _cfg(peers=peers, bfd_configurations=bfdcfgs)
    v4 = cfg.v4
    assert v4 is not None
    by = {p.name: p.bfd for p in v4.peers if p.type.value == "Global"}
    assert by == {
        "Global_198_18_0_254": True,
        "Global_192_0_2_9": False,
        "Global_198_18_0_250": False,
    }
    assert [
        (i.pattern, i.min_rx_ms, i.min_tx_ms, i.idle_tx_ms, i.multiplier)
        for i in cfg.bfd_interfaces
    ] == [
        ("eth*", 50, 100, 60000, 3),
        ("*", 10, 1000, 2000, 5),
    ]
    text = render_bird_config(cfg)
    assert 'interface "eth*" { min rx interval 50 ms;' in text
    assert "multihop { min rx interval 50 ms;" in text
    assert "bfd graceful;" in _protocol(text, "Global_198_18_0_254")
    assert "bfd" not in _protocol(text, "Global_198_18_0_250")
    _bird_parse(text, tmp_path)


def test_bfd_with_ttl_security_stays_single_hop(tmp_path: Path) -> None:
    """ttlSecurity renders ``multihop N``, which BIRD refuses next to single-hop BFD (found by
    the randomised config test): a BFD-tracked, directly connected peer keeps ``direct`` and
    GTSM (``ttl security on``, TTL 255 expected) without ``multihop``."""
    cfg = _cfg(peers=[peer("gtsm", peerIP="198.18.0.200", asNumber=64512, ttlSecurity=1,
                           failureDetectionMode="BFDIfDirectlyConnected")])  # fmt: skip
    text = render_bird_config(cfg)
    body = _protocol(text, "Global_198_18_0_200")
    assert "direct;" in body and "bfd graceful;" in body and "ttl security on;" in body
    assert "multihop" not in body
    _bird_parse(text, tmp_path)
    plain = _protocol(
        render_bird_config(
            _cfg(peers=[peer("gtsm", peerIP="198.18.0.200", asNumber=64512, ttlSecurity=2)])
        ),
        "Global_198_18_0_200",
    )
    assert "ttl security on;" in plain and "multihop 2;" in plain  # fmt: skip


def test_bad_failure_detection_mode_is_named() -> None:
    with pytest.raises(BgpInputError, match=r"spec\.failureDetectionMode"):
        _cfg(peers=[peer("x", peerIP="198.18.0.9", asNumber=1, failureDetectionMode="BFD")])
    with pytest.raises(BgpInputError, match="nodeMeshFailureDetectionMode"):
        _cfg(bgp_configurations=[bgpconfig(nodeMeshFailureDetectionMode="Always")])


def _doc(kind: str, spec: dict[str, Any], name: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def test_api_bfdconfiguration_defaults_and_validation() -> None:
    obj = decode(_doc("BFDConfiguration", {"nodeSelector": "all()", "interfaces": [{}]}))
    iface = obj.spec.interfaces[0]  # type: ignore[attr-defined]
    assert (iface.matchPattern, iface.minimumRecvInterval, iface.minimumSendInterval) == (
        "*",
        "10ms",
        "100ms",
    )
    assert (iface.idleSendInterval, iface.multiplier) == ("1m", 5)
    for bad, field in (
        ({"interfaces": [{"minimumRecvInterval": "1500us"}]}, "minimumRecvInterval"),
        ({"interfaces": [{"multiplier": 0}]}, "multiplier"),
        ({"nodeSelector": "rack =="}, "nodeSelector"),
    ):
        with pytest.raises(ValidationFailed, match=field):
            decode(_doc("BFDConfiguration", bad))


def test_api_mesh_bfd_field() -> None:
    decode(_doc("BGPConfiguration", {"nodeMeshFailureDetectionMode": "BFDIfDirectlyConnected"}))
    with pytest.raises(ValidationFailed, match="nodeMeshFailureDetectionMode"):
        decode(_doc("BGPConfiguration", {"nodeMeshFailureDetectionMode": "Sometimes"}))
    with pytest.raises(ValidationFailed, match="nodeMeshFailureDetectionMode"):
        decode(
            _doc(
                "BGPConfiguration",
                {
                    "nodeToNodeMeshEnabled": False,
                    "nodeMeshFailureDetectionMode": "BFDIfDirectlyConnected",
                },
            )
        )


# -- advertisements ----------------------------------------------------------------------------

ADVERTS = bgpconfig(
    serviceClusterIPs=[{"cidr": "10.96.0.0/12"}, {"cidr": "fd00:96::/112"}],
    serviceExternalIPs=[{"cidr": "192.0.2.0/24"}],
    serviceLoadBalancerIPs=[{"cidr": "198.51.100.0/24"}, {"cidr": "10.96.0.0/12"}],
    communities=[{"name": "svc", "value": "64512:300"}],
    prefixAdvertisements=[
        {"cidr": "10.96.0.0/12", "communities": ["svc", "64512:301"]},
        {"cidr": "10.244.0.0/16", "communities": ["64512:100:7"]},
    ],
)


def test_service_ranges_and_communities(tmp_path: Path) -> None:
    cfg = _cfg(bgp_configurations=[ADVERTS])
    v4, v6 = cfg.v4, cfg.v6
    assert v4 is not None and v6 is not None
    assert v4.service_cidrs == ("10.96.0.0/12", "192.0.2.0/24", "198.51.100.0/24")
    assert v6.service_cidrs == ("fd00:96::/112",)
    assert [(c.cidr, c.value) for c in v4.communities] == [
        ("10.96.0.0/12", "64512:300"),
        ("10.96.0.0/12", "64512:301"),
        ("10.244.0.0/16", "64512:100:7"),
    ]
    text = render_bird_config(cfg)
    assert re.search(
        r"protocol static services4 \{\n  ipv4;\n  route 10\.96\.0\.0/12 blackhole;\n"
        r"  route 192\.0\.2\.0/24 blackhole;\n  route 198\.51\.100\.0/24 blackhole;\n\}",
        text,
    )
    assert "if ( net ~ 10.96.0.0/12 ) then { bgp_community.add((64512, 300)); }" in text
    assert "if ( net ~ 10.244.0.0/16 ) then { bgp_large_community.add((64512, 100, 7)); }" in text
    export4 = text.split("function calico_export_to_bgp_peers4(bool internal_peer) {")[1].split(
        "\n}\n"
    )[0]
    # communities are applied before anything is accepted; services are exported
    assert export4.index("calico_communities4();") < export4.index("calico_aggr4();")
    assert 'if ( proto = "services4" ) then { accept; }' in export4
    # ... but never programmed into the local kernel
    kernel4 = text.split("filter calico_kernel_programming4 {")[1].split("\n}\n")[0]
    assert 'if ( proto = "services4" ) then { reject; }' in kernel4
    _bird_parse(text, tmp_path)


def test_disable_bgp_export_pool_is_rejected_before_its_block_is_accepted() -> None:
    text = render_bird_config(_cfg())
    export4 = text.split("function calico_export_to_bgp_peers4(bool internal_peer) {")[1].split(
        "\n}\n"
    )[0]
    assert export4.index("10.97.0.0/16+ ] ) then { reject; }") < export4.index("calico_aggr4();")


def test_undefined_community_name_is_named() -> None:
    bad = bgpconfig(prefixAdvertisements=[{"cidr": "10.0.0.0/8", "communities": ["nope"]}])
    with pytest.raises(BgpInputError, match=r"prefixAdvertisements\[0\].communities\[0\]"):
        _cfg(bgp_configurations=[bad])


def test_route_reflector_peerings_use_bfd_both_ways(tmp_path: Path) -> None:
    nodes = [
        node("n1", "198.18.0.1"),
        node("rr", "198.18.0.5", labels={"rr": ""}, routeReflectorClusterID="1.0.0.1"),
    ]
    peers = [
        peer(
            "to-rr",
            nodeSelector="all()",
            peerSelector="has(rr)",
            failureDetectionMode="BFDIfDirectlyConnected",
        )
    ]
    off = bgpconfig(nodeToNodeMeshEnabled=False)
    client = compute_bird_config("n1", nodes=nodes, peers=peers, bgp_configurations=[off])
    rr = compute_bird_config("rr", nodes=nodes, peers=peers, bgp_configurations=[off])
    assert client.v4 is not None and rr.v4 is not None
    assert [(p.name, p.bfd) for p in client.v4.peers] == [("Node_198_18_0_5", True)]
    assert [(p.name, p.bfd, p.rr_cluster_id) for p in rr.v4.peers] == [
        ("Node_198_18_0_1", True, "1.0.0.1")
    ]
    text = render_bird_config(rr)
    assert "bfd graceful;" in _protocol(text, "Node_198_18_0_1") and "protocol bfd {" in text
    _bird_parse(text, tmp_path)
