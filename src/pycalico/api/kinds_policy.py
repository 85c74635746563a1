"""Policy kinds: NetworkPolicy, GlobalNetworkPolicy, their staged variants, Tier and Profile.

Invariants (Calico's validator and CRD CEL rules):
- NetworkPolicy names match ``label(.label)?`` or ``(knp|ossg).default.<subdomain>``;
  GlobalNetworkPolicy names match ``(label.)?label``; both at most 253 characters.
- Top-level ``selector``/``serviceAccountSelector``/``namespaceSelector`` never use ``global()``.
- ``types`` is a set of Ingress/Egress (it need not cover the directions that have rules) and
  is defaulted by :meth:`apply_defaults` (no egress rules => Ingress; only egress => Egress).
- GNP: ``preDNAT`` and ``doNotTrack`` are exclusive, either requires ``applyOnForward``;
  preDNAT policies have no egress rules or Egress type.
- Staged policies with ``stagedAction: Delete`` carry no spec fields other than ``tier``.
- Tier names are DNS labels (<= 63); reserved tiers keep their fixed order/defaultAction.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from pycalico.api.base import (
    LenientStr,
    Model,
    Problems,
    Resource,
    label_key_problem,
    label_value_problem,
    register,
    subdomain_problem,
)
from pycalico.api.common import check_selector
from pycalico.api.policy import PolicyType, Rule, check_rules, default_types

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + r")*"
NP_NAME = re.compile(rf"^(({_LABEL})(\.{_LABEL})?|((knp|ossg)\.default\.({_SUBDOMAIN})))$")
GNP_NAME = re.compile(rf"^({_LABEL}\.)?{_LABEL}$")
TIER_NAME = re.compile(rf"^{_LABEL}$")

DEFAULT_TIER = "default"
TierAction = Literal["Deny", "Pass"]
RESERVED_TIERS: dict[str, tuple[float, TierAction]] = {
    "default": (1_000_000.0, "Deny"),
    "kube-admin": (1_000.0, "Pass"),
    "kube-baseline": (10_000_000.0, "Pass"),
}
NAME_REASON = "name must consist of lower case alphanumeric characters or '-' (regex: {})"

PerformanceHint = Literal["AssumeNeededOnEveryNode"]
Order = StrictFloat | StrictInt
"""A policy/tier order: a JSON number (never a string); ``None`` means "last"."""
StagedAction = Literal["Set", "Delete", "Learn", "Ignore"]


def check_policy_name(name: str, regex: re.Pattern[str], problems: Problems) -> None:
    if not name:
        problems.add("metadata.name", "name is required")
    elif len(name) > 253:
        problems.add("metadata.name", f"name is too long by {len(name) - 253} bytes")
    elif not regex.match(name):
        problems.add("metadata.name", NAME_REASON.format(_LABEL) + f": {name!r}")


def _check_top_selector(value: str | None, path: str, problems: Problems) -> None:
    """A policy's own selectors must parse and never use ``global()``."""
    check_selector(value, path, problems)


class PolicySpecBase(Model):
    """Fields shared by NetworkPolicy and GlobalNetworkPolicy specs."""

    tier: str | None = None
    order: Order | None = Field(default=None, allow_inf_nan=False)
    selector: str | None = None
    types: list[PolicyType] | None = None
    ingress: list[Rule] | None = Field(default=None, max_length=1024)
    egress: list[Rule] | None = Field(default=None, max_length=1024)
    serviceAccountSelector: str | None = None
    performanceHints: list[PerformanceHint] | None = None

    global_scope: ClassVar[bool] = False

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _check_top_selector(self.selector, f"{path}.selector", problems)
        _check_top_selector(self.serviceAccountSelector, f"{path}.serviceAccountSelector", problems)
        if self.tier is not None and self.tier != "":
            if not TIER_NAME.match(self.tier):
                problems.add(f"{path}.tier", f"invalid tier name {self.tier!r}")
        if self.types is not None:
            # Types need not cover the directions that have rules (Calico allows it so that
            # typed policy can coexist with back-level Felix); only duplicates are invalid.
            if len(set(self.types)) != len(self.types):
                problems.add(f"{path}.types", "duplicate entries in types")
        if self.performanceHints and len(set(self.performanceHints)) != len(self.performanceHints):
            problems.add(f"{path}.performanceHints", "duplicate entries in performanceHints")
        check_rules(self.ingress, self.egress, path, problems, global_scope=self.global_scope)

    def apply_defaults(self) -> None:
        if not self.tier:
            self.tier = DEFAULT_TIER
        self.types = default_types(self.types, self.ingress, self.egress)


