"""BGPFilter resources → BIRD filter functions (Calico semantics).

Owns: converting a BGPFilter's ``exportV4/importV4/exportV6/importV6`` rule lists into
:class:`FilterFunction` values named ``bgp_<name>_<import|export>FilterV<4|6>``.

Semantics (as Calico): rules are evaluated in order and the first rule whose matches all hold
decides (``accept``/``reject`` terminate the BIRD filter); a rule with no match is
unconditional; when no rule matches, evaluation falls through to the next filter of the peer
and finally to Calico's default (import: accept; export: ``calico_export_to_bgp_peers``).
Matches (all must hold): ``cidr`` + ``matchOperator`` (Equal ``net =``, NotEqual ``net !=``,
In ``net ~``, NotIn ``net !~``; ``prefixLength {min,max}`` turns the cidr into a prefix pattern
``cidr{min,max}``), ``source: RemotePeers`` (``source = RTS_BGP``), ``interface`` (``ifname
~ "<glob>"``), ``communities.values[0]`` (``(aa, nn) ~ bgp_community`` or the large form),
``asPathPrefix`` (``bgp_path ~ [= a b * =]``: the path starts with those AS numbers),
``priority`` (``bgp_local_pref`` = 2147483647 - priority). ``operations`` of an Accept rule
run before ``accept``: ``addCommunity`` (``bgp_community.add``/``bgp_large_community.add``),
``prependASPath`` (``bgp_path.prepend`` per AS, so the path starts with the given prefix in
order), ``setPriority`` (``bgp_local_pref``). ``peerType`` eBGP/iBGP limits a rule to peers
of that kind: every function takes ``bool internal_peer`` and each peer passes its own.

Invariants: function names contain only ``[A-Za-z0-9_]`` (other characters → ``_``; the
filter part is truncated to 45 characters as Calico does); bad rules raise BgpInputError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pycalico.bgp.errors import BgpInputError
from pycalico.bgp.inputs import (
    Resource,
    is_community,
    parse_as_number,
    parse_cidr,
    spec_of,
    where,
)
from pycalico.bgp.model import FilterFunction, FilterOperation, FilterRule, MatchOperator

# Priorities (route metrics) map to bgp_local_pref as Calico does: local_pref = MAX - priority.
BIRD_INT_MAX = 2147483647

DIRECTIONS = ("import", "export")


def function_name(filter_name: str, direction: str, version: int) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", filter_name)[:45]
    return f"bgp_{base}_{direction}FilterV{version}"


def filter_functions(res: Resource, version: int) -> list[FilterFunction]:
    """Both directions of one BGPFilter for one family (empty functions included)."""
    name = str((res.get("metadata") or {}).get("name", ""))
    spec = spec_of(res)
    out = []
    for direction in DIRECTIONS:
        key = f"{direction}V{version}"
        rules = spec.get(key) or []
        if not isinstance(rules, list):
            raise BgpInputError(f"{where(res)}: spec.{key}", "must be a list of rules")
        out.append(
            FilterFunction(
                name=function_name(name, direction, version),
                rules=tuple(
                    _rule(r, f"{where(res)}: spec.{key}[{i}]", version) for i, r in enumerate(rules)
                ),
            )
        )
    return out


def _rule(rule: Any, fld: str, version: int) -> FilterRule:
    if not isinstance(rule, Mapping):
        raise BgpInputError(fld, "must be a mapping")
    action = rule.get("action")
    if action not in ("Accept", "Reject"):
        raise BgpInputError(f"{fld}.action", f"{action!r} is not Accept or Reject")
    cidr_s = rule.get("cidr") or None
    op_s = rule.get("matchOperator") or None
    plen = rule.get("prefixLength") or None
    source = rule.get("source") or None
    iface = rule.get("interface") or None
    cidr: str | None = None
    op: MatchOperator | None = None
    lo: int | None = None
    hi: int | None = None
    if cidr_s is not None:
        net = parse_cidr(cidr_s, f"{fld}.cidr")
        if net.version != version:
            raise BgpInputError(f"{fld}.cidr", f"{cidr_s!r} is not an IPv{version} CIDR")
        if op_s is None:
            raise BgpInputError(f"{fld}.matchOperator", "required when cidr is set")
        try:
            op = MatchOperator(op_s)
        except ValueError:
            raise BgpInputError(
                f"{fld}.matchOperator", f"{op_s!r} is not Equal, NotEqual, In or NotIn"
            ) from None
        cidr = str(net)
        if plen is not None:
            if op not in (MatchOperator.IN, MatchOperator.NOT_IN):
                raise BgpInputError(f"{fld}.prefixLength", "only valid with In/NotIn")
            maxbits = 32 if version == 4 else 128
            lo = int(plen.get("min", net.prefixlen))
            hi = int(plen.get("max", maxbits))
            if not net.prefixlen <= lo <= hi <= maxbits:
                raise BgpInputError(
                    f"{fld}.prefixLength",
                    f"need {net.prefixlen} <= min <= max <= {maxbits}, got {lo}..{hi}",
                )
    elif op_s is not None or plen is not None:
        raise BgpInputError(f"{fld}.cidr", "required with matchOperator/prefixLength")
    if source not in (None, "RemotePeers"):
        raise BgpInputError(f"{fld}.source", f"{source!r} is not RemotePeers")
    if iface is not None and not re.fullmatch(r"[A-Za-z0-9_.*?\-]+", str(iface)):
        raise BgpInputError(f"{fld}.interface", f"invalid interface pattern {iface!r}")
    community = _community_match(rule.get("communities"), f"{fld}.communities")
    as_path = tuple(
        parse_as_number(a, f"{fld}.asPathPrefix[{i}]")
        for i, a in enumerate(_list(rule.get("asPathPrefix"), f"{fld}.asPathPrefix"))
    )
    prio = rule.get("priority")
    peer_type = rule.get("peerType") or None
    if peer_type not in (None, "eBGP", "iBGP"):
        raise BgpInputError(f"{fld}.peerType", f"{peer_type!r} is not eBGP or iBGP")
    ops = _list(rule.get("operations"), f"{fld}.operations")
    if ops and action != "Accept":
        raise BgpInputError(f"{fld}.operations", "operations may only be used with action Accept")
    return FilterRule(
        action=str(action).lower(),
        peer_type=peer_type,
        community=community,
        as_path_prefix=as_path,
        local_pref=None if prio is None else _local_pref(prio, f"{fld}.priority"),
        operations=tuple(
            o for i, op in enumerate(ops) for o in _operation(op, f"{fld}.operations[{i}]")
        ),
        cidr=cidr,
        operator=op,
        min_len=lo,
        max_len=hi,
        remote_peers_only=source == "RemotePeers",
        interface=None if iface is None else str(iface),
    )


def _list(value: Any, fld: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BgpInputError(fld, "must be a list")
    return value


def _community_value(value: Any, fld: str) -> str:
    if not isinstance(value, str) or not is_community(value):
        raise BgpInputError(fld, f"{value!r} is not a community aa:nn or aa:nn:mm")
    return value


def _community_match(value: Any, fld: str) -> str | None:
    if value is None:
        return None
    values = value.get("values") if isinstance(value, Mapping) else None
    if not isinstance(values, list) or len(values) != 1:
        raise BgpInputError(f"{fld}.values", "must hold exactly one community")
    return _community_value(values[0], f"{fld}.values[0]")


def _local_pref(value: Any, fld: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < BIRD_INT_MAX:
        raise BgpInputError(fld, f"{value!r} is not a route priority 1..{BIRD_INT_MAX - 1}")
    return BIRD_INT_MAX - value


def _operation(op: Any, fld: str) -> list[FilterOperation]:
    """One BGPFilter operation as BIRD steps (a prepended path is one step per AS number)."""
    if not isinstance(op, Mapping):
        raise BgpInputError(fld, "must be a mapping")
    kinds = [k for k in ("addCommunity", "prependASPath", "setPriority") if op.get(k) is not None]
    if len(kinds) != 1:
        raise BgpInputError(fld, "exactly one of addCommunity, prependASPath, setPriority")
    body = op[kinds[0]]
    if not isinstance(body, Mapping):
        raise BgpInputError(f"{fld}.{kinds[0]}", "must be a mapping")
    if kinds[0] == "addCommunity":
        value = _community_value(body.get("value"), f"{fld}.addCommunity.value")
        return [FilterOperation("community", value)]
    if kinds[0] == "setPriority":
        pref = _local_pref(body.get("value"), f"{fld}.setPriority.value")
        return [FilterOperation("priority", str(pref))]
    prefix = _list(body.get("prefix"), f"{fld}.prependASPath.prefix")
    if not 1 <= len(prefix) <= 10:
        raise BgpInputError(f"{fld}.prependASPath.prefix", "must hold 1 to 10 AS numbers")
    asns = [parse_as_number(a, f"{fld}.prependASPath.prefix[{i}]") for i, a in enumerate(prefix)]
    # BIRD prepends one AS at a time; the last prepended ends up first, so go backwards.
    return [FilterOperation("prepend", str(a)) for a in reversed(asns)]
