"""Policy and profile rules -> nft rule bodies (pure).

Owns the translation of one :class:`~pycalico.felix.calc.messages.ResolvedRule` into nft
statements for one family, and of a policy/profile into its ``cali-pi-``/``cali-po-``/
``cali-pri-``/``cali-pro-`` chain.

Mark scheme (Calico's bits inside ``0xffff0000``): a matching ``Allow`` sets
:data:`MARK_ACCEPT` and returns, ``Pass`` sets :data:`MARK_PASS` and returns, ``Deny`` drops,
``Log`` logs with prefix ``calico-packet`` and continues; a chain in which nothing matched
returns with neither mark. The endpoint chain interprets the marks (see ``endpoints.py``).

Fail closed while a policy chain is incomplete (issue 19): the endpoint chain sets
:data:`MARK_PENDING` when it jumps to a policy chain, and only the chain's own verdicts clear
it (``Allow`` and ``Pass`` clear it with their mark; the chain's LAST rule clears it when
nothing matched). A chain flushed (or cut short) by hand returns with the mark still set,
and the endpoint chain drops the packet instead of going on to later policies, which might
allow what the flushed chain denied.

Matching (the semantics of the ``messages`` module docstring): all present conditions are
ANDed; CIDR lists are anonymous sets (OR); IP sets are named sets (each one ANDed); the
positive port condition "port in ports OR (ip, proto, port) in a named-port set" is an OR of
different match kinds, so a rule expands into one nft rule per (source alternative x
destination alternative). For ``Allow``/``Deny``/``Pass`` the first alternative that matches
decides, which is the same as the OR; a ``Log`` rule with several alternatives sets the
scratch mark in each alternative and logs once if it is set. Rules that can never match in
a family (other IP version, only other-family CIDRs, ``unmatchable``) render to nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import collapse_addresses

from pycalico.felix.calc.messages import ResolvedRule
from pycalico.felix.rules.model import Family
from pycalico.model import PortRange
from pycalico.model.types import IPNet

MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_SCRATCH = 0x80000
#: Set by the ``calico`` table's filter base chains on every packet they evaluate; the
#: ``calico-guard`` table (:mod:`pycalico.felix.rules.guard`) drops new workload traffic
#: without it (fail closed while the main table is missing or a base chain is flushed).
#: Not in :data:`ALL_MARKS`: endpoint chains never clear it.
MARK_EVALUATED = 0x40000
#: Set by the endpoint chain before it jumps to a policy chain; cleared by that chain's
#: verdicts and its last rule (see the module docstring).
MARK_PENDING = 0x100000
MARK_MASK = 0xFFFF0000
ALL_MARKS = MARK_ACCEPT | MARK_PASS | MARK_SCRATCH | MARK_PENDING
LOG_PREFIX = "calico-packet"
PORT_PROTOCOLS = "{ 6, 17, 132, 136 }"

SetNamer = Callable[[str], str]


def set_mark(bits: int) -> str:
    return f"meta mark set meta mark | {bits:#x}"


def clear_mark(bits: int) -> str:
    return f"meta mark set meta mark & {0xFFFFFFFF & ~bits:#010x}"


def set_and_clear_mark(set_bits: int, clear_bits: int) -> str:
    """One statement: set ``set_bits`` and clear ``clear_bits`` of the packet mark."""
    return f"meta mark set meta mark & {0xFFFFFFFF & ~clear_bits:#010x} | {set_bits:#x}"


def mark_is_set(bits: int) -> str:
    return f"meta mark & {bits:#x} == {bits:#x}"


def mark_is_clear(bits: int) -> str:
    return f"meta mark & {bits:#x} == 0"


ACTIONS = {
    "Allow": f"{set_and_clear_mark(MARK_ACCEPT, MARK_PENDING)} return",
    "Pass": f"{set_and_clear_mark(MARK_PASS, MARK_PENDING)} return",
    "Deny": "drop",
    "Log": f'log prefix "{LOG_PREFIX}"',
}


def _nets(nets: Sequence[IPNet], fam: Family) -> list[str]:
    """Family-filtered, overlap-free CIDRs (anonymous interval sets reject overlaps)."""
    mine = [n for n in nets if n.version == fam.version]
    return [str(n) for n in collapse_addresses(mine)]  # type: ignore[type-var]


def _anon(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _ports(ports: Sequence[PortRange]) -> str:
    items = [str(p.first) if p.first == p.last else f"{p.first}-{p.last}" for p in sorted(ports)]
    return _anon(items)


class _Side:
    """Source or destination conditions of one rule, for one family."""

    def __init__(self, fam: Family, key: str, names: SetNamer) -> None:
        self.fam = fam
        self.addr = f"{fam.addr} {key}addr"
        self.port = f"th {key}port"
        self.names = names

    def conditions(
        self,
        nets: Sequence[IPNet],
        not_nets: Sequence[IPNet],
        sets: Sequence[str],
        not_sets: Sequence[str],
        not_ports: Sequence[PortRange],
        not_np_sets: Sequence[str],
    ) -> list[str] | None:
        """The ANDed conditions, or None when the side can never match in this family."""
        out: list[str] = []
        if nets:
            mine = _nets(nets, self.fam)
            if not mine:
                return None
            out.append(f"{self.addr} {_anon(mine)}")
        if not_nets:
            mine = _nets(not_nets, self.fam)
            if mine:
                out.append(f"{self.addr} != {_anon(mine)}")
        out += [f"{self.addr} @{self.names(s)}" for s in sets]
        out += [f"{self.addr} != @{self.names(s)}" for s in not_sets]
        if not_ports:
            out.append(f"{self.port} != {_ports(not_ports)}")
        out += [
            f"{self.addr} . meta l4proto . {self.port} != @{self.names(s)}" for s in not_np_sets
        ]
        return out

    def alternatives(self, ports: Sequence[PortRange], np_sets: Sequence[str]) -> list[str]:
        """The ORed positive port alternatives (``[""]`` when there is no port condition)."""
        alts: list[str] = []
        if ports:
            alts.append(f"{self.port} {_ports(ports)}")
        alts += [f"{self.addr} . meta l4proto . {self.port} @{self.names(s)}" for s in np_sets]
        return alts or [""]


#: The NFLOG statement (flow-log attribution, :mod:`pycalico.felix.rules.nflog`) of the rule
#: at an index with an action, or None for no logging.
RuleLogger = Callable[[int, str], str | None]


def rule_bodies(
    r: ResolvedRule, fam: Family, names: SetNamer, log_stmt: str | None = None
) -> list[str]:
    """nft rule bodies implementing ``r`` in family ``fam`` (possibly none); ``log_stmt``
    (an Allow/Deny/Pass rule's NFLOG statement) goes before the action."""
    if r.unmatchable or (r.ip_version is not None and r.ip_version != fam.version):
        return []
    proto = r.protocol
    if proto in (1, 58) and proto != fam.icmp_proto:
        return []  # ICMP is IPv4-only, ICMPv6 IPv6-only (as Calico renders them)
    if r.not_icmp_type is not None and (
        (proto is not None and proto != fam.icmp_proto) or r.not_protocol == fam.icmp_proto
    ):
        return []  # notICMP matches only this family's ICMP (nft's implied dependency)
    parts: list[str] = []
    if proto is not None:
        parts.append(f"meta l4proto {proto}")
    if r.not_protocol is not None:
        parts.append(f"meta l4proto != {r.not_protocol}")
    icmp = fam.icmp
    if r.icmp_type is not None:
        parts.append(f"{icmp} type {r.icmp_type}")
        if r.icmp_code is not None:
            parts.append(f"{icmp} code {r.icmp_code}")
    if r.not_icmp_type is not None:
        if r.not_icmp_code is None:
            parts.append(f"{icmp} type != {r.not_icmp_type}")
        else:
            parts.append(
                f"{icmp} type . {icmp} code != {{ {r.not_icmp_type} . {r.not_icmp_code} }}"
            )
    src = _Side(fam, "s", names)
    dst = _Side(fam, "d", names)
    s_cond = src.conditions(
        r.src_nets,
        r.not_src_nets,
        r.src_ip_set_ids,
        r.not_src_ip_set_ids,
        r.not_src_ports,
        r.not_src_named_port_ip_set_ids,
    )
    d_cond = dst.conditions(
        r.dst_nets,
        r.not_dst_nets,
        r.dst_ip_set_ids,
        r.not_dst_ip_set_ids,
        r.not_dst_ports,
        r.not_dst_named_port_ip_set_ids,
    )
    if s_cond is None or d_cond is None:
        return []
    uses_ports = bool(
        r.src_ports
        or r.dst_ports
        or r.not_src_ports
        or r.not_dst_ports
        or r.src_named_port_ip_set_ids
        or r.dst_named_port_ip_set_ids
        or r.not_src_named_port_ip_set_ids
        or r.not_dst_named_port_ip_set_ids
    )
    if uses_ports and proto is None:
        parts.append(f"meta l4proto {PORT_PROTOCOLS}")
    common = parts + s_cond + d_cond
    combos = [
        " ".join(x for x in (*common, sa, da) if x)
        for sa in src.alternatives(r.src_ports, r.src_named_port_ip_set_ids)
        for da in dst.alternatives(r.dst_ports, r.dst_named_port_ip_set_ids)
    ]
    action = ACTIONS[r.action]
    if log_stmt and r.action != "Log":
        action = f"{log_stmt} {action}"
    if len(combos) == 1 or r.action != "Log":
        return [f"{c} {action}".strip() for c in combos]
    out = [clear_mark(MARK_SCRATCH)]
    out += [f"{c} {set_mark(MARK_SCRATCH)}" for c in combos]
    out.append(f"{mark_is_set(MARK_SCRATCH)} {action}")
    return out


def rules_bodies(
    rules: Sequence[ResolvedRule],
    fam: Family,
    names: SetNamer,
    logger: RuleLogger | None = None,
) -> list[str]:
    """The bodies of a whole policy/profile chain for one direction (``logger``: the NFLOG
    statement of each rule, by its index in ``rules``); the last one clears
    :data:`MARK_PENDING` (this chain is complete and nothing in it matched)."""
    out: list[str] = []
    for i, r in enumerate(rules):
        out += rule_bodies(r, fam, names, logger(i, r.action) if logger else None)
    out.append(clear_mark(MARK_PENDING))
    return out
