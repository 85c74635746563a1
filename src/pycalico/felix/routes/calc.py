"""Pure route/VTEP calculation: (pools, nodes, blocks, config, host facts) -> DesiredState.

Reproduces Calico's route manager / L3 route resolver for Felix-owned pools (the one rule,
:func:`pycalico.model.routing.cluster_route_owner`; by default VXLAN and IPIP pools):

- remote node's affine block in a VXLAN pool: ``<block> via <remote VTEP IP> dev vxlan.calico
  onlink`` plus a VTEP (permanent neighbour tunnelIP->MAC, FDB MAC->node IP);
- in an IPIP pool: ``<block> via <remote node IP> dev tunl0 onlink``;
- CrossSubnet pool and the remote node IP inside this node's ``ipv4Address`` prefix:
  ``<block> via <remote node IP> dev <underlay> onlink`` (no encapsulation);
- an address allocated from a block but held by another node (borrowed): the same, as a /32
  towards the holder; an address held by this node needs nothing (the CNI route is local);
- this node's own affine blocks: ``blackhole <block>``;
- this node's workloads (WorkloadEndpoints): ``<ip>/32 dev <cali iface> scope link``.

IPv4 and IPv6 are two runs of the same function (``version``): IPv6 uses ``ipv6Address``,
``ipv6VXLANTunnelAddr``/``vxlanTunnelMACAddrV6``, device ``vxlan-v6.calico`` (overhead 70) and
never IPIP.

Invariants: the function is deterministic and total: a remote node lacking what its route
needs (IP, VTEP) yields no route and a line in ``problems``, never an exception; pools Felix
does not own produce nothing (a no-encap pool Felix owns: same-subnet onlink routes); the
result never routes to this node itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pycalico.felix.routes.model import (
    FALLBACK_HOST_MTU,
    IPIP_DEVICE,
    IPIP_OVERHEAD,
    VXLAN_OVERHEAD,
    VXLAN_V6_OVERHEAD,
    Addr,
    Addr4,
    BlockInfo,
    DesiredState,
    IpipSpec,
    LocalEndpoint,
    Net,
    Net4,
    NodeInfo,
    PoolInfo,
    Route,
    RouteConfig,
    Vtep,
    VxlanSpec,
    vxlan_device,
)
from pycalico.model.routing import BGP_DEFAULT_PCR, cluster_route_owner


@dataclass(frozen=True)
class HostFacts:
    """What the calculation needs from the kernel: the interface holding the node IP and the
    host MTU (see :func:`pycalico.felix.routes.mtu.host_mtu`)."""

    underlay_iface: str | None = None
    host_mtu: int = FALLBACK_HOST_MTU


def encap_mtus(cfg: RouteConfig, host_mtu: int) -> tuple[int, int]:
    """(VXLAN MTU, IPIP MTU): configured, else host MTU minus the encapsulation overhead."""
    vx = cfg.vxlan_mtu or host_mtu - VXLAN_OVERHEAD
    ipip = cfg.ipip_mtu or host_mtu - IPIP_OVERHEAD
    return vx, ipip


def _pool_of(pools: Iterable[PoolInfo], net: Net) -> PoolInfo | None:
    best: PoolInfo | None = None
    for p in pools:
        if p.cidr.version != net.version:
            continue
        if net.subnet_of(p.cidr) and (best is None or p.cidr.prefixlen > best.cidr.prefixlen):  # type: ignore[arg-type]
            best = p
    return best


def _host_net(addr: Addr) -> Net:
    return ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")


def compute(
    node_name: str,
    pools: Iterable[PoolInfo],
    nodes: Mapping[str, NodeInfo],
    blocks: Iterable[BlockInfo],
    cfg: RouteConfig,
    facts: HostFacts,
    endpoints: Iterable[LocalEndpoint] = (),
    version: int = 4,
) -> DesiredState:
    """The desired state of IP ``version``. ``endpoints``: this node's workloads (their
    ``/32``/``/128`` ``dev cali… scope link`` routes, which the CNI plugin creates first;
    re-created here so a resync repairs them). ``facts.underlay_iface`` is the interface
    holding this node's address of ``version``."""
    v = version
    pools = sorted((p for p in pools if p.cidr.version == v), key=lambda p: (str(p.cidr), p.name))
    me = nodes.get(node_name)
    my_ip = me.address(v) if me else None
    vx_dev = vxlan_device(v)
    addr_field = "ipv4Address" if v == 4 else "ipv6Address"
    problems: list[str] = []

    def felix_owned(p: PoolInfo) -> bool:
        if p.encap == "vxlan" and cfg.vxlan_enabled is False:
            return False
        if p.encap == "ipip" and cfg.ipip_enabled is False:
            return False
        return cluster_route_owner(p, cfg.program_cluster_routes, BGP_DEFAULT_PCR) == "felix"

    vxlan_on = any(p.encap == "vxlan" for p in pools) and cfg.vxlan_enabled is not False
    vxlan_on = vxlan_on or (cfg.vxlan_enabled is True and v == 4)
    ipip_on = any(p.encap == "ipip" for p in pools) and cfg.ipip_enabled is not False
    ipip_on = ipip_on or (cfg.ipip_enabled is True and v == 4)
    vx_mtu, ipip_mtu = encap_mtus(cfg, facts.host_mtu)
    if v == 6:
        vx_mtu = cfg.vxlan_mtu_v6 or facts.host_mtu - VXLAN_V6_OVERHEAD

    routes: dict[Net, Route] = {}

    def route_to(dst: Net, pool: PoolInfo, holder: str) -> Route | None:
        remote = nodes.get(holder)
        raddr = remote.address(v) if remote else None
        if remote is None or raddr is None:
            problems.append(f"{dst}: node {holder!r} has no spec.bgp.{addr_field}")
            return None
        rip = raddr.ip
        if my_ip is not None and rip == my_ip.ip:
            problems.append(f"{dst}: node {holder!r} has this node's IP {rip}")
            return None
        if pool.cross_subnet and my_ip is not None and rip in my_ip.network:
            if facts.underlay_iface is None:
                problems.append(f"{dst}: no interface holds this node's IP")
                return None
            return Route(dst, gateway=rip, dev=facts.underlay_iface, onlink=True)
        if pool.encap == "none":  # Felix owns a no-encap pool: only the same subnet works
            if my_ip is None or rip not in my_ip.network or facts.underlay_iface is None:
                problems.append(f"{dst}: no-encap pool, node {holder!r} not on this subnet")
                return None
            return Route(dst, gateway=rip, dev=facts.underlay_iface, onlink=True)
        if pool.encap == "vxlan":
            tun, mac = remote.vtep(v)
            if tun is None or mac is None:
                problems.append(f"{dst}: node {holder!r} has no VXLAN tunnel address/MAC")
                return None
            return Route(dst, gateway=tun, dev=vx_dev, onlink=True)
        return Route(dst, gateway=rip, dev=IPIP_DEVICE, onlink=True)

    for b in sorted((b for b in blocks if b.cidr.version == v), key=lambda b: str(b.cidr)):
        pool = _pool_of(pools, b.cidr)
        if pool is None or not felix_owned(pool):
            continue
        if b.node == node_name:
            routes[b.cidr] = Route(b.cidr, kind="blackhole")
        elif b.node is not None:
            r = route_to(b.cidr, pool, b.node)
            if r is not None:
                routes[b.cidr] = r
        for addr, holder in b.borrowed:
            if holder == node_name:
                continue  # our own workload: the CNI plugin's local /32 route
            dst = _host_net(addr)
            r = route_to(dst, pool, holder)
            if r is not None:
                routes[dst] = r

    for ep in sorted(endpoints, key=lambda e: (e.iface, [str(i) for i in e.ips])):
        if not ep.iface:
            continue
        for ip in ep.ips:
            if ip.version == v:
                dst = _host_net(ip)
                routes[dst] = Route(dst, dev=ep.iface, scope_link=True)

    vteps: list[Vtep] = []
    if vxlan_on:
        for n in sorted(nodes.values(), key=lambda n: n.name):
            naddr = n.address(v)
            tun, mac = n.vtep(v)
            if n.name == node_name or naddr is None or tun is None or mac is None:
                continue
            vteps.append(Vtep(n.name, tun, mac, naddr.ip))

    vxlan: VxlanSpec | None = None
    if vxlan_on:
        tun, mac = me.vtep(v) if me else (None, None)
        if my_ip is None or tun is None or mac is None:
            problems.append(f"node {node_name!r}: VXLAN needs {addr_field}, tunnel address, MAC")
        elif facts.underlay_iface is None:
            problems.append(f"node {node_name!r}: no interface holds {my_ip.ip}")
        else:
            vxlan = VxlanSpec(
                vni=cfg.vxlan_vni,
                port=cfg.vxlan_port,
                local_ip=my_ip.ip,
                parent=facts.underlay_iface,
                mac=mac,
                address=tun,
                mtu=vx_mtu,
                device=vx_dev,
            )

    ipip: IpipSpec | None = None
    if ipip_on:
        if me is None or me.ip is None:
            problems.append(f"node {node_name!r}: IPIP needs spec.bgp.ipv4Address")
        else:
            ipip = IpipSpec(local_ip=me.ip.ip, address=me.ipip_tunnel_addr, mtu=ipip_mtu)
    # Without our own device (this node lacks what it needs) its routes cannot exist.
    for dev, spec in ((vx_dev, vxlan), (IPIP_DEVICE, ipip)):
        if spec is None:
            dropped = [d for d, r in routes.items() if r.dev == dev]
            for d in dropped:
                del routes[d]
            if dropped:
                problems.append(f"{len(dropped)} routes via {dev} not programmed: no device")
    if vxlan is None:
        vteps = []
    hops: list[tuple[Net4, Addr4]] = [
        (r.dst, r.gateway)
        for r in sorted(routes.values(), key=lambda r: str(r.dst))
        if r.dev == IPIP_DEVICE
        and isinstance(r.dst, Net4)
        and isinstance(r.gateway, ipaddress.IPv4Address)
    ]

    mtus = [host for host, on in ((vx_mtu, vxlan_on), (ipip_mtu, ipip_on)) if on]
    pod_mtu = min(mtus) if mtus else facts.host_mtu
    hosts = sorted(
        (_host_net(a.ip) for n in nodes.values() if (a := n.address(v)) is not None), key=str
    )
    return DesiredState(
        routes=routes,
        vteps=tuple(vteps),
        vxlan=vxlan,
        ipip=ipip,
        ipip_next_hops=tuple(hops),
        masq_pools=tuple(p.cidr for p in pools if p.nat_outgoing),
        all_pools=tuple(p.cidr for p in pools),
        nat_exclude=tuple(hosts) if cfg.nat_exclude_host_ips else (),
        nat_snat_to=cfg.nat_outgoing_address if v == 4 else None,
        pod_mtu=pod_mtu,
        problems=tuple(problems),
        version=v,
    )
