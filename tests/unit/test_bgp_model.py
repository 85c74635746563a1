"""compute_bird_config: mesh, route reflectors, peers, passwords, filters, exports, IPv6."""

from __future__ import annotations

import pytest

from pycalico.bgp import (
    BgpInputError,
    PeerType,
    compute_bird_config,
    peer_protocol_name,
    secrets_from_resources,
)
from tests.unit.test_bgp_helpers import affinity, bgpconfig, bgpfilter, node, peer, pool

NODES3 = [node("n1", "198.18.0.1"), node("n2", "198.18.0.2"), node("n3", "198.18.0.3")]


def names(cfg, version=4):  # type: ignore[no-untyped-def]
    fam = cfg.family(version)
    return [p.name for p in fam.peers] if fam else []


def test_peer_names_follow_calico() -> None:
    assert peer_protocol_name(PeerType.MESH, "10.0.0.2", None) == "Mesh_10_0_0_2"
    assert peer_protocol_name(PeerType.GLOBAL, "fd00::1", 179) == "Global_fd00__1"
    assert peer_protocol_name(PeerType.NODE, "10.0.0.9", 1179) == "Node_10_0_0_9_port_1179"


def test_full_mesh_skips_self_and_is_passive_towards_higher_ips() -> None:
    cfg = compute_bird_config("n2", nodes=NODES3)
    assert cfg.router_id == "198.18.0.2"
    assert names(cfg) == ["Mesh_198_18_0_1", "Mesh_198_18_0_3"]
    fam = cfg.v4
    assert fam is not None and fam.local_as == 64512
    by = {p.ip: p for p in fam.peers}
    assert by["198.18.0.1"].passive is False  # lower IP: we connect
    assert by["198.18.0.3"].passive is True  # higher IP: it connects to us
    assert all(p.internal and p.as_number == 64512 for p in fam.peers)
    assert all(p.source_address == "198.18.0.2" for p in fam.peers)
    assert cfg.v6 is None


def test_passive_is_numeric_not_lexical() -> None:
    nodes = [node("a", "10.0.0.9"), node("b", "10.0.0.10")]
    a = compute_bird_config("a", nodes=nodes).v4
    b = compute_bird_config("b", nodes=nodes).v4
    assert a is not None and b is not None
    assert a.peers[0].passive is True and b.peers[0].passive is False


def test_mesh_disabled_and_global_as_and_per_node_as() -> None:
    cfgs = [bgpconfig(asNumber=65000, nodeToNodeMeshEnabled=False)]
    assert names(compute_bird_config("n1", nodes=NODES3, bgp_configurations=cfgs)) == []
    nodes = [node("n1", "198.18.0.1", asNumber=65010), node("n2", "198.18.0.2")]
    cfg = compute_bird_config("n1", nodes=nodes, bgp_configurations=[bgpconfig(asNumber="1.10")])
    fam = cfg.v4
    assert fam is not None
    assert fam.local_as == 65010
    assert fam.peers[0].as_number == 65546 and fam.peers[0].internal is False


def test_per_node_listen_port_and_port_suffix() -> None:
    cfgs = [bgpconfig(listenPort=1179), bgpconfig("node.n3", listenPort=2179)]
    cfg = compute_bird_config("n1", nodes=NODES3, bgp_configurations=cfgs)
    assert cfg.listen_port == 1179
    assert names(cfg) == ["Mesh_198_18_0_2_port_1179", "Mesh_198_18_0_3_port_2179"]


def test_mesh_skips_route_reflectors_and_rr_skips_mesh() -> None:
    nodes = [*NODES3[:2], node("n3", "198.18.0.3", routeReflectorClusterID="1.0.0.1")]
    assert names(compute_bird_config("n1", nodes=nodes)) == ["Mesh_198_18_0_2"]
    assert names(compute_bird_config("n3", nodes=nodes)) == []


