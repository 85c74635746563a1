"""Network kinds of the backend model: IPPool, Node, IPAMBlock, BlockAffinity, and this node's
WorkloadEndpoints as routing sees them — parsed once from v3 dicts with Calico's defaults.

Owns :class:`IPPool` (blockSize 26/122, nodeSelector ``all()``, allowedUses Workload+Tunnel
(Workload only with a namespaceSelector),
assignmentMode Automatic, ipip/vxlan mode Never), :class:`Node` (underlay addresses, tunnel
addresses, VTEP MACs, labels, AS number, route-reflector cluster ID), :class:`Block` (affine
node and borrowed addresses), :class:`BlockAffinity` and :class:`LocalEndpoint`, plus
:func:`parse_as_number`. Felix routing, the BGP renderer and IPAM all consume these.

Invariants: values are frozen and never hold revisions; a malformed field raises
:class:`ModelError` with ``kind``/``name``/``field``/``reason`` set and the message
``<Kind> '<name>': <field>: <reason>``. IPv4 and IPv6 share every class; IPIP is IPv4 only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pycalico.model.types import Endpoint, ModelError

if TYPE_CHECKING:  # the parser is imported on first use (see _selector)
    from pycalico.selector import Selector

Net4 = ipaddress.IPv4Network
Addr4 = ipaddress.IPv4Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

USE_WORKLOAD = "Workload"
USE_TUNNEL = "Tunnel"
USE_LOADBALANCER = "LoadBalancer"
ENCAP_MODES = ("Never", "Always", "CrossSubnet")
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
_MAC = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")


def _ident(res: Mapping[str, Any]) -> tuple[str, str]:
    md = res.get("metadata") or {}
    name = md.get("name", "?") if isinstance(md, Mapping) else "?"
    return str(res.get("kind", "?")), str(name)


def bad(res: Mapping[str, Any], fld: str, reason: str) -> ModelError:
    """The ModelError for field ``fld`` of resource ``res``."""
    kind, name = _ident(res)
    return ModelError(
        f"{kind} {name!r}: {fld}: {reason}", kind=kind, name=name, field=fld, reason=reason
    )


def _spec(res: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = res.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise bad(res, "spec", "must be a mapping")
    return spec


def _name(res: Mapping[str, Any]) -> str:
    return str((res.get("metadata") or {}).get("name", ""))


def parse_as_number(value: Any, fld: str = "asNumber") -> int:
    """ASNumber: a 32-bit int, or dotted ``a.b`` (= a*65536+b); ModelError naming ``fld``."""
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        n = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value.strip()):
        hi, lo = (int(x) for x in value.strip().split("."))
        if hi > 0xFFFF or lo > 0xFFFF:
            raise ModelError(f"{fld}: invalid dotted AS number {value!r}", field=fld)
        n = hi * 65536 + lo
    if n is None:
        raise ModelError(f"{fld}: invalid AS number {value!r}", field=fld)
    if not 0 < n <= 0xFFFFFFFF:
        reason = f"AS number {n} out of range 1..4294967295"
        raise ModelError(f"{fld}: {reason}", field=fld, reason=reason)
    return n


@lru_cache(maxsize=256)
def _selector(text: str) -> Selector:
    # Imported here: the CNI plugin (IPAM) parses pools on every ADD but pools almost always
    # select ``all()`` (see :meth:`IPPool.selects_node`), so the parser is rarely needed.
    from pycalico.selector import parse

    return parse(text)


@dataclass(frozen=True)
class IPPool:
    """An IPPool with Calico's defaults applied (``block_size`` 0 means the default)."""

    name: str
    cidr: Net
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    nat_outgoing: bool = False
    disabled: bool = False
    block_size: int = 0
    node_selector: str = "all()"
    namespace_selector: str = ""
    allowed_uses: tuple[str, ...] = (USE_WORKLOAD, USE_TUNNEL)
    assignment_mode: str = "Automatic"
    disable_bgp_export: bool = False

    def __post_init__(self) -> None:
        if not self.block_size:
            object.__setattr__(self, "block_size", DEFAULT_BLOCK_SIZE[self.cidr.version])

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

    @property
    def version(self) -> int:
        return self.cidr.version

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> IPPool:
        spec = _spec(res)
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
        except ValueError:
            raise bad(res, "spec.cidr", f"invalid CIDR {spec.get('cidr')!r}") from None

        def mode(fld: str) -> str:
            v = str(spec.get(fld) or "Never")
            if v not in ENCAP_MODES:
                raise bad(res, f"spec.{fld}", f"unknown mode {v!r} (Never, Always, CrossSubnet)")
            return v

        try:
            block_size = int(spec.get("blockSize") or 0)
        except (TypeError, ValueError):
            raise bad(res, "spec.blockSize", f"not an integer: {spec.get('blockSize')!r}") from None
        # Calico: a pool with a namespaceSelector defaults to Workload only.
        default_uses = (
            [USE_WORKLOAD] if spec.get("namespaceSelector") else [USE_WORKLOAD, USE_TUNNEL]
        )
        uses = spec.get("allowedUses") or default_uses
        return cls(
            name=_name(res),
            cidr=net,
            ipip_mode=mode("ipipMode"),
            vxlan_mode=mode("vxlanMode"),
            nat_outgoing=bool(spec.get("natOutgoing", False)),
            disabled=bool(spec.get("disabled", False)),
            block_size=block_size,
            node_selector=str(spec.get("nodeSelector") or "all()"),
            namespace_selector=str(spec.get("namespaceSelector") or "").strip(),
            allowed_uses=tuple(str(u) for u in uses),
            assignment_mode=str(spec.get("assignmentMode") or "Automatic"),
            disable_bgp_export=bool(spec.get("disableBGPExport", False)),
        )

    # -- IPAM's view ------------------------------------------------------------------------
    def selects_node(self, labels: Mapping[str, str]) -> bool:
        if self.node_selector.strip() == "all()":
            return True  # what parse("all()").evaluate(labels) returns, without the parser
        return _selector(self.node_selector).evaluate(labels)

    def selects_namespace(self, labels: Mapping[str, str] | None) -> bool:
        """Calico's rule: no namespaceSelector selects every namespace; otherwise the selector
        is evaluated on the namespace's labels (``None``, a workload outside any Kubernetes
        namespace, evaluates as no labels)."""
        if not self.namespace_selector:
            return True
        return _selector(self.namespace_selector).evaluate(dict(labels or {}))

    def block_for(self, ip: Addr) -> Net:
        """The block CIDR of this pool that contains ``ip``."""
        return ipaddress.ip_network(f"{ip}/{self.block_size}", strict=False)

    def num_blocks(self) -> int:
        return 1 << max(0, self.block_size - self.cidr.prefixlen)

    def block_at(self, index: int) -> Net:
        base = int(self.cidr.network_address) + (
            index << (self.cidr.max_prefixlen - self.block_size)
        )
        return ipaddress.ip_network(f"{ipaddress.ip_address(base)}/{self.block_size}")

    def contains(self, net_or_ip: Net | Addr) -> bool:
        if net_or_ip.version != self.version:
            return False
        if isinstance(net_or_ip, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return net_or_ip.subnet_of(self.cidr)  # type: ignore[arg-type]
        return net_or_ip in self.cidr


@dataclass(frozen=True)
class Node:
    """A Calico Node: underlay addresses (drive CrossSubnet), tunnel addresses, VTEP MACs,
    labels, BGP AS number and route-reflector cluster ID."""

    name: str
    ip: ipaddress.IPv4Interface | None = None
    ipip_tunnel_addr: Addr4 | None = None
    vxlan_tunnel_addr: Addr4 | None = None
    vxlan_mac: str | None = None
    ip6: ipaddress.IPv6Interface | None = None
    vxlan_tunnel_addr6: ipaddress.IPv6Address | None = None
    vxlan_mac6: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    as_number: int | None = None
    rr_cluster_id: str | None = None

    def address(self, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        return self.ip if version == 4 else self.ip6

    def vtep(self, version: int) -> tuple[Addr | None, str | None]:
        """(VXLAN tunnel address, VTEP MAC) of ``version``."""
        if version == 4:
            return self.vxlan_tunnel_addr, self.vxlan_mac
        return self.vxlan_tunnel_addr6, self.vxlan_mac6

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> Node:
        spec = _spec(res)
        bgp = spec.get("bgp") or {}

        def iface(fld: str, version: int) -> Any:
            value = bgp.get(fld)
            if not value:
                return None
            try:
                i = ipaddress.ip_interface(str(value))
            except ValueError:
                i = None
            if i is None or i.version != version:
                raise bad(res, f"spec.bgp.{fld}", f"invalid IPv{version} CIDR {value!r}")
            return i

        def addr(value: Any, fld: str, version: int) -> Any:
            if not value:
                return None
            try:
                a = ipaddress.ip_address(str(value).split("/")[0])
            except ValueError:
                a = None
            if a is None or a.version != version:
                raise bad(res, fld, f"invalid IPv{version} address {value!r}")
            return a

        macs: dict[str, str | None] = {}
        for key in ("vxlanTunnelMACAddr", "vxlanTunnelMACAddrV6"):
            mac = spec.get(key)
            if mac is not None and not _MAC.fullmatch(str(mac)):
                raise bad(res, f"spec.{key}", f"invalid MAC {mac!r}")
            macs[key] = str(mac).lower() if mac else None
        asn = bgp.get("asNumber")
        as_number = None
        if asn not in (None, ""):
            try:
                as_number = parse_as_number(asn, "spec.bgp.asNumber")
            except ModelError as e:
                raise bad(res, "spec.bgp.asNumber", e.reason) from None
        cid = bgp.get("routeReflectorClusterID") or None
        if cid is not None:
            try:
                cid = str(ipaddress.IPv4Address(cid))
            except ValueError:
                raise bad(
                    res, "spec.bgp.routeReflectorClusterID", f"{cid!r} is not IPv4-formatted"
                ) from None
        labels = (res.get("metadata") or {}).get("labels") or {}
        return cls(
            name=_name(res),
            ip=iface("ipv4Address", 4),
            ipip_tunnel_addr=addr(bgp.get("ipv4IPIPTunnelAddr"), "spec.bgp.ipv4IPIPTunnelAddr", 4),
            vxlan_tunnel_addr=addr(spec.get("ipv4VXLANTunnelAddr"), "spec.ipv4VXLANTunnelAddr", 4),
            vxlan_mac=macs["vxlanTunnelMACAddr"],
            ip6=iface("ipv6Address", 6),
            vxlan_tunnel_addr6=addr(spec.get("ipv6VXLANTunnelAddr"), "spec.ipv6VXLANTunnelAddr", 6),
            vxlan_mac6=macs["vxlanTunnelMACAddrV6"],
            labels={str(k): str(v) for k, v in labels.items()},
            as_number=as_number,
            rr_cluster_id=cid,
        )


@dataclass(frozen=True)
class Block:
    """An IPAM block: its affine node and the addresses held by *other* nodes."""

    cidr: Net
    node: str | None  # affinity host:<node>; None = unaffine (or virtual)
    # (address, holder node) for every allocation whose holder is not ``node``.
    borrowed: tuple[tuple[Addr, str], ...] = ()

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> Block | None:
        """None for a block marked deleted."""
        spec = _spec(res)
        if spec.get("deleted"):
            return None
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=True)
        except ValueError:
            raise bad(res, "spec.cidr", f"invalid CIDR {spec.get('cidr')!r}") from None
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
                raise bad(
                    res, f"spec.allocations[{ordinal}]", f"no attribute record {idx!r}"
                ) from None
            holder = sec.get("node") if isinstance(sec, dict) else None
            if holder and holder != node:
                borrowed.append((net.network_address + ordinal, str(holder)))
        return cls(cidr=net, node=node, borrowed=tuple(borrowed))


@dataclass(frozen=True)
class BlockAffinity:
    """A BlockAffinity: ``cidr`` claimed by ``node`` (state pending/confirmed/pendingDeletion)."""

    node: str
    cidr: Net
    state: str = "confirmed"
    deleted: bool = False

    @property
    def confirmed(self) -> bool:
        return self.state == "confirmed" and not self.deleted

    @classmethod
    def from_resource(cls, res: Mapping[str, Any]) -> BlockAffinity:
        spec = _spec(res)
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")))
        except ValueError:
            raise bad(res, "spec.cidr", f"invalid block {spec.get('cidr')!r}") from None
        return cls(
            node=str(spec.get("node") or ""),
            cidr=net,
            state=str(spec.get("state") or "confirmed"),
            deleted=spec.get("deleted") in (True, "true"),
        )


@dataclass(frozen=True)
class LocalEndpoint:
    """A WorkloadEndpoint on this node: its host-side interface and addresses."""

    iface: str
    ips: tuple[Addr, ...]

    @classmethod
    def of(cls, endpoint: Endpoint) -> LocalEndpoint:
        """The routing view of a converted WorkloadEndpoint (the policy model parses the
        resource once; routing takes its interface and host addresses)."""
        ips = tuple(n.network_address for n in endpoint.nets if n.prefixlen == n.max_prefixlen)
        return cls(endpoint.interface_name, ips)
