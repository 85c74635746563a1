"""Pure allocation-block logic: one IPAM block (a CIDR, default /26 or /122) and its ordinals.

This module owns the in-memory model of Calico's ``IPAMBlock`` spec and every mutation on it;
it never touches a datastore (the allocator reads a block, mutates it here, then writes it back
with compare-and-swap).

Invariants:
- ``allocations[o]`` is ``None`` exactly when ordinal ``o`` is free, and then ``o`` appears once
  in ``unallocated``; every allocated ordinal points at a valid index of ``attributes``.
- ``unallocated`` is a FIFO: allocation pops from the head, release appends to the tail, so a
  freed address is reused as late as possible.
- ``sequenceNumber`` increases on every mutation; ``sequenceNumberForAllocation[o]`` is the
  block sequence number at the time ``o`` was allocated. A release that names a sequence number
  different from the stored one is stale (the address was freed and reused meanwhile) and fails
  with :class:`BadSequenceNumber` instead of freeing someone else's address.
- ``attributes`` holds no unreferenced entries after a release (it is compacted).
- A released address first *cools down* (Calico's ``ipCooldownSeconds``): its ordinal points
  at an attribute holding only ``releasedAt`` (no handle), so it is neither free nor
  allocated: not reusable, not releasable, not listed by :meth:`Block.allocated`, and the
  block is not empty. :meth:`Block.collect_cold` frees the ordinals whose cooldown has
  passed (appending them to ``unallocated``); with a cooldown of 0 a release frees at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pycalico.ipam.errors import AddressNotInBlock, AlreadyAllocated, BadSequenceNumber, IPAMError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

AFFINITY_HOST_PREFIX = "host:"


def cidr_name(cidr: IPNetwork | str) -> str:
    """Resource name of a CIDR as Calico's CRDs spell it (``10.0.0.0/26`` -> ``10-0-0-0-26``)."""
    return str(cidr).replace(".", "-").replace(":", "-").replace("/", "-")


def host_affinity(node: str) -> str:
    return AFFINITY_HOST_PREFIX + node


def affinity_node(affinity: str | None) -> str | None:
    """The node of a ``host:<node>`` affinity, else None."""
    if affinity and affinity.startswith(AFFINITY_HOST_PREFIX):
        return affinity[len(AFFINITY_HOST_PREFIX) :]
    return None


def reserved_ordinals(cidr: IPNetwork, reserved: Iterable[IPNetwork]) -> frozenset[int]:
    """Ordinals of ``cidr`` covered by any of the ``reserved`` networks (same family)."""
    base = int(cidr.network_address)
    size = cidr.num_addresses
    out: set[int] = set()
    for net in reserved:
        if net.version != cidr.version or not net.overlaps(cidr):
            continue
        lo = max(int(net.network_address), base) - base
        hi = min(int(net.broadcast_address), base + size - 1) - base
        out.update(range(lo, hi + 1))
    return frozenset(out)


RELEASED_AT = "releasedAt"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        try:
            t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)


def _released_before(value: Any, cutoff: str, before: datetime) -> bool:
    """``value`` (a ``releasedAt``) is at or before the cutoff; unreadable counts as cold.
    Times in :data:`TIME_FORMAT` (fixed width, UTC) compare as strings, without parsing."""
    text = str(value)
    if len(text) == len(cutoff) and text[-1] == "Z" and text[10] == "T":
        return text <= cutoff
    at = _parse_time(text)
    return at is None or at <= before