def _rr_setup(rr_nodes: dict[str, str]) -> list[dict[str, object]]:
    out = []
    for i in range(1, 5):
        name = f"n{i}"
        if name in rr_nodes:
            out.append(
                node(
                    name,
                    f"198.18.0.{i}",
                    labels={"route-reflector": "true"},
                    routeReflectorClusterID=rr_nodes[name],
                )
            )
        else:
            out.append(node(name, f"198.18.0.{i}"))
    return out


RR_PEERS = [
    bgpconfig(nodeToNodeMeshEnabled=False),
]
RR_PEER = peer("peer-with-rr", nodeSelector="all()", peerSelector="has(route-reflector)")


def test_single_route_reflector() -> None:
    nodes = _rr_setup({"n1": "1.0.0.1"})
    rr = compute_bird_config("n1", nodes=nodes, bgp_configurations=RR_PEERS, peers=[RR_PEER])
    fam = rr.v4
    assert fam is not None
    assert [p.name for p in fam.peers] == ["Node_198_18_0_2", "Node_198_18_0_3", "Node_198_18_0_4"]
    assert all(p.rr_cluster_id == "1.0.0.1" for p in fam.peers)
    client = compute_bird_config("n3", nodes=nodes, bgp_configurations=RR_PEERS, peers=[RR_PEER])
    cf = client.v4
    assert cf is not None
    assert [p.name for p in cf.peers] == ["Node_198_18_0_1"]
    assert cf.peers[0].rr_cluster_id is None
    # The RR (lower IP) waits for clients; clients connect to it.
    assert all(p.passive for p in fam.peers) and not cf.peers[0].passive


def test_two_route_reflectors_same_cluster_do_not_reflect_to_each_other() -> None:
    nodes = _rr_setup({"n1": "1.0.0.1", "n2": "1.0.0.1"})
    rr1 = compute_bird_config("n1", nodes=nodes, bgp_configurations=RR_PEERS, peers=[RR_PEER]).v4
    assert rr1 is not None
    by = {p.ip: p for p in rr1.peers}
    assert set(by) == {"198.18.0.2", "198.18.0.3", "198.18.0.4"}
    assert by["198.18.0.2"].rr_cluster_id is None  # same cluster: plain iBGP
    assert by["198.18.0.3"].rr_cluster_id == "1.0.0.1"
    client = compute_bird_config("n4", nodes=nodes, bgp_configurations=RR_PEERS, peers=[RR_PEER])
    assert names(client) == ["Node_198_18_0_1", "Node_198_18_0_2"]


def test_two_route_reflectors_different_clusters_reflect_to_each_other() -> None:
    nodes = _rr_setup({"n1": "1.0.0.1", "n2": "1.0.0.2"})
    rr1 = compute_bird_config("n1", nodes=nodes, bgp_configurations=RR_PEERS, peers=[RR_PEER]).v4
    assert rr1 is not None
    assert {p.ip: p.rr_cluster_id for p in rr1.peers}["198.18.0.2"] == "1.0.0.1"


def test_reverse_peering_manual_disables_the_back_direction() -> None:
    nodes = _rr_setup({"n1": "1.0.0.1"})
    p = peer(
        "p", nodeSelector="all()", peerSelector="has(route-reflector)", reversePeering="Manual"
    )
    rr = compute_bird_config("n1", nodes=nodes, bgp_configurations=RR_PEERS, peers=[p])
    assert names(rr) == []