class NetworkPolicySpec(PolicySpecBase):
    pass


class GlobalNetworkPolicySpec(PolicySpecBase):
    namespaceSelector: str | None = None
    doNotTrack: StrictBool | None = None
    preDNAT: StrictBool | None = None
    applyOnForward: StrictBool | None = None

    global_scope: ClassVar[bool] = True

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _check_top_selector(self.namespaceSelector, f"{path}.namespaceSelector", problems)
        if self.preDNAT and self.doNotTrack:
            problems.add(f"{path}.preDNAT", "preDNAT and doNotTrack cannot both be true")
        if (self.preDNAT or self.doNotTrack) and not self.applyOnForward:
            problems.add(
                f"{path}.{'preDNAT' if self.preDNAT else 'doNotTrack'}",
                "applyOnForward must be true if either preDNAT or doNotTrack is true",
            )
        if self.preDNAT:
            if self.egress:
                problems.add(f"{path}.egress", "preDNAT policy cannot have any egress rules")
            if self.types and "Egress" in self.types:
                problems.add(f"{path}.types", "preDNAT policy cannot have 'Egress' type")

    def apply_defaults(self) -> None:
        if not self.tier:
            self.tier = DEFAULT_TIER
        if not self.types and self.preDNAT:
            self.types = ["Ingress"]
        self.types = default_types(self.types, self.ingress, self.egress)


def _check_staged_delete(spec: Model, path: str, problems: Problems) -> None:
    extra = sorted(spec.model_fields_set - {"stagedAction", "tier"})
    if extra:
        problems.add(
            f"{path}.{extra[0]}",
            "Spec fields, except Tier, should all be zero-value if stagedAction is Delete",
        )


class _StagedSpec:
    """Staged variants: ``stagedAction`` (default Set); a Delete carries no spec to check."""

    stagedAction: StagedAction | None
    tier: str | None

    def check(self, path: str, problems: Problems) -> None:
        if self.stagedAction == "Delete":
            _check_staged_delete(self, path, problems)  # type: ignore[arg-type]
            return
        super().check(path, problems)  # type: ignore[misc]

    def apply_defaults(self) -> None:
        if self.stagedAction is None:
            self.stagedAction = "Set"
        if self.stagedAction == "Delete":
            if not self.tier:
                self.tier = DEFAULT_TIER
            return
        super().apply_defaults()  # type: ignore[misc]


class StagedNetworkPolicySpec(_StagedSpec, NetworkPolicySpec):
    stagedAction: StagedAction | None = None


class StagedGlobalNetworkPolicySpec(_StagedSpec, GlobalNetworkPolicySpec):
    stagedAction: StagedAction | None = None


@register(
    "NetworkPolicy",
    namespaced=True,
    aliases=("networkpolicies", "policy", "np", "policies", "pol", "pols"),
)
class NetworkPolicy(Resource):
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)

    def check_name(self, problems: Problems) -> None:
        check_policy_name(self.metadata.name, NP_NAME, problems)

    def apply_defaults(self) -> None:
        self.spec.apply_defaults()


