"""Read-only queries over a :class:`~pycalico.felix.calc.graph.CalcGraph`'s state, for the
policy evaluator, the console and tests (a mixin: the graph owns the state, these only read).

Invariant: nothing here mutates the graph; orders are the graph's own (``Policy.sort_key``,
``Tier.sort_key``).
"""

from __future__ import annotations

from pycalico.model import Endpoint, ItemID, NetworkSet, Policy, PolicyID, Tier


class GraphQueries:
    _policies: dict[PolicyID, Policy]
    _tiers: dict[str, Tier]
    _items: dict[ItemID, Endpoint | NetworkSet]
    _local: set[ItemID]
    _ep_policies: dict[ItemID, set[PolicyID]]

    def _tier(self, name: str) -> Tier:
        raise NotImplementedError

    def local_endpoints(self) -> list[Endpoint]:
        return [e for i in sorted(self._local) if isinstance(e := self._items[i], Endpoint)]

    def all_items(self) -> list[Endpoint | NetworkSet]:
        return [self._items[i] for i in sorted(self._items)]

    def policy_order(self) -> list[tuple[Tier, list[tuple[Policy, list[ItemID]]]]]:
        """Tiers (stored or implied by a policy) in evaluation order, each with its policies
        in evaluation order and the local endpoints each one selects."""
        sel: dict[PolicyID, list[ItemID]] = {}
        for iid in sorted(self._ep_policies):
            for pid in self._ep_policies[iid]:
                sel.setdefault(pid, []).append(iid)
        pols = sorted(self._policies.values(), key=Policy.sort_key)
        tiers = sorted(
            map(self._tier, set(self._tiers) | {p.tier for p in pols}), key=Tier.sort_key
        )
        return [(t, [(p, sel.get(p.id, [])) for p in pols if p.tier == t.name]) for t in tiers]
