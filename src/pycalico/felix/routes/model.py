"""Input and output values of the route calculation (pure data, no kernel, no datastore).

Owns the conversion of the datastore resources the route agent watches (``IPPool``, ``Node``,
``IPAMBlock``, ``FelixConfiguration``) into small immutable values with Calico's defaults
applied, and the desired-state values the calculation emits (:class:`Route`, :class:`Vtep`,
:class:`VxlanSpec`, :class:`IpipSpec`, :class:`DesiredState`).

Invariants: values never hold revisions or kernel handles; parsing a malformed resource raises
:class:`RouteInputError` naming the resource and field (the agent logs and skips it, it never
stops routing for the rest of the cluster). IPv4 and IPv6 share every class; IPIP is IPv4 only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.model.felixconfig import DEFAULT_MTU_IFACE_PATTERN as DEFAULT_MTU_IFACE_PATTERN
from pycalico.model.felixconfig import DEFAULT_ROUTE_REFRESH_S as DEFAULT_ROUTE_REFRESH_S
from pycalico.model.felixconfig import DEFAULT_VXLAN_PORT as DEFAULT_VXLAN_PORT
from pycalico.model.felixconfig import DEFAULT_VXLAN_VNI as DEFAULT_VXLAN_VNI
from pycalico.model.felixconfig import resolve, specs_by_name
from pycalico.model.network import Addr as Addr
from pycalico.model.network import Addr4 as Addr4
from pycalico.model.network import Block, IPPool, Node
from pycalico.model.network import LocalEndpoint as LocalEndpoint
from pycalico.model.network import Net as Net
from pycalico.model.network import Net4 as Net4
from pycalico.model.types import ModelError

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


def vxlan_device(version: int) -> str:
    return VXLAN_DEVICE if version == 4 else VXLAN_V6_DEVICE


# The network kinds are the backend model's (pycalico.model.network); these names stay for
# the route code. A bad resource raises ModelError (RouteInputError), the agent skips it.
RouteInputError = ModelError
PoolInfo = IPPool
NodeInfo = Node
BlockInfo = Block


@dataclass(frozen=True)
class RouteConfig:
    """The FelixConfiguration fields routing uses (``default`` overlaid by ``node.<name>``)."""

    vxlan_vni: int = DEFAULT_VXLAN_VNI
    vxlan_port: int = DEFAULT_VXLAN_PORT
    vxlan_enabled: bool | None = None  # None: derived from the pools
    ipip_enabled: bool | None = None
    vxlan_mtu: int = 0  # 0 = auto
    vxlan_mtu_v6: int = 0
    ipip_mtu: int = 0
    mtu_iface_pattern: str = DEFAULT_MTU_IFACE_PATTERN
    route_refresh_s: float = DEFAULT_ROUTE_REFRESH_S
    # EnabledIPIPOnly/Enabled: Felix programs IPIP pool routes; Disabled: BIRD does (VXLAN is
    # always Felix's).
    program_cluster_routes: str = "EnabledIPIPOnly"
    nat_outgoing_address: str | None = None  # SNAT to this address instead of masquerade
    nat_exclude_host_ips: bool = False  # natOutgoingExclusions: IPPoolsAndHostIPs

    @classmethod
    def from_resources(
        cls, node: str, felix_configs: Mapping[str, Mapping[str, Any]]
    ) -> RouteConfig:
        """``felix_configs``: FelixConfiguration resources by name (the one resolver,
        :func:`pycalico.model.felixconfig.resolve`; bad values are ignored with a warning)."""
        c = resolve(node, specs_by_name(felix_configs))
        return cls(
            vxlan_vni=c.vxlan_vni,
            vxlan_port=c.vxlan_port,
            vxlan_enabled=c.vxlan_enabled,
            ipip_enabled=c.ipip_enabled,
            vxlan_mtu=c.vxlan_mtu,
            vxlan_mtu_v6=c.vxlan_mtu_v6,
            ipip_mtu=c.ipip_mtu,
            mtu_iface_pattern=c.mtu_iface_pattern,
            route_refresh_s=c.route_refresh_interval,
            program_cluster_routes=c.program_cluster_routes,
            nat_outgoing_address=c.nat_outgoing_address,
            nat_exclude_host_ips=c.nat_exclude_host_ips,
        )


# --------------------------------------------------------------------------- outputs


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
