"""Typed, immutable calc-internal model of policy-relevant resources.

Owns the value objects the calculation graph and the policy evaluator work on: the "backend"
form of Calico's v3 resources (what libcalico-go's update processors hand to Felix), with
every default already applied (tier ``default``, policy ``types`` defaulting, order ``None``
meaning +infinity) and every rule selector already namespaced/combined into one selector
string.

Invariants:
- Every object is frozen and hashable; equality is structural, so "did it change?" is ``==``.
- Selector strings are in canonical form (``str(parse(x))``); ``None`` means "no selector".
- Protocols are IANA numbers; CIDRs are normalised ``ipaddress`` networks (host bits cleared).
- Nothing here imports ``pycalico.api``: conversion from v3 dicts lives in ``convert.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Literal

from pycalico.errors import CalicoError

IPNet = IPv4Network | IPv6Network
Action = Literal["Allow", "Deny", "Pass", "Log"]
Direction = Literal["ingress", "egress"]

# Reserved / implied tiers (reference §1.8).
DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
IMPLIED_TIERS: dict[str, tuple[float, str]] = {
    "default": (DEFAULT_TIER_ORDER, "Deny"),
    "kube-admin": (1_000.0, "Pass"),
    "kube-baseline": (10_000_000.0, "Pass"),
}

# Label names Calico adds to endpoints (reference §1.11, §1.10).
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICEACCOUNT = "projectcalico.org/serviceaccount"
LABEL_NAME = "projectcalico.org/name"
# The label the Kubernetes API server puts on every Namespace (its name).
LABEL_K8S_NAMESPACE_NAME = "kubernetes.io/metadata.name"
NAMESPACE_LABEL_PREFIX = "pcns."
SA_LABEL_PREFIX = "pcsa."
NAMESPACE_PROFILE_PREFIX = "kns."
SA_PROFILE_PREFIX = "ksa."
K8S_POLICY_PREFIX = "knp.default."
# Staged policy kinds (Calico's short kind names, as in flow logs) -> their enforced kind.
STAGED_KINDS: dict[str, str] = {"snp": "np", "sgnp": "gnp", "sknp": "knp"}
StagedAction = Literal["Set", "Delete", "Learn", "Ignore"]

PROTOCOLS: dict[str, int] = {
    "tcp": 6,
    "udp": 17,
    "icmp": 1,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}
PROTOCOL_NAMES: dict[int, str] = {
    6: "TCP",
    17: "UDP",
    1: "ICMP",
    58: "ICMPv6",
    132: "SCTP",
    136: "UDPLite",
}


class ModelError(CalicoError, ValueError):
    """A resource dict cannot be converted (names the field and the reason).

    Resource parsers (``network.py``) also set ``kind``, ``name``, ``field`` and ``reason``
    (message ``<Kind> '<name>': <field>: <reason>``) so edges can re-word it."""

    def __init__(
        self, message: str, *, kind: str = "", name: str = "", field: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.field = field
        self.reason = reason or message


def protocol_number(value: int | str) -> int:
    """``"TCP"`` / ``"tcp"`` / ``6`` / ``"6"`` -> 6; raises ModelError otherwise."""
    if isinstance(value, bool):
        raise ModelError(f"invalid protocol {value!r}")
    if isinstance(value, int):
        if 1 <= value <= 255:
            return value
        raise ModelError(f"invalid protocol number {value}")
    text = str(value).strip()
    if text.isdigit():
        return protocol_number(int(text))
    num = PROTOCOLS.get(text.lower())
    if num is None:
        raise ModelError(f"unknown protocol {value!r}")
    return num


def protocol_name(num: int) -> str:
    return PROTOCOL_NAMES.get(num, str(num))


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive numeric port range (a single port has ``first == last``)."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@dataclass(frozen=True)
class EntityMatch:
    """One side (source or destination) of a rule, in resolved backend form.

    ``selector`` already includes the namespace restriction, namespaceSelector (``pcns.``)
    and serviceAccounts (``pcsa.``) terms; ``not_selector`` is used as written (Calico does
    not namespace it). Named ports are resolved against the endpoints ``selector`` matches
    (all endpoints when it is None).
    """

    nets: tuple[IPNet, ...] = ()
    not_nets: tuple[IPNet, ...] = ()
    selector: str | None = None
    not_selector: str | None = None
    ports: tuple[PortRange, ...] = ()
    named_ports: tuple[str, ...] = ()
    not_ports: tuple[PortRange, ...] = ()
    not_named_ports: tuple[str, ...] = ()
    has_services: bool = False

    def is_empty(self) -> bool:
        return self == EMPTY_MATCH


EMPTY_MATCH = EntityMatch()


@dataclass(frozen=True)
class Rule:
    """A policy/profile rule in backend form. ``protocol`` None = any protocol."""

    action: Action
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    src: EntityMatch = EMPTY_MATCH
    dst: EntityMatch = EMPTY_MATCH


@dataclass(frozen=True, order=True)
class _KindNamespaceName:
    """``kind/[namespace/]name`` identity shared by policies and labelled items. Subclasses
    stay distinct types: an ID never equals an ID of the other class."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, order=True)
