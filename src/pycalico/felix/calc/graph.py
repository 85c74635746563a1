"""The Felix calculation graph: datastore updates in, ordered dataplane messages out.

Owns, for one node (or for every node when ``hostname`` is None, as the policy evaluator
uses it): the local endpoints, their effective labels, the policies and profiles that apply
to them in Calico's order, and the IP sets (selector and named-port sets) their rules need,
with members computed over ALL endpoints and network sets cluster-wide.

Input: ``on_update(key, dict | None)`` for v3 resources as stored (see
:mod:`pycalico.model.convert` for the kinds), ``on_in_sync()``; output: ``flush()``
returns the messages of :mod:`pycalico.felix.calc.messages` in sequencing order. With a
hostname the graph also owns the routes calc node (:class:`RouteCalculator`): ``IPPool``,
``Node`` and ``IPAMBlock`` go to it, and every converted WorkloadEndpoint (parsed once,
by the policy model) too; ``set_host_facts(version,
facts)`` feeds it what the dataplane read from the kernel and ``set_felix_config(config)`` the
resolved Felix configuration.

Invariants (Felix ``calc`` design):
- Pure and synchronous: no I/O, no kernel imports; the output after a flush is a function of
  the set of live resources only, never of the order they arrived in (no hysteresis).
- ``None`` means deleted; an invalid resource is treated as deleted (logged, and listed in
  ``rejected``), like Felix's validation filter: no stored resource makes the graph raise.
- Incremental: a label change re-evaluates only the selectors that reference a changed label
  (see :mod:`pycalico.felix.calc.labelindex`); policies are matched against local endpoints
  only, rule selectors against all items, each via its own index.
- Missing dependencies fail closed: a referenced profile that does not exist is sent with
  Deny rules; a policy in a tier without a Tier resource sorts after all known tiers and its
  tier's default action is Deny.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from pycalico.felix.calc.introspect import GraphQueries
from pycalico.felix.calc.labelindex import LabelIndex, discard_member
from pycalico.felix.calc.messages import (
    ActivePolicyRemove,
    ActivePolicyUpdate,
    ActiveProfileRemove,
    ActiveProfileUpdate,
    EndpointRemove,
    EndpointUpdate,
    InSync,
    IPSetRemove,
    IPSetUpdate,
    Message,
    ResolvedRule,
    TierInfo,
)
from pycalico.felix.calc.pending import StagedFilter, View, staged_ignored
from pycalico.felix.calc.resolve import RuleResolver, SetSpec
from pycalico.felix.calc.routes import RouteCalculator
from pycalico.felix.calc.routetypes import HostFacts
from pycalico.model import (
    Endpoint,
    ItemID,
    ModelError,
    NamedPort,
    Namespace,
    NetworkSet,
    Policy,
    PolicyID,
    Profile,
    Rule,
    ServiceAccount,
    Tier,
    convert,
    implied_tier,
)
from pycalico.model.felixconfig import FelixConfig
from pycalico.model.types import IMPLIED_TIERS, NAMESPACE_PROFILE_PREFIX, SA_PROFILE_PREFIX

log = logging.getLogger(__name__)

_DENY_ALL = (ResolvedRule("Deny"),)
# What parsing a malformed stored resource can raise (a field of the wrong JSON type).
_MALFORMED = (ModelError, TypeError, AttributeError, KeyError, ValueError, IndexError)
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


def _ports(item: Endpoint | NetworkSet) -> tuple[NamedPort, ...]:
    return item.ports if isinstance(item, Endpoint) else ()


class CalcGraph(GraphQueries):
    """See the module docstring. ``hostname=None`` treats every endpoint as local.

    ``pending_view=True`` also keeps the pending view (:mod:`.pending`): an inner graph
    (``view="pending"``: staged policies evaluate, no routes) whose messages
    :meth:`flush_pending` returns; :meth:`flush` never carries anything staged."""

    def __init__(
        self, hostname: str | None, *, pending_view: bool = False, view: View = "enforced"
    ) -> None:
        self.hostname = hostname
        self.view = view
        self._staged_filter = StagedFilter() if pending_view else None
        self.pending = CalcGraph(hostname, view="pending") if pending_view else None
        self._by_key: dict[str, tuple[str, Hashable]] = {}
        self._policies: dict[PolicyID, Policy] = {}
        self._tiers: dict[str, Tier] = {}
        self._explicit_profiles: dict[str, Profile] = {}
        self._namespaces: dict[str, Namespace] = {}
        self._sas: dict[tuple[str, str], ServiceAccount] = {}
        self._items: dict[ItemID, Endpoint | NetworkSet] = {}
        self._local: set[ItemID] = set()
        self._profile_users: dict[str, set[ItemID]] = {}
        self._profile_refs: Counter[str] = Counter()
        # Policy <-> local endpoint matching.
        self.policy_index: LabelIndex[PolicyID, ItemID] = LabelIndex(
            self._on_policy_match, self._on_policy_unmatch
        )
        self._ep_policies: dict[ItemID, set[PolicyID]] = {}
        self._policy_matches: Counter[PolicyID] = Counter()
        # Rule selector <-> all items matching (IP set membership).
        self.ipset_index: LabelIndex[str, ItemID] = LabelIndex(
            self._on_set_match, self._on_set_unmatch
        )
        self._spec_refs: Counter[SetSpec] = Counter()
        self._sel_refs: Counter[str] = Counter()
        self._specs_by_sel: dict[str, set[SetSpec]] = {}
        self._resolver = RuleResolver()
        # What has been sent.
        self._sent_sets: dict[SetSpec, IPSetUpdate] = {}
        self._sent_policies: dict[PolicyID, tuple[ActivePolicyUpdate, frozenset[SetSpec]]] = {}
        self._sent_profiles: dict[str, tuple[ActiveProfileUpdate, frozenset[SetSpec]]] = {}
        self._sent_endpoints: dict[ItemID, EndpointUpdate] = {}
        # Dirty tracking.
        self._dirty_policies: set[PolicyID] = set()
        self._dirty_profiles: set[str] = set()
        self._dirty_specs: set[SetSpec] = set()
        self._dirty_endpoints: set[ItemID] = set()
        self._in_sync = False
        self._in_sync_sent = False
        self.routes = RouteCalculator(hostname) if hostname is not None else None
        self.routes = self.routes if view == "enforced" else None
        # Stored resources skipped as invalid: key -> why (see ``on_update``).
        self.rejected: dict[str, str] = {}
        self.rejected_total = 0

    # --- input --------------------------------------------------------------------------
    def on_update(self, key: str, value: Mapping[str, Any] | None) -> None:
        """Apply one datastore update (``None`` = deleted).

        Never raises on stored data: a resource that cannot be parsed (a malformed field of
        any type) is skipped as if deleted, logged, and recorded in :attr:`rejected` (key ->
        why, while it stays stored) and :attr:`rejected_total`; the rest is programmed."""
        if self.pending is not None and self._staged_filter is not None:
            for pkey, pvalue in self._staged_filter.route(key, value):
                self.pending.on_update(pkey, pvalue)
        self.rejected.pop(key, None)
        try:
            self._apply(key, value)
        except _MALFORMED as exc:
            why = str(exc) if isinstance(exc, ModelError) else f"malformed resource ({exc!r})"
            log.warning("ignoring invalid resource %s: %s", key, why)
            self.rejected[key] = why
            self.rejected_total += 1
            self._apply(key, None)

    def _apply(self, key: str, value: Mapping[str, Any] | None) -> None:
        if self.routes is not None and self.routes.on_update(key, value):
            return
        obj = convert(value).obj if value is not None else None
        obj = None if staged_ignored(obj, self.view) else obj
        if self.routes is not None:
            self.routes.on_endpoint(key, obj if isinstance(obj, Endpoint) else None)
        old = self._by_key.get(key)
        new_ref = self._ref(obj) if obj is not None else None
        if old is not None and old != new_ref:
            self._remove(*old)
            del self._by_key[key]
        if obj is not None and new_ref is not None:
            self._by_key[key] = new_ref
            self._add(obj)

    def on_in_sync(self) -> None:
        self._in_sync = True
        if self.pending is not None:
            self.pending.on_in_sync()

    def flush_pending(self) -> list[Message]:
        """The pending view's messages since the last call (``[]`` without one)."""
        return self.pending.flush() if self.pending is not None else []

    def set_felix_config(self, config: FelixConfig) -> None:
        """The resolved Felix configuration for the routes calc node (no-op without one)."""
        if self.routes is not None:
            self.routes.set_config(config)

    def set_host_facts(self, version: int, facts: HostFacts) -> None:
        """Host facts of IP ``version`` for the routes calc node (no-op without a hostname)."""
        if self.routes is not None:
            self.routes.set_host_facts(version, facts)

    def load(self, resources: Iterable[Mapping[str, Any]]) -> None:
        """Convenience: feed whole resources keyed by kind/namespace/name, then in-sync."""
        for r in resources:
            meta = r.get("metadata") or {}
            if not isinstance(meta, Mapping):
                meta = {}
            ns = meta.get("namespace", "")
            key = f"{r.get('apiVersion')}/{r.get('kind')}/{ns}/{meta.get('name')}"
            self.on_update(key, r)
        self.on_in_sync()

    @staticmethod
    def _ref(obj: object) -> tuple[str, Hashable]:
        if isinstance(obj, Policy):
            return ("policy", obj.id)
        if isinstance(obj, Tier):
            return ("tier", obj.name)
        if isinstance(obj, Profile):
            return ("profile", obj.name)
        if isinstance(obj, Namespace):
            return ("namespace", obj.name)
        if isinstance(obj, ServiceAccount):
            return ("sa", (obj.namespace, obj.name))
        if isinstance(obj, Endpoint | NetworkSet):
            return ("item", obj.id)
        raise TypeError(type(obj))

    def _add(self, obj: object) -> None:
        if isinstance(obj, Policy):
            self._set_policy(obj.id, obj)
        elif isinstance(obj, Tier):
            self._tiers[obj.name] = obj
            self._tier_changed(obj.name)
        elif isinstance(obj, Profile):
            self._explicit_profiles[obj.name] = obj
            self._profile_changed(obj.name)
        elif isinstance(obj, Namespace):
            self._namespaces[obj.name] = obj
            self._profile_changed(NAMESPACE_PROFILE_PREFIX + obj.name)
        elif isinstance(obj, ServiceAccount):
            self._sas[(obj.namespace, obj.name)] = obj
            self._profile_changed(f"{SA_PROFILE_PREFIX}{obj.namespace}.{obj.name}")
        elif isinstance(obj, Endpoint | NetworkSet):
            self._set_item(obj.id, obj)

    def _remove(self, category: str, ident: Hashable) -> None:
        if category == "policy":
            assert isinstance(ident, PolicyID)
            self._set_policy(ident, None)
        elif category == "tier":
            assert isinstance(ident, str)
            self._tiers.pop(ident, None)
            self._tier_changed(ident)
        elif category == "profile":
            assert isinstance(ident, str)
            self._explicit_profiles.pop(ident, None)
            self._profile_changed(ident)
        elif category == "namespace":
            assert isinstance(ident, str)
            self._namespaces.pop(ident, None)
            self._profile_changed(NAMESPACE_PROFILE_PREFIX + ident)
        elif category == "sa":
            assert isinstance(ident, tuple)
            self._sas.pop(ident, None)
            self._profile_changed(f"{SA_PROFILE_PREFIX}{ident[0]}.{ident[1]}")
        elif category == "item":
            assert isinstance(ident, ItemID)
            self._set_item(ident, None)

    # --- policies and tiers -------------------------------------------------------------
    def _set_policy(self, pid: PolicyID, pol: Policy | None) -> None:
        self._dirty_policies.add(pid)
        self._dirty_endpoints |= self.policy_index.matches(pid)
        if pol is None:
            self._policies.pop(pid, None)
            self.policy_index.remove_selector(pid)
            return
        self._policies[pid] = pol
        self.policy_index.update_selector(pid, pol.selector)

    def _tier_changed(self, name: str) -> None:
        for pid, pol in self._policies.items():
            if pol.tier == name:
                self._dirty_endpoints |= self.policy_index.matches(pid)

    def _on_policy_match(self, pid: PolicyID, iid: ItemID) -> None:
        self._ep_policies.setdefault(iid, set()).add(pid)
        self._policy_matches[pid] += 1
        if self._policy_matches[pid] == 1:
            self._dirty_policies.add(pid)
        self._dirty_endpoints.add(iid)

    def _on_policy_unmatch(self, pid: PolicyID, iid: ItemID) -> None:
        self._ep_policies.get(iid, set()).discard(pid)
        self._policy_matches[pid] -= 1
        if self._policy_matches[pid] <= 0:
            del self._policy_matches[pid]
            self._dirty_policies.add(pid)
        self._dirty_endpoints.add(iid)

    # --- profiles and labels ------------------------------------------------------------
    def profile(self, name: str) -> Profile | None:
        """The effective profile: explicit Profile resource, else Calico's built-in
        ``projectcalico-default-allow``, else implied by a Namespace (``kns.``) or a
        ServiceAccount (``ksa.``)."""
        prof = self._explicit_profiles.get(name)
        if prof is not None:
            return prof
        if name == DEFAULT_ALLOW_PROFILE:
            return Profile(name, (Rule("Allow"),), (Rule("Allow"),))
        if name.startswith(NAMESPACE_PROFILE_PREFIX):
            ns = self._namespaces.get(name[len(NAMESPACE_PROFILE_PREFIX) :])
            return ns.profile() if ns is not None else None
        if name.startswith(SA_PROFILE_PREFIX):
            ns_name, _, sa_name = name[len(SA_PROFILE_PREFIX) :].partition(".")
            sa = self._sas.get((ns_name, sa_name))
            return sa.profile() if sa is not None else None
        return None

    def effective_labels(self, item: Endpoint | NetworkSet) -> dict[str, str]:
        """Own labels, then labelsToApply of each profile in order (earlier ones win)."""
        labels = dict(item.labels)
        for name in item.profiles:
            prof = self.profile(name)
            if prof is not None:
                for k, v in prof.labels_to_apply:
                    labels.setdefault(k, v)
        return labels

    def _profile_changed(self, name: str) -> None:
        self._dirty_profiles.add(name)
        for iid in list(self._profile_users.get(name, ())):
            item = self._items[iid]
            self._relabel(iid, item)

    def _relabel(self, iid: ItemID, item: Endpoint | NetworkSet) -> None:
        labels = self.effective_labels(item)
        self.ipset_index.update_item(iid, labels)
        if iid in self._local:
            self.policy_index.update_item(iid, labels)
            self._dirty_endpoints.add(iid)

    # --- endpoints and network sets -----------------------------------------------------
    def _is_local(self, item: Endpoint | NetworkSet) -> bool:
        return isinstance(item, Endpoint) and (self.hostname is None or item.node == self.hostname)

    def _set_item(self, iid: ItemID, item: Endpoint | NetworkSet | None) -> None:
        old = self._items.get(iid)
        if old is not None:
            for name in old.profiles:  # pruned: a profile name goes with its last user
                discard_member(self._profile_users, name, iid)
            if iid in self._local:
                for name in old.profiles:
                    self._profile_refs[name] -= 1
                    if self._profile_refs[name] <= 0:
                        del self._profile_refs[name]
                    self._dirty_profiles.add(name)
        # Sets containing this item change if its addresses or named ports do (label
        # changes reach the sets through the index's match callbacks instead).
        if old is not None and (
            item is None or old.nets != item.nets or _ports(old) != _ports(item)
        ):
            for sel in self.ipset_index.selectors_matching(iid):
                self._dirty_specs |= self._specs_by_sel.get(sel, set())
        if item is None:
            self._items.pop(iid, None)
            self.ipset_index.remove_item(iid)
            if iid in self._local:
                self._local.discard(iid)
                self.policy_index.remove_item(iid)
                self._ep_policies.pop(iid, None)
                self._dirty_endpoints.add(iid)
            return
        self._items[iid] = item
        for name in item.profiles:
            self._profile_users.setdefault(name, set()).add(iid)
        if self._is_local(item):
            self._local.add(iid)
            for name in item.profiles:
                self._profile_refs[name] += 1
                self._dirty_profiles.add(name)
            self._dirty_endpoints.add(iid)
        elif iid in self._local:
            self._local.discard(iid)
            self.policy_index.remove_item(iid)
            self._dirty_endpoints.add(iid)
        self._relabel(iid, item)

    def _on_set_match(self, sel: str, iid: ItemID) -> None:
        self._dirty_specs |= self._specs_by_sel.get(sel, set())

    _on_set_unmatch = _on_set_match

    # --- resolution ---------------------------------------------------------------------
    def _uid(self, sel: str) -> str:
        return self._resolver.uid(sel)

    def _set_id(self, spec: SetSpec) -> str:
        return self._resolver.set_id(spec)

    def _resolve_rules(
        self, rules: tuple[Rule, ...], specs: set[SetSpec]
    ) -> tuple[ResolvedRule, ...]:
        return self._resolver.rules(rules, specs)

    def _want_policy(self, pid: PolicyID) -> tuple[ActivePolicyUpdate, frozenset[SetSpec]] | None:
        pol = self._policies.get(pid)
        if pol is None or self._policy_matches.get(pid, 0) <= 0:
            return None
        specs: set[SetSpec] = set()
        msg = ActivePolicyUpdate(
            policy_id=pid,
            tier=pol.tier,
            order=pol.order,
            types=pol.types,
            ingress=self._resolve_rules(pol.ingress, specs) if "Ingress" in pol.types else (),
            egress=self._resolve_rules(pol.egress, specs) if "Egress" in pol.types else (),
            pre_dnat=pol.pre_dnat,
            do_not_track=pol.do_not_track,
            apply_on_forward=pol.apply_on_forward,
        )
        return msg, frozenset(specs)

    def _want_profile(self, name: str) -> tuple[ActiveProfileUpdate, frozenset[SetSpec]] | None:
        if self._profile_refs.get(name, 0) <= 0:
            return None
        prof = self.profile(name)
        if prof is None:
            return ActiveProfileUpdate(name, _DENY_ALL, _DENY_ALL, missing=True), frozenset()
        specs: set[SetSpec] = set()
        msg = ActiveProfileUpdate(
            name, self._resolve_rules(prof.ingress, specs), self._resolve_rules(prof.egress, specs)
        )
        return msg, frozenset(specs)

    def _ref_specs(self, specs: Iterable[SetSpec], delta: int) -> None:
        for spec in specs:
            self._spec_refs[spec] += delta
            n = self._spec_refs[spec]
            if delta > 0 and n == 1:
                self._specs_by_sel.setdefault(spec.selector, set()).add(spec)
                self._dirty_specs.add(spec)
                self._sel_refs[spec.selector] += 1
                if self._sel_refs[spec.selector] == 1:
                    self.ipset_index.update_selector(spec.selector, spec.selector)
            elif delta < 0 and n == 0:
                del self._spec_refs[spec]
                self._dirty_specs.add(spec)
                self._specs_by_sel.get(spec.selector, set()).discard(spec)
                self._sel_refs[spec.selector] -= 1
                if self._sel_refs[spec.selector] == 0:
                    del self._sel_refs[spec.selector]
                    self._specs_by_sel.pop(spec.selector, None)
                    self.ipset_index.remove_selector(spec.selector)

    def _set_msg(self, spec: SetSpec) -> IPSetUpdate:
        members = [self._items[i] for i in self.ipset_index.matches(spec.selector)]
        set_id = self._set_id(spec)
        if not spec.named_port:
            nets = frozenset(n for m in members for n in m.nets)
            return IPSetUpdate(set_id, "net", spec.selector, nets=nets)
        ip_ports = frozenset(
            (net.network_address, p.protocol, p.port)
            for m in members
            if isinstance(m, Endpoint)
            for p in m.ports
            if p.name == spec.named_port and (spec.protocol is None or p.protocol == spec.protocol)
            for net in m.nets
        )
        return IPSetUpdate(
            set_id,
            "ip_port",
            spec.selector,
            ip_ports=ip_ports,
            named_port=spec.named_port,
            protocol=spec.protocol,
        )

    def _tier_infos(self, pols: list[Policy]) -> tuple[TierInfo, ...]:
        by_tier: dict[str, list[Policy]] = {}
        for p in pols:
            by_tier.setdefault(p.tier, []).append(p)

        def tier_key(name: str) -> tuple[int, float, str]:
            known = name in self._tiers or name in IMPLIED_TIERS
            order, tname = self._tier(name).sort_key()
            return (0 if known else 1, order, tname)

        out = []
        for name in sorted(by_tier, key=tier_key):
            ordered = sorted(by_tier[name], key=Policy.sort_key)
            tier = self._tier(name)
            out.append(
                TierInfo(
                    name,
                    tier.default_action,
                    tuple(p.id for p in ordered if p.applies_to("ingress")),
                    tuple(p.id for p in ordered if p.applies_to("egress")),
                )
            )
        return tuple(out)

    def _tier(self, name: str) -> Tier:
        return self._tiers.get(name) or implied_tier(name)

    def _want_endpoint(self, iid: ItemID) -> EndpointUpdate | None:
        item = self._items.get(iid)
        if iid not in self._local or not isinstance(item, Endpoint):
            return None
        pols = [self._policies[p] for p in self._ep_policies.get(iid, ()) if p in self._policies]
        normal = [p for p in pols if not p.pre_dnat and not p.do_not_track]
        labels = tuple(sorted(self.effective_labels(item).items()))
        if not item.is_host:
            return EndpointUpdate(item, labels, self._tier_infos(normal), item.profiles)
        return EndpointUpdate(
            item,
            labels,
            self._tier_infos(normal),
            item.profiles,
            forward_tiers=self._tier_infos([p for p in normal if p.apply_on_forward]),
            pre_dnat_tiers=self._tier_infos([p for p in pols if p.pre_dnat]),
            untracked_tiers=self._tier_infos([p for p in pols if p.do_not_track]),
        )

    # --- output -------------------------------------------------------------------------
    def flush(self) -> list[Message]:
        """Messages bringing a consumer from the last flush's state to the current one."""
        pol_up: list[Message] = []
        pol_rm: list[Message] = []
        for pid in sorted(self._dirty_policies):
            want = self._want_policy(pid)
            have = self._sent_policies.get(pid)
            if want == have:
                continue
            if want is not None:
                self._ref_specs(want[1], +1)
                self._sent_policies[pid] = want
                pol_up.append(want[0])
            else:
                del self._sent_policies[pid]
                pol_rm.append(ActivePolicyRemove(pid))
            if have is not None:
                self._ref_specs(have[1], -1)
        self._dirty_policies.clear()
        prof_up: list[Message] = []
        prof_rm: list[Message] = []
        for name in sorted(self._dirty_profiles):
            pwant = self._want_profile(name)
            phave = self._sent_profiles.get(name)
            if pwant == phave:
                continue
            if pwant is not None:
                self._ref_specs(pwant[1], +1)
                self._sent_profiles[name] = pwant
                prof_up.append(pwant[0])
            else:
                del self._sent_profiles[name]
                prof_rm.append(ActiveProfileRemove(name))
            if phave is not None:
                self._ref_specs(phave[1], -1)
        self._dirty_profiles.clear()
        set_up: list[Message] = []
        set_rm: list[Message] = []
        for spec in sorted(self._dirty_specs, key=SetSpec.sort_key):
            sent = self._sent_sets.get(spec)
            if self._spec_refs.get(spec, 0) > 0:
                msg = self._set_msg(spec)
                if msg != sent:
                    self._sent_sets[spec] = msg
                    set_up.append(msg)
            elif sent is not None:
                del self._sent_sets[spec]
                set_rm.append(IPSetRemove(sent.set_id))
        self._dirty_specs.clear()
        ep_up: list[Message] = []
        ep_rm: list[Message] = []
        for iid in sorted(self._dirty_endpoints):
            ewant = self._want_endpoint(iid)
            ehave = self._sent_endpoints.get(iid)
            if ewant == ehave:
                continue
            if ewant is not None:
                self._sent_endpoints[iid] = ewant
                ep_up.append(ewant)
            elif ehave is not None:
                del self._sent_endpoints[iid]
                ep_rm.append(EndpointRemove(ehave.endpoint))
        self._dirty_endpoints.clear()
        out = set_up + pol_up + prof_up + ep_up + ep_rm + prof_rm + pol_rm + set_rm
        if self._in_sync and self.routes is not None:
            out += self.routes.flush()
        if self._in_sync and not self._in_sync_sent:
            self._in_sync_sent = True
            out.append(InSync())
        return out
