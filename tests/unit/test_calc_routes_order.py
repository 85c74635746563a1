"""Order independence of the routes calc node inside the CalcGraph (DESIGN principle 1).

The kit's state expanders (:mod:`tests.kit.expanders`) turn sequences of whole route states
(IPPools, Nodes, IPAMBlocks, WorkloadEndpoints) into update batches in every order; a
:class:`CalcGraph` for node ``n1`` with IPv4 and IPv6 host facts is fed batch by batch and
flushed after each. The observable result is what a route dataplane would hold: the latest
:class:`RoutesUpdate` per IP version and the latest :class:`RouteSettingsUpdate`, accumulated
over all flushes. At every state an expansion reaches it must equal a fresh graph fed that
state in one batch. Scenarios cover VXLAN, IPIP, CrossSubnet, no-encap pools, borrowed
addresses, resources appearing and disappearing, nodes losing their VTEP and IPv6 VXLAN;
hypothesis adds random route states over a small universe (derandomized, 250 examples, a few
seconds; ``ROUTE_ORDER_EXAMPLES=3000 ROUTE_ORDER_RANDOM=1`` hunts deeper with fresh seeds).

The pure :func:`compute` keeps its own check through :class:`PureHarness`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.felix.calc import CalcGraph, RouteSettingsUpdate, RoutesUpdate
from pycalico.felix.calc.routes import DEFAULT_SETTINGS
from pycalico.felix.calc.routetypes import DesiredState, HostFacts
from pycalico.model.felixconfig import FelixConfig
from tests.kit import ip_pool, ipam_block, keyed, node, workload_endpoint
from tests.kit.expanders import (
    EXPANDERS,
    PureHarness,
    State,
    Update,
    check_expansions,
    draw_states,
    reference,
)

ME = "n1"
FACTS = {4: HostFacts(underlay_iface="eth0", host_mtu=1500), 6: HostFacts("eth0", 1480)}
DEFAULT = FelixConfig()
#: Felix also programs no-encap pools' routes (same-subnet onlink).
ALL_POOLS = FelixConfig(program_cluster_routes="Enabled")


class RouteGraphHarness:
    """A CalcGraph("n1") in sync, with host facts of both versions; ``result()`` is the last
    RoutesUpdate per version and the last RouteSettingsUpdate seen over every flush."""

    def __init__(self, config: FelixConfig = DEFAULT) -> None:
        self.graph = CalcGraph(ME)
        self.graph.set_felix_config(config)
        for v, f in FACTS.items():
            self.graph.set_host_facts(v, f)
        self.graph.on_in_sync()
        self.routes: dict[int, DesiredState] = {}
        self.settings: RouteSettingsUpdate = DEFAULT_SETTINGS

    def feed(self, updates: Sequence[Update]) -> None:
        for k, v in updates:
            self.graph.on_update(k, v)
        for m in self.graph.flush():
            if isinstance(m, RoutesUpdate):
                self.routes[m.version] = m.desired
            elif isinstance(m, RouteSettingsUpdate):
                self.settings = m

    def result(self) -> dict[str, Any]:
        return {"routes": dict(self.routes), "settings": self.settings}


def harness(config: FelixConfig) -> Callable[[], RouteGraphHarness]:
    return lambda: RouteGraphHarness(config)


def check(states: Sequence[Sequence[Mapping[str, Any]]], config: FelixConfig = DEFAULT) -> None:
    n = check_expansions(harness(config), [keyed(s) for s in states])
    assert n >= len(EXPANDERS)


def desired(state: Sequence[Mapping[str, Any]], config: FelixConfig = DEFAULT) -> Any:
    """Routes (dst -> (dev, gateway)) per version of ``state`` fed from scratch."""
    got = reference(harness(config), keyed(state))["routes"]
    return {
        v: {
            str(d): (r.dev or r.kind, str(r.gateway) if r.gateway else None)
            for d, r in s.routes.items()
        }
        for v, s in got.items()
    }


# --- building blocks ---------------------------------------------------------------------------
def n1(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "ip": "198.18.1.1/24", "ip6": "fd00:18::1/64", "vxlan_tunnel_addr": "10.244.1.0",
        "vxlan_mac": "66:00:00:00:00:01", "ipip_tunnel_addr": "10.244.1.1",
        "vxlan_tunnel_addr6": "fd00:244:0:1::", "vxlan_mac6": "66:00:00:00:06:01",
    }  # fmt: skip
    return node(ME, **(args | kw))


def n2(**kw: Any) -> dict[str, Any]:  # same subnet as n1
    args: dict[str, Any] = {
        "ip": "198.18.1.2/24", "ip6": "fd00:18::2/64", "vxlan_tunnel_addr": "10.244.2.0",
        "vxlan_mac": "66:00:00:00:00:02", "ipip_tunnel_addr": "10.244.2.1",
        "vxlan_tunnel_addr6": "fd00:244:0:2::", "vxlan_mac6": "66:00:00:00:06:02",
    }  # fmt: skip
    return node("n2", **(args | kw))


def n3(**kw: Any) -> dict[str, Any]:  # another subnet
    args: dict[str, Any] = {
        "ip": "198.18.2.3/24", "ip6": "fd00:19::3/64", "vxlan_tunnel_addr": "10.244.3.0",
        "vxlan_mac": "66:00:00:00:00:03",
        "vxlan_tunnel_addr6": "fd00:244:0:3::", "vxlan_mac6": "66:00:00:00:06:03",
    }  # fmt: skip
    return node("n3", **(args | kw))


def pool(**kw: Any) -> dict[str, Any]:
    return ip_pool(**kw)


def pool6(**kw: Any) -> dict[str, Any]:
    return ip_pool("default-ipv6-ippool", "fd00:244::/48", **kw)


NO_VTEP: dict[str, Any] = {"vxlan_tunnel_addr": None, "vxlan_mac": None}
NO_VTEP6: dict[str, Any] = {"vxlan_tunnel_addr6": None, "vxlan_mac6": None}
B1 = ipam_block("10.244.1.0/26", ME, held={"10.244.1.5": ME})
B2 = ipam_block("10.244.2.0/26", "n2")
B3 = ipam_block("10.244.3.0/26", "n3")
# n3's block lending addresses to n2 and to this node (ours needs no route).
BORROWED = ipam_block("10.244.3.64/26", "n3", held={"10.244.3.70": "n2", "10.244.3.71": ME})
ORPHAN = ipam_block("10.244.9.0/26", None, held={"10.244.9.1": "n2"})  # no affinity
B6_1 = ipam_block("fd00:244:0:1::/122", ME)
B6_2 = ipam_block("fd00:244:0:2::/122", "n2", held={"fd00:244:0:2::9": "n3"})
B6_3 = ipam_block("fd00:244:0:3::/122", "n3")


def wep(pod: str, ip: str | Sequence[str], where: str = ME, **kw: Any) -> dict[str, Any]:
    return workload_endpoint(pod, node=where, ip=ip, namespace="ns1", **kw)


# --- scenarios ---------------------------------------------------------------------------------
# fmt: off
SCENARIOS: dict[str, tuple[FelixConfig, list[list[dict[str, Any]]]]] = {
    "vxlan, a node losing its VTEP, nodes and blocks going": (DEFAULT, [
        [pool(vxlan_mode="Always"), n1(), n2(), n3(), B1, B2, B3],
        [pool(vxlan_mode="Always"), n1(), n2(), n3(**NO_VTEP), B1, B2, B3],
        [pool(vxlan_mode="Always"), n1(), n3(), B1, B2, B3],  # n2 gone, its block stays
        [pool(vxlan_mode="Always"), n1(**NO_VTEP), n2(), n3(), B1, B2, B3],  # ours gone
        [pool(vxlan_mode="Always"), n1(), n2(), B1],
        [n1(), n2(), B1, B2],  # pool gone
    ]),
    "ipip and cross-subnet": (DEFAULT, [
        [pool(ipip_mode="Always"), n1(), n2(), n3(), B1, B2, B3],
        [pool(ipip_mode="CrossSubnet"), n1(), n2(), n3(), B1, B2, B3],
        [pool(vxlan_mode="CrossSubnet"), n1(), n2(), n3(), B1, B2, B3],
        [pool(vxlan_mode="CrossSubnet"), n1(ip="198.18.2.1/24"), n2(), n3(), B1, B2, B3],
        [pool(ipip_mode="Always", nat_outgoing=True), n1(), n2(ip=None), n3(), B2, B3],
    ]),
    "no-encap pools (Felix programs them: programClusterRoutes Enabled)": (ALL_POOLS, [
        [pool(), n1(), n2(), n3(), B1, B2, B3],
        [pool(), n1(), n2(), n3(), B1, B2, B3, BORROWED],
        [pool(), n1(ip="198.18.2.1/24"), n2(), n3(), B1, B2, B3],
        [pool(vxlan_mode="CrossSubnet"), n1(), n2(), n3(), B2, B3],
        [pool(disabled=True), n1(), n2(), B2],
    ]),
    "no-encap pools (BIRD's by default: nothing for Felix)": (DEFAULT, [
        [pool(), n1(), n2(), B1, B2],
        [pool(vxlan_mode="Always"), n1(), n2(), B1, B2],
        [pool(), n1(), n2(), B1, B2, BORROWED],
    ]),
    "borrowed addresses": (DEFAULT, [
        [pool(vxlan_mode="Always"), n1(), n2(), n3(), BORROWED],
        [pool(vxlan_mode="Always"), n1(), n2(), n3(), BORROWED, B3, ORPHAN],
        [pool(ipip_mode="Always"), n1(), n2(), n3(), BORROWED, ORPHAN],
        [pool(vxlan_mode="Always"), n1(), n3(), BORROWED],  # the holder n2 is gone
        [pool(vxlan_mode="Always"), n1(), n2(**NO_VTEP), n3(), BORROWED],
    ]),
    "workload endpoints and overlapping pools": (DEFAULT, [
        [pool(vxlan_mode="Always"), n1(), B1, wep("a", "10.244.1.5"), wep("b", "10.244.1.6")],
        [
            pool(vxlan_mode="Always"),
            ip_pool("inner", "10.244.2.0/24", ipip_mode="Always"),
            n1(), n2(), B1, B2,
            wep("a", ["10.244.1.5", "fd00:244:0:1::5"]),
            wep("b", "10.244.1.6", where="n2"),  # moved away: not ours
            wep("c", "10.244.2.7", where="n2"),
        ],
        [
            ip_pool("inner", "10.244.2.0/24", ipip_mode="Always"), n1(), n2(), B2,
            wep("a", "10.244.1.5", interface_name="calinew"), wep("b", "10.244.1.6"),
        ],
        [pool(vxlan_mode="Always"), n1(), wep("b", "not-an-ip/32")],  # invalid: ignored
        [],
    ]),
    "ipv6 vxlan next to ipv4": (DEFAULT, [
        [pool6(vxlan_mode="Always"), n1(), n2(), n3(), B6_1, B6_2, B6_3],
        [pool6(vxlan_mode="Always"), pool(ipip_mode="Always"), n1(), n2(), n3(),
         B1, B2, B6_1, B6_2, B6_3],
        [pool6(vxlan_mode="Always"), pool(vxlan_mode="Always"), n1(), n2(**NO_VTEP6), n3(),
         B2, B6_2, B6_3],
        [pool6(vxlan_mode="CrossSubnet"), n1(), n2(), n3(ip6=None), B6_1, B6_2, B6_3],
        [pool6(vxlan_mode="Always"), n1(**NO_VTEP6), n2(), B6_2,
         wep("v6", ["fd00:244:0:1::7"])],
        [pool6(), pool(vxlan_mode="Always"), n1(), n2(), B6_2, B2],
    ]),
    # The states of the former PureHarness-only check, now through the graph.
    "former pure-compute states": (DEFAULT, [
        [pool(vxlan_mode="Always"), n1(), n2(), B1, B2],
        [pool(ipip_mode="Always"), n1(), n2(), n3(), B1, B2, BORROWED],
        [pool(vxlan_mode="CrossSubnet"), n1(), n3(), BORROWED, ipam_block("10.244.2.0/26", ME)],
        [pool(ipip_mode="CrossSubnet"), n1(), n2(), B2],
        [n1(), n2(), B1, B2],
    ]),
}
# fmt: on


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_expansion_agrees(name: str) -> None:
    config, states = SCENARIOS[name]
    check(states, config)


def test_scenarios_are_not_vacuous() -> None:
    """Spot checks that the states above produce the routes they are meant to exercise."""
    vx = desired(SCENARIOS["vxlan, a node losing its VTEP, nodes and blocks going"][1][0])
    assert vx[4]["10.244.2.0/26"] == ("vxlan.calico", "10.244.2.0")
    assert vx[4]["10.244.1.0/26"] == ("blackhole", None)
    no_vtep = desired(SCENARIOS["vxlan, a node losing its VTEP, nodes and blocks going"][1][1])
    assert "10.244.3.0/26" not in no_vtep[4] and "10.244.2.0/26" in no_vtep[4]
    cross = desired([pool(vxlan_mode="CrossSubnet"), n1(), n2(), n3(), B2, B3])
    assert cross[4]["10.244.2.0/26"] == ("eth0", "198.18.1.2")
    assert cross[4]["10.244.3.0/26"] == ("vxlan.calico", "10.244.3.0")
    ipip = desired([pool(ipip_mode="Always"), n1(), n2(), n3(), BORROWED])
    assert ipip[4]["10.244.3.70/32"] == ("tunl0", "198.18.1.2")
    assert "10.244.3.71/32" not in ipip[4]
    noencap = desired([pool(), n1(), n2(), n3(), B2, B3], ALL_POOLS)
    assert noencap[4]["10.244.2.0/26"] == ("eth0", "198.18.1.2")
    assert "10.244.3.0/26" not in noencap[4]
    assert desired([pool(), n1(), n2(), B2]) == {4: {}, 6: {}}
    v6 = desired(SCENARIOS["ipv6 vxlan next to ipv4"][1][0])
    assert v6[6]["fd00:244:0:2::/122"] == ("vxlan-v6.calico", "fd00:244:0:2::")
    assert v6[6]["fd00:244:0:2::9/128"] == ("vxlan-v6.calico", "fd00:244:0:3::")
    weps = desired(SCENARIOS["workload endpoints and overlapping pools"][1][1])
    assert weps[4]["10.244.1.5/32"] == ("calia", None) and "10.244.1.6/32" not in weps[4]
    assert weps[6]["fd00:244:0:1::5/128"] == ("calia", None)
    assert weps[4]["10.244.2.0/26"] == ("tunl0", "198.18.1.2")  # the more specific pool


def test_host_facts_and_config_changes_are_order_independent() -> None:
    """Host facts and FelixConfiguration arrive outside datastore updates; interleaving them
    with a state's updates gives the same result as setting them first."""
    state = keyed([pool(vxlan_mode="CrossSubnet"), pool6(vxlan_mode="Always"), n1(), n2(),
                   n3(), B1, B2, B3, B6_2, BORROWED])  # fmt: skip
    late = RouteGraphHarness()
    late.graph.set_host_facts(4, HostFacts(None, 9000))
    late.graph.set_felix_config(FelixConfig(vxlan_mtu=1400))
    ups = sorted(state.items())
    late.feed(ups[: len(ups) // 2])
    late.graph.set_host_facts(4, FACTS[4])
    late.feed(ups[len(ups) // 2 :])
    late.graph.set_felix_config(DEFAULT)
    late.feed([])
    assert late.result() == reference(RouteGraphHarness, state)


# --- random route states -----------------------------------------------------------------------
def _universe() -> dict[str, list[dict[str, Any]]]:
    """Per datastore key, the versions a random state may hold (or the key is absent)."""
    versions: list[list[dict[str, Any]]] = [
        [pool(vxlan_mode=m) for m in ("Always", "CrossSubnet")]
        + [pool(ipip_mode=m) for m in ("Always", "CrossSubnet")]
        + [pool(), pool(vxlan_mode="Always", nat_outgoing=True), pool(disabled=True),
           pool(vxlan_mode="Bogus")],  # invalid: ignored
        [ip_pool("inner", "10.244.2.0/24", ipip_mode="Always"),
         ip_pool("inner", "10.244.2.0/24", vxlan_mode="CrossSubnet")],
        [ip_pool("twin", "10.244.0.0/16", ipip_mode="Always"), ip_pool("twin", "10.244.0.0/16")],
        [pool6(vxlan_mode="Always"), pool6(vxlan_mode="CrossSubnet"), pool6()],
        [n1(), n1(**NO_VTEP), n1(ip="198.18.2.1/24"), n1(**NO_VTEP6), n1(ip=None)],
        [n2(), n2(**NO_VTEP), n2(ip=None), n2(**NO_VTEP6), n2(ip="198.18.2.2/24")],
        [n3(), n3(**NO_VTEP), n3(ip="198.18.1.3/24")],
        [B1, ipam_block("10.244.1.0/26", "n2")],
        [B2, ipam_block("10.244.2.0/26", "n2", held={"10.244.2.9": "n3"})],
        [B3, ipam_block("10.244.3.0/26", ME)],
        [BORROWED, ipam_block("10.244.3.64/26", "n3", held={"10.244.3.70": "n4"})],
        [ORPHAN],
        [B6_1],
        [B6_2, ipam_block("fd00:244:0:2::/122", "n3")],
        [wep("a", "10.244.1.5"), wep("a", ["10.244.1.5", "fd00:244:0:1::5"]),
         wep("a", "10.244.1.5", where="n2"), wep("a", "bad/32")],
        [wep("b", "10.244.3.70"), wep("b", "10.244.1.6", interface_name="calix")],
    ]  # fmt: skip
    return {next(iter(keyed(v))): v for v in versions}


UNIVERSE = _universe()


@st.composite
def route_states(draw: st.DrawFn) -> tuple[FelixConfig, list[State]]:
    config = draw(st.sampled_from([DEFAULT, ALL_POOLS]))
    return config, draw_states(draw, UNIVERSE)


@settings(
    max_examples=int(os.environ.get("ROUTE_ORDER_EXAMPLES", "250")),
    derandomize=os.environ.get("ROUTE_ORDER_RANDOM") is None,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(route_states())
def test_random_route_states(case: tuple[FelixConfig, list[State]]) -> None:
    config, states = case
    check_expansions(harness(config), states)


# --- the pure function -------------------------------------------------------------------------
def test_pure_compute_is_order_independent() -> None:
    """:func:`compute` behind :class:`PureHarness` (IPv4, as before the graph had the node)."""
    from pycalico.felix.calc.routes import compute
    from pycalico.model.network import Block, IPPool, Node

    def routes(state: Mapping[str, Any]) -> Any:
        rs = list(state.values())
        pools = [IPPool.from_resource(r) for r in rs if r["kind"] == "IPPool"]
        nodes = {r["metadata"]["name"]: Node.from_resource(r) for r in rs if r["kind"] == "Node"}
        blocks = [Block.from_resource(r) for r in rs if r["kind"] == "IPAMBlock"]
        return compute(
            ME,
            [p for p in pools if p is not None],
            nodes,
            [b for b in blocks if b is not None],
            DEFAULT,
            FACTS[4],
        )

    states = SCENARIOS["former pure-compute states"][1]
    check_expansions(lambda: PureHarness(routes), [keyed(s) for s in states])
