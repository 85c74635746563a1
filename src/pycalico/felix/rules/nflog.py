"""Flow-log attribution: the NFLOG prefix of every rule that ends a policy evaluation (pure).

Owns :class:`RuleRef` (what decided: tier, policy or profile, rule index, direction, action),
the prefix text (Calico's NFLOG prefix format) and the NFLOG statement rendered into the
rule, plus :func:`parse_prefix` for the collector.

Prefix format (Calico's): ``<action><owner><dir><index>|<id>``

- action ``A`` allow, ``D`` deny, ``P`` pass (next tier); owner ``P`` policy, ``R`` profile;
  dir ``I`` ingress, ``E`` egress; index = the rule's position in the policy's rule list
  for that direction (0-based); id = ``kind/[namespace/]name`` of the policy or the profile
  name (``kns.default``).
- end of tier (no policy in the tier decided, default action Deny): ``DP<dir>|<tier>``;
  end of tier with default action Pass: ``PP<dir>|<tier>``;
- no profile allowed (the endpoint chain's final drop): ``DR<dir>``;
- a workload's packet to its own host dropped by ``defaultEndpointToHostAction: Drop``
  after its egress policy let it through: ``DHI`` (the host's "ingress" decision; the
  egress allow is logged by the rule that made it, so a pod -> host connection has two
  records, as a pod -> pod one on the same node).

A prefix of :data:`MAX_PREFIX` (63) characters or more becomes its first 10 characters, a
hash of the whole, ``_`` and its last 10 characters (Calico's ``maybeHash``; 63 characters:
a user cannot spoof a hashed form with a long name). Felix keeps the map prefix ->
:class:`RuleRef` of what it rendered (``RuleRenderer.attribution``): the collector resolves
every prefix through it, hashed or not.

Groups: :data:`GROUP_ALLOWED` (1) for allow and pass, :data:`GROUP_DENIED` (2) for deny.
(Calico itself splits its NFLOG groups by direction, 1 inbound / 2 outbound; the action is
in the prefix either way.) Only the first packet of a connection reaches these rules: the
endpoint chains accept ``ct state established,related`` before any policy, so established
traffic never logs.

Invariants: a prefix is a pure function of the RuleRef; distinct RuleRefs of one ruleset
give distinct prefixes (up to a 42-character hash collision); prefixes contain no ``"``.
"""

from __future__ import annotations

from base64 import urlsafe_b64encode
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Literal

GROUP_ALLOWED = 1
GROUP_DENIED = 2
MAX_PREFIX = 63
_KEEP = 10
_HASH_LEN = MAX_PREFIX - 2 * _KEEP - 1

FlowAction = Literal["allow", "deny", "pass"]
Owner = Literal["policy", "profile", "host"]
#: How the workload-to-host default action is named in flow records and metrics.
HOST_DEFAULT = "endpoint-to-host-default"
_ACTION_CHAR = {"allow": "A", "deny": "D", "pass": "P"}
_CHAR_ACTION: dict[str, FlowAction] = {"A": "allow", "D": "deny", "P": "pass", "N": "pass"}
_RULE_ACTIONS: dict[str, FlowAction] = {"Allow": "allow", "Deny": "deny", "Pass": "pass"}


