"""The pending world: the datastore as it would be if every staged policy were enforced.

Owns :class:`StagedFilter`, a pure transformer of the datastore update stream
(``key, dict | None``) into the update stream of the *pending* world, which a second
:class:`~pycalico.felix.calc.graph.CalcGraph` (``view="pending"``) turns into the pending
messages. Promoting a staged policy means writing its enforced counterpart (same namespace
and name; ``StagedNetworkPolicy`` -> ``NetworkPolicy``, ``StagedGlobalNetworkPolicy`` ->
``GlobalNetworkPolicy``, ``StagedKubernetesNetworkPolicy`` -> the Kubernetes
``NetworkPolicy``), so in the pending world:

- a staged policy with ``stagedAction`` ``Set`` (the default), ``Learn`` or ``Ignore`` is
  evaluated exactly as its enforced counterpart would be, under its staged identity
  (``snp/<ns>/<name>``, ``sgnp/<name>``, ``sknp/<ns>/knp.default.<name>``: Calico's short
  kinds, as in its flow logs), and REPLACES the enforced policy of the same identity;
- a staged policy with ``stagedAction: Delete`` removes the enforced policy of the same
  identity (its ``tier`` is ignored: names are unique per kind and namespace);
- everything else (endpoints, profiles, tiers, sets, enforced policies without a staged
  counterpart) is unchanged.

Upstream Felix's flow-log "pending" trace differs in one corner: it evaluates a staged
policy next to a same-named enforced one instead of in its place, and never sees staged
deletes (its update processor drops them). pycalico models the promotion itself.

Invariants: pure; the pending world after any sequence of updates is a function of the set
of live resources only (never of their order); the enforced world never sees a staged policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pycalico.model.types import K8S_POLICY_PREFIX, Policy, PolicyID

Update = tuple[str, Mapping[str, Any] | None]
View = Literal["enforced", "pending"]
_CALICO_POLICY = {"NetworkPolicy": "np", "GlobalNetworkPolicy": "gnp"}
_STAGED_POLICY = {
    "StagedNetworkPolicy": "np",
    "StagedGlobalNetworkPolicy": "gnp",
    "StagedKubernetesNetworkPolicy": "knp",
}


def policy_identity(value: Mapping[str, Any]) -> tuple[PolicyID, str | None] | None:
    """``(enforced identity, staged action or None)`` of a policy resource dict; ``None`` for
    any other kind. Read from kind and metadata only, so a resource that fails conversion
    still has its identity."""
    meta = value.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    kind = str(value.get("kind") or "")
    name = str(meta.get("name") or "")
    ns = str(meta.get("namespace") or "")
    if kind == "NetworkPolicy" and value.get("apiVersion") == "networking.k8s.io/v1":
        return PolicyID("knp", ns, K8S_POLICY_PREFIX + name), None
    if kind in _CALICO_POLICY:
        short = _CALICO_POLICY[kind]
        return PolicyID(short, "" if short == "gnp" else ns, name), None
    if kind in _STAGED_POLICY:
        short = _STAGED_POLICY[kind]
        if short == "knp":
            name = K8S_POLICY_PREFIX + name
        spec = value.get("spec")
        action = str((spec.get("stagedAction") if isinstance(spec, Mapping) else None) or "Set")
        return PolicyID(short, "" if short == "gnp" else ns, name), action
    return None


def staged_ignored(obj: object, view: View) -> bool:
    """Does a graph of ``view`` ignore model object ``obj``? The enforced view ignores every
    staged policy; the pending view ignores staged deletes (:class:`StagedFilter` already
    removed what they delete)."""
    if not isinstance(obj, Policy) or obj.staged_action is None:
        return False
    return view != "pending" or obj.staged_action == "Delete"


class StagedFilter:
    """Routes datastore updates into the pending world (see the module docstring)."""

    def __init__(self) -> None:
        self._roles: dict[str, tuple[PolicyID, str | None]] = {}
        self._enforced: dict[PolicyID, tuple[str, Mapping[str, Any]]] = {}
        self._staged: dict[PolicyID, tuple[str, Mapping[str, Any], str]] = {}

    def staged_count(self) -> int:
        """How many staged policies (any action) the pending world applies."""
        return len(self._staged)

    def _entries(self, pid: PolicyID) -> dict[str, Mapping[str, Any]]:
        """What the pending world holds for enforced identity ``pid``: key -> resource."""
        staged = self._staged.get(pid)
        if staged is not None:
            key, value, action = staged
            return {} if action == "Delete" else {key: value}
        enforced = self._enforced.get(pid)
        return {enforced[0]: enforced[1]} if enforced is not None else {}

    def route(self, key: str, value: Mapping[str, Any] | None) -> list[Update]:
        """The updates that bring the pending world along with datastore update ``key``."""
        new_role = policy_identity(value) if isinstance(value, Mapping) else None
        old_role = self._roles.get(key)
        if new_role is None and old_role is None:
            return [(key, value)]
        pids = {role[0] for role in (old_role, new_role) if role is not None}
        before = {pid: self._entries(pid) for pid in pids}
        if old_role is not None:
            del self._roles[key]
            pid, action = old_role
            if action is None:
                self._enforced.pop(pid, None)
            else:
                self._staged.pop(pid, None)
        if new_role is not None and value is not None:
            self._roles[key] = new_role
            pid, action = new_role
            if action is None:
                self._enforced[pid] = (key, value)
            else:
                self._staged[pid] = (key, value, action)
        removed: list[Update] = []
        added: list[Update] = []
        for pid in sorted(pids):
            after = self._entries(pid)
            removed += [(k, None) for k in before[pid] if k not in after]
            added += [(k, v) for k, v in after.items() if before[pid].get(k) is not v]
        if new_role is None and value is not None:
            added.append((key, value))  # the key now holds something else: pass it through
        return removed + added