class PolicyID(_KindNamespaceName):
    """Identity of a policy: kind short name (``gnp``, ``np``, ``knp``; staged ones ``sgnp``,
    ``snp``, ``sknp``), namespace, name."""

    @property
    def is_staged(self) -> bool:
        return self.kind in STAGED_KINDS

    def enforced(self) -> PolicyID:
        """The enforced policy a staged one would become (itself when not staged)."""
        return PolicyID(STAGED_KINDS.get(self.kind, self.kind), self.namespace, self.name)


#: Felix's policy-key kind for each policy kind short name (unknown ones are used as is).
#: A staged policy (``snp``/``sgnp``/``sknp``, evaluated only in the pending view, "as if
#: enforced") sorts as its enforced counterpart would.
POLICY_KEY_KINDS: dict[str, str] = {
    "gnp": "GlobalNetworkPolicy",
    "np": "NetworkPolicy",
    "knp": "KubernetesNetworkPolicy",
    "kcnp": "KubernetesClusterNetworkPolicy",
    "sgnp": "GlobalNetworkPolicy",
    "snp": "NetworkPolicy",
    "sknp": "KubernetesNetworkPolicy",
}


def policy_tiebreak(pid: PolicyID) -> str:
    """The string Calico compares policies of equal order by: ``name/namespace/Kind``, with
    the name as Felix's key holds it (a Kubernetes NetworkPolicy's own name, without
    pycalico's ``knp.default.`` prefix)."""
    name = pid.name
    if pid.kind in ("knp", "sknp") and name.startswith(K8S_POLICY_PREFIX):
        name = name[len(K8S_POLICY_PREFIX) :]
    return f"{name}/{pid.namespace}/{POLICY_KEY_KINDS.get(pid.kind, pid.kind)}"


@dataclass(frozen=True)
class Policy:
    """A (Global)NetworkPolicy or converted Kubernetes NetworkPolicy, defaults applied.

    A staged policy has a staged kind in ``id`` and its ``staged_action``; its fields are
    those its enforced counterpart would have (a ``Delete`` carries no rules)."""

    id: PolicyID
    tier: str
    order: float | None
    selector: str
    types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    staged_action: StagedAction | None = None

    def sort_key(self) -> tuple[float, str]:
        """Calico's ``PolKVLess`` (felix/calc/policy_sorter.go, 3.32): order ascending (None
        = +inf), ties broken by the ONE string ``<name>/<namespace>/<Kind>`` of Felix's
        policy key (v3 kind name; a Kubernetes policy under its own name), not by a tuple:
        ``web-allow/..`` sorts before ``web/..`` because ``-`` < ``/``."""
        order = math.inf if self.order is None else self.order
        return (order, policy_tiebreak(self.id))

    def applies_to(self, direction: Direction) -> bool:
        return ("Ingress" if direction == "ingress" else "Egress") in self.types


@dataclass(frozen=True)
class Tier:
    name: str
    order: float | None
    default_action: Literal["Deny", "Pass"] = "Deny"

    def sort_key(self) -> tuple[float, str]:
        return (math.inf if self.order is None else self.order, self.name)


