"""Output values and constants of the route calculation (pure data, no kernel, no datastore).

Owns the desired-state values the route calc node (:mod:`pycalico.felix.calc.routes`) emits and
the route dataplane consumes — :class:`Route`, :class:`Vtep`, :class:`VxlanSpec`,
:class:`IpipSpec`, :class:`DesiredState` — the :class:`HostFacts` the dataplane reads from the
kernel and feeds back into the calculation, and the constants both sides agree on: our route
protocol (:data:`ROUTE_PROTO` = 80, Calico's DefaultRouteProto), device names, encapsulation
overheads and the fallback host MTU.

Invariants: values are frozen and hold no revisions or kernel handles; IPv4 and IPv6 share
every class (IPIP is IPv4 only).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

# Our ownership mark on kernel routes: Calico's DefaultRouteProto. BIRD uses 12 ("bird") and
# its kernel protocol neither learns nor touches routes of other protocols.
ROUTE_PROTO = 80
VXLAN_DEVICE = "vxlan.calico"
VXLAN_V6_DEVICE = "vxlan-v6.calico"
IPIP_DEVICE = "tunl0"
IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50
VXLAN_V6_OVERHEAD = 70
FALLBACK_HOST_MTU = 1460

Net4 = ipaddress.IPv4Network
Addr4 = ipaddress.IPv4Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def vxlan_device(version: int) -> str:
    return VXLAN_DEVICE if version == 4 else VXLAN_V6_DEVICE


@dataclass(frozen=True)
class HostFacts:
    """What the calculation needs from the kernel, per IP version: the interface holding the
    node's address of that version and the host MTU (smallest MTU of the up interfaces
    matching ``mtuIfacePattern``)."""

    underlay_iface: str | None = None
    host_mtu: int = FALLBACK_HOST_MTU


@dataclass(frozen=True, order=True)
class Route:
    """One kernel route we own (main table, protocol :data:`ROUTE_PROTO`)."""

    dst: Net
    kind: str = "unicast"  # "unicast" | "blackhole"
    gateway: Addr | None = None
    dev: str | None = None
    onlink: bool = False
    scope_link: bool = False  # local workload routes: ``<ip>/32 dev cali... scope link``

    def ip_spec(self) -> str:
        """The ``ip route replace`` arguments (without ``proto``)."""
        if self.kind == "blackhole":
            return f"blackhole {self.dst}"
        parts = [str(self.dst)]
        if self.gateway is not None:
            parts += ["via", str(self.gateway)]
        if self.dev:
            parts += ["dev", self.dev]
        if self.onlink:
            parts.append("onlink")
        if self.scope_link:
            parts += ["scope", "link"]
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class Vtep:
    """A remote VXLAN tunnel endpoint: permanent neighbour + FDB entry on vxlan.calico."""

    node: str
    tunnel_ip: Addr
    mac: str
    node_ip: Addr


@dataclass(frozen=True)
class VxlanSpec:
    """Our own vxlan.calico device."""

    vni: int
    port: int
    local_ip: Addr
    parent: str
    mac: str
    address: Addr
    mtu: int
    device: str = VXLAN_DEVICE


@dataclass(frozen=True)
class IpipSpec:
    """Our own (userspace) tunl0 device."""

    local_ip: Addr4
    address: Addr4 | None
    mtu: int


@dataclass(frozen=True)
class DesiredState:
    routes: Mapping[Net, Route] = field(default_factory=dict)
    vteps: tuple[Vtep, ...] = ()
    vxlan: VxlanSpec | None = None
    ipip: IpipSpec | None = None
    # Userspace IPIP: inner destination prefix -> outer destination (remote node IP).
    ipip_next_hops: tuple[tuple[Net4, Addr4], ...] = ()
    masq_pools: tuple[Net, ...] = ()  # natOutgoing pools (nft set masq-ipam-pools)
    all_pools: tuple[Net, ...] = ()  # every pool (nft set network-ip-pools)
    nat_exclude: tuple[Net, ...] = ()  # host IPs (set all-hosts-net) when configured
    nat_snat_to: str | None = None  # natOutgoingAddress
    pod_mtu: int = 0  # written to the CNI plugin's MTU file (0 = leave it)
    problems: tuple[str, ...] = ()  # why something could not be programmed (logged)
    version: int = 4