@dataclass(frozen=True)
class RuleRef:
    """What ended one policy evaluation step.

    ``owner``: ``policy`` (a policy rule or, with ``rule`` None, the end of ``tier``),
    ``profile`` (a profile rule or, with ``name`` empty, no profile allowed) or ``host``
    (the workload-to-host default action, :data:`HOST_DEFAULT`).
    """

    action: FlowAction
    direction: Literal["ingress", "egress"]
    owner: Owner
    tier: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    rule: int | None = None

    @property
    def end_of_tier(self) -> bool:
        return self.owner == "policy" and self.rule is None

    def policy_id(self) -> str:
        if self.owner == "profile":
            return self.name
        if self.owner == "host":
            return HOST_DEFAULT
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else (
            f"{self.kind}/{self.name}"
        )  # fmt: skip

    def label(self) -> str:
        """Short human form: ``tier/kind/ns/name#rule``, ``end-of-tier tier``, ..."""
        if self.owner == "host":
            return HOST_DEFAULT
        if self.owner == "profile":
            return f"profile {self.name}#{self.rule}" if self.name else "no-profile-match"
        if self.rule is None:
            return f"end-of-tier {self.tier}"
        return f"{self.tier}/{self.policy_id()}#{self.rule}"

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "kind": self.kind
            if self.owner == "policy"
            else ("host" if self.owner == "host" else ("profile" if self.name else "")),
            "namespace": self.namespace,
            "name": self.name,
            "rule": self.rule,
            "direction": self.direction,
            "action": self.action,
            "end_of_tier": self.end_of_tier,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RuleRef:
        kind = str(d.get("kind") or "")
        owner: Owner = (
            "host" if kind == "host"
            else "profile" if kind == "profile" or (not kind and not d.get("tier"))
            else "policy"
        )  # fmt: skip
        return cls(
            action=d["action"],
            direction=d["direction"],
            owner=owner,
            tier=str(d.get("tier") or ""),
            kind=kind if owner == "policy" else "",
            namespace=str(d.get("namespace") or ""),
            name=str(d.get("name") or ""),
            rule=d.get("rule"),
        )


def rule_action(action: str) -> FlowAction | None:
    """The flow action of a policy rule action (None: ``Log`` does not end evaluation)."""
    return _RULE_ACTIONS.get(action)


def _dir(direction: str) -> str:
    return "I" if direction == "ingress" else "E"


def maybe_hash(prefix: str) -> str:
    if len(prefix) < MAX_PREFIX:
        return prefix
    digest = urlsafe_b64encode(sha256(prefix.encode()).digest()).decode().rstrip("=")
    return prefix[:_KEEP] + digest[:_HASH_LEN] + "_" + prefix[-_KEEP:]


def prefix_for(ref: RuleRef) -> str:
    """The NFLOG prefix of ``ref`` (see the module docstring)."""
    a, d = _ACTION_CHAR[ref.action], _dir(ref.direction)
    if ref.owner == "host":
        return f"{a}H{d}"
    if ref.owner == "profile":
        if not ref.name:
            return f"DR{d}"
        return maybe_hash(f"{a}R{d}{ref.rule}|{ref.name}")
    if ref.rule is None:
        return maybe_hash(f"{a}P{d}|{ref.tier}")
    return maybe_hash(f"{a}P{d}{ref.rule}|{ref.policy_id()}")


def log_statement(prefix: str, action: FlowAction) -> str:
    group = GROUP_DENIED if action == "deny" else GROUP_ALLOWED
    return f'log prefix "{prefix}" group {group}'


def parse_prefix(prefix: str) -> RuleRef | None:
    """Best-effort decode of an unhashed prefix without Felix's map (tier unknown for
    policy rules); None for anything malformed."""
    if len(prefix) < 3 or prefix[0] not in _CHAR_ACTION or prefix[1] not in "PRH":
        return None
    if prefix[2] not in "IE":
        return None
    action = _CHAR_ACTION[prefix[0]]
    direction: Literal["ingress", "egress"] = "ingress" if prefix[2] == "I" else "egress"
    if prefix[1] == "H":
        return RuleRef(action, direction, "host") if len(prefix) == 3 else None
    head, sep, ident = prefix[3:].partition("|")
    if prefix[1] == "R":
        if not sep:
            return RuleRef("deny", direction, "profile") if not head else None
        if not head.isdigit() or not ident:
            return None
        return RuleRef(action, direction, "profile", name=ident, rule=int(head))
    if not sep or not ident:
        return None
    if not head:
        return RuleRef(action, direction, "policy", tier=ident)
    if not head.isdigit():
        return None
    parts = ident.split("/")
    if len(parts) == 2:
        kind, ns, name = parts[0], "", parts[1]
    elif len(parts) == 3:
        kind, ns, name = parts
    else:
        return None
    return RuleRef(action, direction, "policy", kind=kind, namespace=ns, name=name, rule=int(head))
