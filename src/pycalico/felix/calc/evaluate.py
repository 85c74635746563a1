"""A packet evaluator over the calculation graph's output (a model of the dataplane).

Owns :class:`DataplaneView`: it consumes the messages of :mod:`.messages` exactly as a
dataplane driver would (IP sets, active policies/profiles, endpoints) and answers "what
happens to this packet at this endpoint in this direction?" by walking the endpoint's ordered
tiers, policies and rules with Calico's semantics (reference §3.2; summarised in the
``messages`` module docstring). Every decision records which tier/policy/rule (or profile,
or tier default) decided, a trace of what was consulted and, per tier, how the tier ended
(:class:`TierDecision`). The same code evaluates the enforced and the pending view (two
instances, see :mod:`.views`).

Invariants: pure (no I/O); the view after ``apply(msgs)`` mirrors the graph's state; a
packet's unknown source port makes rules with source ports miss and source notPorts pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any, Literal

from pycalico.felix.calc.messages import (
    ActivePolicyRemove,
    ActivePolicyUpdate,
    ActiveProfileRemove,
    ActiveProfileUpdate,
    EndpointRemove,
    EndpointUpdate,
    IPSetRemove,
    IPSetUpdate,
    Message,
    ResolvedRule,
)
from pycalico.model import ItemID, PolicyID, PortRange, protocol_name
from pycalico.model.types import IPNet

IPAddress = IPv4Address | IPv6Address
Direction = Literal["ingress", "egress"]


@dataclass(frozen=True)
class Packet:
    """The first packet of a new connection."""

    src_ip: IPAddress
    dst_ip: IPAddress
    protocol: int
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


@dataclass(frozen=True)
class TierDecision:
    """How one tier ended for a packet: ``outcome`` is the deciding rule's action
    (``Allow``/``Deny``/``Pass``) with its ``policy`` and ``rule`` index, or ``end-of-tier``
    (no rule matched: ``action`` is the tier's defaultAction)."""

    tier: str
    outcome: Literal["rule", "end-of-tier"]
    action: str
    policy: str | None = None
    rule: int | None = None


@dataclass(frozen=True)
class Decision:
    """The verdict of one direction at one endpoint, and what produced it.

    ``reason``: ``rule`` (a policy rule), ``tier-default`` (end of tier, no rule matched),
    ``profile-rule``, ``no-profile-match`` (final drop), ``missing-profile`` (fail closed)
    or ``not-calico`` (the peer is not a Calico endpoint: no policy applies).
    """

    verdict: Literal["allow", "deny"]
    reason: str
    endpoint: str | None = None
    tier: str | None = None
    policy: str | None = None
    rule: int | None = None
    action: str | None = None
    profile: str | None = None
    trace: tuple[str, ...] = field(default=())
    tiers: tuple[TierDecision, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verdict": self.verdict, "reason": self.reason}
        for key in ("endpoint", "tier", "policy", "rule", "action", "profile"):
            val = getattr(self, key)
            if val is not None:
                out[key] = val
        out["trace"] = list(self.trace)
        return out


class _NetSet:
    """Fast membership for a ``net`` IP set: exact host addresses + other CIDRs."""

    def __init__(self, nets: frozenset[IPNet]) -> None:
        self.hosts = {n.network_address for n in nets if n.num_addresses == 1}
        self.nets = [n for n in nets if n.num_addresses != 1]

    def __contains__(self, ip: object) -> bool:
        if ip in self.hosts:
            return True
        return any(ip in n for n in self.nets)


def _in_any(ip: IPAddress, nets: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def _port_in(port: int, ranges: tuple[PortRange, ...]) -> bool:
    return any(r.first <= port <= r.last for r in ranges)


class DataplaneView:
    """The state a dataplane would hold after applying the graph's messages."""

    def __init__(self) -> None:
        self.net_sets: dict[str, _NetSet] = {}
        self.ip_port_sets: dict[str, frozenset[tuple[IPAddress, int, int]]] = {}
        self.policies: dict[PolicyID, ActivePolicyUpdate] = {}
        self.profiles: dict[str, ActiveProfileUpdate] = {}
        self.endpoints: dict[ItemID, EndpointUpdate] = {}

    def copy(self) -> DataplaneView:
        """An independent view of the same state (values are immutable: shallow copies)."""
        out = DataplaneView()
        out.net_sets = dict(self.net_sets)
        out.ip_port_sets = dict(self.ip_port_sets)
        out.policies = dict(self.policies)
        out.profiles = dict(self.profiles)
        out.endpoints = dict(self.endpoints)
        return out

    def apply(self, msgs: list[Message]) -> None:
        for m in msgs:
            if isinstance(m, IPSetUpdate):
                if m.type == "net":
                    self.net_sets[m.set_id] = _NetSet(m.nets)
                else:
                    self.ip_port_sets[m.set_id] = m.ip_ports
            elif isinstance(m, IPSetRemove):
                self.net_sets.pop(m.set_id, None)
                self.ip_port_sets.pop(m.set_id, None)
            elif isinstance(m, ActivePolicyUpdate):
                self.policies[m.policy_id] = m
            elif isinstance(m, ActivePolicyRemove):
                self.policies.pop(m.policy_id, None)
            elif isinstance(m, ActiveProfileUpdate):
                self.profiles[m.profile_id] = m
            elif isinstance(m, ActiveProfileRemove):
                self.profiles.pop(m.profile_id, None)
            elif isinstance(m, EndpointUpdate):
                self.endpoints[m.endpoint.id] = m
            elif isinstance(m, EndpointRemove):
                self.endpoints.pop(m.endpoint.id, None)

    # --- rule matching ------------------------------------------------------------------
    def _in_set(self, set_id: str, ip: IPAddress) -> bool:
        s = self.net_sets.get(set_id)
        return s is not None and ip in s

    def _in_port_set(self, set_id: str, ip: IPAddress, proto: int, port: int) -> bool:
        return (ip, proto, port) in self.ip_port_sets.get(set_id, frozenset())

    def _side(
        self,
        ip: IPAddress,
        port: int | None,
        proto: int,
        nets: tuple[IPNet, ...],
        not_nets: tuple[IPNet, ...],
        sets: tuple[str, ...],
        not_sets: tuple[str, ...],
        ports: tuple[PortRange, ...],
        np_sets: tuple[str, ...],
        not_ports: tuple[PortRange, ...],
        not_np_sets: tuple[str, ...],
    ) -> bool:
        if nets and not _in_any(ip, nets):
            return False
        if not_nets and _in_any(ip, not_nets):
            return False
        if any(not self._in_set(s, ip) for s in sets):
            return False
        if any(self._in_set(s, ip) for s in not_sets):
            return False
        if ports or np_sets:
            if port is None:
                return False
            if not _port_in(port, ports) and not any(
                self._in_port_set(s, ip, proto, port) for s in np_sets
            ):
                return False
        if (not_ports or not_np_sets) and port is not None:
            if _port_in(port, not_ports) or any(
                self._in_port_set(s, ip, proto, port) for s in not_np_sets
            ):
                return False
        return True

    def rule_matches(self, r: ResolvedRule, pkt: Packet) -> bool:
        """Does rule ``r`` match ``pkt`` (all present conditions hold)?"""
        if r.unmatchable:
            return False
        if r.ip_version is not None and r.ip_version != pkt.src_ip.version:
            return False
        # Felix renders a rule that names CIDRs only for that IP family.
        for nets in (r.src_nets, r.not_src_nets, r.dst_nets, r.not_dst_nets):
            if nets and nets[0].version != pkt.src_ip.version:
                return False
        if r.protocol is not None and r.protocol != pkt.protocol:
            return False
        if r.not_protocol is not None and r.not_protocol == pkt.protocol:
            return False
        if r.icmp_type is not None and (
            pkt.icmp_type != r.icmp_type
            or (r.icmp_code is not None and pkt.icmp_code != r.icmp_code)
        ):
            return False
        if r.not_icmp_type is not None and (
            # ``icmp type != N`` implies the family's ICMP (nft's protocol dependency).
            pkt.protocol != (1 if pkt.src_ip.version == 4 else 58)
            or (
                pkt.icmp_type == r.not_icmp_type
                and (r.not_icmp_code is None or pkt.icmp_code == r.not_icmp_code)
            )
        ):
            return False
        return self._side(
            pkt.src_ip,
            pkt.src_port,
            pkt.protocol,
            r.src_nets,
            r.not_src_nets,
            r.src_ip_set_ids,
            r.not_src_ip_set_ids,
            r.src_ports,
            r.src_named_port_ip_set_ids,
            r.not_src_ports,
            r.not_src_named_port_ip_set_ids,
        ) and self._side(
            pkt.dst_ip,
            pkt.dst_port,
            pkt.protocol,
            r.dst_nets,
            r.not_dst_nets,
            r.dst_ip_set_ids,
            r.not_dst_ip_set_ids,
            r.dst_ports,
            r.dst_named_port_ip_set_ids,
            r.not_dst_ports,
            r.not_dst_named_port_ip_set_ids,
        )

    # --- endpoint evaluation ------------------------------------------------------------
    def evaluate(self, ep_id: ItemID, direction: Direction, pkt: Packet) -> Decision:
        """Walk the endpoint's tiers, policies and profiles for ``direction``."""
        ep = self.endpoints[ep_id]
        name = ep.endpoint.display_name()
        ingress = direction == "ingress"
        trace: list[str] = []
        tiers: list[TierDecision] = []
        for tier in ep.tiers:
            pids = tier.ingress_policies if ingress else tier.egress_policies
            if not pids:
                continue
            trace.append(f"tier {tier.name}")
            passed = False
            for pid in pids:
                pol = self.policies.get(pid)
                if pol is None:
                    continue
                rules = pol.ingress if ingress else pol.egress
                matched_any = False
                for i, r in enumerate(rules):
                    if not self.rule_matches(r, pkt):
                        continue
                    matched_any = True
                    trace.append(f"  policy {pid} rule {i}: {r.action}")
                    if r.action == "Log":
                        continue
                    tiers.append(TierDecision(tier.name, "rule", r.action, str(pid), i))
                    if r.action == "Pass":
                        passed = True
                        break
                    return Decision(
                        "allow" if r.action == "Allow" else "deny",
                        "rule",
                        name,
                        tier.name,
                        str(pid),
                        i,
                        r.action,
                        trace=tuple(trace),
                        tiers=tuple(tiers),
                    )
                if not matched_any:
                    trace.append(f"  policy {pid}: no rule matched")
                if passed:
                    break
            if passed:
                trace.append(f"  passed to next tier from tier {tier.name}")
                continue
            tiers.append(TierDecision(tier.name, "end-of-tier", tier.default_action))
            if tier.default_action == "Pass":
                trace.append(f"  end of tier {tier.name}: defaultAction Pass")
                continue
            trace.append(f"  end of tier {tier.name}: defaultAction Deny")
            return Decision(
                "deny",
                "tier-default",
                name,
                tier.name,
                action="Deny",
                trace=tuple(trace),
                tiers=tuple(tiers),
            )
        for prof_id in ep.profile_ids:
            prof = self.profiles.get(prof_id)
            if prof is None or prof.missing:
                trace.append(f"profile {prof_id}: missing (fail closed)")
                return Decision(
                    "deny",
                    "missing-profile",
                    name,
                    profile=prof_id,
                    action="Deny",
                    trace=tuple(trace),
                    tiers=tuple(tiers),
                )
            rules = prof.ingress if ingress else prof.egress
            for i, r in enumerate(rules):
                if not self.rule_matches(r, pkt):
                    continue
                trace.append(f"profile {prof_id} rule {i}: {r.action}")
                if r.action == "Log":
                    continue
                if r.action == "Pass":
                    break
                return Decision(
                    "allow" if r.action == "Allow" else "deny",
                    "profile-rule",
                    name,
                    rule=i,
                    action=r.action,
                    profile=prof_id,
                    trace=tuple(trace),
                    tiers=tuple(tiers),
                )
            else:
                trace.append(f"profile {prof_id}: no rule matched")
        trace.append("no profile accepted: drop")
        return Decision(
            "deny", "no-profile-match", name, action="Deny", trace=tuple(trace), tiers=tuple(tiers)
        )


def make_packet(
    src_ip: str | IPAddress,
    dst_ip: str | IPAddress,
    protocol: int,
    dst_port: int | None,
    src_port: int | None = None,
) -> Packet:
    """A :class:`Packet`, parsing addresses given as text."""
    src = ip_network(str(src_ip)).network_address
    dst = ip_network(str(dst_ip)).network_address
    return Packet(src, dst, protocol, dst_port, src_port)


__all__ = [
    "DataplaneView",
    "Decision",
    "Packet",
    "TierDecision",
    "make_packet",
    "protocol_name",
]
