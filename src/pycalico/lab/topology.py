"""Underlay plumbing of a lab: bridges, router, node namespaces (198.18.0.0/15; dual-stack
labs also fd00:198:18::/48, a unique-local range that exists only inside the lab).

Layout (``P`` = the lab's prefix):
- ``Pul`` holds bridge ``br0`` (and ``br1`` with two subnets); nothing else.
- ``Prt`` is the router: one leg per subnet (``198.18.<s>.254/24``), forwarding on. It is
  every node's default gateway (a unicast route off-node that proxy ARP for 169.254.1.1
  needs) and hosts etcd when the lab uses it. With one subnet it routes nothing.
- ``P<node>`` is a node: ``eth0`` = ``198.18.<s>.<i>/24`` on ``br<s>``, default route via
  the router, IPv4 forwarding on.
- Dual-stack (``state.pool6`` set): each of those interfaces also gets
  ``fd00:198:18:<s>::<host>/64`` (added ``nodad``: usable at once), nodes a default route
  via the router's v6 leg, IPv6 forwarding on in the router.
Invariants: nothing is created in the root namespace (veth ends are created straight into
their namespaces); every namespace is recorded in the state before it is used, so ``down``
removes it even after a partial ``up``.
"""

from __future__ import annotations

import ipaddress

from pycalico.lab.netns import ip_batch, run, sysctl
from pycalico.lab.state import LabState, NodeState

UNDERLAY = "198.18.{subnet}.{host}"
UNDERLAY6 = "fd00:198:18:{subnet}::{host}"
ROUTER_HOST = 254
TOR_HOST = 253


def node_subnet(index: int, nodes: int, subnets: int) -> int:
    """Subnet (0/1) of the 1-based node ``index``: first half on 0, second half on 1."""
    if subnets == 1:
        return 0
    return 0 if index <= (nodes + 1) // 2 else 1


def add_netns(state: LabState, name: str) -> None:
    state.update(lambda s: s.namespaces.append(name))
    run(["ip", "netns", "add", name])
    ip_batch(["link set lo up"], netns=name)


_add_netns = add_netns  # the earlier private name


def build_underlay(state: LabState) -> None:
    ul, rt = state.prefix + "ul", state.prefix + "rt"
    add_netns(state, ul)
    add_netns(state, rt)
    lines = []
    for s in range(state.subnets):
        lines += [f"link add br{s} type bridge", f"link set br{s} up"]
    ip_batch(lines, netns=ul)
    for s in range(state.subnets):
        run(["ip", "-n", rt, "link", "add", f"rt{s}", "type", "veth", "peer", "name", f"r{s}",
             "netns", ul])  # fmt: skip
        ip_batch([f"link set r{s} master br{s}", f"link set r{s} up"], netns=ul)
        ip_batch(
            [
                f"addr add {UNDERLAY.format(subnet=s, host=ROUTER_HOST)}/24 dev rt{s}",
                f"link set rt{s} up",
            ],
            netns=rt,
        )
        if state.pool6:
            ip_batch([f"addr add {router_ip6(s)}/64 dev rt{s} nodad"], netns=rt)
    sysctl(rt, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")


def router_ip(subnet: int = 0) -> str:
    return UNDERLAY.format(subnet=subnet, host=ROUTER_HOST)


def underlay_ip6(subnet: int, host: int) -> str:
    """The canonical (compressed) form of ``UNDERLAY6``."""
    return str(ipaddress.IPv6Address(UNDERLAY6.format(subnet=subnet, host=host)))


def router_ip6(subnet: int = 0) -> str:
    return underlay_ip6(subnet, ROUTER_HOST)


def add_node(
    state: LabState, name: str, index: int, nodes: int, route_reflector: bool = False
) -> NodeState:
    subnet = node_subnet(index, nodes, state.subnets)
    ns = state.prefix + name
    add_netns(state, ns)
    ul = state.prefix + "ul"
    peer = f"n{index}"
    run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", ul])
    ip_batch([f"link set {peer} master br{subnet}", f"link set {peer} up"], netns=ul)
    addr = f"{UNDERLAY.format(subnet=subnet, host=index)}/24"
    ip_batch(
        [
            f"addr add {addr} dev eth0",
            "link set eth0 up",
            f"route add default via {router_ip(subnet)} dev eth0",
        ],
        netns=ns,
    )
    addr6 = ""
    if state.pool6:
        addr6 = f"{underlay_ip6(subnet, index)}/64"
        ip_batch(
            [f"addr add {addr6} dev eth0 nodad", f"route add ::/0 via {router_ip6(subnet)}"],
            netns=ns,
        )
    sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    node = NodeState(
        name=name, netns=ns, ip=addr, subnet=subnet, route_reflector=route_reflector, ip6=addr6
    )
    state.update(lambda s: s.nodes.append(node))
    return node
