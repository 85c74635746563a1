"""The Node kind (Calico's internal ``libcalico-go/lib/apis/internalapi/node.go``).

Owns the Node resource that calico-node writes for itself: BGP addresses (``ipv4Address`` /
``ipv6Address`` as CIDRs whose prefix length drives CrossSubnet decisions), AS number, route
reflector cluster ID (IPv4-formatted), tunnel addresses and MACs, orchestrator references,
addresses, interfaces, WireGuard settings, and ``status`` (WireGuard public keys, pod CIDRs).

Invariants: addresses are validated with Go's rules (``ipv4Address`` must be an IPv4 CIDR or IP,
tunnel addresses bare IPs of the right family, MACs parseable); a present ``spec.bgp`` must not
be empty. Helpers :meth:`NodeBGPSpec.ipv4_interface` / :meth:`NodeBGPSpec.ipv6_interface`
give consumers the parsed address + subnet.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictStr

from pycalico.api.base import Model, Problems, Resource, register
from pycalico.api.common import parse_cidr
from pycalico.api.kinds_bgp import (
    ASNumber,
    IPv4Addr,
    IPv6Addr,
    MaskedNet,
    ResourceName,
    null_to_empty,
)

_MAC = re.compile(
    r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$"
    r"|^([0-9A-Fa-f]{2}[:-]){7}[0-9A-Fa-f]{2}$"
    r"|^([0-9A-Fa-f]{2}[:-]){19}[0-9A-Fa-f]{2}$"
    r"|^([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}$"
)


def _mac(value: str) -> str:
    """Go ``net.ParseMAC``: 6, 8 or 20 octets, ``:``/``-`` separated or dotted quads."""
    if not _MAC.match(value) or (":" in value and "-" in value):
        raise ValueError(f"invalid MAC address {value!r}")
    return value


def _cidr_of_family(version: int) -> AfterValidator:
    def validate(value: str) -> str:
        if parse_cidr(value).version != version:
            raise ValueError(f"{value!r} is not an IPv{version} address/CIDR")
        return value

    return AfterValidator(validate)


def _wireguard_key(value: str) -> str:
    """A WireGuard key: standard base64 of exactly 32 bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"invalid WireGuard public key {value!r}") from None
    if len(raw) != 32:
        raise ValueError(f"invalid WireGuard public key {value!r}: must decode to 32 bytes")
    return value


MAC = Annotated[StrictStr, AfterValidator(_mac)]
WireguardKey = Annotated[StrictStr, AfterValidator(_wireguard_key)]


class NodeBGPSpec(Model):
    asNumber: ASNumber | None = None
    ipv4Address: Annotated[StrictStr, _cidr_of_family(4)] | None = None
    ipv6Address: Annotated[StrictStr, _cidr_of_family(6)] | None = None
    ipv4IPIPTunnelAddr: IPv4Addr | None = None
    routeReflectorClusterID: IPv4Addr | None = None

    def ipv4_interface(self) -> ipaddress.IPv4Interface | None:
        """``ipv4Address`` as address + subnet (a bare IP becomes /32)."""
        if not self.ipv4Address:
            return None
        return ipaddress.IPv4Interface(self.ipv4Address)

    def ipv6_interface(self) -> ipaddress.IPv6Interface | None:
        if not self.ipv6Address:
            return None
        return ipaddress.IPv6Interface(self.ipv6Address)


class OrchRef(Model):
    nodeName: StrictStr | None = None
    orchestrator: StrictStr


class NodeAddress(Model):
    address: MaskedNet
    type: Literal["CalicoNodeIP", "InternalIP", "ExternalIP"] | None = None


class NodeInterface(Model):
    name: ResourceName | None = None
    addresses: list[StrictStr] | None = None


class NodeWireguardSpec(Model):
    interfaceIPv4Address: IPv4Addr | None = None
    interfaceIPv6Address: IPv6Addr | None = None


class NodeSpec(Model):
    bgp: NodeBGPSpec | None = None
    ipv4VXLANTunnelAddr: IPv4Addr | None = None
    vxlanTunnelMACAddr: MAC | None = None
    ipv6VXLANTunnelAddr: IPv6Addr | None = None
    vxlanTunnelMACAddrV6: MAC | None = None
    orchRefs: list[OrchRef] | None = None
    wireguard: NodeWireguardSpec | None = None
    addresses: list[NodeAddress] | None = None
    interfaces: list[NodeInterface] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.bgp is not None and not self.bgp.model_dump(exclude_none=True):
            problems.add(f"{path}.bgp", "spec.bgp should not be empty")


class NodeStatus(Model):
    wireguardPublicKey: WireguardKey | None = None
    wireguardPublicKeyV6: WireguardKey | None = None
    podCIDRs: list[StrictStr] | None = None


@register("Node", aliases=("node", "nodes", "no", "nos"))
class Node(Resource):
    """A Calico node: its BGP identity, tunnel addresses and status."""

    kind: str = "Node"
    spec: Annotated[NodeSpec, BeforeValidator(null_to_empty)] = Field(default_factory=NodeSpec)
    status: Annotated[NodeStatus, BeforeValidator(null_to_empty)] = Field(
        default_factory=NodeStatus
    )
