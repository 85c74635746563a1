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

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
DEFAULT_VXLAN_VNI = 4096
DEFAULT_VXLAN_PORT = 4789
DEFAULT_MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
DEFAULT_ROUTE_REFRESH_S = 90.0
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


def _cfg_error(where: str, fld: str, reason: str) -> ModelError:
    return ModelError(f"{where}: {fld}: {reason}", kind=where, field=fld, reason=reason)


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
        """``felix_configs``: FelixConfiguration resources by name."""
        merged: dict[str, Any] = {}
        for name in ("default", f"node.{node}"):
            res = felix_configs.get(name)
            if res:
                merged.update({k: v for k, v in (res.get("spec") or {}).items() if v is not None})
        out = cls()
        kw: dict[str, Any] = {}
        for key, attr in (("vxlanVNI", "vxlan_vni"), ("vxlanPort", "vxlan_port"),
                          ("vxlanMTU", "vxlan_mtu"), ("ipipMTU", "ipip_mtu"),
                          ("vxlanMTUV6", "vxlan_mtu_v6")):  # fmt: skip
            if key in merged:
                try:
                    kw[attr] = int(merged[key])
                except (TypeError, ValueError):
                    raise _cfg_error(
                        "FelixConfiguration", f"spec.{key}", "not an integer"
                    ) from None
        for key, attr in (("vxlanEnabled", "vxlan_enabled"), ("ipipEnabled", "ipip_enabled")):
            if key in merged:
                kw[attr] = bool(merged[key])
        if merged.get("mtuIfacePattern"):
            pat = str(merged["mtuIfacePattern"])
            try:
                re.compile(pat)
            except re.error as e:
                raise _cfg_error("FelixConfiguration", "spec.mtuIfacePattern", str(e)) from None
            kw["mtu_iface_pattern"] = pat
        if merged.get("routeRefreshInterval"):
            from pycalico.api.kinds_bgp import duration_seconds

            try:
                secs = duration_seconds(str(merged["routeRefreshInterval"]))
            except ValueError as e:
                raise _cfg_error(
                    "FelixConfiguration", "spec.routeRefreshInterval", str(e)
                ) from None
            if secs > 0:
                kw["route_refresh_s"] = secs
        if merged.get("natOutgoingAddress"):
            try:
                kw["nat_outgoing_address"] = str(
                    ipaddress.IPv4Address(merged["natOutgoingAddress"])
                )
            except ValueError:
                raise _cfg_error(
                    "FelixConfiguration", "spec.natOutgoingAddress", "not an IPv4 address"
                ) from None
        kw["nat_exclude_host_ips"] = merged.get("natOutgoingExclusions") == "IPPoolsAndHostIPs"
        if merged.get("programClusterRoutes"):
            kw["program_cluster_routes"] = str(merged["programClusterRoutes"])
        return RouteConfig(**{**out.__dict__, **kw})


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
