"""IP address kinds of the v3 API: IPPool and IPReservation.

Owns Calico's IPPool semantics (``ippool.go`` + ``validateIPPoolSpec`` + the CRD CEL rules):
``cidr`` required, parseable, strictly masked, not overlapping the link-local ranges; block size
per family; encapsulation modes; allowed uses and their LoadBalancer cross rules; node/namespace
selectors. IPReservation holds CIDRs/IPs that IPAM must never hand out.

Invariant: decoding fills Calico's defaults (``blockSize`` 26/122, ``ipipMode``/``vxlanMode``
``Never``, ``nodeSelector`` ``all()``, ``allowedUses`` ``[Workload, Tunnel]``,
``assignmentMode`` ``Automatic``; ``[Workload]`` when a namespaceSelector is set, since Tunnel
pools cannot have one), so stored and printed pools show them, as calicoctl does.
Helpers give consumers the parsed network (:attr:`IPPoolSpec.network`) and the rules Calico
applies against other objects: :meth:`IPPool.update_problems` (cidr/blockSize immutable) and
:meth:`IPPool.overlap_problem` (no two pools may overlap).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from pycalico.api.base import Model, Problems, Resource, register
from pycalico.api.common import CIDR, IPNetwork, check_selector, parse_cidr
from pycalico.api.kinds_bgp import null_to_empty

V4_LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")
V6_LINK_LOCAL = ipaddress.ip_network("fe80::/10")
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}

EncapMode = Literal["Never", "Always", "CrossSubnet"]
AllowedUse = Literal["Workload", "Tunnel", "LoadBalancer"]


class IPPoolSpec(Model):
    cidr: StrictStr
    vxlanMode: EncapMode | None = None
    ipipMode: EncapMode | None = None
    natOutgoing: StrictBool | None = None
    disabled: StrictBool | None = None
    disableBGPExport: StrictBool | None = None
    blockSize: StrictInt | None = None
    nodeSelector: Annotated[StrictStr, Field(max_length=1024)] | None = None
    namespaceSelector: Annotated[StrictStr, Field(max_length=1024)] | None = None
    allowedUses: Annotated[list[AllowedUse], Field(max_length=10)] | None = None
    assignmentMode: Literal["Automatic", "Manual"] | None = None
    # APIv1 compatibility fields: accepted only when unset / false.
    ipip: dict[str, Any] | None = None
    natOutgoingV1: StrictBool | None = Field(default=None, alias="nat-outgoing")

    @property
    def network(self) -> IPNetwork:
        """The pool's network (host bits masked off)."""
        return parse_cidr(self.cidr)

    def _family(self) -> int | None:
        try:
            return parse_cidr(self.cidr).version
        except ValueError:
            return None

    @model_validator(mode="after")
    def _defaults(self) -> IPPoolSpec:
        family = self._family()
        if family is not None and "/" in self.cidr:
            net = parse_cidr(self.cidr)
            if ipaddress.ip_interface(self.cidr).ip == net.network_address:
                self.cidr = str(net)  # normalised, as Calico stores it (fd00:0::/64 -> fd00::/64)
        if self.blockSize is None or self.blockSize == 0:
            self.blockSize = DEFAULT_BLOCK_SIZE.get(family or 0, self.blockSize)
        if not self.ipipMode:
            self.ipipMode = "Never"
        if not self.vxlanMode:
            self.vxlanMode = "Never"
        if not self.nodeSelector:
            self.nodeSelector = "all()"
        if not self.allowedUses:
            # Calico's default is [Workload, Tunnel]; a Tunnel pool may not have a
            # namespaceSelector, so a namespace-scoped pool defaults to Workload only (this keeps
            # decode(encode(pool)) valid).
            self.allowedUses = ["Workload"] if self.namespaceSelector else ["Workload", "Tunnel"]
        if self.assignmentMode is None:
            self.assignmentMode = "Automatic"
        if self.natOutgoing is None:
            self.natOutgoing = False
        if self.disabled is None:
            self.disabled = False
        if self.disableBGPExport is None:
            self.disableBGPExport = False
        return self

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        p = f"{path}." if path else ""
        if self.ipip is not None:
            problems.add(p + "ipip", "ipip is an APIv1 field and must not be set; use ipipMode")
        if self.natOutgoingV1:
            problems.add(p + "nat-outgoing", "nat-outgoing must not be set; use natOutgoing")
        check_selector(self.nodeSelector, p + "nodeSelector", problems)
        check_selector(self.namespaceSelector, p + "namespaceSelector", problems)
        if not self.cidr:
            problems.add(p + "cidr", "IPPool CIDR must be specified")
            return
        if len(self.cidr) > 48:
            problems.add(p + "cidr", "CIDR is longer than 48 characters")
        try:
            net = parse_cidr(self.cidr)
        except ValueError:
            problems.add(p + "cidr", f"IPPool CIDR must be a valid subnet (got {self.cidr!r})")
            return
        uses = self.allowedUses or []
        lb = "LoadBalancer" in uses
        ipip = self.ipipMode in ("Always", "CrossSubnet")
        vxlan = self.vxlanMode in ("Always", "CrossSubnet")
        if net.version == 6 and ipip:
            problems.add(
                p + "ipipMode", "IPIPMode other than 'Never' is not supported on an IPv6 IP pool"
            )
        if ipip and vxlan:
            problems.add(p + "ipipMode", "IPIPMode and VXLANMode cannot both be enabled")
        if lb and (ipip or vxlan):
            problems.add(
                p + "ipipMode",
                "neither IPIPMode nor VXLANMode can be enabled on a LoadBalancer IP pool",
            )
        lo, hi = BLOCK_SIZE_RANGE[net.version]
        block = self.blockSize if self.blockSize is not None else DEFAULT_BLOCK_SIZE[net.version]
        if not lo <= block <= hi:
            problems.add(
                p + "blockSize",
                f"block size {block} must be between {lo} and {hi} for an IPv{net.version} pool",
            )
        if not self.disabled and net.prefixlen > block:
            problems.add(
                p + "cidr",
                "IP pool size is too small for use with Calico IPAM. It must be equal to or "
                "greater than the block size.",
            )
        if "/" in self.cidr and ipaddress.ip_interface(self.cidr).ip != net.network_address:
            problems.add(p + "cidr", "IP pool CIDR is not strictly masked")
        link_local = V4_LINK_LOCAL if net.version == 4 else V6_LINK_LOCAL
        if net.overlaps(link_local):
            problems.add(
                p + "cidr", f"IP pool range overlaps with IPv{net.version} Link Local {link_local}"
            )
        if lb:
            for use in uses:
                if use != "LoadBalancer":
                    problems.add(
                        p + "allowedUses", f"LoadBalancer cannot be used at the same time as {use}"
                    )
            if self.disableBGPExport:
                problems.add(
                    p + "disableBGPExport",
                    "an IP pool with allowedUses LoadBalancer cannot set disableBGPExport",
                )
            if self.nodeSelector != "all()":
                problems.add(
                    p + "nodeSelector",
                    "an IP pool with allowedUses LoadBalancer must have nodeSelector all()",
                )
        if "Tunnel" in uses and self.namespaceSelector:
            problems.add(
                p + "namespaceSelector", "a Tunnel IP pool cannot have a namespaceSelector"
            )


