"""The IPAM allocator: Calico's auto-assign / assign / release semantics over a Datastore.

Owns the allocation algorithm (host's affine blocks first; then two-phase claims of new blocks
from a hostname-seeded random walk while the host owns fewer than ``maxBlocksPerHost`` and
``autoAllocateBlocks``; then borrowing from other blocks unless ``strictAffinity``), specific
assignment, release by address or handle, affinity claim/release and tunnel addresses.

Invariants:
- Every block/handle/affinity write is CAS with bounded retries (:data:`store.RETRIES`).
- A handle's count is raised *before* the block write that allocates (and lowered if that
  write loses the CAS race), and lowered *after* a release is written; a crash therefore can
  only leave a handle over-counting, never an allocation that its handle does not know.
- A claim is two-phase: BlockAffinity ``pending`` -> create IPAMBlock (someone else's block
  already there => our pending affinity is deleted and another CIDR is tried) -> ``confirmed``.
- A request either gets every address it asked for or raises :class:`NoAddressesAvailable`
  after returning what it had taken; it never loops unboundedly.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pycalico.datastore.base import Conflict, Datastore, NotFound
from pycalico.ipam import affinity
from pycalico.ipam.block import (
    IPAddress,
    IPInterface,
    IPNetwork,
    host_affinity,
    reserved_ordinals,
)
from pycalico.ipam.errors import (
    BlockClaimConflict,
    BlockNotEmpty,
    IPAMError,
    NoAddressesAvailable,
    NotInPool,
    TooManyRetries,
)
from pycalico.ipam.lock import HostLock
from pycalico.ipam.pools import (
    USE_TUNNEL,
    USE_WORKLOAD,
    IPAMConfig,
    Pool,
    host_seed,
    pool_for,
    select_pools,
)
from pycalico.ipam.store import (
    RETRIES,
    IPAMStore,
    StoredBlock,
)

TUNNEL_TYPES = {
    "ipip": ("ipip-tunnel-addr-", "ipipTunnelAddress", 4),
    "vxlan": ("vxlan-tunnel-addr-", "vxlanTunnelAddress", 4),
    "vxlan-v6": ("vxlan-v6-tunnel-addr-", "vxlanV6TunnelAddress", 6),
}
AttrMap = Mapping[str, str]


@dataclass(frozen=True)
class AllocationInfo:
    """One allocated address and who holds it."""

    ip: IPAddress
    handle_id: str | None
    attrs: dict[str, str]
    block: IPNetwork
    block_affinity: str | None
    sequence_number: int


@dataclass(frozen=True)
class _Selection:
    """What an auto-assignment selects pools by: node labels, namespace labels, use."""

    node_labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] | None
    use: str


def _as_ip(ip: IPAddress | IPInterface | str) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return ip.ip
    if isinstance(ip, str):
        return ipaddress.ip_interface(ip).ip
    return ip


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class IPAM:
    """Calico IPAM over ``ds``. ``lock_path``: per-host flock file held around allocations."""

    def __init__(
        self,
        ds: Datastore,
        *,
        lock_path: str | None = None,
        retries: int = RETRIES,
        empty_block_reclaim_age: float | None = affinity.EMPTY_BLOCK_MIN_RECLAIM_AGE,
    ) -> None:
        self.store = IPAMStore(ds, retries)
        self.lock = HostLock(lock_path)
        self.retries = retries
        self.empty_block_reclaim_age = empty_block_reclaim_age
        # Which affine block last had room, per (host, version): only an ordering hint, so
        # that a host with many full blocks does not re-read them all on every request.
        self._hint: dict[tuple[str, int], IPNetwork] = {}

    # ================================ configuration ================================

    def get_config(self) -> IPAMConfig:
        return self.store.config()

    def set_config(self, cfg: IPAMConfig) -> None:
        self.store.set_config(cfg)

    # ================================ auto-assign ==================================

    def auto_assign(
        self,
        num_v4: int,
        num_v6: int,
        handle_id: str,
        attrs: AttrMap | None,
        hostname: str,
        ipv4_pools: Sequence[str] | None = None,
        ipv6_pools: Sequence[str] | None = None,
        use: str = USE_WORKLOAD,
        namespace_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[IPInterface], list[IPInterface]]:
        """Allocate addresses for ``handle_id`` on ``hostname``; all-or-nothing.

        ``ipv4_pools``/``ipv6_pools``: pool CIDRs or names to use as given, whatever their
        node and namespace selectors (Calico's rule for requested pools). Otherwise every
        enabled, automatic pool whose nodeSelector matches the node's labels and whose
        namespaceSelector matches ``namespace_labels`` (the workload's Kubernetes namespace;
        None = no namespace, evaluated as no labels). Either way only pools whose allowedUses
        has ``use``.
        """
        if not handle_id:
            raise IPAMError("handle_id: required")
        if num_v4 < 0 or num_v6 < 0:
            raise IPAMError("number of addresses must be >= 0")
        with self.lock:
            cfg = self.store.config()
            pools = self.store.pools()
            labels: dict[str, str] = {}
            if any(p.node_selector.strip() not in ("", "all()") for p in pools):
                labels = self.store.node_labels(hostname) or {}
            sel = _Selection(labels, namespace_labels, use)
            v4 = self._assign_family(
                4, num_v4, handle_id, attrs, hostname, pools, ipv4_pools, cfg, sel
            )
            try:
                v6 = self._assign_family(
                    6, num_v6, handle_id, attrs, hostname, pools, ipv6_pools, cfg, sel
                )
            except BaseException:
                self.release_ips(v4)
                raise
        return v4, v6

    def _assign_family(
        self,
        version: int,
        num: int,
        handle_id: str,
        attrs: AttrMap | None,
        host: str,
        all_pools: Sequence[Pool],
        requested: Sequence[str] | None,
        cfg: IPAMConfig,
        sel: _Selection,
    ) -> list[IPInterface]:
        if num == 0:
            return []
        pools = select_pools(
            all_pools, version, requested, sel.node_labels, sel.use, sel.namespace_labels
        )
        names = [str(p.cidr) for p in pools]
        if not pools:
            raise NoAddressesAvailable(names, num, version, f"no usable IPv{version} pools")
        reserved = [r for r in self.store.reservations() if r.version == version]
        cooldown = cfg.ip_cooldown_seconds
        out: list[IPInterface] = []
        try:
            # 1. blocks affine to this host.
            affine = self._affine_blocks(host, version)
            hint = self._hint.get((host, version))
            order = sorted(affine, key=lambda c: c != hint)
            for cidr in order:
                if any(p.contains(cidr) for p in pools):
                    got = self._alloc_in_block(
                        cidr, num - len(out), handle_id, attrs, reserved, host, cooldown
                    )
                    if got:
                        self._hint[(host, version)] = cidr
                    out += got
                    if len(out) >= num:
                        return out
            # 2. claim new blocks.
            owned = len(affine)
            attempts = 0
            while (
                len(out) < num
                and cfg.auto_allocate_blocks
                and owned < cfg.effective_max_blocks
                and attempts < self.retries
            ):
                attempts += 1
                new = self._find_unclaimed(pools, host, reserved)
                if new is None:
                    break
                try:
                    self._claim(new, host)
                except BlockClaimConflict:
                    continue
                owned += 1
                self._hint[(host, version)] = new
                out += self._alloc_in_block(
                    new, num - len(out), handle_id, attrs, reserved, host, cooldown
                )
            # 3. borrow from any block in the pools.
            if len(out) < num and not cfg.strict_affinity:
                out += self._borrow(
                    pools, host, num - len(out), handle_id, attrs, reserved, cooldown
                )
            if len(out) < num:
                if owned >= cfg.effective_max_blocks:
                    why = (
                        f"cannot allocate new block due to per host block limit "
                        f"(maxBlocksPerHost {cfg.effective_max_blocks})"
                    )
                elif not cfg.auto_allocate_blocks:
                    why = "autoAllocateBlocks is false"
                else:
                    why = "no free block left to claim"
                why += (
                    " and strict affinity forbids borrowing"
                    if cfg.strict_affinity
                    else " and no other block has a free address"
                )
                raise NoAddressesAvailable(names, num, version, f"got {len(out)}; {why}")
            return out
        except BaseException:
            if out:
                self.release_ips(out)
            raise

    def _alloc_in_block(
        self,
        cidr: IPNetwork,
        num: int,
        handle_id: str,
        attrs: AttrMap | None,
        reserved: Sequence[IPNetwork],
        affine_host: str | None,
        cooldown: float,
    ) -> list[IPInterface]:
        """CAS loop: allocate up to ``num`` from one block (only if affine to ``affine_host``),
        first freeing the released addresses whose ``cooldown`` has passed."""
        for _ in range(self.retries):
            sb = self.store.get_block(cidr)
            if sb is None or sb.block.deleted:
                return []
            if affine_host is not None and sb.block.affinity != host_affinity(affine_host):
                return []
            sb.block.collect_cold(cooldown)
            rsv = reserved_ordinals(sb.block.cidr, reserved) if reserved else frozenset()
            ips = sb.block.allocate(num, handle_id, attrs, rsv)
            if not ips:
                return []
            self.store.adjust_handle(handle_id, cidr, len(ips))
            try:
                self.store.write_block(sb)
            except (Conflict, NotFound):
                self.store.adjust_handle(handle_id, cidr, -len(ips))
                continue
            return ips
        raise TooManyRetries(f"allocate in block {cidr}: gave up after {self.retries} conflicts")

    def _affine_blocks(self, host: str, version: int) -> list[IPNetwork]:
        return affinity.affine_blocks(self.store, host, version)

    def _find_unclaimed(
        self, pools: Sequence[Pool], host: str, reserved: Sequence[IPNetwork]
    ) -> IPNetwork | None:
        return affinity.find_unclaimed(
            self.store, pools, host, reserved, self.empty_block_reclaim_age
        )

    def _claim(self, cidr: IPNetwork, host: str) -> None:
        affinity.claim_block(self.store, cidr, host)

    def _borrow(
        self,
        pools: Sequence[Pool],
        host: str,
        num: int,
        handle_id: str,
        attrs: AttrMap | None,
        reserved: Sequence[IPNetwork],
        cooldown: float,
    ) -> list[IPInterface]:
        cands = [
            sb
            for sb in self.store.blocks()
            if not sb.block.deleted and any(p.contains(sb.block.cidr) for p in pools)
        ]
        random.Random(host_seed(host)).shuffle(cands)
        out: list[IPInterface] = []
        for sb in cands:
            if len(out) >= num:
                break
            rsv = reserved_ordinals(sb.block.cidr, reserved) if reserved else frozenset()
            sb.block.collect_cold(cooldown)
            if sb.block.num_free(rsv) == 0:
                continue
            out += self._alloc_in_block(
                sb.block.cidr, num - len(out), handle_id, attrs, reserved, None, cooldown
            )
        return out

    # ================================ specific assign ==============================

    def assign_ip(
        self,
        ip: IPAddress | IPInterface | str,
        handle_id: str,
        attrs: AttrMap | None,
        hostname: str,
    ) -> IPInterface:
        """Allocate one specific address (claiming its block for ``hostname`` if unclaimed)."""
        addr = _as_ip(ip)
        with self.lock:
            pool = pool_for(self.store.pools(), addr)
            if pool is None:
                raise NotInPool(f"the provided IP address {addr} is not in a configured pool")
            cidr = pool.block_for(addr)
            for _ in range(self.retries):
                sb = self.store.get_block(cidr)
                if sb is None:
                    try:
                        self._claim(cidr, hostname)
                    except BlockClaimConflict:
                        pass
                    continue
                sb.block.collect_cold(self.store.config().ip_cooldown_seconds)
                got = sb.block.assign(addr, handle_id, attrs)
                self.store.adjust_handle(handle_id, cidr, 1)
                try:
                    self.store.write_block(sb)
                except (Conflict, NotFound):
                    self.store.adjust_handle(handle_id, cidr, -1)
                    continue
                return got
        raise TooManyRetries(f"assign {addr}: gave up after {self.retries} conflicts")

    # ================================ release ======================================

    def _block_of(self, addr: IPAddress, pools: Sequence[Pool]) -> IPNetwork | None:
        pool = pool_for(pools, addr)
        if pool is not None:
            cidr = pool.block_for(addr)
            if self.store.get_block(cidr) is not None:
                return cidr
        for sb in self.store.blocks():
            if addr.version == sb.block.cidr.version and addr in sb.block.cidr:
                return sb.block.cidr
        return None

    def release_ips(
        self,
        ips: Sequence[IPAddress | IPInterface | str],
        sequence_numbers: Mapping[str, int] | None = None,
    ) -> list[IPAddress]:
        """Release addresses; returns those that were not allocated.

        ``sequence_numbers`` (``str(ip)`` -> number seen by the caller) guards each release:
        :class:`BadSequenceNumber` when the address was reallocated meanwhile.
        """
        addrs = [_as_ip(i) for i in ips]
        if not addrs:
            return []
        pools = self.store.pools()
        by_block: dict[IPNetwork, list[IPAddress]] = {}
        missing: list[IPAddress] = []
        for a in addrs:
            cidr = self._block_of(a, pools)
            if cidr is None:
                missing.append(a)
            else:
                by_block.setdefault(cidr, []).append(a)
        cooldown = self.store.config().ip_cooldown_seconds
        for cidr, group in by_block.items():
            missing += self._release_in_block(cidr, group, sequence_numbers, cooldown)
        return missing

    def _release_in_block(
        self,
        cidr: IPNetwork,
        addrs: list[IPAddress],
        seqs: Mapping[str, int] | None,
        cooldown: float,
    ) -> list[IPAddress]:
        for _ in range(self.retries):
            sb = self.store.get_block(cidr)
            if sb is None:
                return list(addrs)
            counts, missing = sb.block.release(addrs, seqs, cooldown)
            if not counts:
                return missing
            try:
                self._write_or_delete(sb)
            except (Conflict, NotFound):
                continue
            for handle, n in counts.items():
                if handle:
                    self.store.adjust_handle(handle, cidr, -n)
            return missing
        raise TooManyRetries(f"release in block {cidr}: gave up after {self.retries} conflicts")

    def _write_or_delete(self, sb: StoredBlock) -> None:
        """Write a block; an empty block with no affinity is deleted instead."""
        if sb.block.is_empty() and sb.block.affinity is None:
            self.store.delete_block(sb)
        else:
            self.store.write_block(sb)

    def release_by_handle(self, handle_id: str) -> list[IPAddress]:
        """Release every address held by ``handle_id``; returns them."""
        released: list[IPAddress] = []
        blocks = self.store.handle_blocks(handle_id)
        cooldown = self.store.config().ip_cooldown_seconds if blocks else 0
        for cidr_s in blocks:
            cidr = ipaddress.ip_network(cidr_s)
            for _ in range(self.retries):
                sb = self.store.get_block(cidr)
                if sb is None:
                    break
                ips = sb.block.ips_for_handle(handle_id)
                if not ips:
                    break
                sb.block.release_by_handle(handle_id, cooldown)
                try:
                    self._write_or_delete(sb)
                except (Conflict, NotFound):
                    continue
                released += ips
                break
            else:
                raise TooManyRetries(f"release handle {handle_id} in block {cidr}")
        self.store.delete_handle(handle_id)
        return released

    # ================================ queries ======================================

    def get_ips_by_handle(self, handle_id: str) -> list[IPAddress]:
        out: list[IPAddress] = []
        for cidr in self.store.handle_blocks(handle_id):
            sb = self.store.get_block(cidr)
            if sb is not None:
                out += sb.block.ips_for_handle(handle_id)
        return out

    def get_assignment_attributes(self, ip: IPAddress | IPInterface | str) -> AllocationInfo | None:
        """Who holds ``ip`` (None when it is not allocated)."""
        addr = _as_ip(ip)
        cidr = self._block_of(addr, self.store.pools())
        if cidr is None:
            return None
        sb = self.store.get_block(cidr)
        if sb is None:
            return None
        rec = sb.block.attributes_for(addr)
        if rec is None:
            return None
        return AllocationInfo(
            ip=addr,
            handle_id=rec.get("handle_id"),
            attrs=dict(rec.get("secondary") or {}),
            block=sb.block.cidr,
            block_affinity=sb.block.affinity,
            sequence_number=sb.block.sequence_for(addr) or 0,
        )

    def released_at(self, ip: IPAddress | IPInterface | str) -> str | None:
        """When ``ip`` was released, while it is still in its cooldown; else None."""
        addr = _as_ip(ip)
        cidr = self._block_of(addr, self.store.pools())
        sb = self.store.get_block(cidr) if cidr is not None else None
        if sb is None:
            return None
        sb.block.collect_cold(self.store.config().ip_cooldown_seconds)
        return sb.block.released_at(addr)

    # ================================ affinities ===================================

    def claim_affinity(
        self, cidr: IPNetwork | str, host: str
    ) -> tuple[list[IPNetwork], list[IPNetwork]]:
        """Claim every block of ``cidr`` (inside one pool) for ``host``: (claimed, failed)."""
        net = ipaddress.ip_network(cidr) if isinstance(cidr, str) else cidr
        pool = next((p for p in self.store.pools() if p.contains(net)), None)
        if pool is None:
            raise NotInPool(f"{net} is not inside a configured pool")
        claimed: list[IPNetwork] = []
        failed: list[IPNetwork] = []
        if net.prefixlen <= pool.block_size:
            subs: list[IPNetwork] = list(net.subnets(new_prefix=pool.block_size))
        else:
            subs = [pool.block_for(net.network_address)]
        for sub in subs:
            try:
                self._claim(sub, host)
                claimed.append(sub)
            except BlockClaimConflict:
                failed.append(sub)
        return claimed, failed

    def release_affinity(
        self, cidr: IPNetwork | str, host: str, must_be_empty: bool = False
    ) -> None:
        """Drop ``host``'s affinity to block ``cidr``: delete the block when empty, else make it
        unaffine (or raise :class:`BlockNotEmpty` when ``must_be_empty``)."""
        affinity.release_block_affinity(self.store, cidr, host, must_be_empty)

    def release_host_affinities(self, host: str, must_be_empty: bool = False) -> int:
        """Release every block affinity of ``host`` (e.g. when the node is deleted)."""
        n = 0
        for aff in self.store.affinities(host):
            try:
                self.release_affinity(aff.cidr, host, must_be_empty)
                n += 1
            except BlockNotEmpty:
                continue
        return n

    # ================================ tunnel addresses =============================

    def assign_tunnel_address(self, node: str, tunnel: str = "ipip") -> IPInterface:
        """The node's tunnel address of type ``ipip``/``vxlan``/``vxlan-v6`` (allocated once)."""
        prefix, typ, version = TUNNEL_TYPES[tunnel]
        handle = prefix + node
        existing = self.get_ips_by_handle(handle)
        pools = self.store.pools()
        for ip in existing:
            pool = pool_for(pools, ip)
            plen = pool.block_size if pool else ip.max_prefixlen
            return ipaddress.ip_interface(f"{ip}/{plen}")
        labels: Mapping[str, str] = {}
        if any(p.node_selector.strip() not in ("", "all()") for p in pools):
            labels = self.store.node_labels(node) or {}
        # Calico (allocateip) requests the pools that select the node and have the encap on;
        # requested pools skip the selectors in auto_assign, so the node is checked here.
        mode_ok = [
            str(p.cidr)
            for p in pools
            if p.version == version
            and not p.disabled
            and (p.ipip_mode if tunnel == "ipip" else p.vxlan_mode) not in ("", "Never")
            and p.selects_node(labels)
        ]
        if not mode_ok:
            raise NoAddressesAvailable([], 1, version, f"no enabled pool has {tunnel} enabled")
        attrs = {"node": node, "type": typ}
        v4, v6 = self.auto_assign(
            1 if version == 4 else 0,
            1 if version == 6 else 0,
            handle,
            attrs,
            node,
            ipv4_pools=mode_ok if version == 4 else None,
            ipv6_pools=mode_ok if version == 6 else None,
            use=USE_TUNNEL,
        )
        return (v4 + v6)[0]

    def release_tunnel_address(self, node: str, tunnel: str = "ipip") -> list[IPAddress]:
        return self.release_by_handle(TUNNEL_TYPES[tunnel][0] + node)
