"""What-if: which recorded flows would change verdict under proposed resources (pure).

Owns :func:`policy_diff`: the observed flows (one per source, destination, protocol and
port; the verdict of the latest records: deny when either reporter's last record denied)
are replayed through :class:`~pycalico.felix.calc.insight.PolicyInsight` built from the
current resources with the proposed ones applied (same kind/namespace/name replaced,
others added; nothing is written anywhere), and compared with what was recorded. Also the
reachability-matrix delta between the current and the proposed model.

Invariants: no I/O; a recorded peer the model no longer knows (a deleted workload) is
replayed by its IP address; a flow that cannot be replayed is listed in ``skipped`` with
the reason, never dropped silently - among them a pod's connection to its own node that the
node's ``defaultEndpointToHostAction`` dropped (a Felix setting, not a policy: no proposed
policy can change that verdict, and the model does not know it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycalico.errors import CalicoError
from pycalico.felix.calc.evaluate import Decision
from pycalico.felix.calc.insight import Explanation, PolicyInsight
from pycalico.flows.record import FlowRecord, Peer, proto_name
from pycalico.model import protocol_name

FlowId = tuple[str, str, int, int]  # src label, dst label, protocol, port


@dataclass(frozen=True)
class FlowChange:
    src: str
    dst: str
    protocol: int
    port: int
    recorded: str
    current: str  # the current model's verdict (differs from recorded if policy changed)
    proposed: str
    decided_by: str  # what decides under the proposed resources

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.src, "to": self.dst, "protocol": proto_name(self.protocol),
            "port": self.port, "recorded": self.recorded, "current": self.current,
            "proposed": self.proposed, "decided_by": self.decided_by,
        }  # fmt: skip


@dataclass
class WhatIf:
    observed: int = 0
    changes: list[FlowChange] = field(default_factory=list)
    matrix_delta: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "observed_flows": self.observed,
            "changes": [c.to_json() for c in self.changes],
            "matrix_delta": self.matrix_delta,
            "skipped": self.skipped,
        }


def _ident(r: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = r.get("metadata") or {}
    return (str(r.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def apply_proposed(
    current: Iterable[Mapping[str, Any]], proposed: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``current`` with every proposed resource replacing the one of its identity."""
    prop = {_ident(r): dict(r) for r in proposed}
    out = [dict(r) for r in current if _ident(r) not in prop]
    return out + list(prop.values())


def _label(p: Peer) -> str:
    return f"{p.namespace}/{p.name}" if p.kind == "wep" else p.ip


def _latest(records: Sequence[FlowRecord]) -> dict[tuple[FlowId, str], FlowRecord]:
    """(flow id, reporter) -> its latest record (records oldest first)."""
    last: dict[tuple[FlowId, str], FlowRecord] = {}
    for r in records:
        k = r.key
        last[((_label(k.src), _label(k.dst), k.proto, k.dport), k.reporter)] = r
    return last


def observed(records: Sequence[FlowRecord]) -> dict[FlowId, tuple[str, Peer, Peer]]:
    """Flow id -> (recorded verdict, src peer, dst peer), from the latest record of each
    reporter (records oldest first)."""
    out: dict[FlowId, tuple[str, Peer, Peer]] = {}
    for (fid, _rep), r in sorted(_latest(records).items(), key=lambda kv: kv[1].end):
        prev = out.get(fid)
        verdict = "deny" if r.key.action == "deny" or (prev and prev[0] == "deny") else "allow"
        out[fid] = (verdict, r.key.src, r.key.dst)
    return out


def host_dropped(records: Sequence[FlowRecord]) -> set[FlowId]:
    """The flows whose latest destination-side record is the node's endpoint-to-host
    default drop (records oldest first)."""
    return {
        fid
        for (fid, reporter), r in _latest(records).items()
        if reporter == "dst" and r.policy is not None and r.policy.owner == "host"
    }


def decided_by(ex: Explanation) -> str:
    d: Decision = ex.egress if ex.egress.verdict == "deny" else ex.ingress
    direction = "egress" if d is ex.egress else "ingress"
    if d.reason == "rule":
        return f"{direction} {d.tier}/{d.policy} rule {d.rule}"
    if d.reason == "tier-default":
        return f"{direction} end of tier {d.tier}"
    if d.reason == "profile-rule":
        return f"{direction} profile {d.profile} rule {d.rule}"
    return f"{direction} {d.reason}"


def _explain(model: PolicyInsight, src: Peer, dst: Peer, proto: int, port: int) -> Explanation:
    def ref(p: Peer) -> str:
        if p.kind == "wep":
            try:
                model.resolve(_label(p))
                return _label(p)
            except CalicoError:
                return p.ip
        return p.ip

    return model.explain(ref(src), ref(dst), port or None, proto)


def policy_diff(
    records: Sequence[FlowRecord],
    current: Sequence[Mapping[str, Any]],
    proposed: Sequence[Mapping[str, Any]],
) -> WhatIf:
    now = PolicyInsight(current)
    then = PolicyInsight(apply_proposed(current, proposed))
    out = WhatIf()
    flows = observed(records)
    by_host = host_dropped(records)
    out.observed = len(flows)
    for (s, d, proto, port), (recorded, src, dst) in sorted(flows.items()):
        if (s, d, proto, port) in by_host:
            out.skipped.append(f"{s} -> {d} {port}/{protocol_name(proto)}: dropped by the "
                               "node's defaultEndpointToHostAction, not by a policy")  # fmt: skip
            continue
        try:
            cur = _explain(now, src, dst, proto, port)
            new = _explain(then, src, dst, proto, port)
        except CalicoError as e:
            out.skipped.append(f"{s} -> {d} {port}/{protocol_name(proto)}: {e}")
            continue
        if new.verdict != recorded:
            out.changes.append(
                FlowChange(s, d, proto, port, recorded, cur.verdict, new.verdict, decided_by(new))
            )
    before = {(p.src, p.dst, p.port, p.protocol): p.verdict for p in now.matrix()}
    for p in then.matrix():
        was = before.get((p.src, p.dst, p.port, p.protocol))
        if was != p.verdict:
            out.matrix_delta.append(dict(p.to_json(), was=was or "-"))
    return out


def format_whatif(w: WhatIf) -> str:
    lines = [f"Observed flows: {w.observed}; would change verdict: {len(w.changes)}"]
    if w.changes:
        rows: list[tuple[str, ...]] = [
            ("FROM", "TO", "PORT", "RECORDED", "PROPOSED", "DECIDED BY (PROPOSED)")
        ]
        rows += [(c.src, c.dst, f"{c.port}/{proto_name(c.protocol)}", c.recorded, c.proposed,
                  c.decided_by + ("" if c.current == c.recorded else
                                  f" (current model: {c.current})"))
                 for c in w.changes]  # fmt: skip
        lines += _table(rows)
    lines.append(f"Reachability matrix delta: {len(w.matrix_delta)} probe(s)")
    if w.matrix_delta:
        rows = [("FROM", "TO", "PORT", "NOW", "PROPOSED")]
        rows += [(m["from"], m["to"], f"{m['port']}/{m['protocol']}", m["was"], m["verdict"])
                 for m in w.matrix_delta]  # fmt: skip
        lines += _table(rows)
    lines += [f"skipped: {s}" for s in w.skipped]
    return "\n".join(lines)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