@register("IPPool", aliases=("ippool", "ippools", "ipp", "ipps", "pool", "pools"))
class IPPool(Resource):
    """A range of addresses IPAM may assign, with how traffic from it is routed."""

    kind: str = "IPPool"
    spec: Annotated[IPPoolSpec, BeforeValidator(null_to_empty)]
    status: dict[str, Any] | None = None

    def update_problems(self, old: IPPool) -> list[tuple[str, str]]:
        """Why replacing ``old`` by this pool is not allowed (cidr and blockSize are immutable)."""
        out = []
        if old.spec.cidr != self.spec.cidr:
            out.append(("spec.cidr", f"cidr is immutable (was {old.spec.cidr})"))
        if old.spec.blockSize != self.spec.blockSize:
            out.append(("spec.blockSize", f"blockSize is immutable (was {old.spec.blockSize})"))
        return out

    def overlap_problem(self, others: Iterable[IPPool]) -> str | None:
        """Calico refuses a pool whose CIDR overlaps another pool's (other than itself)."""
        mine = self.spec.network
        for other in others:
            if other.metadata.name == self.metadata.name:
                continue
            theirs = other.spec.network
            if mine.version == theirs.version and mine.overlaps(theirs):
                return (
                    f"IPPool({self.metadata.name}) CIDR {self.spec.cidr} overlaps with "
                    f"IPPool({other.metadata.name}) CIDR {other.spec.cidr}"
                )
        return None


class IPReservationSpec(Model):
    reservedCIDRs: list[CIDR] | None = None


@register("IPReservation", aliases=("ipreservation", "ipreservations"))
class IPReservation(Resource):
    """Addresses (CIDRs or IPs) inside pools that IPAM must never assign."""

    kind: str = "IPReservation"
    spec: Annotated[IPReservationSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=IPReservationSpec
    )
