"""The routes calc node: pure compute() (VXLAN, IPIP, CrossSubnet, borrowed /32s, blackholes,
removal, order independence, resource parsing errors) and RouteCalculator inside the
CalcGraph (in-sync and host-facts gating, RoutesUpdate next to the policy messages)."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import pytest

from pycalico.felix.calc.routes import HostFacts, compute
from pycalico.felix.calc.routetypes import Route, Vtep
from pycalico.model import Endpoint, ModelError, convert
from pycalico.model.felixconfig import FelixConfig, resolve, specs_by_name
from pycalico.model.network import Block, IPPool, LocalEndpoint, Node
from tests.kit.builders import ip_pool, ipam_block
from tests.kit.builders import node as calico_node

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address
FACTS = HostFacts(underlay_iface="eth0", host_mtu=1500)


def pool(cidr: str = "10.244.0.0/16", **spec: Any) -> dict[str, Any]:
    return ip_pool("p-" + cidr, cidr, **spec)


def node(name: str, ip: str, vx: str | None = None, mac: str | None = None,
         ipip: str | None = None) -> dict[str, Any]:  # fmt: skip
    return calico_node(name, ip, vxlan_tunnel_addr=vx, vxlan_mac=mac, ipip_tunnel_addr=ipip)


def block(cidr: str, host: str | None, held: dict[str, str] | None = None) -> dict[str, Any]:
    """``held``: address -> holder node (each gets an attribute record)."""
    return ipam_block(cidr, host, held=held)


NODES = [
    node("n1", "198.18.1.1/24", "10.244.1.0", "66:00:00:00:00:01", "10.244.1.1"),
    node("n2", "198.18.1.2/24", "10.244.2.0", "66:00:00:00:00:02", "10.244.2.1"),
    node("n3", "198.18.2.3/24", "10.244.3.0", "66:00:00:00:00:03", "10.244.3.1"),
]
BLOCKS = [
    block("10.244.1.0/26", "n1", {"10.244.1.0": "n1", "10.244.1.5": "n1"}),
    block("10.244.2.0/26", "n2", {"10.244.2.0": "n2"}),
    block("10.244.3.0/26", "n3"),
]


def run(pools: list[dict[str, Any]], nodes: list[dict[str, Any]] = NODES,
        blocks: list[dict[str, Any]] = BLOCKS, me: str = "n1",
        cfg: FelixConfig = FelixConfig(), facts: HostFacts = FACTS):  # type: ignore[no-untyped-def]  # fmt: skip
    ps = [p for p in (IPPool.from_resource(x) for x in pools) if p is not None]
    ns = {n["metadata"]["name"]: Node.from_resource(n) for n in nodes}
    bs = [b for b in (Block.from_resource(x) for x in blocks) if b is not None]
    return compute(me, ps, ns, bs, cfg, facts)


def test_vxlan_always_routes_vteps_blackhole_device() -> None:
    d = run([pool(vxlanMode="Always")])
    vx = "vxlan.calico"
    assert d.routes == {
        N("10.244.1.0/26"): Route(N("10.244.1.0/26"), kind="blackhole"),
        N("10.244.2.0/26"): Route(N("10.244.2.0/26"), "unicast", A("10.244.2.0"), vx, True),
        N("10.244.3.0/26"): Route(N("10.244.3.0/26"), "unicast", A("10.244.3.0"), vx, True),
    }
    assert d.vteps == (
        Vtep("n2", A("10.244.2.0"), "66:00:00:00:00:02", A("198.18.1.2")),
        Vtep("n3", A("10.244.3.0"), "66:00:00:00:00:03", A("198.18.2.3")),
    )
    assert d.vxlan is not None
    assert (d.vxlan.vni, d.vxlan.port, d.vxlan.parent, d.vxlan.mtu) == (4096, 4789, "eth0", 1450)
    assert (str(d.vxlan.local_ip), str(d.vxlan.address)) == ("198.18.1.1", "10.244.1.0")
    assert d.ipip is None and d.ipip_next_hops == ()
    assert d.pod_mtu == 1450
    r = Route(N("10.244.2.0/26"), "unicast", A("10.244.2.0"), vx, True)
    assert r.ip_spec() == "10.244.2.0/26 via 10.244.2.0 dev vxlan.calico onlink"
    assert Route(N("10.244.1.0/26"), kind="blackhole").ip_spec() == "blackhole 10.244.1.0/26"


def test_ipip_always_routes_and_next_hops() -> None:
    d = run([pool(ipipMode="Always")])
    assert d.routes[N("10.244.2.0/26")] == Route(
        N("10.244.2.0/26"), "unicast", A("198.18.1.2"), "tunl0", True
    )
    assert d.routes[N("10.244.3.0/26")].gateway == A("198.18.2.3")
    assert d.routes[N("10.244.1.0/26")].kind == "blackhole"
    assert d.ipip_next_hops == (
        (N("10.244.2.0/26"), A("198.18.1.2")),
        (N("10.244.3.0/26"), A("198.18.2.3")),
    )
    assert d.ipip is not None and d.ipip.mtu == 1480 and str(d.ipip.address) == "10.244.1.1"
    assert d.vxlan is None and d.vteps == ()
    assert d.pod_mtu == 1480


@pytest.mark.parametrize("mode", ["vxlanMode", "ipipMode"])
def test_cross_subnet_same_subnet_goes_direct(mode: str) -> None:
    d = run([pool(**{mode: "CrossSubnet"})])
    # n2 shares n1's 198.18.1.0/24: plain routing over the underlay interface.
    assert d.routes[N("10.244.2.0/26")] == Route(
        N("10.244.2.0/26"), "unicast", A("198.18.1.2"), "eth0", True
    )
    # n3 is behind a router: encapsulated.
    r3 = d.routes[N("10.244.3.0/26")]
    assert r3.dev == ("vxlan.calico" if mode == "vxlanMode" else "tunl0")


def test_borrowed_addresses_get_32s_to_their_holders() -> None:
    blocks = [
        block("10.244.1.0/26", "n1", {"10.244.1.7": "n3", "10.244.1.8": "n1"}),
        block("10.244.2.0/26", "n2", {"10.244.2.9": "n1", "10.244.2.10": "n3"}),
        block("10.244.9.0/26", None, {"10.244.9.1": "n2"}),  # unaffine block
    ]
    d = run([pool(vxlanMode="Always")], blocks=blocks)
    # in our own block, held by n3: /32 to n3 (beats our blackhole by LPM)
    assert d.routes[N("10.244.1.7/32")].gateway == A("10.244.3.0")
    assert N("10.244.1.8/32") not in d.routes  # ours: the CNI route
    assert N("10.244.2.9/32") not in d.routes  # ours, borrowed from n2
    assert d.routes[N("10.244.2.10/32")].gateway == A("10.244.3.0")
    assert d.routes[N("10.244.9.1/32")].gateway == A("10.244.2.0")
    assert N("10.244.9.0/26") not in d.routes  # unaffine: only its /32s


def test_no_encap_pool_is_birds() -> None:
    d = run([pool()])
    assert d.routes == {} and d.vxlan is None and d.ipip is None
    assert d.pod_mtu == 1500


def test_program_cluster_routes_disabled_leaves_ipip_to_bird() -> None:
    d = run([pool(ipipMode="Always")], cfg=FelixConfig(program_cluster_routes="Disabled"))
    assert d.routes == {}
    assert d.ipip is not None  # the device is still ours


def test_missing_remote_vtep_is_a_problem_not_a_crash() -> None:
    nodes = [NODES[0], node("n2", "198.18.1.2/24"), NODES[2]]
    d = run([pool(vxlanMode="Always")], nodes=nodes)
    assert N("10.244.2.0/26") not in d.routes
    assert N("10.244.3.0/26") in d.routes
    assert any("n2" in p and "VXLAN" in p for p in d.problems)
    assert [v.node for v in d.vteps] == ["n3"]


def test_removal_of_block_node_and_pool() -> None:
    full = run([pool(vxlanMode="Always")])
    assert N("10.244.3.0/26") in full.routes
    no_block = run([pool(vxlanMode="Always")], blocks=BLOCKS[:2])
    assert N("10.244.3.0/26") not in no_block.routes
    no_node = run([pool(vxlanMode="Always")], nodes=NODES[:2])
    assert N("10.244.3.0/26") not in no_node.routes
    assert [v.node for v in no_node.vteps] == ["n2"]
    no_pool = run([])
    assert no_pool.routes == {} and no_pool.vxlan is None and no_pool.vteps == ()


def test_nat_outgoing_sets_and_mtu_overrides() -> None:
    d = run(
        [pool(vxlanMode="Always", natOutgoing=True), pool("10.96.0.0/16")],
        cfg=FelixConfig(vxlan_mtu=1400),
    )
    assert d.masq_pools == (N("10.244.0.0/16"),)
    assert set(d.all_pools) == {N("10.244.0.0/16"), N("10.96.0.0/16")}
    assert d.vxlan is not None and d.vxlan.mtu == 1400 and d.pod_mtu == 1400


def test_order_independent() -> None:
    pools = [pool(vxlanMode="CrossSubnet"), pool("10.96.0.0/16", ipipMode="Always")]
    blocks = [*BLOCKS, block("10.96.0.0/26", "n2"), block("10.96.0.64/26", "n1")]
    ref = run(pools, blocks=blocks)
    for perm in itertools.islice(itertools.permutations(blocks), 24):
        for nperm in itertools.permutations(NODES):
            assert run(pools[::-1], nodes=list(nperm), blocks=list(perm)) == ref
    assert ref.routes[N("10.96.0.0/26")].dev == "tunl0"
    assert ref.routes[N("10.96.0.64/26")].kind == "blackhole"


def test_no_device_no_routes_through_it() -> None:
    # This node has no VXLAN tunnel address yet: remote VXLAN routes would fail; skip them.
    nodes = [node("n1", "198.18.1.1/24"), *NODES[1:]]
    d = run([pool(vxlanMode="Always")], nodes=nodes)
    assert d.vxlan is None and d.vteps == ()
    assert all(r.dev != "vxlan.calico" for r in d.routes.values())
    assert d.routes[N("10.244.1.0/26")].kind == "blackhole"
    assert any("via vxlan.calico not programmed" in p for p in d.problems)
    # No interface holds our IP: no device, hence no tunnel routes either.
    d = run([pool(ipipMode="Always")], facts=HostFacts(None, 1500))
    assert d.ipip is not None  # tunl0 needs no parent interface
    d = run([pool(vxlanMode="Always")], facts=HostFacts(None, 1500))
    assert d.vxlan is None and not any(r.dev == "vxlan.calico" for r in d.routes.values())


def test_never_routes_to_itself() -> None:
    nodes = [NODES[0], node("n2", "198.18.1.1/24", "10.244.2.0", "66:00:00:00:00:02")]
    d = run([pool(vxlanMode="Always")], nodes=nodes, blocks=BLOCKS[:2])
    assert N("10.244.2.0/26") not in d.routes
    assert d.problems


def test_parse_errors_name_the_field() -> None:
    with pytest.raises(ModelError, match=r"spec.vxlanMode"):
        IPPool.from_resource(pool(vxlanMode="Sometimes"))
    with pytest.raises(ModelError, match=r"spec.bgp.ipv4Address"):
        Node.from_resource(node("x", "not-an-ip"))
    with pytest.raises(ModelError, match=r"vxlanTunnelMACAddr"):
        Node.from_resource(node("x", "1.2.3.4/24", "10.0.0.1", "zz"))
    p6 = IPPool.from_resource(pool("fd00::/64", vxlanMode="Always", ipipMode="Always"))
    assert p6 is not None and p6.cidr.version == 6 and p6.encap == "vxlan"
    assert IPPool.from_resource(pool("fd00::/64", ipipMode="Always")).encap == "none"  # type: ignore[union-attr]


def test_route_config_from_felix_configuration() -> None:
    cfgs = {
        "default": {"spec": {"vxlanVNI": 5000, "routeRefreshInterval": "30s", "ipipMTU": 1300}},
        "node.n1": {"spec": {"vxlanPort": 8472, "mtuIfacePattern": "^veth"}},
        "node.n2": {"spec": {"vxlanPort": 1}},
    }
    cfgs["default"]["spec"].update(natOutgoingAddress="198.18.0.99",
                                   natOutgoingExclusions="IPPoolsAndHostIPs")  # fmt: skip
    c = resolve("n1", specs_by_name(cfgs))
    assert c.nat_outgoing_address == "198.18.0.99" and c.nat_exclude_host_ips
    d = run([pool(vxlanMode="Always", natOutgoing=True)], cfg=c)
    assert d.nat_snat_to == "198.18.0.99"
    assert d.nat_exclude == (N("198.18.1.1/32"), N("198.18.1.2/32"), N("198.18.2.3/32"))
    assert (c.vxlan_vni, c.vxlan_port, c.ipip_mtu, c.route_refresh_interval) == (
        5000,
        8472,
        1300,
        30,
    )
    assert c.mtu_iface_pattern == "^veth"
    # A bad datastore value is ignored (the one resolver warns): the default pattern stays.
    bad = resolve("n1", specs_by_name({"default": {"spec": {"mtuIfacePattern": "("}}}))
    assert bad.mtu_iface_pattern == FelixConfig().mtu_iface_pattern


def test_local_workload_routes_from_endpoints() -> None:
    wep = {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "n1-k8s-a-eth0", "namespace": "default"},
        "spec": {"node": "n1", "interfaceName": "cali0123456789a",
                 "ipNetworks": ["10.244.2.9/32", "fd00::1/128"]},
    }  # fmt: skip
    converted = convert(wep).obj
    assert isinstance(converted, Endpoint) and converted.node == "n1"
    ep = LocalEndpoint.of(converted)
    assert ep.ips == (A("10.244.2.9"), ipaddress.IPv6Address("fd00::1"))
    blocks = [*BLOCKS[:2], block("10.244.2.0/26", "n2", {"10.244.2.9": "n1"})]
    ps = [IPPool.from_resource(pool(vxlanMode="Always"))]
    ns = {n["metadata"]["name"]: Node.from_resource(n) for n in NODES}
    bs = [Block.from_resource(b) for b in blocks]
    d = compute("n1", [p for p in ps if p], ns, [b for b in bs if b], FelixConfig(), FACTS, [ep])
    r = d.routes[N("10.244.2.9/32")]
    assert (r.dev, r.scope_link, r.gateway) == ("cali0123456789a", True, None)
    assert r.ip_spec() == "10.244.2.9/32 dev cali0123456789a scope link"
    with pytest.raises(ModelError, match=r"ipNetworks\[0\]"):
        convert({"kind": "WorkloadEndpoint", "metadata": {"name": "w", "namespace": "d"},
                 "spec": {"ipNetworks": ["x"]}})  # fmt: skip


def node6(name: str, ip: str, ip6: str, vx6: str | None, mac6: str | None) -> dict[str, Any]:
    res = node(name, ip)
    res["spec"]["bgp"]["ipv6Address"] = ip6
    if vx6:
        res["spec"]["ipv6VXLANTunnelAddr"] = vx6
    if mac6:
        res["spec"]["vxlanTunnelMACAddrV6"] = mac6
    return res


def test_ipv6_vxlan_is_the_same_calculation() -> None:
    nodes = [
        node6("n1", "198.18.1.1/24", "fd00:18::1/64", "fd00:244:0:1::", "66:00:00:00:01:01"),
        node6("n2", "198.18.1.2/24", "fd00:18::2/64", "fd00:244:0:2::", "66:00:00:00:01:02"),
        node6("n3", "198.18.2.3/24", "fd00:19::3/64", "fd00:244:0:3::", "66:00:00:00:01:03"),
    ]
    blocks = [
        block("fd00:244:0:1::/122", "n1"),
        block("fd00:244:0:2::/122", "n2", {"fd00:244:0:2::9": "n3"}),
        block("fd00:244:0:3::/122", "n3"),
        *BLOCKS,
    ]
    pools = [pool("fd00:244::/48", vxlanMode="CrossSubnet"), pool(vxlanMode="Always")]
    ps = [p for p in (IPPool.from_resource(x) for x in pools) if p is not None]
    ns = {n["metadata"]["name"]: Node.from_resource(n) for n in nodes}
    bs = [b for b in (Block.from_resource(x) for x in blocks) if b is not None]
    d = compute("n1", ps, ns, bs, FelixConfig(), HostFacts("eth0", 1500), version=6)
    assert d.version == 6 and all(r.dst.version == 6 for r in d.routes.values())
    I6, A6 = ipaddress.IPv6Network, ipaddress.IPv6Address
    assert d.routes[I6("fd00:244:0:1::/122")].kind == "blackhole"
    # same /64 as n1: direct; n3 in another /64: vxlan-v6.calico
    assert d.routes[I6("fd00:244:0:2::/122")] == Route(
        I6("fd00:244:0:2::/122"), "unicast", A6("fd00:18::2"), "eth0", True
    )
    assert d.routes[I6("fd00:244:0:3::/122")] == Route(
        I6("fd00:244:0:3::/122"), "unicast", A6("fd00:244:0:3::"), "vxlan-v6.calico", True
    )
    assert d.routes[I6("fd00:244:0:2::9/128")].dev == "vxlan-v6.calico"  # borrowed by n3
    assert d.vxlan is not None and d.vxlan.device == "vxlan-v6.calico" and d.vxlan.mtu == 1430
    assert str(d.vxlan.local_ip) == "fd00:18::1" and d.vxlan.mac == "66:00:00:00:01:01"
    assert [v.node for v in d.vteps] == ["n2", "n3"] and d.ipip is None
    assert d.pod_mtu == 1430
    # ... and the IPv4 run of the same inputs only sees IPv4.
    d4 = compute("n1", ps, ns, bs, FelixConfig(), HostFacts("eth0", 1500), version=4)
    assert all(r.dst.version == 4 for r in d4.routes.values()) and d4.vteps == ()


# ------------------------------------------------------------- the calc node in the graph


def _key(r: dict[str, Any]) -> str:
    from pycalico.datastore import key_for

    md = r["metadata"]
    return key_for(r["kind"], md["name"], md.get("namespace", ""))


def _graph(resources: list[dict[str, Any]], me: str = "n1") -> Any:
    from pycalico.felix.calc import CalcGraph

    g = CalcGraph(me)
    for r in resources:
        g.on_update(_key(r), r)
    return g


def _policy(port: int) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "allow"},
            "spec": {"selector": "all()", "types": ["Ingress"],
                     "ingress": [{"action": "Allow", "protocol": "TCP",
                                  "destination": {"ports": [port]}}]}}  # fmt: skip


def _local_wep() -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": "n1-k8s-a-eth0", "namespace": "ns1"},
            "spec": {"node": "n1", "orchestrator": "k8s", "pod": "a", "endpoint": "eth0",
                     "interfaceName": "cali1", "ipNetworks": ["10.244.1.5/32"],
                     "profiles": ["kns.ns1"]}}  # fmt: skip


def test_calc_node_needs_in_sync_and_host_facts() -> None:
    from pycalico.felix.calc import InSync, RouteSettingsUpdate, RoutesUpdate

    g = _graph([pool("10.244.0.0/16", vxlanMode="Always"), *NODES, *BLOCKS])
    assert g.flush() == []  # nothing before in sync
    g.on_in_sync()
    msgs = g.flush()
    settings = [m for m in msgs if isinstance(m, RouteSettingsUpdate)]
    assert settings == [RouteSettingsUpdate(A("198.18.1.1"), None, FelixConfig().mtu_iface_pattern,
                                            90.0)]  # fmt: skip
    assert not any(isinstance(m, RoutesUpdate) for m in msgs) and InSync() in msgs
    g.set_host_facts(4, FACTS)
    (up,) = g.flush()
    assert isinstance(up, RoutesUpdate) and up.version == 4
    assert up.desired == run([pool("10.244.0.0/16", vxlanMode="Always")])
    assert g.flush() == []  # nothing re-sent when nothing changed
    g.set_host_facts(4, FACTS)
    assert g.flush() == []


def test_new_ipam_block_produces_a_routes_update() -> None:
    from pycalico.felix.calc import RoutesUpdate

    g = _graph([pool("10.244.0.0/16", vxlanMode="Always"), *NODES, *BLOCKS])
    g.on_in_sync()
    g.set_host_facts(4, FACTS)
    g.flush()
    b = block("10.244.9.0/26", "n2")
    g.on_update(_key(b), b)
    (up,) = g.flush()
    assert isinstance(up, RoutesUpdate)
    assert up.desired.routes[N("10.244.9.0/26")] == Route(
        N("10.244.9.0/26"), gateway=A("10.244.2.0"), dev="vxlan.calico", onlink=True
    )
    g.on_update(_key(b), None)  # deleted
    (up,) = g.flush()
    assert N("10.244.9.0/26") not in up.desired.routes


def test_policy_and_block_updates_flushed_together_both_produce_messages() -> None:
    from pycalico.felix.calc import ActivePolicyUpdate, RoutesUpdate

    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}}
    g = _graph([pool("10.244.0.0/16", vxlanMode="Always"), *NODES, *BLOCKS, ns, _local_wep(),
                _policy(80)])  # fmt: skip
    g.on_in_sync()
    g.set_host_facts(4, FACTS)
    first = g.flush()
    (r0,) = [m for m in first if isinstance(m, RoutesUpdate)]
    assert r0.desired.routes[N("10.244.1.5/32")] == Route(
        N("10.244.1.5/32"), dev="cali1", scope_link=True
    )
    b = block("10.244.9.0/26", "n3")
    g.on_update(_key(b), b)
    g.on_update(_key(_policy(8080)), _policy(8080))
    msgs = g.flush()
    assert [type(m).__name__ for m in msgs] == ["ActivePolicyUpdate", "RoutesUpdate"]
    assert isinstance(msgs[0], ActivePolicyUpdate) and isinstance(msgs[1], RoutesUpdate)
    assert N("10.244.9.0/26") in msgs[1].desired.routes


def test_one_mtu_over_both_families_and_other_nodes_endpoints_ignored() -> None:
    from pycalico.felix.calc import RoutesUpdate

    p6 = pool("fd00:244::/48", vxlanMode="Always")
    me = node("n1", "198.18.1.1/24", "10.244.1.0", "66:00:00:00:00:01")
    other = _local_wep()
    other["spec"]["node"] = "n2"
    g = _graph([pool("10.244.0.0/16", ipipMode="Always"), p6, me, other])
    g.on_in_sync()
    g.set_host_facts(4, FACTS)
    g.set_host_facts(6, FACTS)
    ups = {m.version: m.desired for m in g.flush() if isinstance(m, RoutesUpdate)}
    assert ups[6].pod_mtu == 1430 and ups[4].pod_mtu == 1430  # min(IPIP 1480, VXLANv6 1430)
    assert not ups[4].routes  # n2's workload is not ours
