"""The route calc node: (pools, nodes, blocks, config, host facts) -> DesiredState per IP version.

:func:`compute` is the pure calculation; :class:`RouteCalculator` is the calc node the
:class:`~pycalico.felix.calc.graph.CalcGraph` owns: it keeps the parsed inputs, and on flush
emits :class:`~pycalico.felix.calc.messages.RouteSettingsUpdate` (what the dataplane needs to
read host facts and schedule resyncs) and :class:`~pycalico.felix.calc.messages.RoutesUpdate`
(one per IP version whose host facts the dataplane fed in) only when they changed.
:func:`pod_mtu` is the one MTU rule (Felix's and calico-node start-up's).

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
The calc node is pure too (no kernel, no datastore): host facts come in through
:meth:`RouteCalculator.set_host_facts`; nothing is emitted for a version without them, and
nothing at all before the graph is in sync. With both versions known the IPv4 state carries
the smaller pod MTU of the two (one MTU file).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pycalico.felix.calc.messages import RouteMessage, RouteSettingsUpdate, RoutesUpdate
from pycalico.felix.calc.routetypes import (
    FALLBACK_HOST_MTU,
    IPIP_DEVICE,
    IPIP_OVERHEAD,
    VXLAN_OVERHEAD,
    VXLAN_V6_OVERHEAD,
    Addr,
    Addr4,
    DesiredState,
    HostFacts,
    IpipSpec,
    Net,
    Net4,
    Route,
    Vtep,
    VxlanSpec,
    vxlan_device,
)
from pycalico.model import Endpoint, ModelError
from pycalico.model.felixconfig import FelixConfig
from pycalico.model.network import Block, IPPool, LocalEndpoint, Node
from pycalico.model.routing import BGP_DEFAULT_PCR, cluster_route_owner

log = logging.getLogger(__name__)

__all__ = [
    "HostFacts",
    "RouteCalculator",
    "compute",
    "encap_mtus",
    "host_mtu",
    "node_pod_mtu",
    "pod_mtu",
]


class MtuLink(Protocol):
    """What the MTU rule needs of a network device (kernel ``Link``s and calico-node's
    autodetected ``Interface``s both qualify)."""

    @property
    def name(self) -> str: ...
    @property
    def up(self) -> bool: ...
    @property
    def mtu(self) -> int: ...


def host_mtu(links: Iterable[MtuLink], pattern: str) -> int:
    """The host MTU (Felix's rule): the smallest MTU of the up devices whose name matches
    ``pattern`` (``mtuIfacePattern``, searched as Go's MatchString does), else
    :data:`FALLBACK_HOST_MTU`. ``re.error`` for an invalid pattern."""
    rx = re.compile(pattern)
    mtus = [lk.mtu for lk in links if lk.up and rx.search(lk.name) and lk.mtu > 0]
    return min(mtus) if mtus else FALLBACK_HOST_MTU


def encap_mtus(cfg: FelixConfig, host_mtu: int, version: int = 4) -> tuple[int, int]:
    """(VXLAN MTU, IPIP MTU) of ``version``: configured, else host MTU minus the
    encapsulation overhead (VXLAN over IPv6: 70)."""
    if version == 6:
        vx = cfg.vxlan_mtu_v6 or host_mtu - VXLAN_V6_OVERHEAD
    else:
        vx = cfg.vxlan_mtu or host_mtu - VXLAN_OVERHEAD
    ipip = cfg.ipip_mtu or host_mtu - IPIP_OVERHEAD
    return vx, ipip


def encaps_on(pools: Iterable[IPPool], cfg: FelixConfig, version: int) -> tuple[bool, bool]:
    """(VXLAN on, IPIP on) for ``version``: a pool of that encapsulation exists (and
    FelixConfiguration does not disable it), or FelixConfiguration forces it (IPv4)."""
    pools = [p for p in pools if p.cidr.version == version]
    vxlan_on = any(p.encap == "vxlan" for p in pools) and cfg.vxlan_enabled is not False
    vxlan_on = vxlan_on or (cfg.vxlan_enabled is True and version == 4)
    ipip_on = any(p.encap == "ipip" for p in pools) and cfg.ipip_enabled is not False
    ipip_on = ipip_on or (cfg.ipip_enabled is True and version == 4)
    return vxlan_on, ipip_on


def pod_mtu(pools: Iterable[IPPool], cfg: FelixConfig, host_mtu: int, version: int) -> int:
    """Felix's MTU rule for ``version``: the smallest MTU of the enabled encapsulations,
    else the host MTU."""
    pools = list(pools)
    vxlan_on, ipip_on = encaps_on(pools, cfg, version)
    vx_mtu, ipip_mtu = encap_mtus(cfg, host_mtu, version)
    mtus = [m for m, on in ((vx_mtu, vxlan_on), (ipip_mtu, ipip_on)) if on]
    return min(mtus) if mtus else host_mtu


def node_pod_mtu(
    pools: Iterable[IPPool], cfg: FelixConfig, host_mtu: int, versions: Iterable[int] = (4, 6)
) -> int:
    """The MTU file's value: :func:`pod_mtu` minimised over ``versions``."""
    pools = list(pools)
    return min(pod_mtu(pools, cfg, host_mtu, v) for v in versions)


def _pool_of(pools: Iterable[IPPool], net: Net) -> IPPool | None:
    best: IPPool | None = None
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
    pools: Iterable[IPPool],
    nodes: Mapping[str, Node],
    blocks: Iterable[Block],
    cfg: FelixConfig,
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

    def felix_owned(p: IPPool) -> bool:
        if p.encap == "vxlan" and cfg.vxlan_enabled is False:
            return False
        if p.encap == "ipip" and cfg.ipip_enabled is False:
            return False
        # Felix wins when both claim a pool, so its own setting decides (the BGP one only
        # matters to BIRD, which yields).
        return cluster_route_owner(p, cfg.program_cluster_routes, BGP_DEFAULT_PCR) == "felix"

    vxlan_on, ipip_on = encaps_on(pools, cfg, v)
    vx_mtu, ipip_mtu = encap_mtus(cfg, facts.host_mtu, v)

    routes: dict[Net, Route] = {}

    def route_to(dst: Net, pool: IPPool, holder: str) -> Route | None:
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

    mtu = pod_mtu(pools, cfg, facts.host_mtu, v)
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
        pod_mtu=mtu,
        problems=tuple(problems),
        version=v,
    )


_CFG0 = FelixConfig()
#: The settings a route dataplane assumes before any :class:`RouteSettingsUpdate`.
DEFAULT_SETTINGS = RouteSettingsUpdate(
    None, None, _CFG0.mtu_iface_pattern, _CFG0.route_refresh_interval
)


class RouteCalculator:
    """The routes calc node (module doc). ``on_update`` takes the graph's updates for
    :data:`KINDS`; only the owner of the graph calls it (not thread-safe)."""

    #: Kinds it parses itself; WorkloadEndpoints reach it already converted by the graph
    #: (:meth:`on_endpoint`).
    KINDS = ("IPPool", "Node", "IPAMBlock")

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._kind_of: dict[str, str] = {}  # datastore key -> kind, for deletions
        self._pools: dict[str, IPPool] = {}
        self._nodes: dict[str, Node] = {}  # by datastore key
        self._blocks: dict[str, Block] = {}
        self._endpoints: dict[str, LocalEndpoint] = {}  # this node's, by datastore key
        self._facts: dict[int, HostFacts] = {}
        self._config = _CFG0
        self._dirty = True
        self._sent_settings = DEFAULT_SETTINGS
        self._sent: dict[int, DesiredState] = {}

    # --- input --------------------------------------------------------------------------
    def on_update(self, key: str, value: Mapping[str, Any] | None) -> bool:
        """Record one update of :data:`KINDS` (``None`` = deleted). True when the key is one
        of them (the policy graph never needs those)."""
        kind = str(value.get("kind") or "") if value is not None else self._kind_of.get(key, "")
        if kind not in self.KINDS:
            return False
        if value is None:
            self._kind_of.pop(key, None)
        else:
            self._kind_of[key] = kind
        try:
            if kind == "IPPool":
                self._put(self._pools, key, IPPool.from_resource(value) if value else None)
            elif kind == "Node":
                self._put(self._nodes, key, Node.from_resource(value) if value else None)
            elif kind == "IPAMBlock":
                self._put(self._blocks, key, Block.from_resource(value) if value else None)
        except ModelError as e:
            log.warning("routes: ignoring %s", e)
            for d in (self._pools, self._nodes, self._blocks):
                if d.pop(key, None) is not None:
                    self._dirty = True
        return True

    def _put(self, d: dict[str, Any], key: str, value: Any) -> None:
        old = d.get(key)
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
        if old != value:
            self._dirty = True

    def on_endpoint(self, key: str, endpoint: Endpoint | None) -> None:
        """The graph's converted object for ``key`` (None: deleted, invalid, or not an
        endpoint); only this node's workload endpoints are kept."""
        local = None
        if endpoint is not None and not endpoint.is_host and endpoint.node == self.node_name:
            local = LocalEndpoint.of(endpoint)
        if local is not None or key in self._endpoints:
            self._put(self._endpoints, key, local)

    def set_host_facts(self, version: int, facts: HostFacts) -> None:
        """The dataplane's reading of the kernel for ``version``; enables its RoutesUpdate."""
        if self._facts.get(version) != facts:
            self._facts[version] = facts
            self._dirty = True

    # --- output -------------------------------------------------------------------------
    def set_config(self, config: FelixConfig) -> None:
        """The resolved Felix configuration (the agent resolves FelixConfiguration, env and
        overrides once, :func:`pycalico.model.felixconfig.resolve`, and hands it in)."""
        if config != self._config:
            self._config = config
            self._dirty = True

    @property
    def config(self) -> FelixConfig:
        return self._config

    def _me(self) -> Node | None:
        for n in self._nodes.values():
            if n.name == self.node_name:
                return n
        return None

    def settings(self) -> RouteSettingsUpdate:
        cfg, me = self.config, self._me()
        a4, a6 = (me.address(4), me.address(6)) if me else (None, None)
        return RouteSettingsUpdate(
            a4.ip if a4 else None, a6.ip if a6 else None, cfg.mtu_iface_pattern,
            cfg.route_refresh_interval,
        )  # fmt: skip

    def desired(self) -> dict[int, DesiredState]:
        """The desired state of each version with host facts (IPv4 carries the pod MTU
        minimised over both)."""
        cfg = self.config
        nodes = {n.name: n for n in self._nodes.values()}
        pools, blocks = list(self._pools.values()), list(self._blocks.values())
        eps = list(self._endpoints.values())
        out = {
            v: compute(self.node_name, pools, nodes, blocks, cfg, f, eps, version=v)
            for v, f in sorted(self._facts.items())
        }
        if 4 in out and 6 in out:  # one MTU file: the smallest over both families
            mtu = min(out[4].pod_mtu, out[6].pod_mtu)
            out[4] = dataclasses.replace(out[4], pod_mtu=mtu)
        return out

    def flush(self) -> list[RouteMessage]:
        """Messages for what changed since the last flush (module doc)."""
        if not self._dirty:
            return []
        self._dirty = False
        out: list[RouteMessage] = []
        settings = self.settings()
        if settings != self._sent_settings:
            self._sent_settings = settings
            out.append(settings)
        for v, want in self.desired().items():
            if self._sent.get(v) != want:
                self._sent[v] = want
                out.append(RoutesUpdate(v, want))
        return out
