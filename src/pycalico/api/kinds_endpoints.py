"""Endpoint kinds: HostEndpoint, WorkloadEndpoint, NetworkSet, GlobalNetworkSet.

Invariants (Calico's validator):
- interface names match ``[a-zA-Z0-9_.-]{1,15}`` (HostEndpoint also allows ``*``);
- HostEndpoint needs ``node`` and either ``interfaceName`` or ``expectedIPs``;
- WorkloadEndpoint ``ipNetworks`` are single addresses (/32, /128), every ``ipNATs``
  internal IP lies in one of them and NAT pairs share an IP version; gateways have the
  right family; ``containerID`` matches ``[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?``;
- profile names are DNS subdomains; network sets never carry ``projectcalico.org/namespace``.
A WorkloadEndpoint's own ``pcns.*``/``pcsa.*`` labels are valid but ignored: a warning.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, StrictInt, StrictStr

from pycalico.api.base import (
    LenientStr,
    Model,
    Problem,
    Problems,
    Resource,
    register,
    subdomain_problem,
)
from pycalico.api.common import (
    CIDR,
    EndpointPort,
    IPAddr,
    WorkloadEndpointPort,
    parse_cidr,
    parse_ip,
)
from pycalico.model.qos import check_controls

INTERFACE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
CONTAINER_ID = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
NAMESPACE_LABEL = "projectcalico.org/namespace"
RESERVED_LABEL_PREFIXES = {"pcns.": "namespace", "pcsa.": "service account"}


def _check_profiles(profiles: list[str] | None, path: str, problems: Problems) -> None:
    for i, p in enumerate(profiles or []):
        why = subdomain_problem(p)
        if why:
            problems.add(f"{path}[{i}]", why.replace("name", "profile name", 1))


class HostEndpointSpec(Model):
    node: LenientStr = ""
    interfaceName: LenientStr = ""
    expectedIPs: list[IPAddr] | None = None
    profiles: list[str] | None = None
    ports: list[EndpointPort] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if not self.node:
            problems.add(f"{path}.node", "node must be specified")
        if self.interfaceName:
            if self.interfaceName != "*" and not INTERFACE.match(self.interfaceName):
                problems.add(
                    f"{path}.interfaceName", f"invalid interface name {self.interfaceName!r}"
                )
        elif not self.expectedIPs:
            problems.add(
                f"{path}.interfaceName",
                "at least one of interfaceName or expectedIPs must be specified",
            )
        _check_profiles(self.profiles, f"{path}.profiles", problems)


@register("HostEndpoint", aliases=("hostendpoints", "hep", "heps"))
class HostEndpoint(Resource):
    kind: Literal["HostEndpoint"] = "HostEndpoint"
    spec: HostEndpointSpec = Field(default_factory=HostEndpointSpec)


class IPNAT(Model):
    internalIP: StrictStr
    externalIP: StrictStr

    def check(self, path: str, problems: Problems) -> None:
        versions = []
        for field in ("internalIP", "externalIP"):
            try:
                versions.append(parse_cidr(getattr(self, field)).version)
            except ValueError:
                problems.add(f"{path}.{field}", "invalid IP address")
        if len(versions) == 2 and versions[0] != versions[1]:
            problems.add(f"{path}.externalIP", "mismatched IP versions")


class QoSControls(Model):
    ingressBandwidth: StrictInt | None = None
    egressBandwidth: StrictInt | None = None
    ingressBurst: StrictInt | None = None
    egressBurst: StrictInt | None = None
    ingressPeakrate: StrictInt | None = None
    egressPeakrate: StrictInt | None = None
    ingressMinburst: StrictInt | None = None
    egressMinburst: StrictInt | None = None
    ingressPacketRate: StrictInt | None = None
    egressPacketRate: StrictInt | None = None
    ingressPacketBurst: StrictInt | None = None
    egressPacketBurst: StrictInt | None = None
    ingressMaxConnections: StrictInt | None = None
    egressMaxConnections: StrictInt | None = None
    dscp: StrictInt | StrictStr | None = None

    def check(self, path: str, problems: Problems) -> None:
        """Calico's documented limits and dependencies (:mod:`pycalico.model.qos`)."""
        super().check(path, problems)
        spec = self.model_dump(exclude_none=True)
        for fld, why in check_controls(spec):
            problems.add(f"{path}.{fld}", why)