def test_global_and_node_specific_peers_with_all_options() -> None:
    peers = [
        peer(
            "tor",
            peerIP="198.18.0.254:1179",
            asNumber=64513,
            keepaliveTime="10s",
            maxRestartTime="1m30s",
            ttlSecurity=2,
            nextHopMode="Self",
            numAllowedLocalASNumbers=3,
            localASNumber=65100,
        ),
        peer("only-n2", node="n2", peerIP="198.18.0.253", asNumber=64512, sourceAddress="None"),
        peer("sel", nodeSelector="rack == 'a'", peerIP="198.18.0.252", asNumber=64514),
        peer("keep", peerIP="198.18.0.251", asNumber=64515, keepOriginalNextHop=True),
    ]
    nodes = [node("n1", "198.18.0.1", labels={"rack": "a"}), node("n2", "198.18.0.2")]
    fam = compute_bird_config("n1", nodes=nodes, peers=peers).v4
    assert fam is not None
    by = {p.name: p for p in fam.peers}
    assert set(by) == {
        "Mesh_198_18_0_2",
        "Node_198_18_0_252",
        "Global_198_18_0_254_port_1179",
        "Global_198_18_0_251",
    }
    tor = by["Global_198_18_0_254_port_1179"]
    assert (tor.port, tor.as_number, tor.local_as, tor.internal) == (1179, 64513, 65100, False)
    assert (tor.keepalive_time, tor.graceful_restart_time, tor.ttl_security_hops) == (10, 90, 2)
    assert (tor.next_hop, tor.allow_local_as, tor.passive) == ("self", 3, False)
    assert by["Global_198_18_0_251"].next_hop == "keep"
    fam2 = compute_bird_config("n2", nodes=nodes, peers=peers).v4
    assert fam2 is not None
    n2 = {p.name: p for p in fam2.peers}
    assert "Node_198_18_0_253" in n2 and "Node_198_18_0_252" not in n2
    assert n2["Node_198_18_0_253"].source_address is None and n2["Node_198_18_0_253"].internal


def test_duplicate_peer_to_same_ip_keeps_the_first() -> None:
    peers = [peer("a", peerIP="198.18.0.2", asNumber=64512)]
    assert names(compute_bird_config("n1", nodes=NODES3, peers=peers)) == [
        "Mesh_198_18_0_2",
        "Mesh_198_18_0_3",
    ]


def test_passwords_plain_secret_annotation_and_missing() -> None:
    secrets = secrets_from_resources(
        [{"kind": "Secret", "metadata": {"name": "bgp"}, "data": {"pw": "c2VjcmV0MQ=="}}]
    )
    ann = peer("ann", peerIP="10.9.0.3", asNumber=65003)
    ann["metadata"]["annotations"] = {"pycalico.org/bgp-password": "fromannotation"}
    peers = [
        peer("plain", peerIP="10.9.0.1", asNumber=65001, password="plainpw"),
        peer(
            "ref",
            peerIP="10.9.0.2",
            asNumber=65002,
            password={"secretKeyRef": {"name": "bgp", "key": "pw"}},
        ),
        ann,
        peer(
            "missing",
            peerIP="10.9.0.4",
            asNumber=65004,
            password={"secretKeyRef": {"name": "x", "key": "y"}},
        ),
    ]
    cfg = compute_bird_config("n1", nodes=NODES3[:1], peers=peers, secrets=secrets)
    fam = cfg.v4
    assert fam is not None
    assert {p.ip: p.password for p in fam.peers} == {
        "10.9.0.1": "plainpw",
        "10.9.0.2": "secret1",
        "10.9.0.3": "fromannotation",
    }
    assert len(cfg.warnings) == 1 and "secret x/y not found" in cfg.warnings[0]
    with pytest.raises(BgpInputError, match=r"spec\.password"):
        compute_bird_config(
            "n1", nodes=NODES3[:1], peers=[peer("q", peerIP="10.9.0.1", asNumber=1, password='a"b')]
        )


def test_mesh_password_and_restart_time() -> None:
    cfgs = [
        bgpconfig(
            nodeMeshPassword={"secretKeyRef": {"name": "m", "key": "k"}},
            nodeMeshMaxRestartTime="45s",
        )
    ]
    secrets = secrets_from_resources([{"metadata": {"name": "m"}, "stringData": {"k": "meshpw"}}])
    fam = compute_bird_config("n1", nodes=NODES3, bgp_configurations=cfgs, secrets=secrets).v4
    assert fam is not None
    assert {(p.password, p.graceful_restart_time) for p in fam.peers} == {("meshpw", 45)}