def implied_tier(name: str) -> Tier:
    """The tier in force when no Tier resource named ``name`` exists."""
    if name in IMPLIED_TIERS:
        order, action = IMPLIED_TIERS[name]
        return Tier(name, order, "Pass" if action == "Pass" else "Deny")
    # Calico sorts tiers without a Tier resource last ("invalid" tiers) and fails closed.
    return Tier(name, None, "Deny")


@dataclass(frozen=True)
class Profile:
    name: str
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    labels_to_apply: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, order=True)
class ItemID(_KindNamespaceName):
    """Identity of a labelled item: ``wep``/``hep`` endpoints, ``netset``/``gnetset`` sets."""


@dataclass(frozen=True)
class NamedPort:
    name: str
    protocol: int
    port: int


@dataclass(frozen=True)
class QoSControls:
    """One endpoint's QoS controls (``spec.qosControls``) with Calico's defaults applied;
    0 = not set. Parsed and validated by :mod:`pycalico.model.qos`."""

    ingressBandwidth: int = 0
    ingressBurst: int = 0
    ingressPeakrate: int = 0
    ingressMinburst: int = 0
    egressBandwidth: int = 0
    egressBurst: int = 0
    egressPeakrate: int = 0
    egressMinburst: int = 0
    ingressPacketRate: int = 0
    ingressPacketBurst: int = 0
    egressPacketRate: int = 0
    egressPacketBurst: int = 0
    ingressMaxConnections: int = 0
    egressMaxConnections: int = 0
    dscp: str = ""

    def to_spec(self) -> dict[str, Any]:
        """The ``spec.qosControls`` dict (zero fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


@dataclass(frozen=True)
class Endpoint:
    """A WorkloadEndpoint or HostEndpoint. ``labels`` are its own labels plus the
    ``projectcalico.org/*`` labels Calico adds; profile labels are applied by the graph."""

    id: ItemID
    node: str
    labels: tuple[tuple[str, str], ...]
    profiles: tuple[str, ...]
    nets: tuple[IPNet, ...]
    ports: tuple[NamedPort, ...] = ()
    interface_name: str = ""
    workload: str = ""  # spec.workload, else spec.pod
    namespace: str = ""
    pod: str = ""  # spec.pod: the Kubernetes pod name ("" for non-Kubernetes workloads)
    qos: QoSControls | None = None  # spec.qosControls (workloads only)

    @property
    def is_host(self) -> bool:
        return self.id.kind == "hep"

    def display_name(self) -> str:
        """``namespace/workload`` for workloads, ``hep/<name>`` for host endpoints."""
        if self.is_host:
            return f"hep/{self.id.name}"
        return f"{self.namespace}/{self.workload or self.id.name}"


@dataclass(frozen=True)
class NetworkSet:
    id: ItemID
    labels: tuple[tuple[str, str], ...]
    nets: tuple[IPNet, ...]
    profiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def profile(self) -> Profile:
        """The implied ``kns.<name>`` profile: allow all, labels as ``pcns.*``."""
        labels = {NAMESPACE_LABEL_PREFIX + k: v for k, v in self.labels}
        labels[NAMESPACE_LABEL_PREFIX + LABEL_NAME] = self.name
        allow = (Rule("Allow"),)
        return Profile(
            NAMESPACE_PROFILE_PREFIX + self.name, allow, allow, tuple(sorted(labels.items()))
        )


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def profile(self) -> Profile:
        """The implied ``ksa.<ns>.<name>`` profile: no rules, labels as ``pcsa.*``."""
        labels = {SA_LABEL_PREFIX + k: v for k, v in self.labels}
        labels[SA_LABEL_PREFIX + LABEL_NAME] = self.name
        return Profile(
            f"{SA_PROFILE_PREFIX}{self.namespace}.{self.name}",
            labels_to_apply=tuple(sorted(labels.items())),
        )


ModelObject = Policy | Tier | Profile | Endpoint | NetworkSet | Namespace | ServiceAccount


@dataclass(frozen=True)
class Converted:
    """Result of converting one resource dict: the model object, or ``None`` for kinds the
    policy model ignores. Staged policies convert to a :class:`Policy` with a staged kind,
    which only the pending view evaluates."""

    obj: ModelObject | None
    kind: str = ""
    warnings: tuple[str, ...] = field(default=())
