"""Typed output messages of the calculation graph: the input of the nftables rules renderer.

The graph (:class:`pycalico.felix.calc.graph.CalcGraph`) emits, on every ``flush()``, a
list of these messages in Calico's EventSequencer order:

1. :class:`IPSetUpdate` — every new or changed IP set, with its complete member list;
2. :class:`ActivePolicyUpdate` — every policy that now selects >= 1 local endpoint and is
   new or changed, with its rules in resolved form (:class:`ResolvedRule`);
3. :class:`ActiveProfileUpdate` — every profile referenced by a local endpoint (a missing
   profile is sent with ``missing=True`` and Deny rules: fail closed);
4. :class:`EndpointUpdate` — every new or changed local endpoint, with its ordered tiers,
   policies per direction and profiles;
5. removals in reverse: :class:`EndpointRemove`, :class:`ActiveProfileRemove`,
   :class:`ActivePolicyRemove`, :class:`IPSetRemove`;
6. route messages (:mod:`pycalico.felix.calc.routes`, nodes with a hostname only, never
   before ``on_in_sync()``): :class:`RouteSettingsUpdate` when this node's addresses,
   ``mtuIfacePattern`` or ``routeRefreshInterval`` changed, then one :class:`RoutesUpdate` per
   IP version whose desired routes/tunnels/NAT/MTU changed (only for versions the dataplane
   fed host facts for);
7. :class:`InSync` once, after the first flush following ``on_in_sync()``.

Guarantees for consumers: anything an update references (IP set ids in rules, policy ids and
profile ids in endpoints) has been sent before in this or an earlier flush and is removed only
after everything referencing it has been updated or removed. Messages are values (frozen
dataclasses); identical state is never re-sent.

Semantics a renderer must implement per endpoint and direction (reference §3.2): for each
:class:`TierInfo` in order whose policy list for the direction is non-empty — for each policy
in order, run its rules: ``Allow`` accepts, ``Deny`` drops, ``Pass`` leaves the tier (go to
the next tier), ``Log`` logs and continues; a policy with no matching rule continues with the
next policy; at the end of the tier apply ``default_action`` (``Deny`` drops, ``Pass`` goes on).
When no tier decided, run the profiles in order (a profile's ``Pass`` moves to the next
profile); if none accepts, drop.

Rule matching (all present conditions must hold): ``ip_version``; ``protocol`` /
``not_protocol``; ICMP type/code; source IP in any of ``src_nets`` / in none of
``not_src_nets``; source IP in every ``src_ip_set_ids`` set / in no ``not_src_ip_set_ids``
set; source port in ``src_ports`` or (src IP, protocol, port) in one of
``src_named_port_ip_set_ids``; likewise ``not_src_ports`` / ``not_src_named_port_ip_set_ids``
must all miss; the same for destination. A rule with ``unmatchable=True`` (e.g. it names
Kubernetes services, which pycalico does not resolve) never matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from pycalico.felix.calc.routetypes import Addr, DesiredState
from pycalico.model.types import Action, Endpoint, IPNet, PolicyID, PortRange

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class IPSetUpdate:
    """An IP set and its full contents.

    ``type == "net"``: ``nets`` holds CIDRs (endpoint addresses as /32 or /128 and network
    set CIDRs) — Calico's ``hash:net`` selector sets, named ``cali40<id>``.
    ``type == "ip_port"``: ``ip_ports`` holds (address, protocol number, port) — Calico's
    ``hash:ip,port`` named-port sets.
    ``selector`` is the canonical selector the set was computed from; for named-port sets
    ``named_port``/``protocol`` give the port name and protocol (None = any).
    """

    set_id: str
    type: Literal["net", "ip_port"]
    selector: str
    nets: frozenset[IPNet] = frozenset()
    ip_ports: frozenset[tuple[IPAddress, int, int]] = frozenset()
    named_port: str = ""
    protocol: int | None = None


@dataclass(frozen=True)
class IPSetRemove:
    set_id: str


@dataclass(frozen=True)
class ResolvedRule:
    """A rule with selectors and named ports replaced by IP set ids."""

    action: Action
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    src_nets: tuple[IPNet, ...] = ()
    not_src_nets: tuple[IPNet, ...] = ()
    src_ip_set_ids: tuple[str, ...] = ()
    not_src_ip_set_ids: tuple[str, ...] = ()
    src_ports: tuple[PortRange, ...] = ()
    src_named_port_ip_set_ids: tuple[str, ...] = ()
    not_src_ports: tuple[PortRange, ...] = ()
    not_src_named_port_ip_set_ids: tuple[str, ...] = ()
    dst_nets: tuple[IPNet, ...] = ()
    not_dst_nets: tuple[IPNet, ...] = ()
    dst_ip_set_ids: tuple[str, ...] = ()
    not_dst_ip_set_ids: tuple[str, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()
    dst_named_port_ip_set_ids: tuple[str, ...] = ()
    not_dst_ports: tuple[PortRange, ...] = ()
    not_dst_named_port_ip_set_ids: tuple[str, ...] = ()
    unmatchable: bool = False


@dataclass(frozen=True)
class ActivePolicyUpdate:
    """A policy selecting >= 1 local endpoint. Rule lists are empty for a direction not in
    ``types``. ``pre_dnat``/``do_not_track``/``apply_on_forward`` only matter for host
    endpoints."""

    policy_id: PolicyID
    tier: str
    order: float | None
    types: frozenset[str]
    ingress: tuple[ResolvedRule, ...]
    egress: tuple[ResolvedRule, ...]
    pre_dnat: bool = False
    do_not_track: bool = False
    apply_on_forward: bool = False


@dataclass(frozen=True)
class ActivePolicyRemove:
    policy_id: PolicyID


@dataclass(frozen=True)
class ActiveProfileUpdate:
    profile_id: str
    ingress: tuple[ResolvedRule, ...]
    egress: tuple[ResolvedRule, ...]
    missing: bool = False


@dataclass(frozen=True)
class ActiveProfileRemove:
    profile_id: str


@dataclass(frozen=True)
class TierInfo:
    """One tier as it applies to one endpoint: policies already in evaluation order."""

    name: str
    default_action: Literal["Deny", "Pass"]
    ingress_policies: tuple[PolicyID, ...]
    egress_policies: tuple[PolicyID, ...]


@dataclass(frozen=True)
class EndpointUpdate:
    """A local endpoint and the ordered policy it is subject to.

    ``tiers`` are normal policies (for host endpoints: neither preDNAT nor doNotTrack);
    host endpoints also get ``forward_tiers`` (applyOnForward), ``pre_dnat_tiers`` and
    ``untracked_tiers``. ``labels`` are the effective labels (own + profile labels).
    ``endpoint.qos`` is a workload's ``spec.qosControls`` (parsed and defaulted, or None): a
    change of it alone re-sends the update (the rules renderer programs packet rates and
    connection limits, the QoS loop bandwidth).
    """

    endpoint: Endpoint
    labels: tuple[tuple[str, str], ...]
    tiers: tuple[TierInfo, ...]
    profile_ids: tuple[str, ...]
    forward_tiers: tuple[TierInfo, ...] = ()
    pre_dnat_tiers: tuple[TierInfo, ...] = ()
    untracked_tiers: tuple[TierInfo, ...] = ()


@dataclass(frozen=True)
class EndpointRemove:
    endpoint: Endpoint


@dataclass(frozen=True)
class InSync:
    """The graph has seen the datastore's full state at least once."""


