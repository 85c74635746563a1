"""RuleRenderer: calc-graph messages -> one desired ``calico`` table per family (pure).

Consumes the messages of :mod:`pycalico.felix.calc.messages` (in the graph's order) and
keeps, per family, the rendered chains and sets of every IP set, active policy, active
profile and local endpoint, plus the static chains and the dispatch verdict maps.
:meth:`RuleRenderer.tables` returns :class:`~pycalico.felix.rules.model.TableSpec` values.

Invariants:
- Incremental: a message re-renders only what it changes (an IP set's elements, one
  policy's two chains, one endpoint's chains and map entries); an IP set membership change
  never rewrites a rule, only the set's elements.
- Deterministic: the output is a function of the set of live messages, not of their order
  or of how often they were re-sent.
- Fail closed: an endpoint referencing an unknown profile drops; an unknown ``cali*``
  interface drops in the dispatch chains.
- IP sets are rendered overlap-free (CIDRs collapsed), as nft interval sets require.
- Flow logs (``RenderConfig.flow_logs``): every Allow/Deny/Pass rule of a normal policy or
  profile logs (doNotTrack and preDNAT policies do not: they see every packet, not only a
  connection's first); :attr:`RuleRenderer.attribution` is the map NFLOG
  prefix -> :class:`~pycalico.felix.rules.nflog.RuleRef` of exactly what :meth:`tables`
  last rendered (an immutable snapshot replaced as a whole, safe to read from any thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import collapse_addresses
from types import MappingProxyType
from typing import Literal

from pycalico.felix.calc.labelindex import discard_member
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
)
from pycalico.felix.rules import names as N
from pycalico.felix.rules.endpoints import (
    dispatch_map,
    endpoint_chain,
    static_chains,
    workload_chain_names,
)
from pycalico.felix.rules.hostendpoints import (
    HEP_MAPS,
    dispatch_chains,
    render_host_endpoint,
    static_hep_chains,
)
from pycalico.felix.rules.model import FAMILIES, Chain, Family, NftSet, TableSpec, make_chain
from pycalico.felix.rules.nflog import RuleRef, log_statement, prefix_for, rule_action
from pycalico.felix.rules.policy import RuleLogger, rules_bodies
from pycalico.felix.rules.qos import FROM_MAP as QOS_FROM_MAP
from pycalico.felix.rules.qos import TO_MAP as QOS_TO_MAP
from pycalico.felix.rules.qos import is_qos_chain, packet_rate_objects
from pycalico.felix.rules.settings import RenderConfig
from pycalico.model import ItemID, PolicyID

TABLE = "calico"
_PORT_SET_TYPE = "{addr} . inet_proto . inet_service"


def render_ipset(msg: IPSetUpdate, fam: Family) -> NftSet:
    """The nft set of one IP set in one family (elements canonical, overlap-free)."""
    name = N.set_name(fam.set_prefix, msg.set_id)
    if msg.type == "net":
        mine = [n for n in msg.nets if n.version == fam.version]
        if all(n.prefixlen == n.max_prefixlen for n in mine):
            elems = frozenset(str(n) for n in mine)
        else:
            elems = frozenset(str(n) for n in collapse_addresses(mine))  # type: ignore[type-var]
        return NftSet(name, fam.addr_type, elems, ("interval",))
    port_elems = frozenset(
        f"{ip} . {proto} . {port}" for ip, proto, port in msg.ip_ports if ip.version == fam.version
    )
    return NftSet(name, _PORT_SET_TYPE.format(addr=fam.addr_type), port_elems)


class _FamilyState:
    """Rendered objects of one family."""

    def __init__(self, fam: Family, cfg: RenderConfig) -> None:
        self.fam = fam
        self.chains: dict[str, Chain] = dict(static_chains(fam, cfg))
        self.chains.update(static_hep_chains(fam, cfg))
        self.sets: dict[str, NftSet] = {}
        self.ep_chains: dict[ItemID, tuple[str, ...]] = {}
        # Host endpoints: verdict map name -> chain to goto.
        self.hep_dispatch: dict[ItemID, dict[str, str]] = {}


class RuleRenderer:
    """See the module docstring."""

    def __init__(
        self,
        cfg: RenderConfig | None = None,
        families: Iterable[str] = ("ip", "ip6"),
        table: str = TABLE,
    ) -> None:
        self.cfg = cfg or RenderConfig()
        self.table = table
        self.in_sync = False
        self._fams = [_FamilyState(FAMILIES[f], self.cfg) for f in families]
        self._ipsets: dict[str, IPSetUpdate] = {}
        self._policies: dict[PolicyID, ActivePolicyUpdate] = {}
        self._profiles: dict[str, ActiveProfileUpdate] = {}
        self._endpoints: dict[ItemID, EndpointUpdate] = {}
        self._pol_users: dict[PolicyID, set[ItemID]] = {}
        self._prof_users: dict[str, set[ItemID]] = {}
        self._dirty_eps: set[ItemID] = set()
        self._dirty_maps = True
        self.attribution: Mapping[str, RuleRef] = MappingProxyType({})

    # --- input --------------------------------------------------------------------------
    def apply(self, msgs: Iterable[Message]) -> None:
        """Apply messages in the graph's order; endpoint chains render lazily."""
        for m in msgs:
            if isinstance(m, IPSetUpdate):
                self._ipsets[m.set_id] = m
                for fs in self._fams:
                    s = render_ipset(m, fs.fam)
                    fs.sets[s.name] = s
            elif isinstance(m, IPSetRemove):
                self._ipsets.pop(m.set_id, None)
                for fs in self._fams:
                    fs.sets.pop(N.set_name(fs.fam.set_prefix, m.set_id), None)
            elif isinstance(m, ActivePolicyUpdate):
                if m.policy_id not in self._policies:
                    self._dirty_eps |= self._pol_users.get(m.policy_id, set())
                self._policies[m.policy_id] = m
                self._render_rules(
                    N.policy_chain(m.policy_id, True), N.policy_chain(m.policy_id, False), m
                )
            elif isinstance(m, ActivePolicyRemove):
                if self._policies.pop(m.policy_id, None) is not None:
                    self._dirty_eps |= self._pol_users.get(m.policy_id, set())
                    for fs in self._fams:
                        fs.chains.pop(N.policy_chain(m.policy_id, True), None)
                        fs.chains.pop(N.policy_chain(m.policy_id, False), None)
            elif isinstance(m, ActiveProfileUpdate):
                if m.profile_id not in self._profiles:
                    self._dirty_eps |= self._prof_users.get(m.profile_id, set())
                self._profiles[m.profile_id] = m
                self._render_rules(
                    N.profile_chain(m.profile_id, True), N.profile_chain(m.profile_id, False), m
                )
            elif isinstance(m, ActiveProfileRemove):
                if self._profiles.pop(m.profile_id, None) is not None:
                    self._dirty_eps |= self._prof_users.get(m.profile_id, set())
                    for fs in self._fams:
                        fs.chains.pop(N.profile_chain(m.profile_id, True), None)
                        fs.chains.pop(N.profile_chain(m.profile_id, False), None)
            elif isinstance(m, EndpointUpdate):
                self._set_endpoint(m.endpoint.id, m)
            elif isinstance(m, EndpointRemove):
                self._set_endpoint(m.endpoint.id, None)
            elif isinstance(m, InSync):
                self.in_sync = True

    def _render_rules(
        self, in_name: str, out_name: str, m: ActivePolicyUpdate | ActiveProfileUpdate
    ) -> None:
        for fs in self._fams:
            fam = fs.fam

            def namer(set_id: str, _f: Family = fam) -> str:
                return N.set_name(_f.set_prefix, set_id)

            fs.chains[in_name] = make_chain(
                in_name, rules_bodies(m.ingress, fam, namer, self._logger(m, "ingress"))
            )
            fs.chains[out_name] = make_chain(
                out_name, rules_bodies(m.egress, fam, namer, self._logger(m, "egress"))
            )

    def _logger(
        self, m: ActivePolicyUpdate | ActiveProfileUpdate, direction: str
    ) -> RuleLogger | None:
        if not self.cfg.flow_logs:
            return None

        def log(index: int, action: str) -> str | None:
            ref = _rule_ref(m, direction, index, action)
            return log_statement(prefix_for(ref), ref.action) if ref is not None else None

        return log

    def _attribution(self) -> dict[str, RuleRef]:
        """Prefix -> RuleRef of every logging rule of the current policies, profiles and
        endpoints (the same refs the chains were rendered from)."""
        if not self.cfg.flow_logs:
            return {}
        refs: list[RuleRef] = []
        owners: list[ActivePolicyUpdate | ActiveProfileUpdate] = [*self._policies.values()]
        owners += self._profiles.values()
        for m in owners:
            for direction, rules in (("ingress", m.ingress), ("egress", m.egress)):
                for i, r in enumerate(rules):
                    ref = _rule_ref(m, direction, i, r.action)
                    if ref is not None:
                        refs.append(ref)
        for ep in self._endpoints.values():
            # normal and (host endpoints) forward chains drop at the end of a tier
            for t in (*ep.tiers, *ep.forward_tiers):
                if t.default_action == "Pass":
                    continue
                if t.ingress_policies:
                    refs.append(RuleRef("deny", "ingress", "policy", tier=t.name))
                if t.egress_policies:
                    refs.append(RuleRef("deny", "egress", "policy", tier=t.name))
        refs += [RuleRef("deny", "ingress", "profile"), RuleRef("deny", "egress", "profile")]
        if self.cfg.endpoint_to_host_action == "Drop":
            refs.append(RuleRef("deny", "ingress", "host"))
        return {prefix_for(r): r for r in refs}

    def _set_endpoint(self, iid: ItemID, ep: EndpointUpdate | None) -> None:
        old = self._endpoints.pop(iid, None)
        if old is not None:
            for pid in _policy_ids(old):  # a key goes with its last user (no leak)
                discard_member(self._pol_users, pid, iid)
            for prof in old.profile_ids:
                discard_member(self._prof_users, prof, iid)
        if ep is not None:
            self._endpoints[iid] = ep
            for pid in _policy_ids(ep):
                self._pol_users.setdefault(pid, set()).add(iid)
            for prof in ep.profile_ids:
                self._prof_users.setdefault(prof, set()).add(iid)
        self._dirty_eps.add(iid)
        if old is None or ep is None or old.endpoint.interface_name != ep.endpoint.interface_name:
            self._dirty_maps = True

    def set_config(self, cfg: RenderConfig) -> None:
        """Switch settings: static chains and every endpoint chain are re-rendered (and
        every policy/profile chain when flow logs are switched)."""
        if cfg == self.cfg:
            return
        old, self.cfg = self.cfg, cfg
        if old.flow_logs != cfg.flow_logs:  # every policy/profile rule gains/loses its NFLOG
            for pid, m in self._policies.items():
                self._render_rules(N.policy_chain(pid, True), N.policy_chain(pid, False), m)
            for prof, pm in self._profiles.items():
                self._render_rules(N.profile_chain(prof, True), N.profile_chain(prof, False), pm)
        for fs in self._fams:
            fs.chains.update(static_chains(fs.fam, cfg))
            fs.chains.update(static_hep_chains(fs.fam, cfg))
        self._dirty_eps |= set(self._endpoints)
        self._dirty_maps = True

    # --- output -------------------------------------------------------------------------
    def _policy_chain(self, pid: PolicyID, ingress: bool) -> str | None:
        return N.policy_chain(pid, ingress) if pid in self._policies else None

    def _profile_chain(self, prof: str, ingress: bool) -> str | None:
        return N.profile_chain(prof, ingress) if prof in self._profiles else None

    def _iface_owners(self) -> tuple[dict[str, ItemID], ItemID | None]:
        """Interface name -> the endpoint owning it (lowest id wins a clash), and the
        all-interfaces host endpoint in force (lowest id)."""
        owners: dict[str, ItemID] = {}
        wildcard: ItemID | None = None
        for iid in sorted(self._endpoints):
            ep = self._endpoints[iid].endpoint
            iface = ep.interface_name
            if iface == "*":
                if ep.is_host and wildcard is None:
                    wildcard = iid
            elif iface and iface not in owners:
                owners[iface] = iid
        return owners, wildcard

    def _flush(self) -> None:
        if not self._dirty_eps and not self._dirty_maps:
            return
        if any(
            self._endpoints[i].endpoint.is_host for i in self._dirty_eps if i in self._endpoints
        ):
            self._dirty_maps = True  # a host endpoint's set of chains depends on its policies
        owners = self._iface_owners() if self._dirty_maps else None
        for fs in self._fams:
            for iid in sorted(self._dirty_eps):
                for name in fs.ep_chains.pop(iid, ()):
                    fs.chains.pop(name, None)
                fs.hep_dispatch.pop(iid, None)
                ep = self._endpoints.get(iid)
                if ep is None or not ep.endpoint.interface_name:
                    continue
                if ep.endpoint.is_host:
                    hep = render_host_endpoint(
                        ep, fs.fam, self.cfg, self._policy_chain, self._profile_chain
                    )
                    if hep is None:
                        continue
                    for chain in hep.chains:
                        fs.chains[chain.name] = chain
                    fs.ep_chains[iid] = tuple(c.name for c in hep.chains)
                    fs.hep_dispatch[iid] = dict(hep.dispatch)
                    continue
                to_name, from_name = workload_chain_names(ep.endpoint.interface_name)
                for name, ingress in ((to_name, True), (from_name, False)):
                    fs.chains[name] = endpoint_chain(
                        name,
                        ep,
                        ingress,
                        fs.fam,
                        self.cfg,
                        self._policy_chain,
                        self._profile_chain,
                    )
                fs.ep_chains[iid] = (to_name, from_name)
            if owners is not None:
                self._render_maps(fs, *owners)
        self._render_packet_rates()
        self._dirty_eps.clear()
        self._dirty_maps = False

    def _render_packet_rates(self) -> None:
        """The QoS packet-rate chains and maps (:mod:`.qos`), replaced as a whole."""
        chains, sets = packet_rate_objects(self._endpoints.values())
        for fs in self._fams:
            for name in [n for n in fs.chains if is_qos_chain(n)]:
                del fs.chains[name]
            for name in (QOS_TO_MAP, QOS_FROM_MAP):
                fs.sets.pop(name, None)
            fs.chains.update(chains)
            fs.sets.update(sets)

    def _render_maps(
        self, fs: _FamilyState, owners: dict[str, ItemID], wildcard: ItemID | None
    ) -> None:
        maps: dict[str, dict[str, str]] = {N.TO_WL_MAP: {}, N.FROM_WL_MAP: {}}
        maps.update({m: {} for m in HEP_MAPS})
        for iface, iid in owners.items():
            if iid not in fs.ep_chains:
                continue
            if iid in fs.hep_dispatch:
                for mname, chain in fs.hep_dispatch[iid].items():
                    maps[mname][iface] = chain
            else:
                to_name, from_name = fs.ep_chains[iid]
                maps[N.TO_WL_MAP][iface] = to_name
                maps[N.FROM_WL_MAP][iface] = from_name
        for mname, targets in maps.items():
            fs.sets[mname] = dispatch_map(mname, targets)
        default = fs.hep_dispatch.get(wildcard, {}) if wildcard is not None else {}
        fs.chains.update(dispatch_chains(self.cfg, default))

    def tables(self) -> dict[str, TableSpec]:
        """The desired table of every family (``{"ip": ..., "ip6": ...}``)."""
        self._flush()
        self.attribution = MappingProxyType(self._attribution())
        return {
            fs.fam.name: TableSpec(fs.fam.name, self.table, dict(fs.chains), dict(fs.sets))
            for fs in self._fams
        }

    def counts(self) -> dict[str, int]:
        """Sizes for metrics: local endpoints, active policies/profiles, IP sets."""
        return {
            "active_local_endpoints": len(self._endpoints),
            "active_local_policies": len(self._policies),
            "active_profiles": len(self._profiles),
            "ipsets": len(self._ipsets),
        }

    @property
    def families(self) -> list[str]:
        return [fs.fam.name for fs in self._fams]


def _rule_ref(
    m: ActivePolicyUpdate | ActiveProfileUpdate, direction: str, index: int, action: str
) -> RuleRef | None:
    """The attribution of rule ``index`` of ``m`` (None for a Log rule)."""
    act = rule_action(action)
    if act is None:
        return None
    if isinstance(m, ActivePolicyUpdate) and (m.do_not_track or m.pre_dnat):
        return None  # evaluated outside conntrack's "new only": would log every packet
    d: Literal["ingress", "egress"] = "ingress" if direction == "ingress" else "egress"
    if isinstance(m, ActiveProfileUpdate):
        return RuleRef(act, d, "profile", name=m.profile_id, rule=index)
    pid = m.policy_id
    return RuleRef(
        act, d, "policy", tier=m.tier, kind=pid.kind, namespace=pid.namespace, name=pid.name,
        rule=index,
    )  # fmt: skip


def _policy_ids(ep: EndpointUpdate) -> set[PolicyID]:
    out: set[PolicyID] = set()
    for tiers in (ep.tiers, ep.forward_tiers, ep.pre_dnat_tiers, ep.untracked_tiers):
        for t in tiers:
            out.update(t.ingress_policies)
            out.update(t.egress_policies)
    return out
