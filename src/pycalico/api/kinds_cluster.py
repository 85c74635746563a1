"""Cluster-wide singleton and IPAM-state kinds of the v3 API.

Owns ClusterInformation, KubeControllersConfiguration (controllers tree, health checks, metrics
port), IPAMConfiguration (strictAffinity, maxBlocksPerHost 0..1,000,000, autoAllocateBlocks,
ipCooldownSeconds 0..1200 and their cross rules), BlockAffinity (state / node / cidr / type /
deleted) and CalicoNodeStatus (which status classes a node reports, and the report itself).

Invariants: decode fills the CRD defaults (KubeControllersConfiguration ``healthChecks``
``Enabled``, ``prometheusMetricsPort`` 9094; IPAMConfiguration ``strictAffinity`` false,
``autoAllocateBlocks`` true, ``maxBlocksPerHost`` 0; BlockAffinity ``type`` ``host``); the
effective default of ``maxBlocksPerHost`` 0 is :data:`DEFAULT_MAX_BLOCKS_PER_HOST`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from pycalico.api.base import (
    Model,
    Problems,
    Resource,
    label_key_problem,
    label_value_problem,
    register,
)
from pycalico.api.common import CIDR, check_selector
from pycalico.api.kinds_bgp import Duration, MaskedNet, ResourceName, null_to_empty

DEFAULT_MAX_BLOCKS_PER_HOST = 20

# --- ClusterInformation ---------------------------------------------------------------------


class ClusterInformationSpec(Model):
    clusterGUID: StrictStr | None = None
    clusterType: StrictStr | None = None
    calicoVersion: StrictStr | None = None
    datastoreReady: StrictBool | None = None
    variant: StrictStr | None = None


@register("ClusterInformation", aliases=("clusterinformation", "clusterinfo"))
class ClusterInformation(Resource):
    """Cluster identity and readiness (singleton ``default``, written by calico-node)."""

    kind: str = "ClusterInformation"
    spec: Annotated[ClusterInformationSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=ClusterInformationSpec
    )


# --- KubeControllersConfiguration -----------------------------------------------------------

_GENERATE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*)?$")


def _generate_name(value: str) -> str:
    if len(value) > 253 or not _GENERATE_NAME.match(value):
        raise ValueError(f"invalid generateName {value!r}: lower case alphanumerics, '-' or '.'")
    return value


class ReconcilerConfig(Model):
    reconcilerPeriod: Duration | None = None


class AutoHostEndpointTemplate(Model):
    generateName: Annotated[StrictStr, AfterValidator(_generate_name)] | None = None
    interfaceCIDRs: list[CIDR] | None = None
    interfacePattern: StrictStr | None = None
    labels: dict[str, StrictStr] | None = None
    annotations: dict[str, StrictStr] | None = None
    nodeSelector: StrictStr | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        check_selector(self.nodeSelector, f"{path}.nodeSelector", problems)
        if self.interfacePattern:
            try:
                re.compile(self.interfacePattern)
            except re.error as e:
                problems.add(f"{path}.interfacePattern", f"invalid regular expression: {e}")
        for k, v in (self.labels or {}).items():
            why = label_key_problem(k) or label_value_problem(v)
            if why:
                problems.add(f"{path}.labels", why)
        for k in self.annotations or {}:
            why = label_key_problem(k.lower())
            if why:
                problems.add(f"{path}.annotations", why.replace("label", "annotation"))


class AutoHostEndpointConfig(Model):
    autoCreate: Literal["Enabled", "Disabled"] | None = None
    createDefaultHostEndpoint: Literal["Enabled", "Disabled"] | None = None
    templates: list[AutoHostEndpointTemplate] | None = None


class NodeControllerConfig(Model):
    reconcilerPeriod: Duration | None = None
    syncLabels: Literal["Enabled", "Disabled"] | None = None
    hostEndpoint: AutoHostEndpointConfig | None = None
    leakGracePeriod: Duration | None = None


class LoadBalancerControllerConfig(Model):
    assignIPs: Literal["AllServices", "RequestedServicesOnly"] | None = None


class PolicyMigratorConfig(Model):
    enabled: Literal["Enabled", "Disabled"] | None = None


class MigrationConfig(Model):
    policyNameMigrator: Literal["Enabled", "Disabled"] | None = None


class ControllersConfig(Model):
    node: NodeControllerConfig | None = None
    policy: ReconcilerConfig | None = None
    workloadEndpoint: ReconcilerConfig | None = None
    serviceAccount: ReconcilerConfig | None = None
    namespace: ReconcilerConfig | None = None
    loadBalancer: LoadBalancerControllerConfig | None = None
    policyMigration: PolicyMigratorConfig | None = None
    migration: MigrationConfig | None = None


class KubeControllersConfigurationSpec(Model):
    logSeverityScreen: (
        Literal["Trace", "Debug", "Info", "Warning", "Error", "Fatal", "Panic"] | None
    ) = None
    healthChecks: Literal["Enabled", "Disabled"] | None = None
    etcdV3CompactionPeriod: Duration | None = None
    prometheusMetricsPort: Annotated[StrictInt, Field(ge=0, le=65535)] | None = None
    debugProfilePort: Annotated[StrictInt, Field(ge=0, le=65535)] | None = None
    controllers: ControllersConfig = Field(default_factory=ControllersConfig)

    @model_validator(mode="after")
    def _defaults(self) -> KubeControllersConfigurationSpec:
        if self.healthChecks is None:
            self.healthChecks = "Enabled"
        if self.prometheusMetricsPort is None:
            self.prometheusMetricsPort = 9094  # 0 (explicit) means metrics disabled
        return self


class KubeControllersConfigurationStatus(Model):
    runningConfig: KubeControllersConfigurationSpec | None = None
    environmentVars: dict[str, StrictStr] | None = None


@register("KubeControllersConfiguration", aliases=("kubecontrollersconfiguration", "kcc"))
class KubeControllersConfiguration(Resource):
    """Settings of calico-kube-controllers (singleton ``default``)."""

    kind: str = "KubeControllersConfiguration"
    spec: Annotated[KubeControllersConfigurationSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=lambda: KubeControllersConfigurationSpec.model_validate({})
    )
    status: KubeControllersConfigurationStatus | None = None


# --- IPAMConfiguration ----------------------------------------------------------------------


class IPAMConfigurationSpec(Model):
    strictAffinity: StrictBool | None = None
    maxBlocksPerHost: Annotated[StrictInt, Field(ge=0, le=1_000_000)] | None = None
    autoAllocateBlocks: StrictBool | None = None
    kubeVirtVMAddressPersistence: Literal["Enabled", "Disabled"] | None = None
    ipCooldownSeconds: Annotated[StrictInt, Field(ge=0, le=1200)] | None = None
    minIPReclaimAgeSeconds: Annotated[StrictInt, Field(ge=0, le=2147483647)] | None = None

    @model_validator(mode="after")
    def _defaults(self) -> IPAMConfigurationSpec:
        if self.strictAffinity is None:
            self.strictAffinity = False
        if self.autoAllocateBlocks is None:
            self.autoAllocateBlocks = True
        if self.maxBlocksPerHost is None:
            self.maxBlocksPerHost = 0
        return self

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if not self.strictAffinity and self.autoAllocateBlocks is False:
            problems.add(
                f"{path}.autoAllocateBlocks",
                "autoAllocateBlocks cannot be false when strictAffinity is false",
            )

    def set_problems(self) -> list[str]:
        """Extra rules Calico enforces when IPAM configuration is *set* (``ipam configure``)."""
        out = []
        if self.maxBlocksPerHost and not self.strictAffinity:
            out.append("maxBlocksPerHost can only be set when strictAffinity is true")
        return out


@register("IPAMConfiguration", aliases=("ipamconfiguration", "ipamconfig", "ipamconfigs"))
class IPAMConfiguration(Resource):
    """IPAM behaviour knobs (singleton ``default``)."""

    kind: str = "IPAMConfiguration"
    spec: Annotated[IPAMConfigurationSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=lambda: IPAMConfigurationSpec.model_validate({})
    )


# --- BlockAffinity --------------------------------------------------------------------------


def _deleted(value: Any) -> str:
    """``deleted`` is a string in Calico's storage shape; accept a bool too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value in ("", "true", "false"):
        return value
    raise ValueError(f"invalid deleted value {value!r}: must be 'true' or 'false'")


