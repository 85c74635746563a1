"""IPAM consistency check and leak repair (Calico's ``calicoctl ipam check`` and the
kube-controllers IPAM garbage collector).

Owns: :func:`check` (a pure read of blocks, handles, affinities, pools, nodes and
WorkloadEndpoints into a :class:`CheckReport`), the report's JSON form (what
``calicoctl ipam release --from-report`` consumes), and :class:`LeakCollector` (releases leaks
after a grace period).

Invariants:
- An allocation is *in use* when a WorkloadEndpoint lists its address in ``spec.ipNetworks`` or
  has the container ID its CNI handle (``<network>.<containerID>``) names; a tunnel address
  (attribute ``type`` ending ``TunnelAddress``) is in use while its node exists. Everything
  else is *leaked*.
- The collector releases a workload leak only after it has been seen leaked for the whole
  grace period, and re-checks it (same handle, same sequence number) immediately before
  releasing it with a sequence-number guard, so an address reused meanwhile is never freed.
  Tunnel addresses of deleted nodes are released without grace.
- Empty affine blocks are released only after two consecutive empty observations, and every
  node keeps at least one block (as Calico's GC does); likewise an affinity whose block is
  missing or owned by another host (a claim that died half-way) is deleted only when seen on
  two consecutive runs.
- Released addresses still in their cooldown (``ipCooldownSeconds``) are neither in use nor
  leaked; each collector run first frees those whose cooldown has passed
  (:func:`collect_cold_ips`).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pycalico.datastore.base import Conflict, Datastore, NotFound
from pycalico.ipam.allocator import IPAM
from pycalico.ipam.block import affinity_node
from pycalico.ipam.errors import BadSequenceNumber, IPAMError
from pycalico.ipam.store import KIND_NODE, IPAMStore

REPORT_VERSION = "pycalico.ipam.check/v1"
KIND_WEP = "WorkloadEndpoint"
DEFAULT_GRACE_PERIOD = 15 * 60.0


class ReportError(IPAMError, ValueError):
    """A check report file that cannot be used."""


@dataclass(frozen=True)
class Leak:
    ip: str
    handle: str | None
    block: str
    sequenceNumber: int
    node: str | None
    reason: str
    attrs: dict[str, str] = field(default_factory=dict)
    tunnel: bool = False

    @property
    def key(self) -> tuple[str, str | None, int]:
        return (self.ip, self.handle, self.sequenceNumber)


@dataclass
class CheckReport:
    blocks: int = 0
    allocations: int = 0
    leaked: list[Leak] = field(default_factory=list)
    in_use_not_allocated: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    outside_pools: list[dict[str, Any]] = field(default_factory=list)
    stale_affinities: list[dict[str, Any]] = field(default_factory=list)
    orphan_affinities: list[dict[str, Any]] = field(default_factory=list)
    handle_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            len(self.leaked)
            + len(self.in_use_not_allocated)
            + len(self.duplicates)
            + len(self.outside_pools)
            + len(self.stale_affinities)
            + len(self.orphan_affinities)
            + len(self.handle_mismatches)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "generatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "problems": self.problems,
            "blocks": self.blocks,
            "allocations": self.allocations,
            "leakedIPs": [asdict(lk) for lk in self.leaked],
            "inUseNotAllocated": self.in_use_not_allocated,
            "duplicateIPs": self.duplicates,
            "outsidePools": self.outside_pools,
            "staleAffinities": self.stale_affinities,
            "orphanAffinities": self.orphan_affinities,
            "handleMismatches": self.handle_mismatches,
        }

    @classmethod
    def from_json(cls, doc: Any) -> CheckReport:
        if not isinstance(doc, dict) or doc.get("version") != REPORT_VERSION:
            raise ReportError(f"not an ipam check report (expected version {REPORT_VERSION})")
        try:
            leaked = [Leak(**lk) for lk in doc.get("leakedIPs") or []]
        except TypeError as e:
            raise ReportError(f"leakedIPs: malformed entry ({e})") from None
        return cls(
            blocks=int(doc.get("blocks") or 0),
            allocations=int(doc.get("allocations") or 0),
            leaked=leaked,
            in_use_not_allocated=list(doc.get("inUseNotAllocated") or []),
            duplicates=list(doc.get("duplicateIPs") or []),
            outside_pools=list(doc.get("outsidePools") or []),
            stale_affinities=list(doc.get("staleAffinities") or []),
            orphan_affinities=list(doc.get("orphanAffinities") or []),
            handle_mismatches=list(doc.get("handleMismatches") or []),
        )


def load_report(path: str) -> CheckReport:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read report {path}: {e}") from None
    return CheckReport.from_json(doc)


def _container_of(handle: str | None) -> str | None:
    """Container ID of a CNI handle ``<network>.<containerID>``."""
    if not handle or "." not in handle:
        return None
    return handle.rsplit(".", 1)[1] or None


def check(ds: Datastore) -> CheckReport:
    """Scan the whole IPAM state for inconsistencies."""
    store = IPAMStore(ds)
    nodes = store.node_names()
    pools = store.pools()
    weps = ds.list(KIND_WEP).items
    wep_ips: dict[str, list[str]] = {}
    containers: set[str] = set()
    for w in weps:
        spec = w.get("spec") or {}
        wid = f"{w['metadata'].get('namespace', '')}/{w['metadata']['name']}"
        if spec.get("containerID"):
            containers.add(str(spec["containerID"]))
        for net in spec.get("ipNetworks") or []:
            try:
                ip = str(ipaddress.ip_interface(str(net)).ip)
            except ValueError:
                continue  # malformed WEP: validation's problem, not IPAM's
            wep_ips.setdefault(ip, []).append(wid)
    node_tunnel_ips: dict[str, str] = {}
    for n in ds.list(KIND_NODE).items:
        spec = n.get("spec") or {}
        for v in (
            (spec.get("bgp") or {}).get("ipv4IPIPTunnelAddr"),
            spec.get("ipv4VXLANTunnelAddr"),
            spec.get("ipv6VXLANTunnelAddr"),
        ):
            try:
                if v:
                    node_tunnel_ips[str(ipaddress.ip_interface(str(v)).ip)] = n["metadata"]["name"]
            except ValueError:
                continue

    rep = CheckReport()
    allocated: set[str] = set()
    actual_handles: dict[str, dict[str, int]] = {}
    owners: dict[str, str | None] = {}
    for sb in store.blocks():
        rep.blocks += 1
        owners[str(sb.block.cidr)] = affinity_node(sb.block.affinity)
        blk = sb.block
        for addr, rec in blk.allocated():
            ip = str(addr)
            allocated.add(ip)
            rep.allocations += 1
            handle = rec.get("handle_id")
            attrs = {str(k): str(v) for k, v in (rec.get("secondary") or {}).items()}
            if handle:
                per = actual_handles.setdefault(str(handle), {})
                per[str(blk.cidr)] = per.get(str(blk.cidr), 0) + 1
            node = attrs.get("node") or affinity_node(blk.affinity)
            tunnel = attrs.get("type", "").endswith("TunnelAddress")
            if tunnel:
                if node in nodes:
                    continue
                reason = f"tunnel address of deleted node {node}"
            else:
                if ip in wep_ips or _container_of(handle) in containers:
                    continue
                reason = "no workload endpoint uses this address or its container"
            rep.leaked.append(
                Leak(
                    ip=ip,
                    handle=str(handle) if handle else None,
                    block=str(blk.cidr),
                    sequenceNumber=blk.sequence_for(addr) or 0,
                    node=node,
                    reason=reason,
                    attrs=attrs,
                    tunnel=tunnel,
                )
            )
    for ip, users in sorted(wep_ips.items()):
        addr = ipaddress.ip_address(ip)
        if not any(p.contains(addr) for p in pools):
            rep.outside_pools.append({"ip": ip, "workloads": users})
        elif ip not in allocated:
            rep.in_use_not_allocated.append({"ip": ip, "workloads": users})
        if len(users) > 1:
            rep.duplicates.append({"ip": ip, "workloads": users})
    for ip, node in sorted(node_tunnel_ips.items()):
        if ip not in allocated:
            rep.in_use_not_allocated.append({"ip": ip, "node": node, "type": "tunnel"})
    for aff in store.affinities():
        if aff.node not in nodes:
            rep.stale_affinities.append({"node": aff.node, "cidr": aff.cidr, "state": aff.state})
        elif owners.get(aff.cidr, "") != aff.node:
            # A claim that died before creating its block, or lost the race for it.
            rep.orphan_affinities.append({"node": aff.node, "cidr": aff.cidr, "state": aff.state})
    recorded = store.handles()
    for h in sorted(set(recorded) | set(actual_handles)):
        rec_counts = recorded.get(h, {})
        act = actual_handles.get(h, {})
        if rec_counts != act:
            rep.handle_mismatches.append({"handle": h, "recorded": rec_counts, "actual": act})
    return rep


def release_from_report(ipam: IPAM, report: CheckReport) -> tuple[list[str], list[str]]:
    """Repair the report's handle mismatches, delete its orphan affinities (if still
    orphaned), then release its leaked addresses (each guarded by its sequence number).

    Returns (released, skipped); an address reallocated since the report is skipped.
    """
    released: list[str] = []
    skipped: list[str] = []
    for m in report.handle_mismatches:
        repair_handle(ipam, str(m["handle"]), m.get("recorded") or {}, m.get("actual") or {})
    for a in report.orphan_affinities:
        node, cidr = str(a["node"]), str(a["cidr"])
        sb = ipam.store.get_block(cidr)
        if sb is None or affinity_node(sb.block.affinity) != node:
            ipam.store.delete_affinity(node, cidr)
    for lk in report.leaked:
        try:
            missing = ipam.release_ips([lk.ip], {lk.ip: lk.sequenceNumber})
        except BadSequenceNumber:
            skipped.append(lk.ip)
            continue
        (skipped if missing else released).append(lk.ip)
    return released, skipped


def repair_handle(
    ipam: IPAM, handle: str, recorded: dict[str, int], actual: dict[str, int]
) -> bool:
    """Make a handle record match its blocks, if both still look as the report saw them.

    The true counts are recomputed from the blocks the handle record and the report name.
    """
    store = ipam.store
    if store.handle_blocks(handle) != recorded:
        return False
    now: dict[str, int] = {}
    for cidr in set(recorded) | set(actual):
        sb = store.get_block(cidr)
        n = len(sb.block.ips_for_handle(handle)) if sb is not None else 0
        if n:
            now[cidr] = n
    if store.handle_blocks(handle) != recorded:
        return False
    for cidr in set(recorded) | set(now):
        delta = now.get(cidr, 0) - recorded.get(cidr, 0)
        if delta:
            store.adjust_handle(handle, cidr, delta)
    return True


def collect_cold_ips(ipam: IPAM) -> list[str]:
    """Free the released addresses whose ``ipCooldownSeconds`` has passed, in every block
    (Calico's kube-controllers does this periodically; allocations also do it in the blocks
    they read). A block left empty with no affinity is deleted. Returns the blocks written;
    a block that changed meanwhile is left for the next run."""
    cooldown = ipam.get_config().ip_cooldown_seconds
    out: list[str] = []
    for sb in ipam.store.blocks():
        if not sb.block.num_cooling() or not sb.block.collect_cold(cooldown):
            continue
        try:
            if sb.block.is_empty() and sb.block.affinity is None:
                ipam.store.delete_block(sb)
            else:
                ipam.store.write_block(sb)
        except (Conflict, NotFound):
            continue
        out.append(str(sb.block.cidr))
    return out


@dataclass
class GCResult:
    released: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    affinities_released: list[str] = field(default_factory=list)
    empty_blocks_released: list[str] = field(default_factory=list)
    orphan_affinities_deleted: list[str] = field(default_factory=list)
    cold_blocks_collected: list[str] = field(default_factory=list)


class LeakCollector:
    """Periodic leak repair: call :meth:`run_once` every ``grace_period / 2`` seconds."""

    def __init__(
        self,
        ds: Datastore,
        ipam: IPAM | None = None,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ds = ds
        self.ipam = ipam or IPAM(ds)
        self.grace = grace_period
        self.clock = clock
        self._first_seen: dict[tuple[str, str | None, int], float] = {}
        self._stale_nodes: dict[str, float] = {}
        self._empty_seen: set[str] = set()
        self._orphans_seen: set[tuple[str, str]] = set()

    def run_once(self) -> GCResult:
        now = self.clock()
        res = GCResult(cold_blocks_collected=collect_cold_ips(self.ipam))
        rep = check(self.ds)
        current = {lk.key: lk for lk in rep.leaked}
        self._first_seen = {k: t for k, t in self._first_seen.items() if k in current}
        due: list[Leak] = []
        for key, lk in current.items():
            first = self._first_seen.setdefault(key, now)
            if lk.tunnel or now - first >= self.grace:
                due.append(lk)
            else:
                res.pending.append(lk.ip)
        if due:
            # Re-validate immediately before releasing.
            still = {lk.key for lk in check(self.ds).leaked}
            confirmed = [lk for lk in due if lk.key in still]
            rel, _ = release_from_report(self.ipam, CheckReport(leaked=confirmed))
            res.released = rel
            for lk in confirmed:
                self._first_seen.pop(lk.key, None)
        stale = {a["node"] for a in rep.stale_affinities}
        self._stale_nodes = {n: t for n, t in self._stale_nodes.items() if n in stale}
        for node in sorted(stale):
            first = self._stale_nodes.setdefault(node, now)
            if now - first >= self.grace and node not in self.ipam.store.node_names():
                self.ipam.release_host_affinities(node)
                res.affinities_released.append(node)
                self._stale_nodes.pop(node, None)
        res.empty_blocks_released = self._release_empty_blocks()
        orphans = {(str(a["node"]), str(a["cidr"])) for a in rep.orphan_affinities}
        deleted: set[tuple[str, str]] = set()
        for node, cidr in sorted(orphans & self._orphans_seen):
            # Seen on two runs: not a claim in flight. Delete only if still orphaned.
            sb = self.ipam.store.get_block(cidr)
            if sb is None or affinity_node(sb.block.affinity) != node:
                self.ipam.store.delete_affinity(node, cidr)
                deleted.add((node, cidr))
                res.orphan_affinities_deleted.append(f"{node} {cidr}")
        self._orphans_seen = orphans - deleted
        return res

    def _release_empty_blocks(self) -> list[str]:
        """Release affine blocks seen empty on two consecutive runs; a node keeps >= 1 block."""
        by_node: dict[str, list[str]] = {}
        empty: set[str] = set()
        for sb in self.ipam.store.blocks():
            node = affinity_node(sb.block.affinity)
            if node is None:
                continue
            by_node.setdefault(node, []).append(str(sb.block.cidr))
            if sb.block.is_empty():
                empty.add(str(sb.block.cidr))
        released: list[str] = []
        for node, cidrs in sorted(by_node.items()):
            keep = len(cidrs)
            for cidr in sorted(cidrs):
                if keep <= 1:
                    break
                if cidr in empty and cidr in self._empty_seen:
                    try:
                        self.ipam.release_affinity(cidr, node, must_be_empty=True)
                    except IPAMError:
                        continue
                    released.append(cidr)
                    keep -= 1
        self._empty_seen = empty - set(released)
        return released
