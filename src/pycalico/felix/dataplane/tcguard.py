"""The tc guard (side effects only): fail closed even when nftables is wiped entirely.

The ``calico-guard`` nft table fails closed while the ``calico`` table is gone, but ``nft
flush ruleset`` deletes both, and with no nft hook left the kernel forwards everything. The
tc guard is outside nftables: tiny eBPF classifiers on ``clsact`` hooks
(:mod:`pycalico.system.tcbpf`), which ``nft flush ruleset`` does not touch:

- every workload interface (``<interfacePrefix>*``): ingress marks packets FROM the workload
  (``FROM_WL``); egress (toward the workload) drops a FORWARDED packet that the ``calico``
  table did not see (no ``SEEN`` mark: its filter base chains set it in their first rule);
- every other interface of the node (uplinks, ``vxlan.calico``, ``tunl0``...; not ``lo``
  nor the QoS IFBs ``bw<prefix>*``): egress drops a packet FROM a workload that the table
  did not see.

- the node itself (local delivery, which no tc egress hook sees): the local-delivery guard
  (:mod:`pycalico.system.nfbpf`, a netfilter BPF program on the ``input`` hook after the
  nft tables) drops a packet FROM a workload that the table did not see.

Without ``ipv6Support`` (no ``ip6 calico`` table) the programs check IPv4 packets only.
The host's own traffic (BGP, its connections, to workloads too) never carries ``FROM_WL``
and is not forwarded, so it is never dropped, with or without the nft tables. While the
``calico`` table is missing, every forwarded workload packet drops, established flows
included (no conntrack lookup in tc), until Felix re-creates the table (< 1 s).

Owns: which devices want which guard (:func:`wanted`), and :class:`GuardDataplane`, whose
``apply`` reads every device's guard filters (3 processes in all) and writes only the
devices that differ, in one batch, then makes sure the local-delivery guard is attached
(held in this process: nothing to read back, it cannot be removed by nft or tc).

Invariants: idempotent (a second apply writes nothing); a failed write (e.g. a device that
vanished between the read and the write) is reported and retried by the caller; only
filters named ``calico-guard-*`` (and a clsact qdisc they need) are written.
"""

from __future__ import annotations

import logging

from pycalico.felix.dataplane.qos import IFB_PREFIX
from pycalico.system.tc import (
    FOREIGN,
    HOST_GUARD,
    HOST_GUARD_V4,
    WORKLOAD_GUARD,
    WORKLOAD_GUARD_V4,
    TcError,
    TcGuardForeign,
    TcGuardUnsupported,
    TrafficControl,
)

log = logging.getLogger(__name__)


def wanted(links: list[str], prefix: str, ipv6: bool = True) -> dict[str, frozenset[str]]:
    """The guard of each device of ``links`` (``prefix``: the workload interface prefix;
    ``ipv6``: Felix programs the ``ip6 calico`` table, so IPv6 packets are checked too)."""
    wl, host = (WORKLOAD_GUARD, HOST_GUARD) if ipv6 else (WORKLOAD_GUARD_V4, HOST_GUARD_V4)
    out = {}
    for name in links:
        if name == "lo" or name.startswith((IFB_PREFIX, "bw" + (prefix or "cali"))):
            continue
        out[name] = wl if prefix and name.startswith(prefix) else host
    return out


def _settled(have: frozenset[str], want: frozenset[str]) -> bool:
    """Our filters are exactly ``want`` and nobody else's sits where one of them goes
    (someone else's filter on a hook we do not use is none of our business)."""
    hooks = {w.split(":")[0] for w in want}
    foreign = {g for g in have if g.endswith(":" + FOREIGN)}
    return have - foreign == want and not any(g.split(":")[0] in hooks for g in foreign)


class GuardDataplane:
    """See the module docstring."""

    def __init__(self, tc: TrafficControl, prefix: str, ipv6: bool = True) -> None:
        self.tc = tc
        self.prefix = prefix
        self.ipv6 = ipv6
        self.writes = 0
        self.local_writes = 0
        #: Set when the kernel cannot load the programs (no eBPF, no CAP_BPF): logged once,
        #: never retried (the nft guard table still fails closed, but not on a flush).
        self.unsupported: str | None = None
        #: The same for the local-delivery guard alone (e.g. a kernel before 6.4, or one
        #: without BTF): the tc guard still works.
        self.local_unsupported: str | None = None
        self._warned: set[str] = set()

    def _local(self) -> list[str]:
        """The local-delivery guard on (IPv4, and IPv6 with the ``ip6 calico`` table)."""
        if self.local_unsupported is not None:
            return []
        try:
            if self.tc.set_local_guard(frozenset({4, 6} if self.ipv6 else {4})):
                self.local_writes += 1
        except TcGuardUnsupported as e:
            self.local_unsupported = str(e)
            log.error("local-delivery guard disabled: %s", e)
        except TcError as e:
            log.warning("local-delivery guard: %s", e)
            return [str(e)]
        return []

    def close(self) -> None:
        """Detach the local-delivery guard (it is this process's; the tc filters stay)."""
        try:
            self.tc.set_local_guard(frozenset())
        except TcError as e:
            log.warning("local-delivery guard: %s", e)

    def apply(self) -> list[str]:
        """Read every device's guard and fix those that differ; returns the errors."""
        if self.unsupported is not None:
            return []
        want = wanted(list(self.tc.list_links()), self.prefix, self.ipv6)
        have = self.tc.get_guards(list(want))
        todo = {d: g for d, g in want.items() if d in have and not _settled(have[d], g)}
        if not todo:
            return self._local()
        try:
            self.tc.set_guards(todo)
        except TcGuardUnsupported as e:
            self.unsupported = str(e)
            log.error("tc guard disabled: %s", e)
            return []
        except TcGuardForeign as e:  # left alone by design: no 1 s retries, warned once
            if str(e) not in self._warned:
                self._warned.add(str(e))
                log.warning("%s", e)
            self.writes += 1
            return self._local()
        except TcError as e:  # e.g. a device removed between the read and the write
            log.warning("tc guard: %s", e)
            return [str(e)]
        self.writes += 1
        return self._local()
