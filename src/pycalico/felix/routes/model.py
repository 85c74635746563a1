"""Input values of the route calculation (pure data, no kernel, no datastore).

Owns the conversion of the datastore resources the route calc node watches (``IPPool``,
``Node``, ``IPAMBlock``, ``FelixConfiguration``, this node's ``WorkloadEndpoint``) into small
immutable values with Calico's defaults applied. The output values and constants live in
:mod:`pycalico.felix.calc.routetypes`; these input classes are moving to
:mod:`pycalico.model` (issue 12).

Invariants: values never hold revisions or kernel handles; parsing a malformed resource raises
:class:`RouteInputError` naming the resource and field (the calc logs and skips it, it never
stops routing for the rest of the cluster). IPv4 and IPv6 share every class.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pycalico.errors import CalicoError

DEFAULT_VXLAN_VNI = 4096
DEFAULT_VXLAN_PORT = 4789
DEFAULT_MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
DEFAULT_ROUTE_REFRESH_S = 90.0

Net4 = ipaddress.IPv4Network
Addr4 = ipaddress.IPv4Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


class RouteInputError(CalicoError):
    """A watched resource cannot be used for routing; names the resource and field."""

    def __init__(self, where: str, fld: str, reason: str) -> None:
        super().__init__(f"{where}: {fld}: {reason}")
        self.where = where
        self.field = fld


def _where(res: Mapping[str, Any]) -> str:
    md = res.get("metadata") or {}
    return f"{res.get('kind', '?')} {md.get('name', '?')!r}"


def _mode(value: Any, where: str, fld: str) -> str:
    v = str(value or "Never")
    if v not in ("Never", "Always", "CrossSubnet"):
        raise RouteInputError(where, fld, f"unknown mode {v!r} (Never, Always, CrossSubnet)")
    return v


@dataclass(frozen=True)
class PoolInfo:
    """An IPPool as routing sees it."""

    name: str
    cidr: Net
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    nat_outgoing: bool = False
    disabled: bool = False

    @property
    def encap(self) -> str:
        """``vxlan``, ``ipip`` or ``none`` (VXLAN wins if both are set, which Calico rejects;
        IPIP on an IPv6 pool, also rejected by Calico, counts as none)."""
        if self.vxlan_mode != "Never":
            return "vxlan"
        if self.ipip_mode != "Never" and self.cidr.version == 4:
            return "ipip"
        return "none"

    @property
    def cross_subnet(self) -> bool:
        return (self.vxlan_mode if self.encap == "vxlan" else self.ipip_mode) == "CrossSubnet"

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> PoolInfo | None:
        """RouteInputError for a bad pool (None is never returned any more; kept for callers
        that filter)."""
        w = _where(res)
        spec = res.get("spec") or {}
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
        except ValueError:
            raise RouteInputError(w, "spec.cidr", f"invalid CIDR {spec.get('cidr')!r}") from None
        return cls(
            name=str((res.get("metadata") or {}).get("name", "")),
            cidr=net,
            ipip_mode=_mode(spec.get("ipipMode"), w, "spec.ipipMode"),
            vxlan_mode=_mode(spec.get("vxlanMode"), w, "spec.vxlanMode"),
            nat_outgoing=bool(spec.get("natOutgoing", False)),
            disabled=bool(spec.get("disabled", False)),
        )


@dataclass(frozen=True)
class NodeInfo:
    """A Node's addresses: underlay CIDR (drives CrossSubnet), tunnel addresses, VTEP MAC."""

    name: str
    ip: ipaddress.IPv4Interface | None = None
    ipip_tunnel_addr: Addr4 | None = None
    vxlan_tunnel_addr: Addr4 | None = None
    vxlan_mac: str | None = None
    ip6: ipaddress.IPv6Interface | None = None
    vxlan_tunnel_addr6: ipaddress.IPv6Address | None = None
    vxlan_mac6: str | None = None

    def address(self, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        return self.ip if version == 4 else self.ip6

    def vtep(self, version: int) -> tuple[Addr | None, str | None]:
        """(VXLAN tunnel address, VTEP MAC) of ``version``."""
        if version == 4:
            return self.vxlan_tunnel_addr, self.vxlan_mac
        return self.vxlan_tunnel_addr6, self.vxlan_mac6

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> NodeInfo:
        w = _where(res)
        spec = res.get("spec") or {}
        bgp = spec.get("bgp") or {}

        def addr(value: Any, fld: str) -> Addr4 | None:
            if not value:
                return None
            try:
                return ipaddress.IPv4Address(str(value).split("/")[0])
            except ValueError:
                raise RouteInputError(w, fld, f"invalid IPv4 address {value!r}") from None

        ip = None
        if bgp.get("ipv4Address"):
            try:
                ip = ipaddress.IPv4Interface(str(bgp["ipv4Address"]))
            except ValueError:
                raise RouteInputError(
                    w, "spec.bgp.ipv4Address", f"invalid IPv4 CIDR {bgp['ipv4Address']!r}"
                ) from None
        macs: dict[str, str | None] = {}
        for key in ("vxlanTunnelMACAddr", "vxlanTunnelMACAddrV6"):
            mac = spec.get(key)
            if mac is not None and not re.fullmatch(
                r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", str(mac)
            ):
                raise RouteInputError(w, f"spec.{key}", f"invalid MAC {mac!r}")
            macs[key] = str(mac).lower() if mac else None
        ip6 = None
        if bgp.get("ipv6Address"):
            try:
                ip6 = ipaddress.IPv6Interface(str(bgp["ipv6Address"]))
            except ValueError:
                raise RouteInputError(
                    w, "spec.bgp.ipv6Address", f"invalid IPv6 CIDR {bgp['ipv6Address']!r}"
                ) from None
        tun6 = None
        if spec.get("ipv6VXLANTunnelAddr"):
            try:
                tun6 = ipaddress.IPv6Address(str(spec["ipv6VXLANTunnelAddr"]).split("/")[0])
            except ValueError:
                raise RouteInputError(
                    w, "spec.ipv6VXLANTunnelAddr", "invalid IPv6 address"
                ) from None
        return cls(
            name=str((res.get("metadata") or {}).get("name", "")),
            ip=ip,
            ipip_tunnel_addr=addr(bgp.get("ipv4IPIPTunnelAddr"), "spec.bgp.ipv4IPIPTunnelAddr"),
            vxlan_tunnel_addr=addr(spec.get("ipv4VXLANTunnelAddr"), "spec.ipv4VXLANTunnelAddr"),
            vxlan_mac=macs["vxlanTunnelMACAddr"],
            ip6=ip6,
            vxlan_tunnel_addr6=tun6,
            vxlan_mac6=macs["vxlanTunnelMACAddrV6"],
        )


@dataclass(frozen=True)
class BlockInfo:
    """An IPAM block: its affine node and the addresses held by *other* nodes."""

    cidr: Net
    node: str | None  # affinity host:<node>; None = unaffine (or virtual)
    # (address, holder node) for every allocation whose holder is not ``node``.
    borrowed: tuple[tuple[Addr, str], ...] = ()

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> BlockInfo | None:
        w = _where(res)
        spec = res.get("spec") or {}
        if spec.get("deleted"):
            return None
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=True)
        except ValueError:
            raise RouteInputError(w, "spec.cidr", f"invalid CIDR {spec.get('cidr')!r}") from None
        aff = spec.get("affinity") or ""
        node = aff[len("host:") :] if isinstance(aff, str) and aff.startswith("host:") else None
        allocs = spec.get("allocations") or []
        attrs = spec.get("attributes") or []
        borrowed: list[tuple[Addr, str]] = []
        for ordinal, idx in enumerate(allocs):
            if idx is None:
                continue
            try:
                sec = (attrs[int(idx)] or {}).get("secondary") or {}
            except (IndexError, ValueError, TypeError, AttributeError):
                raise RouteInputError(
                    w, f"spec.allocations[{ordinal}]", f"no attribute record {idx!r}"
                ) from None
            holder = sec.get("node") if isinstance(sec, dict) else None
            if holder and holder != node:
                borrowed.append((net.network_address + ordinal, str(holder)))
        return cls(cidr=net, node=node, borrowed=tuple(borrowed))


