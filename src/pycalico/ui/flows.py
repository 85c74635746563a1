"""The Flows page's pure logic: filtering flow records and the per-minute sparkline.

Owns :class:`FlowFilter` (namespace, pod, port, action, policy; each empty = any) and
:func:`per_minute` (allowed/denied flow counts per minute, oldest first). Records are the
:class:`~pycalico.ui.sources.FlowRecord` dicts a :class:`~pycalico.ui.sources.FlowSource`
returns. Invariants: pure; a record missing a field never matches a filter on that field and
never raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycalico.felix.rules.nflog import HOST_DEFAULT


def _side(rec: Mapping[str, Any], side: str) -> Mapping[str, Any]:
    val = rec.get(side)
    return val if isinstance(val, Mapping) else {}


def policy_label(hit: Mapping[str, Any] | None) -> str:
    """One trace step as the flows table names it: ``tier/kind/namespace/name#rule``,
    ``tier end-of-tier``, ``profile NAME#rule`` or ``no-profile-match`` ('' when none)."""
    if not isinstance(hit, Mapping):
        return ""
    if hit.get("end_of_tier"):
        return f"{hit.get('tier', '')} end-of-tier"
    if hit.get("kind") == "host":
        return HOST_DEFAULT
    if hit.get("kind") == "profile" or (not hit.get("tier") and hit.get("kind") == ""):
        if not hit.get("name"):
            return "no-profile-match"
        rule = f"#{hit['rule']}" if hit.get("rule") is not None else ""
        return f"profile {hit['name']}{rule}"
    if not hit.get("name"):
        return ""
    kind = f"{hit['kind']}/" if hit.get("kind") else ""
    ns = f"{hit['namespace']}/" if hit.get("namespace") else ""
    rule = f"#{hit['rule']}" if hit.get("rule") is not None else ""
    return f"{hit.get('tier', 'default')}/{kind}{ns}{hit['name']}{rule}"


@dataclass(frozen=True)
class FlowFilter:
    namespace: str = ""
    pod: str = ""
    port: str = ""
    action: str = ""
    policy: str = ""

    @classmethod
    def of(cls, params: Mapping[str, str]) -> FlowFilter:
        return cls(**{k: str(params.get(k, "")).strip() for k in cls.__dataclass_fields__})

    def matches(self, rec: Mapping[str, Any]) -> bool:
        src, dst = _side(rec, "src"), _side(rec, "dst")
        if self.namespace and self.namespace not in (src.get("namespace"), dst.get("namespace")):
            return False
        if self.pod and not any(self.pod in str(s.get("name", "")) for s in (src, dst)):
            return False
        if self.port and str(rec.get("dport", "")) != self.port:
            return False
        if self.action and str(rec.get("action", "")).lower() != self.action.lower():
            return False
        return not self.policy or self.policy in policy_label(rec.get("policy"))


def per_minute(
    records: Iterable[Mapping[str, Any]], now: float, minutes: int = 30
) -> dict[str, list[int]]:
    """Allowed and denied flows per minute over the last ``minutes`` (index 0 = oldest),
    each flow counted in the minute of its ``end``."""
    allowed, denied = [0] * minutes, [0] * minutes
    top = int(now // 60)
    for rec in records:
        end = rec.get("end")
        if not isinstance(end, int | float):
            continue
        idx = minutes - 1 - (top - int(end // 60))
        if not 0 <= idx < minutes:
            continue
        if str(rec.get("action", "")).lower() == "allow":
            allowed[idx] += 1
        else:
            denied[idx] += 1
    return {"allowed": allowed, "denied": denied}


def _pending(p: Any) -> list[str]:
    """The pending verdict's steps, the last one carrying the verdict (``[]``: no opinion)."""
    if not isinstance(p, Mapping):
        return []
    steps = [policy_label(h) + f" {h.get('action', '')}" for h in p.get("trace") or []]
    return steps or [f"({p.get('action', '?')})"]


def row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The table row the page shows for one record (plus its traces for expansion)."""

    def name(side: Mapping[str, Any]) -> str:
        if side.get("name"):
            ns = f"{side['namespace']}/" if side.get("namespace") else ""
            return f"{ns}{side['name']}"
        return str(side.get("ip", "?"))

    return {
        "end": rec.get("end"),
        "node": rec.get("node", ""),
        "reporter": rec.get("reporter", ""),
        "src": name(_side(rec, "src")),
        "dst": name(_side(rec, "dst")),
        "proto": rec.get("proto", ""),
        "dport": rec.get("dport", ""),
        "action": str(rec.get("action", "")).lower(),
        "policy": policy_label(rec.get("policy")),
        "trace": [policy_label(h) + f" {h.get('action', '')}" for h in rec.get("trace") or []],
        "pending": _pending(rec.get("pending")),
        "packets": int(rec.get("packets_in", 0) or 0) + int(rec.get("packets_out", 0) or 0),
        "bytes": int(rec.get("bytes_in", 0) or 0) + int(rec.get("bytes_out", 0) or 0),
    }