class WorkloadEndpointSpec(Model):
    orchestrator: LenientStr = ""
    workload: LenientStr = ""
    node: LenientStr = ""
    containerID: LenientStr = ""
    pod: LenientStr = ""
    endpoint: LenientStr = ""
    serviceAccountName: LenientStr = ""
    ipNetworks: list[StrictStr] | None = None
    ipNATs: list[IPNAT] | None = None
    ipv4Gateway: str = ""
    ipv6Gateway: str = ""
    profiles: list[str] | None = None
    interfaceName: LenientStr = ""
    mac: LenientStr = ""
    ports: list[WorkloadEndpointPort] | None = None
    allowSpoofedSourcePrefixes: list[CIDR] | None = None
    qosControls: QoSControls | None = None
    qosPolicies: list[dict[str, object]] | None = None
    awsElasticIPs: list[IPAddr] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.containerID and not CONTAINER_ID.match(self.containerID):
            problems.add(f"{path}.containerID", f"invalid containerID {self.containerID!r}")
        if not self.interfaceName:
            problems.add(f"{path}.interfaceName", "interfaceName must be specified")
        elif not INTERFACE.match(self.interfaceName):
            problems.add(f"{path}.interfaceName", f"invalid interface name {self.interfaceName!r}")
        if self.mac and not MAC.match(self.mac):
            problems.add(f"{path}.mac", f"invalid MAC address {self.mac!r}")
        _check_profiles(self.profiles, f"{path}.profiles", problems)
        nets = []
        for i, text in enumerate(self.ipNetworks or []):
            try:
                net = parse_cidr(text)
            except ValueError:
                problems.add(f"{path}.ipNetworks[{i}]", f"invalid CIDR {text!r}")
                continue
            if net.prefixlen != net.max_prefixlen:
                problems.add(f"{path}.ipNetworks[{i}]", "IP network contains multiple addresses")
            nets.append(net)
        for field, version in (("ipv4Gateway", 4), ("ipv6Gateway", 6)):
            gw = getattr(self, field)
            if not gw:
                continue
            try:
                if parse_cidr(gw).version != version:
                    problems.add(f"{path}.{field}", f"invalid IPv{version} gateway address")
            except ValueError:
                problems.add(f"{path}.{field}", f"invalid gateway address {gw!r}")
        for i, nat in enumerate(self.ipNATs or []):
            try:
                ip = parse_ip(nat.internalIP.split("/")[0])
            except ValueError:
                continue
            if not any(ip.version == n.version and ip in n for n in nets):
                problems.add(f"{path}.ipNATs[{i}]", "NAT is not in the endpoint networks")


@register("WorkloadEndpoint", namespaced=True, aliases=("workloadendpoints", "wep", "weps"))
class WorkloadEndpoint(Resource):
    kind: Literal["WorkloadEndpoint"] = "WorkloadEndpoint"
    spec: WorkloadEndpointSpec = Field(default_factory=WorkloadEndpointSpec)

    def warnings(self) -> list[Problem]:
        """Labels with the prefixes Calico gives namespace / service-account labels: Calico
        (and pycalico) drop them from a workload, so that it cannot pose as a member of
        another namespace or service account."""
        out = super().warnings()
        name = self.metadata.name
        if self.metadata.namespace:
            name = f"{self.metadata.namespace}/{name}"
        for key in sorted(self.metadata.labels or {}):
            for prefix, what in RESERVED_LABEL_PREFIXES.items():
                if key.startswith(prefix):
                    reason = (
                        f"label prefix {prefix!r} is reserved for the {what} labels Calico "
                        "derives; this label is ignored"
                    )
                    out.append(Problem(self.kind, name, f"metadata.labels.{key}", reason))
        return out


class NetworkSetSpec(Model):
    nets: list[CIDR] | None = None
    allowedEgressDomains: list[str] | None = None


def _check_set_labels(res: Resource, problems: Problems) -> None:
    if NAMESPACE_LABEL in (res.metadata.labels or {}):
        problems.add(
            "metadata.labels", f"{NAMESPACE_LABEL} is not a valid label name for a network set"
        )


@register("NetworkSet", namespaced=True, aliases=("networksets", "netset", "netsets"))
class NetworkSet(Resource):
    kind: Literal["NetworkSet"] = "NetworkSet"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _check_set_labels(self, problems)


@register(
    "GlobalNetworkSet",
    aliases=("globalnetworksets", "globalnetset", "globalnetsets", "gns", "gnss"),
)
class GlobalNetworkSet(Resource):
    kind: Literal["GlobalNetworkSet"] = "GlobalNetworkSet"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        _check_set_labels(self, problems)
