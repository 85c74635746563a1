"""Kubernetes kinds pycalico consumes: v1 Namespace/ServiceAccount (labels), networking.k8s.io/v1
NetworkPolicy, and Calico's StagedKubernetesNetworkPolicy (a staged k8s policy spec).

Invariants (Kubernetes API validation):
- LabelSelector ``matchExpressions``: ``In``/``NotIn`` need values, ``Exists``/``DoesNotExist``
  take none; keys and ``matchLabels`` are valid label keys/values.
- A peer's ``ipBlock`` excludes pod/namespace selectors; ``except`` CIDRs lie inside ``cidr``.
- Ports: protocol TCP/UDP/SCTP (default TCP), port 1..65535 or an IANA port name;
  ``endPort`` needs a numeric ``port`` and ``endPort >= port``.
- ``policyTypes`` is a set of Ingress/Egress; omitted, it is Ingress plus Egress when egress
  rules exist (:meth:`K8sNetworkPolicySpec.effective_policy_types`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictInt, StrictStr

from pycalico.api.base import (
    DNS1123_LABEL,
    Model,
    Problems,
    Resource,
    label_key_problem,
    label_value_problem,
    register,
)
from pycalico.api.common import port_name_problem
from pycalico.api.kinds_policy import StagedAction

K8S_NETWORKING = "networking.k8s.io/v1"
K8S_CORE = "v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class LabelSelectorRequirement(Model):
    key: StrictStr
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[StrictStr] | None = None

    def check(self, path: str, problems: Problems) -> None:
        why = label_key_problem(self.key)
        if why:
            problems.add(f"{path}.key", why)
        if self.operator in ("In", "NotIn") and not self.values:
            problems.add(f"{path}.values", f"values must be non-empty for operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            problems.add(f"{path}.values", f"values must be empty for operator {self.operator}")


class LabelSelector(Model):
    matchLabels: dict[str, StrictStr] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        for k, v in (self.matchLabels or {}).items():
            why = label_key_problem(k) or label_value_problem(v)
            if why:
                problems.add(f"{path}.matchLabels", why)


class IPBlock(Model):
    cidr: StrictStr
    except_: list[StrictStr] | None = Field(default=None, alias="except")

    def check(self, path: str, problems: Problems) -> None:
        import ipaddress

        try:
            outer = ipaddress.ip_network(self.cidr, strict=False)
        except ValueError:
            problems.add(f"{path}.cidr", f"invalid CIDR {self.cidr!r}")
            return
        for i, text in enumerate(self.except_ or []):
            try:
                inner = ipaddress.ip_network(text, strict=False)
            except ValueError:
                problems.add(f"{path}.except[{i}]", f"invalid CIDR {text!r}")
                continue
            inside = (
                inner.version == outer.version
                and inner.network_address in outer
                and inner.prefixlen > outer.prefixlen
            )
            if not inside:
                problems.add(f"{path}.except[{i}]", f"must be a strict subset of {self.cidr}")


class NetworkPolicyPeer(Model):
    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.ipBlock is not None and (
            self.podSelector is not None or self.namespaceSelector is not None
        ):
            problems.add(path, "may not specify ipBlock together with another peer type")
        if self.ipBlock is None and self.podSelector is None and self.namespaceSelector is None:
            problems.add(path, "must specify a peer")


class NetworkPolicyPort(Model):
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    port: StrictInt | StrictStr | None = None
    endPort: StrictInt | None = None

    def check(self, path: str, problems: Problems) -> None:
        port = self.port
        if isinstance(port, int):
            if not 1 <= port <= 65535:
                problems.add(f"{path}.port", "must be between 1 and 65535, inclusive")
        elif isinstance(port, str):
            why = port_name_problem(port)
            if why:
                problems.add(f"{path}.port", why)
        if self.endPort is not None:
            if not isinstance(port, int):
                problems.add(f"{path}.endPort", "may not be specified when port is not a number")
            elif self.endPort < port:
                problems.add(f"{path}.endPort", "must be greater than or equal to port")
            elif not 1 <= self.endPort <= 65535:
                problems.add(f"{path}.endPort", "must be between 1 and 65535, inclusive")


class NetworkPolicyIngressRule(Model):
    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicyEgressRule(Model):
    to: list[NetworkPolicyPeer] | None = None
    ports: list[NetworkPolicyPort] | None = None


K8sPolicyType = Literal["Ingress", "Egress"]


class K8sNetworkPolicySpec(Model):
    podSelector: LabelSelector = Field(default_factory=LabelSelector)
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None
    policyTypes: list[K8sPolicyType] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.policyTypes and len(set(self.policyTypes)) != len(self.policyTypes):
            problems.add(f"{path}.policyTypes", "duplicate entries in policyTypes")

    def effective_policy_types(self) -> list[K8sPolicyType]:
        if self.policyTypes:
            return list(self.policyTypes)
        return ["Ingress", "Egress"] if self.egress else ["Ingress"]


@register("NetworkPolicy", namespaced=True, api_version=K8S_NETWORKING)
class K8sNetworkPolicy(Resource):
    apiVersion: str = K8S_NETWORKING
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: K8sNetworkPolicySpec = Field(default_factory=K8sNetworkPolicySpec)
    status: dict[str, Any] | None = None


class StagedKubernetesNetworkPolicySpec(K8sNetworkPolicySpec):
    stagedAction: StagedAction | None = None

    def check(self, path: str, problems: Problems) -> None:
        if self.stagedAction == "Delete":
            extra = sorted(self.model_fields_set - {"stagedAction"})
            if extra:
                problems.add(
                    f"{path}.{extra[0]}",
                    "Spec fields should all be zero-value if stagedAction is Delete",
                )
            return
        super().check(path, problems)


@register(
    "StagedKubernetesNetworkPolicy",
    namespaced=True,
    aliases=("stagedkubernetesnetworkpolicies", "sknp", "sknps"),
)
class StagedKubernetesNetworkPolicy(Resource):
    kind: Literal["StagedKubernetesNetworkPolicy"] = "StagedKubernetesNetworkPolicy"
    spec: StagedKubernetesNetworkPolicySpec = Field(
        default_factory=StagedKubernetesNetworkPolicySpec
    )

    def apply_defaults(self) -> None:
        if self.spec.stagedAction is None:
            self.spec.stagedAction = "Set"


@register("Namespace", api_version=K8S_CORE, aliases=("namespaces", "ns"))
class Namespace(Resource):
    """A Kubernetes namespace; pycalico uses its name and labels (profile ``kns.<name>``)."""

    apiVersion: str = K8S_CORE
    kind: Literal["Namespace"] = "Namespace"
    spec: dict[str, Any] | None = None
    status: dict[str, Any] | None = None

    def check_name(self, problems: Problems) -> None:
        name = self.metadata.name
        if not name or len(name) > 63 or not DNS1123_LABEL.match(name):
            problems.add("metadata.name", f"invalid namespace name {name!r} (must be a DNS label)")

    def apply_defaults(self) -> None:
        """As the Kubernetes API server does on every write: label
        ``kubernetes.io/metadata.name: <name>`` (any other value is replaced)."""
        labels = dict(self.metadata.labels or {})
        labels[NAMESPACE_NAME_LABEL] = self.metadata.name
        self.metadata.labels = labels


@register(
    "ServiceAccount",
    namespaced=True,
    api_version=K8S_CORE,
    aliases=("serviceaccounts", "sa"),
)
class ServiceAccount(Resource):
    """A Kubernetes service account; pycalico uses its labels (profile ``ksa.<ns>.<name>``)."""

    apiVersion: str = K8S_CORE
    kind: Literal["ServiceAccount"] = "ServiceAccount"
    secrets: list[dict[str, Any]] | None = None
    imagePullSecrets: list[dict[str, Any]] | None = None
    automountServiceAccountToken: bool | None = None
