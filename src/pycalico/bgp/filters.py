"""BGPFilter resources → BIRD filter functions (Calico semantics).

Owns: converting a BGPFilter's ``exportV4/importV4/exportV6/importV6`` rule lists into
:class:`FilterFunction` values named ``bgp_<name>_<import|export>FilterV<4|6>``.

Semantics (as Calico): rules are evaluated in order and the first rule whose matches all hold
decides (``accept``/``reject`` terminate the BIRD filter); a rule with no match is
unconditional; when no rule matches, evaluation falls through to the next filter of the peer
and finally to Calico's default (import: accept; export: ``calico_export_to_bgp_peers``).
Matches: ``cidr`` + ``matchOperator`` (Equal ``net =``, NotEqual ``net !=``, In ``net ~``,
NotIn ``net !~``; ``prefixLength {min,max}`` turns the cidr into a prefix pattern
``cidr{min,max}``), ``source: RemotePeers`` (``source = RTS_BGP``), ``interface`` (``ifname
~ "<glob>"``).

Invariants: function names contain only ``[A-Za-z0-9_]`` (other characters → ``_``; the
filter part is truncated to 45 characters as Calico does); bad rules raise BgpInputError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pycalico.bgp.errors import BgpInputError
from pycalico.bgp.inputs import Resource, parse_cidr, spec_of, where
from pycalico.bgp.model import FilterFunction, FilterRule, MatchOperator

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
    return FilterRule(
        action=str(action).lower(),
        cidr=cidr,
        operator=op,
        min_len=lo,
        max_len=hi,
        remote_peers_only=source == "RemotePeers",
        interface=None if iface is None else str(iface),
    )
