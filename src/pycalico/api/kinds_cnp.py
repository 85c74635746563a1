"""Kubernetes network-policy-api ``policy.networking.k8s.io/v1alpha2`` ClusterNetworkPolicy.

The cluster-scoped admin/baseline policy Calico 3.32 consumes (short name ``cnp``); it is
enforced through :mod:`pycalico.model.cnp` (tiers ``kube-admin`` / ``kube-baseline``).

Invariants (the upstream CRD's OpenAPI and CEL validation, kubernetes-sigs/network-policy-api
``apis/v1alpha2/clusternetworkpolicy_types.go``):
- ``spec.tier`` is ``Admin`` or ``Baseline``; ``spec.priority`` is an integer 0..1000;
  ``spec.subject`` sets exactly one of ``namespaces`` / ``pods``.
- At most 25 ingress and 25 egress rules; each rule: ``name`` at most 100 characters,
  ``action`` ``Accept``/``Deny``/``Pass``, 1..25 peers, optional 1..25 ``protocols``.
- An ingress peer sets exactly one of ``namespaces`` / ``pods``; an egress peer exactly one
  of ``namespaces`` / ``pods`` / ``nodes`` / ``networks`` (1..25 CIDRs) / ``domainNames``
  (1..25, ``Accept`` rules only).
- A protocol entry sets exactly one of ``tcp`` / ``udp`` / ``sctp`` (with a non-empty
  ``destinationPort``: exactly one of ``number`` 1..65535 or ``range`` with
  ``start < end``) or ``destinationNamedPort``; a named port may not be combined with
  ``networks`` / ``nodes`` / ``domainNames`` peers.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, StrictInt, StrictStr

from pycalico.api.base import Model, Problems, Resource, register
from pycalico.api.common import port_name_problem
from pycalico.api.kinds_k8s import LabelSelector

CNP_API = "policy.networking.k8s.io/v1alpha2"
_DOMAIN = re.compile(
    r"^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$"
)


def _exactly_one(model: Model, fields: tuple[str, ...], path: str, problems: Problems) -> None:
    """Upstream MinProperties=1/MaxProperties=1: exactly one of ``fields`` is set."""
    present = [f for f in fields if getattr(model, f) is not None]
    if not present:
        problems.add(path, f"exactly one of {', '.join(fields)} must be set")
    elif len(present) > 1:
        problems.add(path, f"only one of {', '.join(fields)} may be set, not {present}")


class NamespacedPod(Model):
    namespaceSelector: LabelSelector = Field(default_factory=LabelSelector)
    podSelector: LabelSelector


class ClusterNetworkPolicySubject(Model):
    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _exactly_one(self, ("namespaces", "pods"), path, problems)


class PortRange(Model):
    start: StrictInt = Field(ge=1, le=65535)
    end: StrictInt = Field(ge=1, le=65535)

    def check(self, path: str, problems: Problems) -> None:
        if not self.start < self.end:
            problems.add(path, f"Start port must be less than End port ({self.start}-{self.end})")


class Port(Model):
    number: StrictInt | None = Field(default=None, ge=1, le=65535)
    range: PortRange | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _exactly_one(self, ("number", "range"), path, problems)


class ProtocolPort(Model):
    destinationPort: Port | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.destinationPort is None:
            problems.add(f"{path}.destinationPort", "required (the protocol entry is empty)")


class ClusterNetworkPolicyProtocol(Model):
    tcp: ProtocolPort | None = None
    udp: ProtocolPort | None = None
    sctp: ProtocolPort | None = None
    destinationNamedPort: StrictStr | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _exactly_one(self, ("tcp", "udp", "sctp", "destinationNamedPort"), path, problems)
        if self.destinationNamedPort is not None:
            why = port_name_problem(self.destinationNamedPort)
            if why:
                problems.add(f"{path}.destinationNamedPort", why)


Action = Literal["Accept", "Deny", "Pass"]


class ClusterNetworkPolicyIngressPeer(Model):
    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _exactly_one(self, ("namespaces", "pods"), path, problems)


class ClusterNetworkPolicyEgressPeer(Model):
    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None
    nodes: LabelSelector | None = None
    networks: list[StrictStr] | None = Field(default=None, min_length=1, max_length=25)
    domainNames: list[StrictStr] | None = Field(default=None, min_length=1, max_length=25)

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        fields = ("namespaces", "pods", "nodes", "networks", "domainNames")
        _exactly_one(self, fields, path, problems)
        for i, cidr in enumerate(self.networks or []):
            try:
                if len(cidr) > 43:
                    raise ValueError
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                problems.add(f"{path}.networks[{i}]", f"Invalid CIDR format provided: {cidr!r}")
        for i, name in enumerate(self.domainNames or []):
            if not _DOMAIN.match(name):
                problems.add(f"{path}.domainNames[{i}]", f"invalid domain name {name!r}")


class _Rule(Model):
    name: StrictStr | None = Field(default=None, max_length=100)
    action: Action
    protocols: list[ClusterNetworkPolicyProtocol] | None = Field(
        default=None, min_length=1, max_length=25
    )


class ClusterNetworkPolicyIngressRule(_Rule):
    from_: list[ClusterNetworkPolicyIngressPeer] = Field(alias="from", min_length=1, max_length=25)


class ClusterNetworkPolicyEgressRule(_Rule):
    to: list[ClusterNetworkPolicyEgressPeer] = Field(min_length=1, max_length=25)

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        no_named = [
            i
            for i, p in enumerate(self.to)
            if p.networks is not None or p.nodes is not None or p.domainNames is not None
        ]
        named = any(p.destinationNamedPort is not None for p in self.protocols or [])
        if no_named and named:
            problems.add(
                f"{path}.to[{no_named[0]}]",
                "networks/nodes/domainNames peer cannot be set with namedPorts since there are "
                "no namedPorts for networks/nodes/domainNames",
            )
        if self.action != "Accept":
            for i, p in enumerate(self.to):
                if p.domainNames is not None:
                    problems.add(
                        f"{path}.to[{i}].domainNames",
                        f"only supported for Accept rules, not {self.action}",
                    )


class ClusterNetworkPolicySpec(Model):
    tier: Literal["Admin", "Baseline"]
    priority: StrictInt = Field(ge=0, le=1000)
    subject: ClusterNetworkPolicySubject
    ingress: list[ClusterNetworkPolicyIngressRule] | None = Field(default=None, max_length=25)
    egress: list[ClusterNetworkPolicyEgressRule] | None = Field(default=None, max_length=25)


@register(
    "ClusterNetworkPolicy",
    api_version=CNP_API,
    aliases=("clusternetworkpolicies", "cnp", "cnps"),
)
class ClusterNetworkPolicy(Resource):
    """A ClusterNetworkPolicy (cluster-scoped; Admin or Baseline tier)."""

    apiVersion: str = CNP_API
    kind: Literal["ClusterNetworkPolicy"] = "ClusterNetworkPolicy"
    spec: ClusterNetworkPolicySpec
    status: dict[str, Any] | None = None