def _copy_attr(a: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    sec = out.get("secondary")
    if isinstance(sec, dict):
        out["secondary"] = dict(sec)
    return out


@dataclass
class Block:
    """One allocation block. Field names follow Calico's IPAMBlock spec."""

    cidr: IPNetwork
    affinity: str | None = None
    allocations: list[int | None] = field(default_factory=list)
    unallocated: list[int] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)
    sequence_number: int = 0
    seq_for_allocation: dict[str, int] = field(default_factory=dict)
    deleted: bool = False
    affinity_claim_time: str | None = None

    # ----- construction / (de)serialisation -----

    @classmethod
    def new(cls, cidr: IPNetwork | str, affinity: str | None = None) -> Block:
        net = ipaddress.ip_network(cidr, strict=True) if isinstance(cidr, str) else cidr
        n = net.num_addresses
        if n > 1 << 16:
            raise IPAMError(f"block {net}: too large ({n} addresses; at most 65536)")
        return cls(
            cidr=net,
            affinity=affinity,
            allocations=[None] * n,
            unallocated=list(range(n)),
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Block:
        net = ipaddress.ip_network(str(spec["cidr"]), strict=True)
        allocations = list(spec.get("allocations") or [None] * net.num_addresses)
        if len(allocations) != net.num_addresses:
            raise IPAMError(
                f"block {net}: spec.allocations has {len(allocations)} slots, "
                f"expected {net.num_addresses}"
            )
        return cls(
            cidr=net,
            affinity=spec.get("affinity") or None,
            allocations=allocations,
            unallocated=(
                list(spec["unallocated"])
                if spec.get("unallocated") is not None
                else [o for o, a in enumerate(allocations) if a is None]
            ),
            attributes=[_copy_attr(a) for a in spec.get("attributes") or []],
            sequence_number=int(spec.get("sequenceNumber") or 0),
            seq_for_allocation={
                str(k): int(v) for k, v in (spec.get("sequenceNumberForAllocation") or {}).items()
            },
            deleted=spec.get("deleted") is True or str(spec.get("deleted")).lower() == "true",
            affinity_claim_time=spec.get("affinityClaimTime") or None,
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "cidr": str(self.cidr),
            "affinity": self.affinity,
            "allocations": list(self.allocations),
            "unallocated": list(self.unallocated),
            "attributes": [_copy_attr(a) for a in self.attributes],
            "sequenceNumber": self.sequence_number,
            "sequenceNumberForAllocation": dict(self.seq_for_allocation),
            "deleted": self.deleted,
        }
        if self.affinity_claim_time:
            spec["affinityClaimTime"] = self.affinity_claim_time
        return spec

    # ----- addressing -----

    @property
    def name(self) -> str:
        return cidr_name(self.cidr)

    @property
    def size(self) -> int:
        return self.cidr.num_addresses

    def ordinal(self, ip: IPAddress | str) -> int:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if addr.version != self.cidr.version or addr not in self.cidr:
            raise AddressNotInBlock(f"address {addr} is not in block {self.cidr}")
        return int(addr) - int(self.cidr.network_address)

    def address(self, ordinal: int) -> IPAddress:
        if not 0 <= ordinal < self.size:
            raise AddressNotInBlock(f"ordinal {ordinal} is outside block {self.cidr}")
        return ipaddress.ip_address(int(self.cidr.network_address) + ordinal)

    def interface(self, ordinal: int) -> IPInterface:
        """The address with the block's prefix length (what Calico's AutoAssign returns)."""
        return ipaddress.ip_interface(f"{self.address(ordinal)}/{self.cidr.prefixlen}")

    # ----- queries -----

    @property
    def host(self) -> str | None:
        return affinity_node(self.affinity)

    def num_allocated(self) -> int:
        return self.size - len(self.unallocated)

    def _cooling(self, idx: int | None) -> bool:
        return idx is not None and RELEASED_AT in self.attributes[idx]

    def num_cooling(self) -> int:
        """Released addresses still in their cooldown (neither free nor allocated)."""
        return sum(1 for idx in self.allocations if self._cooling(idx))

    def num_free(self, reserved: frozenset[int] = frozenset()) -> int:
        if not reserved:
            return len(self.unallocated)
        return sum(1 for o in self.unallocated if o not in reserved)

    def is_empty(self) -> bool:
        return len(self.unallocated) == self.size

    def is_allocated(self, ip: IPAddress | str) -> bool:
        idx = self.allocations[self.ordinal(ip)]
        return idx is not None and not self._cooling(idx)

    def attributes_for(self, ip: IPAddress | str) -> dict[str, Any] | None:
        """``{"handle_id": ..., "secondary": {...}}`` of an allocated address, else None."""
        idx = self.allocations[self.ordinal(ip)]
        if idx is None or self._cooling(idx):
            return None
        return _copy_attr(self.attributes[idx])

    def released_at(self, ip: IPAddress | str) -> str | None:
        """When ``ip`` was released, while it is cooling down; else None."""
        idx = self.allocations[self.ordinal(ip)]
        if idx is None or not self._cooling(idx):
            return None
        return str(self.attributes[idx][RELEASED_AT])

    def handle_of(self, ordinal: int) -> str | None:
        idx = self.allocations[ordinal]
        if idx is None:
            return None
        h = self.attributes[idx].get("handle_id")
        return str(h) if h is not None else None

    def sequence_for(self, ip: IPAddress | str) -> int | None:
        o = self.ordinal(ip)
        if self.allocations[o] is None:
            return None
        return self.seq_for_allocation.get(str(o), 0)

    def allocated(self) -> list[tuple[IPAddress, dict[str, Any]]]:
        """Every allocated address with its attribute record, in ordinal order."""
        out = []
        for o, idx in enumerate(self.allocations):
            if idx is not None and not self._cooling(idx):
                out.append((self.address(o), self.attributes[idx]))
        return out

    def ips_for_handle(self, handle_id: str) -> list[IPAddress]:
        idxs = {i for i, a in enumerate(self.attributes) if a.get("handle_id") == handle_id}
        if not idxs:
            return []
        return [self.address(o) for o, idx in enumerate(self.allocations) if idx in idxs]

    # ----- mutations -----

    def _attr_index(self, handle_id: str | None, attrs: Mapping[str, str] | None) -> int:
        secondary = dict(attrs or {})
        for i, a in enumerate(self.attributes):
            if (
                RELEASED_AT not in a
                and a.get("handle_id") == handle_id
                and (a.get("secondary") or {}) == secondary
            ):
                return i
        self.attributes.append({"handle_id": handle_id, "secondary": secondary})
        return len(self.attributes) - 1

    def allocate(
        self,
        num: int,
        handle_id: str | None,
        attrs: Mapping[str, str] | None = None,
        reserved: frozenset[int] = frozenset(),
    ) -> list[IPInterface]:
        """Allocate up to ``num`` addresses from the FIFO head, skipping ``reserved`` ordinals.

        Returns the addresses (with the block's prefix); fewer than ``num`` when the block
        runs out. Reserved ordinals stay in ``unallocated`` in their position.
        """
        if num <= 0:
            return []
        chosen: list[int] = []
        keep: list[int] = []
        it = iter(self.unallocated)
        for o in it:
            if len(chosen) < num and o not in reserved:
                chosen.append(o)
            else:
                keep.append(o)
                if len(chosen) >= num:
                    keep.extend(it)
                    break
        if not chosen:
            return []
        self.unallocated = keep
        self.sequence_number += 1
        idx = self._attr_index(handle_id, attrs)
        for o in chosen:
            self.allocations[o] = idx
            self.seq_for_allocation[str(o)] = self.sequence_number
        return [self.interface(o) for o in chosen]

    def assign(
        self,
        ip: IPAddress | str,
        handle_id: str | None,
        attrs: Mapping[str, str] | None = None,
    ) -> IPInterface:
        """Allocate one specific address; :class:`AlreadyAllocated` when it is taken."""
        o = self.ordinal(ip)
        if self._cooling(self.allocations[o]):
            raise AlreadyAllocated(f"address {self.address(o)} is in cooldown")
        if self.allocations[o] is not None:
            raise AlreadyAllocated(f"address {self.address(o)} is already allocated")
        self.unallocated.remove(o)
        self.sequence_number += 1
        self.allocations[o] = self._attr_index(handle_id, attrs)
        self.seq_for_allocation[str(o)] = self.sequence_number
        return self.interface(o)

    def release(
        self,
        ips: Iterable[IPAddress | str],
        sequence_numbers: Mapping[str, int] | None = None,
        cooldown: float = 0,
        now: datetime | None = None,
    ) -> tuple[dict[str, int], list[IPAddress]]:
        """Release addresses into their cooldown of ``cooldown`` seconds (then
        :meth:`collect_cold`). Returns (released count per handle, addresses that were not
        allocated, cooling ones included).

        ``sequence_numbers`` maps ``str(ip)`` to the sequence number the caller saw when it
        decided to release; a mismatch raises :class:`BadSequenceNumber` and changes nothing.
        """
        ordinals: list[int] = []
        unallocated: list[IPAddress] = []
        for ip in ips:
            o = self.ordinal(ip)
            addr = self.address(o)
            if self.allocations[o] is None or self._cooling(self.allocations[o]):
                unallocated.append(addr)
                continue
            if sequence_numbers is not None and str(addr) in sequence_numbers:
                want = int(sequence_numbers[str(addr)])
                have = self.seq_for_allocation.get(str(o), 0)
                if want != have:
                    raise BadSequenceNumber(
                        f"address {addr}: sequence number {want} does not match current "
                        f"allocation {have} (it was released and reallocated)"
                    )
            if o not in ordinals:
                ordinals.append(o)
        counts = self._free(ordinals, cooldown, now)
        return counts, unallocated

    def release_by_handle(
        self, handle_id: str, cooldown: float = 0, now: datetime | None = None
    ) -> int:
        """Release every address of ``handle_id`` (into its cooldown); returns how many."""
        idxs = {i for i, a in enumerate(self.attributes) if a.get("handle_id") == handle_id}
        if not idxs:
            return 0
        ordinals = [o for o, idx in enumerate(self.allocations) if idx in idxs]
        return sum(self._free(ordinals, cooldown, now).values())

    def _free(self, ordinals: list[int], cooldown: float, now: datetime | None) -> dict[str, int]:
        counts: dict[str, int] = {}
        if not ordinals:
            return counts
        at = now or _utcnow()
        self.attributes.append({RELEASED_AT: at.strftime(TIME_FORMAT)})
        cool = len(self.attributes) - 1
        self.sequence_number += 1
        for o in ordinals:
            idx = self.allocations[o]
            assert idx is not None
            handle = self.attributes[idx].get("handle_id")
            key = str(handle) if handle is not None else ""
            counts[key] = counts.get(key, 0) + 1
            self.allocations[o] = cool
            self.seq_for_allocation[str(o)] = self.sequence_number
        self.collect_cold(cooldown, at)
        return counts

    def collect_cold(self, cooldown: float, now: datetime | None = None) -> bool:
        """Free the released ordinals whose ``releasedAt`` is at least ``cooldown`` seconds
        before ``now`` (FIFO: appended to ``unallocated``) and drop unused attributes.
        Returns whether the block changed (then it needs writing back)."""
        if not any(RELEASED_AT in a for a in self.attributes):
            return False  # nothing cooling (the common case): no walk over the ordinals
        before = (now or _utcnow()) - timedelta(seconds=max(0.0, cooldown))
        cutoff = before.strftime(TIME_FORMAT)
        cold: dict[int, bool] = {}  # per attribute: its ordinals are released together
        freed = False
        for o, idx in enumerate(self.allocations):
            if idx is None or not self._cooling(idx):
                continue
            if idx not in cold:
                cold[idx] = _released_before(self.attributes[idx][RELEASED_AT], cutoff, before)
            if cold[idx]:
                self.allocations[o] = None
                self.unallocated.append(o)
                self.seq_for_allocation.pop(str(o), None)
                freed = True
        compacted = self._compact_attributes()
        return freed or compacted

    def _compact_attributes(self) -> bool:
        used = sorted({idx for idx in self.allocations if idx is not None})
        if len(used) == len(self.attributes):
            return False
        remap = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[old] for old in used]
        self.allocations = [None if idx is None else remap[idx] for idx in self.allocations]
        return True