@dataclass(frozen=True)
class LocalEndpoint:
    """A WorkloadEndpoint on this node: its host-side interface and addresses."""

    iface: str
    ips: tuple[Addr, ...]

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> tuple[str, LocalEndpoint]:
        """(node, endpoint); RouteInputError for a bad address."""
        w = _where(res)
        spec = res.get("spec") or {}
        ips: list[Addr] = []
        for i, text in enumerate(spec.get("ipNetworks") or []):
            try:
                net = ipaddress.ip_network(str(text), strict=False)
            except ValueError:
                raise RouteInputError(
                    w, f"spec.ipNetworks[{i}]", f"invalid CIDR {text!r}"
                ) from None
            if net.prefixlen == net.max_prefixlen:
                ips.append(net.network_address)
        return str(spec.get("node") or ""), cls(str(spec.get("interfaceName") or ""), tuple(ips))


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
                    raise RouteInputError(
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
                raise RouteInputError(
                    "FelixConfiguration", "spec.mtuIfacePattern", str(e)
                ) from None
            kw["mtu_iface_pattern"] = pat
        if merged.get("routeRefreshInterval"):
            from pycalico.api.kinds_bgp import duration_seconds

            try:
                secs = duration_seconds(str(merged["routeRefreshInterval"]))
            except ValueError as e:
                raise RouteInputError(
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
                raise RouteInputError(
                    "FelixConfiguration", "spec.natOutgoingAddress", "not an IPv4 address"
                ) from None
        kw["nat_exclude_host_ips"] = merged.get("natOutgoingExclusions") == "IPPoolsAndHostIPs"
        if merged.get("programClusterRoutes"):
            kw["program_cluster_routes"] = str(merged["programClusterRoutes"])
        return RouteConfig(**{**out.__dict__, **kw})
