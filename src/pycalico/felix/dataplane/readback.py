"""Parse ``nft -j list table`` output into a :class:`~.ops.TableState` (pure).

Invariant: elements are normalised to the renderer's canonical text (``10.0.0.1/32``,
``10.0.0.0/24``, ``10.0.0.1 . 6 . 80``, ``"cali1" : goto cali-tw-cali1``) and a rule's hash
is its ``cali:`` comment (``"?<handle>"`` for a rule without one, so it never matches), so a
readback of a table the driver wrote compares equal to the desired state.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network
from typing import Any

from pycalico.felix.dataplane.ops import TableState
from pycalico.felix.rules.model import COMMENT_PREFIX

_PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132, "udplite": 136}
_VERDICTS = ("goto", "jump")


def _addr(value: Any) -> str:
    if isinstance(value, Mapping) and "prefix" in value:
        p = value["prefix"]
        return str(ip_network(f"{p['addr']}/{p['len']}", strict=False))
    if isinstance(value, Mapping) and "range" in value:
        lo, hi = value["range"]
        return f"{lo}-{hi}"
    return str(ip_network(str(value), strict=False))


def _proto(value: Any) -> str:
    if isinstance(value, str) and value in _PROTOS:
        return str(_PROTOS[value])
    return str(value)


def _verdict(value: Any) -> str:
    if isinstance(value, Mapping):
        for key in _VERDICTS:
            if key in value:
                return f"{key} {value[key]['target']}"
        for key in value:
            return str(key)
    return str(value)


def _element(value: Any, addr_type: bool, is_map: bool) -> str:
    if isinstance(value, Mapping) and "elem" in value:
        value = value["elem"]["val"]
    if is_map and isinstance(value, list):
        key, verdict = value
        return f"{_element(key, addr_type, False)} : {_verdict(verdict)}"
    if isinstance(value, Mapping) and "concat" in value:
        ip, proto, port = value["concat"]
        return f"{ip} . {_proto(proto)} . {port}"
    if addr_type:
        return _addr(value)
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def parse_table(doc: Mapping[str, Any], family: str, table: str) -> TableState:
    """The state of ``family table`` in a ``nft -j list table`` document."""
    state = TableState()
    for item in doc.get("nftables", []):
        if not isinstance(item, Mapping):
            continue
        for kind in ("set", "map"):
            obj = item.get(kind)
            if obj is None or obj.get("table") != table or obj.get("family") != family:
                continue
            typ = obj["type"]
            type_text = " . ".join(typ) if isinstance(typ, list) else str(typ)
            flags = tuple(obj.get("flags") or ())
            map_to = obj.get("map") if kind == "map" else None
            addr_type = type_text in ("ipv4_addr", "ipv6_addr")
            elems = frozenset(_element(e, addr_type, kind == "map") for e in obj.get("elem", []))
            state.sets[obj["name"]] = ((obj["name"], type_text, flags, map_to), elems)
        chain = item.get("chain")
        if chain is not None and chain.get("table") == table and chain.get("family") == family:
            state.chains.setdefault(chain["name"], ())
        rule = item.get("rule")
        if rule is not None and rule.get("table") == table and rule.get("family") == family:
            comment = str(rule.get("comment") or "")
            h = (
                comment[len(COMMENT_PREFIX) :]
                if comment.startswith(COMMENT_PREFIX)
                else f"?{rule.get('handle')}"
            )
            name = rule["chain"]
            state.chains[name] = (*state.chains.get(name, ()), h)
    return state
