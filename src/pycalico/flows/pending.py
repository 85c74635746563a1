"""The pending verdict of a flow: what the staged policies would have done with it.

Owns :class:`ViewsPending`, the :class:`~pycalico.flows.aggregate.PendingEvaluator` backed by
Felix's flow-log policy views (:mod:`pycalico.felix.flowviews`): for a new flow record it
evaluates the reporting endpoint's direction (egress at the source for ``reporter=src``,
ingress at the destination for ``dst``) in the latest published snapshot, with the same
evaluation code as ``calicoctl policy explain``, and returns ``{"action", "trace"}``: the
pending verdict and its per-tier steps in the flow record's trace format (tier, kind,
namespace, name, rule, direction, action, end_of_tier). Staged policies appear under their
staged kinds (``snp``, ``sgnp``, ``sknp``).

Invariants: read-only; returns None (no opinion) when no snapshot exists, no staged policy
is active (the views cannot differ), or the reporting endpoint is not local; never raises for
a record it cannot parse (it has no opinion on it either).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address
from typing import Any, Literal

from pycalico.felix.calc.evaluate import Decision, make_packet
from pycalico.felix.calc.views import PolicySnapshot
from pycalico.felix.rules.nflog import FlowAction, RuleRef
from pycalico.flows.record import FlowKey

Direction = Literal["ingress", "egress"]
_ACTIONS: dict[str, FlowAction] = {"allow": "allow", "deny": "deny", "pass": "pass"}


def decision_trace(d: Decision, direction: Direction) -> list[dict[str, Any]]:
    """A decision's steps as flow-record trace objects (tiers, then the profile step)."""
    out: list[dict[str, Any]] = []
    for t in d.tiers:
        kind, _, rest = (t.policy or "").partition("/")
        namespace, _, name = rest.rpartition("/")
        action: FlowAction = _ACTIONS.get(t.action.lower(), "deny")
        rule = t.rule if t.outcome == "rule" else None
        ref = RuleRef(action, direction, "policy", t.tier, kind, namespace, name, rule)
        out.append(ref.to_json())
    if d.reason in ("profile-rule", "no-profile-match", "missing-profile"):
        rule = d.rule if d.reason == "profile-rule" else None
        out.append(
            RuleRef(d.verdict, direction, "profile", name=d.profile or "", rule=rule).to_json()
        )
    return out


class ViewsPending:
    """See the module docstring; ``latest`` returns the current snapshot (or None)."""

    def __init__(self, latest: Callable[[], PolicySnapshot | None]) -> None:
        self.latest = latest

    def pending(self, key: FlowKey) -> dict[str, Any] | None:
        snap = self.latest()
        if snap is None or not snap.has_staged:
            return None
        local = key.src if key.reporter == "src" else key.dst
        direction: Direction = "egress" if key.reporter == "src" else "ingress"
        try:
            ep = snap.endpoint_at(ip_address(local.ip))
            pkt = make_packet(key.src.ip, key.dst.ip, key.proto, key.dport or None)
        except ValueError:
            return None
        if ep is None:
            return None
        verdicts = snap.evaluate(ep, direction, pkt)
        if verdicts is None:
            return None
        p = verdicts.pending
        return {"action": p.verdict, "trace": decision_trace(p, direction)}
