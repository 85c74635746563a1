"""Block affinity lifecycle: which blocks a host owns, claiming new ones, releasing and
reclaiming them.

Owns the two-phase claim (BlockAffinity ``pending`` -> create IPAMBlock with
``affinity: host:<node>`` -> affinity ``confirmed``), affinity release (``pendingDeletion`` ->
delete the block if empty, else make it unaffine -> delete the affinity), the search for a free
block CIDR (hostname-seeded walk) and the reclaim of another host's long-empty block.

Invariants:
- A host owns a block only when the block's own ``affinity`` says so; a ``pending`` affinity
  whose block is not (yet) ours is ignored, never deleted here (its claimer may be mid-claim).
- Losing a claim race deletes only our own pending affinity and raises
  :class:`BlockClaimConflict`; the winner's block is untouched.
- A block is deleted only by a CAS delete at the revision where it was seen empty, so an
  allocation that races with a release wins and the block survives (unaffine if need be).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime

from pycalico.datastore.base import AlreadyExists, Conflict, NotFound
from pycalico.ipam.block import Block, IPNetwork, affinity_node, cidr_name, host_affinity
from pycalico.ipam.errors import BlockClaimConflict, BlockNotEmpty, IPAMError, TooManyRetries
from pycalico.ipam.pools import Pool, block_walk, fully_reserved
from pycalico.ipam.store import (
    STATE_CONFIRMED,
    STATE_PENDING,
    STATE_PENDING_DELETION,
    IPAMStore,
)

EMPTY_BLOCK_MIN_RECLAIM_AGE = 60.0
"""Seconds a block must have been claimed before another host may reclaim it when empty."""

_TIME_FMT = "%Y-%m-%dT%H:%M:%SZ"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime(_TIME_FMT)


def _age(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    try:
        t = datetime.strptime(stamp, _TIME_FMT).replace(tzinfo=UTC)
    except ValueError:
        return float("inf")
    return (datetime.now(UTC) - t).total_seconds()


def affine_blocks(store: IPAMStore, host: str, version: int) -> list[IPNetwork]:
    """CIDRs of the blocks ``host`` owns (confirmed, or pending whose block is already ours)."""
    out = []
    for aff in store.affinities(host):
        cidr = ipaddress.ip_network(aff.cidr)
        if cidr.version != version or aff.state == STATE_PENDING_DELETION:
            continue
        if aff.state == STATE_PENDING:
            # A claim that crashed (or is in flight): usable only once its block is ours.
            sb = store.get_block(cidr)
            if sb is None or sb.block.affinity != host_affinity(host):
                continue
            try:
                store.set_affinity_state(host, cidr, STATE_CONFIRMED)
            except (NotFound, IPAMError):
                continue
        out.append(cidr)
    return out


def claim_block(store: IPAMStore, cidr: IPNetwork, host: str) -> None:
    """Two-phase claim of ``cidr`` for ``host``; :class:`BlockClaimConflict` if lost."""
    try:
        store.create_affinity(host, cidr)
    except AlreadyExists:
        pass  # our own earlier (or concurrent) attempt: continue the claim
    blk = Block.new(cidr, host_affinity(host))
    blk.affinity_claim_time = now_rfc3339()
    try:
        store.create_block(blk)
    except AlreadyExists:
        sb = store.get_block(cidr)
        if sb is None or sb.block.affinity != host_affinity(host):
            store.delete_affinity(host, cidr)
            raise BlockClaimConflict(f"block {cidr} was claimed by another host") from None
    store.set_affinity_state(host, cidr, STATE_CONFIRMED)


def find_unclaimed(
    store: IPAMStore,
    pools: Sequence[Pool],
    host: str,
    reserved: Sequence[IPNetwork],
    reclaim_age: float | None = EMPTY_BLOCK_MIN_RECLAIM_AGE,
) -> IPNetwork | None:
    """A block CIDR with no block yet (hostname-seeded walk over each pool in order); failing
    that, an empty block of another host claimed over ``reclaim_age`` seconds ago, whose
    affinity is released here so the caller can claim it (None disables reclaiming)."""
    existing = store.block_names()
    for pool in pools:
        budget = len(existing) + 4096
        for cidr in block_walk(pool, host):
            budget -= 1
            if budget < 0:
                break
            if cidr_name(cidr) in existing:
                continue
            if reserved and fully_reserved(cidr, reserved):
                continue
            return cidr
    if reclaim_age is None:
        return None
    for sb in store.blocks():
        owner = affinity_node(sb.block.affinity)
        if owner is None or owner == host or not sb.block.is_empty():
            continue
        if not any(p.contains(sb.block.cidr) for p in pools):
            continue
        if _age(sb.block.affinity_claim_time) < reclaim_age:
            continue
        try:
            release_block_affinity(store, sb.block.cidr, owner, must_be_empty=True)
        except (BlockNotEmpty, IPAMError, NotFound):
            continue
        if store.get_block(sb.block.cidr) is None:
            return sb.block.cidr
    return None


def release_block_affinity(
    store: IPAMStore, cidr: IPNetwork | str, host: str, must_be_empty: bool = False
) -> None:
    """Drop ``host``'s affinity to block ``cidr``: delete the block when empty, else make it
    unaffine (or raise :class:`BlockNotEmpty` when ``must_be_empty``)."""
    net = ipaddress.ip_network(cidr) if isinstance(cidr, str) else cidr
    sb = store.get_block(net)
    if sb is not None and sb.block.affinity == host_affinity(host):
        if must_be_empty and not sb.block.is_empty():
            raise BlockNotEmpty(f"block {net} still has {sb.block.num_allocated()} allocations")
        try:
            store.set_affinity_state(host, net, STATE_PENDING_DELETION)
        except NotFound:
            pass
        for _ in range(store.retries):
            sb = store.get_block(net)
            if sb is None or sb.block.affinity != host_affinity(host):
                break
            if must_be_empty and not sb.block.is_empty():
                try:
                    store.set_affinity_state(host, net, STATE_CONFIRMED)
                except NotFound:
                    pass
                raise BlockNotEmpty(f"block {net} is no longer empty")
            try:
                if sb.block.is_empty():
                    store.delete_block(sb)
                else:
                    sb.block.affinity = None
                    store.write_block(sb)
                break
            except (Conflict, NotFound):
                continue
        else:
            raise TooManyRetries(f"release affinity of {net}")
    store.delete_affinity(host, net)