@dataclass(frozen=True)
class RouteSettingsUpdate:
    """What the route dataplane needs besides desired states: this node's address per IP
    version (its underlay interface is the one holding it), ``mtuIfacePattern`` (the host MTU
    is read over matching interfaces) and ``routeRefreshInterval`` (seconds between full
    route applies). The dataplane reads :class:`~pycalico.felix.calc.routetypes.HostFacts`
    with these and feeds them back through ``CalcGraph.set_host_facts``."""

    node_ip4: Addr | None = None
    node_ip6: Addr | None = None
    mtu_iface_pattern: str = ""
    refresh_interval: float = 90.0

    def node_ip(self, version: int) -> Addr | None:
        return self.node_ip4 if version == 4 else self.node_ip6


@dataclass(frozen=True)
class RoutesUpdate:
    """The complete desired route/tunnel/NAT-outgoing/MTU state of IP ``version``."""

    version: int
    desired: DesiredState


RouteMessage = RouteSettingsUpdate | RoutesUpdate

Message = (
    IPSetUpdate
    | IPSetRemove
    | ActivePolicyUpdate
    | ActivePolicyRemove
    | ActiveProfileUpdate
    | ActiveProfileRemove
    | EndpointUpdate
    | EndpointRemove
    | InSync
    | RouteSettingsUpdate
    | RoutesUpdate
)