class BlockAffinitySpec(Model):
    state: Literal["pending", "confirmed", "pendingDeletion", ""] = ""
    node: StrictStr
    type: Literal["host", "virtual"] | None = None
    cidr: MaskedNet
    deleted: Annotated[str, BeforeValidator(_deleted)] = "false"

    @model_validator(mode="after")
    def _defaults(self) -> BlockAffinitySpec:
        if self.type is None:
            self.type = "host"
        return self

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.deleted == "true":
            problems.add(f"{path}.deleted", 'spec.deleted cannot be set to "true"')


@register("BlockAffinity", aliases=("blockaffinity", "blockaffinities", "affinity", "affinities"))
class BlockAffinity(Resource):
    """Affinity of an IPAM block to a host (or virtual owner)."""

    kind: str = "BlockAffinity"
    spec: Annotated[BlockAffinitySpec, BeforeValidator(null_to_empty)]


# --- CalicoNodeStatus -----------------------------------------------------------------------


class CalicoNodeStatusSpec(Model):
    node: ResourceName | None = None
    classes: list[Literal["Agent", "BGP", "Routes"]] | None = None
    updatePeriodSeconds: Annotated[StrictInt, Field(ge=0, le=86400)] | None = None

    def check(self, path: str, problems: Problems) -> None:
        """libcalico-go's tags: ``node``, ``classes`` and ``updatePeriodSeconds`` are required
        (0 is a value: report once), ``classes`` unique."""
        super().check(path, problems)
        if not self.node:
            problems.add(f"{path}.node", "required: the node that reports")
        if self.classes is None:
            problems.add(f"{path}.classes", "required: any of Agent, BGP, Routes")
        elif len(set(self.classes)) != len(self.classes):
            problems.add(f"{path}.classes", "must be unique")
        if self.updatePeriodSeconds is None:
            problems.add(f"{path}.updatePeriodSeconds", "required (0: report once)")


@register(
    "CalicoNodeStatus",
    aliases=("caliconodestatus", "caliconodestatuses", "nodestatus", "nodestatuses"),
)
class CalicoNodeStatus(Resource):
    """Request (spec) and report (status) of a node's agent/BGP/route status."""

    kind: str = "CalicoNodeStatus"
    spec: Annotated[CalicoNodeStatusSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=CalicoNodeStatusSpec
    )
    status: dict[str, Any] | None = None