def test_export_rules_blocks_borrowed_pools() -> None:
    pools = [
        pool("p", "10.244.0.0/16"),
        pool("vx", "10.99.0.0/16", vxlanMode="Always"),
        pool("ipip", "10.98.0.0/16", ipipMode="CrossSubnet"),
        pool("noexp", "10.97.0.0/16", disableBGPExport=True),
    ]
    affs = [
        affinity("n1", "10.244.1.0/26"),
        affinity("n1", "10.99.1.0/26"),
        affinity("n1", "10.244.1.64/26", state="pending"),
        affinity("n2", "10.244.2.0/26"),
    ]
    fam = compute_bird_config(
        "n1",
        nodes=NODES3,
        pools=pools,
        block_affinities=affs,
        borrowed=["10.244.2.5", "10.244.1.9/32", "fd00::5"],
    ).v4
    assert fam is not None
    assert fam.blocks == ("10.99.1.0/26", "10.244.1.0/26")
    assert fam.borrowed == ("10.244.2.5/32",)
    assert fam.export_pools == ("10.98.0.0/16", "10.99.0.0/16", "10.244.0.0/16")
    assert fam.no_export_pools == ("10.97.0.0/16",)
    assert fam.felix_pools == ("10.98.0.0/16", "10.99.0.0/16")


def test_filters_rules_and_function_names() -> None:
    f = bgpfilter(
        "my-filter",
        exportV4=[
            {
                "action": "Accept",
                "cidr": "10.0.0.0/8",
                "matchOperator": "In",
                "prefixLength": {"min": 16},
                "source": "RemotePeers",
                "interface": "eth*",
            },
            {"action": "Reject"},
        ],
        importV4=[{"action": "Reject", "cidr": "0.0.0.0/0", "matchOperator": "Equal"}],
    )
    peers = [peer("tor", peerIP="198.18.0.254", asNumber=64513, filters=["my-filter"])]
    fam = compute_bird_config("n1", nodes=NODES3[:1], peers=peers, filters=[f]).v4
    assert fam is not None
    tor = fam.peers[0]
    assert tor.export_filters == ("bgp_my_filter_exportFilterV4",)
    assert tor.import_filters == ("bgp_my_filter_importFilterV4",)
    fns = {fn.name: fn for fn in fam.filters}
    exp = fns["bgp_my_filter_exportFilterV4"].rules
    assert (exp[0].cidr, exp[0].min_len, exp[0].max_len, exp[0].action) == (
        "10.0.0.0/8",
        16,
        32,
        "accept",
    )
    assert exp[0].remote_peers_only and exp[0].interface == "eth*"
    assert exp[1].cidr is None and exp[1].action == "reject"


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"action": "Drop"}, "action"),
        ({"action": "Accept", "cidr": "10.0.0.0/8"}, "matchOperator"),
        ({"action": "Accept", "cidr": "fd00::/8", "matchOperator": "In"}, "cidr"),
        (
            {
                "action": "Accept",
                "cidr": "10.0.0.0/8",
                "matchOperator": "Equal",
                "prefixLength": {"min": 9},
            },
            "prefixLength",
        ),
        ({"action": "Accept", "source": "Others"}, "source"),
    ],
)
def test_bad_filter_rules_name_the_field(rule: dict[str, object], field: str) -> None:
    f = bgpfilter("f", exportV4=[rule])
    peers = [peer("tor", peerIP="198.18.0.254", asNumber=64513, filters=["f"])]
    with pytest.raises(BgpInputError) as ei:
        compute_bird_config("n1", nodes=NODES3[:1], peers=peers, filters=[f])
    assert "BGPFilter/f: spec.exportV4[0]" in ei.value.field and field in ei.value.field


