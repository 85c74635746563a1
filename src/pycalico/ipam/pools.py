"""IPAM's read-only view of its inputs: IP pools, IPAM configuration, reservations, block walk.

Owns (the IPPool itself is the backend model's :class:`pycalico.model.network.IPPool`) the
conversion of ``IPAMConfiguration`` / ``IPReservation`` resources (plain
v3 dicts) into small immutable values with Calico's defaults applied, pool selection for a node
and use, and the hostname-seeded random walk over a pool's block CIDRs.

Invariants: values here never hold datastore state (no revisions); the block walk visits every
block CIDR of a pool exactly once, starting at a position that depends only on the hostname.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycalico.ipam.block import IPAddress, IPNetwork
from pycalico.ipam.errors import InvalidIPAMConfig, NotInPool
from pycalico.model.network import USE_LOADBALANCER as USE_LOADBALANCER
from pycalico.model.network import USE_TUNNEL as USE_TUNNEL
from pycalico.model.network import USE_WORKLOAD as USE_WORKLOAD
from pycalico.model.network import IPPool

DEFAULT_MAX_BLOCKS_PER_HOST = 20
MAX_MAX_BLOCKS_PER_HOST = 1_000_000
MAX_IP_COOLDOWN_SECONDS = 1200


Pool = IPPool
"""IPAM's pool is the backend model's IPPool (defaults and block arithmetic live there)."""


def pool_for(pools: Sequence[Pool], ip: IPAddress) -> Pool | None:
    """The (most specific) pool containing ``ip``."""
    best: Pool | None = None
    for p in pools:
        if p.contains(ip) and (best is None or p.cidr.prefixlen > best.cidr.prefixlen):
            best = p
    return best


def select_pools(
    pools: Sequence[Pool],
    version: int,
    requested: Sequence[str] | None,
    labels: Mapping[str, str],
    use: str,
    namespace_labels: Mapping[str, str] | None = None,
) -> list[Pool]:
    """The pools an auto-assignment may use, in order.

    Requested pools are used as given (their selectors are ignored, as Calico does for
    ``ipv4_pools`` and the ``cni.projectcalico.org/ipv4pools`` annotations); otherwise a
    pool must select both the node (``labels``) and the namespace (``namespace_labels``).
    """
    fam = [p for p in pools if p.version == version]
    if requested:
        chosen: list[Pool] = []
        for want in requested:
            match = [p for p in fam if p.name == want or str(p.cidr) == want]
            if not match:
                try:
                    net = ipaddress.ip_network(want, strict=False)
                    match = [p for p in fam if p.cidr == net]
                except ValueError:
                    pass
            if not match or match[0].disabled:
                raise NotInPool(f"the given pool ({want}) does not exist, or is not enabled")
            chosen.append(match[0])
        return [p for p in chosen if use in p.allowed_uses]
    chosen = [
        p
        for p in fam
        if not p.disabled
        and p.assignment_mode != "Manual"
        and p.selects_node(labels)
        and p.selects_namespace(namespace_labels)
    ]
    return [p for p in chosen if use in p.allowed_uses]


def host_seed(hostname: str) -> int:
    return int.from_bytes(hashlib.sha256(hostname.encode()).digest()[:8], "big")


def block_walk(pool: Pool, hostname: str) -> Iterator[IPNetwork]:
    """Every block CIDR of ``pool`` once, from a hostname-seeded random start, wrapping."""
    n = pool.num_blocks()
    start = random.Random(host_seed(hostname) ^ int(pool.cidr.network_address)).randrange(n)
    for i in range(n):
        yield pool.block_at((start + i) % n)


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


@dataclass(frozen=True)
class IPAMConfig:
    """The IPAMConfiguration singleton (``default``). ``ip_cooldown_seconds``: how long a
    released address stays unusable (Calico's ``ipCooldownSeconds``, default 0, 0-1200)."""

    strict_affinity: bool = False
    max_blocks_per_host: int = 0
    auto_allocate_blocks: bool = True
    ip_cooldown_seconds: int = 0

    @property
    def effective_max_blocks(self) -> int:
        return self.max_blocks_per_host or DEFAULT_MAX_BLOCKS_PER_HOST

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> IPAMConfig:
        return cls(
            strict_affinity=_flag(spec.get("strictAffinity"), False),
            max_blocks_per_host=int(spec.get("maxBlocksPerHost") or 0),
            auto_allocate_blocks=_flag(spec.get("autoAllocateBlocks"), True),
            ip_cooldown_seconds=int(spec.get("ipCooldownSeconds") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "strictAffinity": self.strict_affinity,
            "maxBlocksPerHost": self.max_blocks_per_host,
            "autoAllocateBlocks": self.auto_allocate_blocks,
            "ipCooldownSeconds": self.ip_cooldown_seconds,
        }

    def validate(self, setting: bool = False) -> None:
        """Range and cross-field rules; ``setting`` adds the rule Calico applies when the
        configuration is changed through IPAM (``ipam configure``): a block limit needs
        strict affinity."""
        if not 0 <= self.max_blocks_per_host <= MAX_MAX_BLOCKS_PER_HOST:
            raise InvalidIPAMConfig(
                f"spec.maxBlocksPerHost: {self.max_blocks_per_host} is out of range "
                f"0-{MAX_MAX_BLOCKS_PER_HOST}"
            )
        if not 0 <= self.ip_cooldown_seconds <= MAX_IP_COOLDOWN_SECONDS:
            raise InvalidIPAMConfig(
                f"spec.ipCooldownSeconds: {self.ip_cooldown_seconds} is out of range "
                f"0-{MAX_IP_COOLDOWN_SECONDS}"
            )
        if not self.strict_affinity and not self.auto_allocate_blocks:
            raise InvalidIPAMConfig(
                "spec.autoAllocateBlocks: cannot be false while strictAffinity is false"
            )
        if setting and self.max_blocks_per_host and not self.strict_affinity:
            raise InvalidIPAMConfig(
                "spec.maxBlocksPerHost: can only be set when strictAffinity is true"
            )


def reservations_from(items: Sequence[Mapping[str, Any]]) -> list[IPNetwork]:
    """Every reserved CIDR of a list of IPReservation resources."""
    out: list[IPNetwork] = []
    for res in items:
        for c in (res.get("spec") or {}).get("reservedCIDRs") or []:
            out.append(ipaddress.ip_network(str(c), strict=False))
    return out


def fully_reserved(cidr: IPNetwork, reserved: Sequence[IPNetwork]) -> bool:
    return any(
        r.version == cidr.version and cidr.subnet_of(r)  # type: ignore[arg-type]
        for r in reserved
    )
