"""Host endpoint chains of the ``calico`` table: normal, forward, pre-DNAT, untracked (pure).

Owns everything the renderer emits for HostEndpoints, reproducing Calico (reference §3.2-3.4):

- ``interfaceName: <iface>``: chains keyed by the interface name, dispatched through verdict
  maps. ``interfaceName: "*"`` (all interfaces): chains keyed ``any-interface-at-all``,
  used as the *default* of each dispatch chain, i.e. for every interface no named host
  endpoint claims, except ``lo`` (loopback traffic never enters or leaves the host's
  namespace) and workload interfaces. A host endpoint with only ``expectedIPs`` gets no
  chains: it only contributes its addresses to IP sets.
- Normal policy (``tiers``), traffic to/from the host itself: ``cali-fh-`` (ingress, filter
  INPUT) / ``cali-th-`` (egress, filter OUTPUT): conntrack, failsafe, tiers with end-of-tier
  drop, profiles, final drop (no policy and no profile: default deny, except failsafe).
- Forward policy (``forward_tiers``, applyOnForward), filter FORWARD: ``cali-fhfw-``
  (ingress, by input interface) / ``cali-thfw-`` (egress, by output interface): conntrack,
  tiers with end-of-tier drop, then "Allow forwarded traffic by default" (accept mark +
  return) — no profiles, no failsafe.
- Flow logs (``cfg.flow_logs``): the normal and forward chains' end-of-tier drops log
  ``DP<I|E>|<tier>`` like the workload chains (after conntrack: first packets only).
  Pre-DNAT and untracked chains have no end-of-tier verdict (as in Calico, an unmatched
  packet goes on to normal/forward policy, whose end of tier logs) and their policies'
  rules do not log (they see every packet, not only a connection's first).
- Pre-DNAT policy (``pre_dnat_tiers``, ingress only): ``mangle-cali-fh-`` from the base chain
  ``mangle-PREROUTING`` (prerouting, priority -150: before DNAT at -100): failsafe, tiers
  *without* end-of-tier drop (unmatched packets go on to normal policy). An Allow leaves the
  accept mark set, which makes filter FORWARD skip the forward ingress chain (Calico).
- Untracked policy (``untracked_tiers``, doNotTrack): ``raw-cali-fh-``/``raw-cali-th-`` from
  ``raw-PREROUTING``/``raw-OUTPUT`` (priority -300: before conntrack): raw failsafe, tiers
  without end-of-tier drop; an Allow is ``notrack`` + accept mark, and the filter base chains
  accept untracked packets carrying the accept mark.
- Failsafe chains: ``cali-failsafe-in``/``-out`` (filter and mangle: by destination port,
  optional CIDR on the remote end) and ``raw-cali-failsafe-in``/``-out`` (also let the
  replies of failsafe flows of the other direction through, by source port).

Invariants: pre-DNAT and untracked chains (and their map entries) exist only for host
endpoints with such policies; the raw base chains clear Calico's mark bits first, so a mark
seen in mangle/filter was set by this table for this packet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_network

from pycalico.felix.calc.messages import EndpointUpdate, TierInfo
from pycalico.felix.rules import names as N
from pycalico.felix.rules.endpoints import (
    PolicyChainLookup,
    ProfileChainLookup,
    endpoint_chain,
    tier_rules,
)
from pycalico.felix.rules.model import Chain, Family, Hook, make_chain
from pycalico.felix.rules.policy import (
    ALL_MARKS,
    MARK_ACCEPT,
    clear_mark,
    mark_is_set,
    set_mark,
)
from pycalico.felix.rules.settings import RenderConfig, failsafe_entries

RAW_PRIORITY = -300  # before conntrack (-200)
MANGLE_PRIORITY = -150  # before DNAT (-100)


@dataclass(frozen=True)
class _Dispatch:
    chain: str
    map: str
    key: str  # "iifname" / "oifname"


# Every host endpoint dispatch chain with its verdict map (the base chain jumping to it is
# in endpoints.static_chains / static_hep_chains).
DISPATCHES = (
    _Dispatch(N.FROM_HEP_DISPATCH, N.FROM_HEP_MAP, "iifname"),
    _Dispatch(N.TO_HEP_DISPATCH, N.TO_HEP_MAP, "oifname"),
    _Dispatch(N.FROM_HEP_FWD_DISPATCH, N.FROM_HEP_FWD_MAP, "iifname"),
    _Dispatch(N.TO_HEP_FWD_DISPATCH, N.TO_HEP_FWD_MAP, "oifname"),
    _Dispatch(N.MANGLE_FROM_HEP_DISPATCH, N.MANGLE_FROM_HEP_MAP, "iifname"),
    _Dispatch(N.RAW_FROM_HEP_DISPATCH, N.RAW_FROM_HEP_MAP, "iifname"),
    _Dispatch(N.RAW_TO_HEP_DISPATCH, N.RAW_TO_HEP_MAP, "oifname"),
)
HEP_MAPS = tuple(d.map for d in DISPATCHES)


@dataclass(frozen=True)
class HepRender:
    """One host endpoint's chains in one family, and its dispatch entries
    (verdict map name -> chain to ``goto``)."""

    chains: tuple[Chain, ...]
    dispatch: tuple[tuple[str, str], ...]


def hep_key(interface_name: str) -> str:
    """The interface part of chain names: the name, or ``any-interface-at-all`` for ``*``."""
    return N.ALL_INTERFACES if interface_name == "*" else interface_name


def _has(tiers: Sequence[TierInfo], ingress: bool) -> bool:
    return any(t.ingress_policies if ingress else t.egress_policies for t in tiers)


def _forward_chain(
    name: str,
    tiers: Sequence[TierInfo],
    ingress: bool,
    policy_chain: PolicyChainLookup,
    flow_logs: bool,
) -> Chain:
    bodies = ["ct state established,related accept", "ct state invalid drop"]
    bodies.append(clear_mark(ALL_MARKS))
    bodies += tier_rules(tiers, ingress, policy_chain, flow_logs=flow_logs)
    bodies.append(f"{set_mark(MARK_ACCEPT)} return")  # Allow forwarded traffic by default
    return make_chain(name, bodies)


def _passthrough_chain(
    name: str,
    failsafe: str,
    tiers: Sequence[TierInfo],
    ingress: bool,
    policy_chain: PolicyChainLookup,
) -> Chain:
    """Pre-DNAT / untracked endpoint chain: failsafe, tiers, no end-of-tier drop."""
    bodies = [f"jump {failsafe}", clear_mark(ALL_MARKS)]
    bodies += tier_rules(tiers, ingress, policy_chain, end_of_tier_drop=False)
    return make_chain(name, bodies)


def render_host_endpoint(
    ep: EndpointUpdate,
    fam: Family,
    cfg: RenderConfig,
    policy_chain: PolicyChainLookup,
    profile_chain: ProfileChainLookup,
) -> HepRender | None:
    """All chains of one host endpoint, or None for an ``expectedIPs``-only endpoint."""
    iface = ep.endpoint.interface_name
    if not iface:
        return None
    key = hep_key(iface)
    chains: list[Chain] = []
    dispatch: list[tuple[str, str]] = []

    def add(chain: Chain, map_name: str) -> None:
        chains.append(chain)
        dispatch.append((map_name, chain.name))

    # to host endpoint = leaving the host = egress policy; from = ingress.
    for prefix, ingress, map_name in (
        (N.TO_HOST_EP, False, N.TO_HEP_MAP),
        (N.FROM_HOST_EP, True, N.FROM_HEP_MAP),
    ):
        name = N.endpoint_chain(prefix, key)
        add(endpoint_chain(name, ep, ingress, fam, cfg, policy_chain, profile_chain), map_name)
    for prefix, ingress, map_name in (
        (N.TO_HEP_FWD, False, N.TO_HEP_FWD_MAP),
        (N.FROM_HEP_FWD, True, N.FROM_HEP_FWD_MAP),
    ):
        name = N.endpoint_chain(prefix, key)
        chain = _forward_chain(name, ep.forward_tiers, ingress, policy_chain, cfg.flow_logs)
        add(chain, map_name)
    if _has(ep.pre_dnat_tiers, True):
        name = N.endpoint_chain(N.MANGLE_FROM_HEP, key)
        chain = _passthrough_chain(name, N.FAILSAFE_IN, ep.pre_dnat_tiers, True, policy_chain)
        add(chain, N.MANGLE_FROM_HEP_MAP)
    if _has(ep.untracked_tiers, True) or _has(ep.untracked_tiers, False):
        for prefix, ingress, failsafe, map_name in (
            (N.RAW_TO_HEP, False, N.RAW_FAILSAFE_OUT, N.RAW_TO_HEP_MAP),
            (N.RAW_FROM_HEP, True, N.RAW_FAILSAFE_IN, N.RAW_FROM_HEP_MAP),
        ):
            name = N.endpoint_chain(prefix, key)
            chain = _passthrough_chain(name, failsafe, ep.untracked_tiers, ingress, policy_chain)
            add(chain, map_name)
    return HepRender(tuple(chains), tuple(dispatch))


def dispatch_chains(cfg: RenderConfig, wildcard: Mapping[str, str]) -> dict[str, Chain]:
    """The host endpoint dispatch chains; ``wildcard`` maps a verdict map name to the chain
    of the all-interfaces endpoint, the default for interfaces not in the map."""
    wl = f'"{cfg.interface_prefix}*"'
    out = {}
    for d in DISPATCHES:
        bodies = [f"{d.key} vmap @{d.map}"]
        target = wildcard.get(d.map)
        if target is not None:
            bodies.append(f'{d.key} != "lo" {d.key} != {wl} goto {target}')
        out[d.chain] = make_chain(d.chain, bodies)
    return out


def _failsafe_bodies(
    entries: Sequence[tuple[str, int, str]], fam: Family, port_key: str, net_key: str
) -> list[str]:
    groups: dict[tuple[str, str], set[int]] = {}
    for proto, port, net in entries:
        if net and ip_network(net).version != fam.version:
            continue
        groups.setdefault((proto, net), set()).add(port)
    bodies = []
    for proto, net in sorted(groups):
        plist = sorted(groups[(proto, net)])
        pset = str(plist[0]) if len(plist) == 1 else "{ " + ", ".join(map(str, plist)) + " }"
        match = f"{fam.addr} {net_key}addr {net} " if net else ""
        bodies.append(f"{match}{proto} {port_key} {pset} accept")
    return bodies


def failsafe_chains(fam: Family, cfg: RenderConfig) -> dict[str, Chain]:
    """Filter/mangle and raw failsafe chains. The remote end of an inbound flow is the
    source, of an outbound flow the destination; raw chains also pass the replies."""
    fin = failsafe_entries(cfg.failsafe_inbound, "failsafeInboundHostPorts")
    fout = failsafe_entries(cfg.failsafe_outbound, "failsafeOutboundHostPorts")
    chains = [
        make_chain(N.FAILSAFE_IN, _failsafe_bodies(fin, fam, "dport", "s")),
        make_chain(N.FAILSAFE_OUT, _failsafe_bodies(fout, fam, "dport", "d")),
        make_chain(
            N.RAW_FAILSAFE_IN,
            _failsafe_bodies(fin, fam, "dport", "s") + _failsafe_bodies(fout, fam, "sport", "s"),
        ),
        make_chain(
            N.RAW_FAILSAFE_OUT,
            _failsafe_bodies(fout, fam, "dport", "d") + _failsafe_bodies(fin, fam, "sport", "d"),
        ),
    ]
    return {c.name: c for c in chains}


def static_hep_chains(fam: Family, cfg: RenderConfig) -> dict[str, Chain]:
    """Raw and mangle base chains, failsafe chains and (wildcard-free) dispatch chains."""
    accepted = mark_is_set(MARK_ACCEPT)
    chains = [
        make_chain(
            "raw-PREROUTING",
            [
                clear_mark(ALL_MARKS),
                f"jump {N.RAW_FROM_HEP_DISPATCH}",
                f"{accepted} notrack accept",
            ],
            Hook("prerouting", RAW_PRIORITY),
        ),
        make_chain(
            "raw-OUTPUT",
            [
                clear_mark(ALL_MARKS),
                f"jump {N.RAW_TO_HEP_DISPATCH}",
                f"{accepted} notrack accept",
            ],
            Hook("output", RAW_PRIORITY),
        ),
        make_chain(
            "mangle-PREROUTING",
            [
                "ct state established,related accept",
                f"{accepted} accept",  # already accepted by untracked policy
                f"jump {N.MANGLE_FROM_HEP_DISPATCH}",
            ],
            Hook("prerouting", MANGLE_PRIORITY),
        ),
    ]
    out = {c.name: c for c in chains}
    out.update(failsafe_chains(fam, cfg))
    out.update(dispatch_chains(cfg, {}))
    return out