def test_ipv6_is_the_same_classes() -> None:
    nodes = [
        node("n1", "198.18.0.1", "fd00::1"),
        node("n2", "198.18.0.2", "fd00::2"),
        node("n3", None, "fd00::3"),
    ]
    cfg = compute_bird_config(
        "n1",
        nodes=nodes,
        pools=[pool("p6", "fd10::/48")],
        block_affinities=[affinity("n1", "fd10::/122")],
        peers=[peer("v6", peerIP="[fd00::fe]:1179", asNumber=65000)],
    )
    assert names(cfg, 4) == ["Mesh_198_18_0_2"]
    assert names(cfg, 6) == ["Mesh_fd00__2", "Mesh_fd00__3", "Global_fd00__fe_port_1179"]
    v6 = cfg.v6
    assert v6 is not None and v6.channel == "ipv6" and v6.blocks == ("fd10::/122",)
    only6 = compute_bird_config("n3", nodes=nodes)
    assert only6.v4 is None and only6.router_id.count(".") == 3


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"nodes": [node("n1", "not-an-ip")]}, "Node/n1: spec.bgp.ipv4Address"),
        ({"nodes": [node("n1", "198.18.0.1", asNumber="x")]}, "Node/n1: spec.bgp.asNumber"),
        ({"nodes": [node("zz", "198.18.0.1")]}, "Node/n1"),
        (
            {"nodes": NODES3, "peers": [peer("p", peerIP="1.2.3.4")]},
            "BGPPeer/p: spec.asNumber",
        ),
        (
            {"nodes": NODES3, "peers": [peer("p", peerIP="1.2.3.4:99999", asNumber=1)]},
            "BGPPeer/p: spec.peerIP",
        ),
        (
            {
                "nodes": NODES3,
                "peers": [peer("p", peerIP="1.2.3.4", asNumber=1, keepaliveTime="soon")],
            },
            "BGPPeer/p: spec.keepaliveTime",
        ),
        (
            {"nodes": NODES3, "peers": [peer("p", peerSelector="(((")]},
            "BGPPeer/p: spec.peerSelector",
        ),
    ],
)
def test_bad_input_names_field(resources: dict[str, object], field: str) -> None:
    with pytest.raises(BgpInputError) as ei:
        compute_bird_config("n1", **resources)  # type: ignore[arg-type]
    assert ei.value.field == field


def test_result_is_independent_of_input_order() -> None:
    peers = [
        peer("b", peerIP="10.9.0.2", asNumber=65002),
        peer("a", peerIP="10.9.0.1", asNumber=65001),
    ]
    one = compute_bird_config("n1", nodes=NODES3, peers=peers)
    two = compute_bird_config("n1", nodes=list(reversed(NODES3)), peers=list(reversed(peers)))
    assert one == two


def test_unknown_filter_is_ignored_with_a_warning() -> None:
    peers = [peer("tor", peerIP="198.18.0.254", asNumber=64513, filters=["nope"])]
    cfg = compute_bird_config("n1", nodes=NODES3[:1], peers=peers)
    fam = cfg.v4
    assert fam is not None and fam.peers[0].export_filters == () and fam.filters == ()
    assert cfg.warnings == ("BGPPeer/tor: spec.filters: BGPFilter 'nope' not found (ignored)",)


def test_explicit_peer_ip_of_a_calico_node_is_passive_towards_higher_ip() -> None:
    cfgs = [bgpconfig(nodeToNodeMeshEnabled=False)]
    peers = [
        peer("to-n3", node="n1", peerIP="198.18.0.3", asNumber=64512),
        peer("to-n1", node="n3", peerIP="198.18.0.1", asNumber=64512),
    ]
    n1 = compute_bird_config("n1", nodes=NODES3, peers=peers, bgp_configurations=cfgs).v4
    n3 = compute_bird_config("n3", nodes=NODES3, peers=peers, bgp_configurations=cfgs).v4
    assert n1 is not None and n3 is not None
    assert n1.peers[0].passive is True and n3.peers[0].passive is False
    assert n1.peers[0].calico_node == "n3"