@register(
    "GlobalNetworkPolicy",
    aliases=(
        "globalnetworkpolicies",
        "gnp",
        "gnps",
        "globalpolicy",
        "globalpolicies",
        "gpol",
        "gpols",
    ),
)
class GlobalNetworkPolicy(Resource):
    kind: Literal["GlobalNetworkPolicy"] = "GlobalNetworkPolicy"
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)

    def check_name(self, problems: Problems) -> None:
        check_policy_name(self.metadata.name, GNP_NAME, problems)

    def apply_defaults(self) -> None:
        self.spec.apply_defaults()


@register(
    "StagedNetworkPolicy",
    namespaced=True,
    aliases=("stagednetworkpolicies", "snp", "snps", "stagedpolicy", "stagedpolicies"),
)
class StagedNetworkPolicy(Resource):
    kind: Literal["StagedNetworkPolicy"] = "StagedNetworkPolicy"
    spec: StagedNetworkPolicySpec = Field(default_factory=StagedNetworkPolicySpec)

    def check_name(self, problems: Problems) -> None:
        check_policy_name(self.metadata.name, NP_NAME, problems)

    def apply_defaults(self) -> None:
        self.spec.apply_defaults()


@register(
    "StagedGlobalNetworkPolicy",
    aliases=("stagedglobalnetworkpolicies", "sgnp", "sgnps", "stagedglobalpolicy"),
)
class StagedGlobalNetworkPolicy(Resource):
    kind: Literal["StagedGlobalNetworkPolicy"] = "StagedGlobalNetworkPolicy"
    spec: StagedGlobalNetworkPolicySpec = Field(default_factory=StagedGlobalNetworkPolicySpec)

    def check_name(self, problems: Problems) -> None:
        check_policy_name(self.metadata.name, GNP_NAME, problems)

    def apply_defaults(self) -> None:
        self.spec.apply_defaults()


class TierSpec(Model):
    order: Order | None = Field(default=None, allow_inf_nan=False)
    defaultAction: TierAction | None = None


@register("Tier", aliases=("tiers",))
class Tier(Resource):
    kind: Literal["Tier"] = "Tier"
    spec: TierSpec = Field(default_factory=TierSpec)

    def check_name(self, problems: Problems) -> None:
        name = self.metadata.name
        if len(name) > 63:
            problems.add("metadata.name", f"name is too long by {len(name) - 63} bytes")
        elif not TIER_NAME.match(name):
            problems.add("metadata.name", NAME_REASON.format(_LABEL) + f": {name!r}")

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        reserved = RESERVED_TIERS.get(self.metadata.name)
        if reserved is None:
            return
        order, action = reserved
        name = self.metadata.name
        if self.spec.order is not None and self.spec.order != order:
            problems.add("spec.order", f"{name} tier order must be {order:.0f}")
        # The CRD defaults defaultAction to Deny before its rules run, so an omitted action
        # counts as Deny here (and the Pass-only reserved tiers must say Pass).
        if (self.spec.defaultAction or "Deny") != action:
            problems.add(
                "spec.defaultAction", f"The '{name}' tier must have default action '{action}'"
            )

    def apply_defaults(self) -> None:
        reserved = RESERVED_TIERS.get(self.metadata.name)
        if reserved is not None and self.spec.order is None:
            self.spec.order = reserved[0]
        if self.spec.defaultAction is None:
            self.spec.defaultAction = reserved[1] if reserved else "Deny"


class ProfileSpec(Model):
    ingress: list[Rule] | None = None
    egress: list[Rule] | None = None
    labelsToApply: dict[str, LenientStr] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        for k, v in (self.labelsToApply or {}).items():
            why = label_key_problem(k) or label_value_problem(v)
            if why:
                problems.add(f"{path}.labelsToApply", why)
        check_rules(self.ingress, self.egress, path, problems)


@register("Profile", aliases=("profiles", "pro", "pros"))
class Profile(Resource):
    kind: Literal["Profile"] = "Profile"
    spec: ProfileSpec = Field(default_factory=ProfileSpec)

    def check_name(self, problems: Problems) -> None:
        why = subdomain_problem(self.metadata.name)
        if why:
            problems.add("metadata.name", why)
