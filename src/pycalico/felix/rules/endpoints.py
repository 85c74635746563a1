"""Workload endpoint, dispatch and static filter chains of the ``calico`` table (pure).

Packet path (one table per family, base chains at ``filter`` priority 0, policy accept)::

  filter-FORWARD: set the evaluated mark       (the guard table and the tc guard check it)
                  ct established,related accept
                  iifname cali* fib saddr . iif oif missing drop   (anti-spoofing RPF)
                  untracked + accept mark: accept            (allowed by doNotTrack policy)
                  accept mark clear: jump cali-from-hep-forward   (HEP forward ingress;
                                                              skipped after a pre-DNAT allow)
                  iifname cali*: clear accept mark, jump cali-from-wl-dispatch (egress
                                 policy of the source), no accept mark: drop
                  oifname cali*: clear accept mark, jump cali-to-wl-dispatch (ingress
                                 policy of the dest.), no accept mark: drop
                  jump cali-to-hep-forward                   (HEP forward egress)
                  iif/oif cali* accept                       (both allowed)
  filter-INPUT:   evaluated mark, ct established,related accept, the same RPF check,
                  untracked accept
                  iifname cali* goto cali-wl-to-host         (egress policy - the same
                                                              dispatch check - then
                                                              defaultEndpointToHostAction)
                  jump cali-from-host-endpoint               (host endpoints)
  filter-OUTPUT:  evaluated mark, ct established,related accept, untracked accept
                  oifname cali* accept                       (host -> workload: not policed,
                                                              as Calico)
                  jump cali-to-host-endpoint

Fail closed against tampering (issue 19): an endpoint chain only returns with the accept
mark set, so a dispatch (or endpoint) chain flushed by hand comes back without it and the
packet drops; a policy chain flushed by hand comes back with the pending mark and the
packet drops; a deleted table or flushed base chain leaves new workload traffic without the
evaluated mark, which the separate ``calico-guard`` table drops
(:mod:`pycalico.felix.rules.guard`); a ``flush ruleset`` (both tables gone) leaves forwarded
workload traffic without it, which the tc guard drops
(:mod:`pycalico.felix.dataplane.tcguard`).

Host endpoint chains, the raw (untracked) and mangle (pre-DNAT) base chains and the
failsafe chains live in :mod:`pycalico.felix.rules.hostendpoints` (which builds on this
module, never the other way round); the settings both read (:class:`RenderConfig`) live in
:mod:`pycalico.felix.rules.settings`.

Dispatch chains look the interface up in a verdict map (``iifname vmap @cali-fw-dispatch``:
``"caliXXXX" : goto cali-fw-caliXXXX``) and drop anything else (``Unknown interface``: an
unknown ``cali*`` interface fails closed).

Endpoint chain (``cali-tw-``/``cali-fw-``/``cali-th-``/``cali-fh-``), Calico's order:
conntrack (established/related accept, invalid drop); workloads with a QoS connection limit:
``ct count over N reject with tcp reset``; host endpoints: failsafe jump; clear
accept+pass marks; ``cali-fw-``: drop VXLAN (UDP 4789) and IPIP (proto 4) unless allowed;
per tier with >= 1 policy in the direction: clear pass, then per policy ``if no pass mark:
set the pending mark, jump cali-pi-/po-<id>`` and ``if accept mark: return; if pending mark
(the policy chain was flushed: it never reached a verdict): drop`` (:data:`AFTER_POLICY`,
see :mod:`~pycalico.felix.rules.policy`); end of tier (default action Deny):
``if no pass mark: drop``. Then per profile ``jump cali-pri-/pro-<id>``, ``if accept mark:
return``; finally drop. A chain "returns" only with the accept mark set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from pycalico.felix.calc.messages import EndpointUpdate, TierInfo
from pycalico.felix.rules import names as N
from pycalico.felix.rules.model import Chain, Family, Hook, NftSet, make_chain
from pycalico.felix.rules.nflog import RuleRef, log_statement, prefix_for
from pycalico.felix.rules.policy import (
    ALL_MARKS,
    MARK_ACCEPT,
    MARK_EVALUATED,
    MARK_PASS,
    MARK_PENDING,
    clear_mark,
    mark_is_clear,
    mark_is_set,
    set_mark,
)
from pycalico.felix.rules.settings import ENDPOINT_TO_HOST_ACTIONS, RenderConfig
from pycalico.model import PolicyID

# ICMPv6 a workload needs to reach its host for (router/neighbour discovery, MLD).
_ICMPV6_TO_HOST = "{ 130, 131, 132, 133, 135, 136 }"


#: After a policy jump: accept mark -> return (allowed); pending mark still set -> drop (the
#: policy chain is flushed or incomplete: fail closed); neither -> go on (no match, or Pass).
AFTER_POLICY = (
    f"meta mark & {MARK_ACCEPT | MARK_PENDING:#x} "
    f"vmap {{ {MARK_ACCEPT:#x} : return, {MARK_PENDING:#x} : drop }}"
)

PolicyChainLookup = Callable[[PolicyID, bool], str | None]
ProfileChainLookup = Callable[[str, bool], str | None]


def tier_rules(
    tiers: Sequence[TierInfo],
    ingress: bool,
    policy_chain: PolicyChainLookup,
    end_of_tier_drop: bool = True,
    flow_logs: bool = False,
) -> list[str]:
    """Per tier with policies in the direction: the policy jumps, then (when
    ``end_of_tier_drop`` and the tier's default action is Deny) the end-of-tier drop. Calico
    leaves the end-of-tier drop out of pre-DNAT and untracked chains: normal policy follows.
    ``flow_logs``: the end-of-tier drop logs its NFLOG prefix (``DPI|<tier>``)."""
    out: list[str] = []
    for tier in tiers:
        pids = tier.ingress_policies if ingress else tier.egress_policies
        if not pids:
            continue
        out.append(clear_mark(MARK_PASS))  # start of tier
        for pid in pids:
            chain = policy_chain(pid, ingress)
            if chain is None:  # not (yet) active: the evaluator skips it too
                continue
            out.append(f"{mark_is_clear(MARK_PASS)} {set_mark(MARK_PENDING)} jump {chain}")
            out.append(AFTER_POLICY)
        if end_of_tier_drop and tier.default_action != "Pass":
            log = _log(RuleRef("deny", _direction(ingress), "policy", tier=tier.name), flow_logs)
            out.append(f"{mark_is_clear(MARK_PASS)} {log}drop")  # end of tier
    return out


def _direction(ingress: bool) -> Literal["ingress", "egress"]:
    return "ingress" if ingress else "egress"


def _log(ref: RuleRef, on: bool) -> str:
    """The NFLOG statement of ``ref`` plus a space, or "" when flow logs are off."""
    return log_statement(prefix_for(ref), ref.action) + " " if on else ""


def no_profile_drop(ingress: bool, flow_logs: bool) -> str:
    """The endpoint chain's final drop (no profile allowed), logged as ``DR<dir>``."""
    return _log(RuleRef("deny", _direction(ingress), "profile"), flow_logs) + "drop"


def _profile_rules(
    profile_ids: Sequence[str], ingress: bool, profile_chain: ProfileChainLookup, flow_logs: bool
) -> list[str]:
    out: list[str] = []
    for prof in profile_ids:
        chain = profile_chain(prof, ingress)
        if chain is None:  # unknown profile: fail closed
            out.append(no_profile_drop(ingress, flow_logs))
            return out
        out.append(f"jump {chain}")
        out.append(f"{mark_is_set(MARK_ACCEPT)} return")
    return out


def endpoint_chain(
    name: str,
    ep: EndpointUpdate,
    ingress: bool,
    fam: Family,
    cfg: RenderConfig,
    policy_chain: PolicyChainLookup,
    profile_chain: ProfileChainLookup,
) -> Chain:
    """The per-endpoint chain for one direction (``ingress`` = policy ingress rules)."""
    host = ep.endpoint.is_host
    bodies = ["ct state established,related accept", "ct state invalid drop"]
    bodies += max_connections_rules(ep, ingress)
    if host:
        bodies.append(f"jump {N.FAILSAFE_IN if ingress else N.FAILSAFE_OUT}")
    bodies.append(clear_mark(ALL_MARKS))
    if not host and not ingress:
        if not cfg.allow_vxlan_from_workloads:
            bodies.append("meta l4proto 17 th dport 4789 drop")
        if not cfg.allow_ipip_from_workloads:
            bodies.append("meta l4proto 4 drop")
    bodies += tier_rules(ep.tiers, ingress, policy_chain, flow_logs=cfg.flow_logs)
    bodies += _profile_rules(ep.profile_ids, ingress, profile_chain, cfg.flow_logs)
    bodies.append(no_profile_drop(ingress, cfg.flow_logs))
    return make_chain(name, bodies)


def max_connections_rules(ep: EndpointUpdate, ingress: bool) -> list[str]:
    """Calico's QoS connection limit (``qosControls.ingress/egressMaxConnections``): new TCP
    connections beyond the limit to (ingress) or from (egress) the workload are reset. The
    rule's own ``ct count`` list counts the live connections that passed it."""
    qos = ep.endpoint.qos
    if qos is None or ep.endpoint.is_host:
        return []
    limit = qos.ingressMaxConnections if ingress else qos.egressMaxConnections
    if not limit:
        return []
    return [f"meta l4proto tcp ct count over {limit} reject with tcp reset"]


def workload_chain_names(iface: str) -> tuple[str, str]:
    """(``cali-tw-<iface>``, ``cali-fw-<iface>``)."""
    return N.endpoint_chain(N.TO_WORKLOAD, iface), N.endpoint_chain(N.FROM_WORKLOAD, iface)


def dispatch_map(name: str, targets: dict[str, str]) -> NftSet:
    """A verdict map interface name -> ``goto <chain>``."""
    elems = frozenset(f'"{iface}" : goto {chain}' for iface, chain in targets.items())
    return NftSet(name, "ifname", elems, map_to="verdict")


def static_chains(fam: Family, cfg: RenderConfig) -> dict[str, Chain]:
    """Filter base chains, workload dispatch chains and wl-to-host for one family."""
    wl = f'"{cfg.interface_prefix}*"'
    est = "ct state established,related accept"
    # Allowed by untracked (doNotTrack) policy in the raw table: accept (Calico's "accept
    # immediately if already accepted in the raw table").
    untracked = f"ct state untracked {mark_is_set(MARK_ACCEPT)} accept"
    # Anti-spoofing (Calico's RPF check), only for packets not of an established flow: a
    # workload's source address must route back out of the interface it came in on.
    # IPv6: the unspecified and link-local sources of neighbour discovery are exempt.
    v6 = "ip6 saddr != { ::, fe80::/10 } " if fam.version == 6 else ""
    rpf = [f"iifname {wl} {v6}fib saddr . iif oif missing drop"] if cfg.anti_spoofing else []
    # Fail closed (issue 19): every packet the filter base chains evaluate carries
    # MARK_EVALUATED (their FIRST rule, so established packets carry it too), which the
    # calico-guard table requires of new workload traffic and the tc guard of every
    # forwarded workload packet (felix/dataplane/tcguard.py); and a
    # dispatch chain must come back with the accept mark (an endpoint chain only returns
    # with it), so a flushed dispatch or endpoint chain drops instead of falling through.
    evaluated = set_mark(MARK_EVALUATED)
    no_verdict = f"{mark_is_clear(MARK_ACCEPT)} drop"
    chains = [
        make_chain(
            "filter-FORWARD",
            [
                evaluated,
                est,
                *rpf,
                untracked,
                f"{mark_is_clear(MARK_ACCEPT)} jump {N.FROM_HEP_FWD_DISPATCH}",
                f"iifname {wl} {clear_mark(MARK_ACCEPT)}",
                f"iifname {wl} jump {N.FROM_WL_DISPATCH}",
                f"iifname {wl} {no_verdict}",
                f"oifname {wl} {clear_mark(MARK_ACCEPT)}",
                f"oifname {wl} jump {N.TO_WL_DISPATCH}",
                f"oifname {wl} {no_verdict}",
                f"jump {N.TO_HEP_FWD_DISPATCH}",
                f"iifname {wl} accept",
                f"oifname {wl} accept",
            ],
            Hook("forward", 0),
        ),
        make_chain(
            "filter-INPUT",
            [
                evaluated,
                est,
                *rpf,
                untracked,
                f"iifname {wl} goto {N.WL_TO_HOST}",
                f"jump {N.FROM_HEP_DISPATCH}",
            ],
            Hook("input", 0),
        ),
        make_chain(
            "filter-OUTPUT",
            [evaluated, est, untracked, f"oifname {wl} accept", f"jump {N.TO_HEP_DISPATCH}"],
            Hook("output", 0),
        ),
        make_chain(
            N.FROM_WL_DISPATCH,
            [f"iifname vmap @{N.FROM_WL_MAP}", "drop"],
        ),
        make_chain(
            N.TO_WL_DISPATCH,
            [f"oifname vmap @{N.TO_WL_MAP}", "drop"],
        ),
    ]
    to_host = []
    if fam.version == 6:
        to_host.append(f"icmpv6 type {_ICMPV6_TO_HOST} accept")
    to_host += [clear_mark(MARK_ACCEPT), f"jump {N.FROM_WL_DISPATCH}", no_verdict]
    if fam.version == 4 and cfg.workload_dns_v4:
        dns = ", ".join(cfg.workload_dns_v4)
        to_host.append(f"ip daddr {{ {dns} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    if cfg.endpoint_to_host_action == "Drop":  # logged: the egress allow was logged already
        to_host.append(_log(RuleRef("deny", "ingress", "host"), cfg.flow_logs) + "drop")
    else:
        to_host.append(ENDPOINT_TO_HOST_ACTIONS[cfg.endpoint_to_host_action])
    chains.append(make_chain(N.WL_TO_HOST, to_host))
    return {c.name: c for c in chains}
