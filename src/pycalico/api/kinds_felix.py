"""The FelixConfiguration kind (``felixconfig.go`` + ``validateFelixConfigSpec`` + CRD rules).

Owns every spec field of Calico's current FelixConfiguration with its type and accepted values:
durations (Go syntax, not negative), port ranges (``30000:32767``; named ports rejected where
Calico rejects them), route table ranges (``routeTableRange`` within 1..250; each
``routeTableRanges`` entry min >= 1, min <= max, max <= 0xffffffff, at most 0xffff tables in
total), log severities, action words (case-insensitive where Calico's CRD pattern is), failsafe
``{protocol, port, net}`` entries, interface-name charsets, marks and counts.

Invariants: names are ``default`` (global), ``node.<nodename>`` (per node) or any other DNS
subdomain for a selector-scoped configuration; ``spec.nodeSelector`` is only allowed on the
latter. Decode fills only the defaults Calico's CRD schema fills (``nftablesMode: Auto``,
``floatingIPs: Disabled``, ``bpfConnectTimeLoadBalancing: TCP``,
``bpfHostNetworkedNATWithoutCTLB: Enabled``); Felix's built-in defaults apply to other unset
fields, the most used ones are in :data:`FELIX_DEFAULTS` for consumers.
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

from pycalico.api.base import Model, Problems, Resource, register
from pycalico.api.common import CIDR, Port, check_selector, parse_cidr, parse_port
from pycalico.api.kinds_bgp import (
    IPv4Addr,
    IPv6Addr,
    LogLevel,
    NonNegDuration,
    RoutePriority,
    null_to_empty,
)
from pycalico.model.felixconfig import DEFAULT_FAILSAFE_IN as DEFAULT_FAILSAFE_IN
from pycalico.model.felixconfig import DEFAULT_FAILSAFE_OUT as DEFAULT_FAILSAFE_OUT

# Felix's default failsafe ports (protocol, port): always open on host endpoints.

FELIX_DEFAULTS: dict[str, Any] = {
    "interfacePrefix": "cali",
    "ipv6Support": True,
    "iptablesMarkMask": 0xFFFF0000,
    "nftablesMarkMask": 0xFFFF0000,
    "vxlanPort": 4789,
    "vxlanVNI": 4096,
    "healthPort": 9099,
    "prometheusMetricsPort": 9091,
    "reportingInterval": "30s",
    "routeRefreshInterval": "90s",
    "deviceRouteProtocol": 3,
    "removeExternalRoutes": True,
    "routeSource": "CalicoIPAM",
    "defaultEndpointToHostAction": "Drop",
    "ipv4NormalRoutePriority": 1024,
    "ipv4ElevatedRoutePriority": 512,
    "kubeNodePortRanges": ["30000:32767"],
    "failsafeInboundHostPorts": [
        {"protocol": p.upper(), "port": n} for p, n in DEFAULT_FAILSAFE_IN
    ],
    "failsafeOutboundHostPorts": [
        {"protocol": p.upper(), "port": n} for p, n in DEFAULT_FAILSAFE_OUT
    ],
}

ROUTE_TABLE_MAX_LINUX = 0xFFFFFFFF
ROUTE_TABLE_RANGE_MAX_TABLES = 0xFFFF
UINT32_MAX = 0xFFFFFFFF


def _ci_words(*words: str) -> AfterValidator:
    """A string matching one of ``words`` case-insensitively (CRD ``^(?i)(a|b)?$``)."""
    allowed = {w.lower() for w in words}

    def validate(value: str) -> str:
        if value and value.lower() not in allowed:
            raise ValueError(f"invalid value {value!r}: must be one of {', '.join(words)}")
        return value

    return AfterValidator(validate)


def _regex(pattern: str, what: str) -> AfterValidator:
    rx = re.compile(pattern)

    def validate(value: str) -> str:
        if not rx.match(value):
            raise ValueError(f"invalid {what} {value!r}")
        return value

    return AfterValidator(validate)


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"invalid regular expression {value!r}: {e}") from None
    return value


def _openstack_region(value: str) -> str:
    if len(value) > 63 - len("openstack-region-"):
        raise ValueError("openstackRegion is too long")
    if value and not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", value):
        raise ValueError(f"openstackRegion {value!r} must be a valid DNS label")
    return value


def _numeric_port_range(value: int | str) -> int | str:
    if parse_port(value).is_named:
        raise ValueError(f"named port {value!r} not allowed here, use a number or 'min:max'")
    return value


_IFACE = r"^[a-zA-Z0-9_.-]{1,15}$"
_IFACE_FILTER = r"^[a-zA-Z0-9:._+-]{1,15}$"
_CT_TIMEOUT = r"^(([0-9]*(\.[0-9]*)?(ms|s|h|m|us)+)+|Auto)$"

Str = StrictStr | None
Bool = StrictBool | None
Dur = NonNegDuration | None
Int = StrictInt | None
NonNeg = Annotated[StrictInt, Field(ge=0)] | None
PortNum = Annotated[StrictInt, Field(ge=0, le=65535)] | None
Uint32 = Annotated[StrictInt, Field(ge=0, le=UINT32_MAX)] | None
GoSetting = Annotated[StrictInt, Field(ge=-1)] | None
Regexp = Annotated[StrictStr, AfterValidator(_compiles)] | None
EnabledDisabled = Literal["Enabled", "Disabled"] | None
IfaceFilter = Annotated[StrictStr, _regex(_IFACE_FILTER, "interface filter")]
NumericPort = Annotated[Port, AfterValidator(_numeric_port_range)]
KeyValueList = r"^([a-zA-Z0-9-_]+=(true|false|),)*([a-zA-Z0-9-_]+=(true|false|))?$"
FeatureGates = r"^([a-zA-Z0-9-_]+=([^=]+),)*([a-zA-Z0-9-_]+=([^=]+))?$"


def _interface_name(value: str) -> str:
    if value != "*" and not re.match(_IFACE, value):
        raise ValueError(f"invalid interface name {value!r}")
    return value


def _dscp(value: int | str) -> int | str:
    if isinstance(value, int) and 0 <= value <= 63:
        return value
    if isinstance(value, str) and re.fullmatch(r"CS[0-7]|AF[1-4][1-3]|EF|DF|\d+", value):
        if not value.isdigit() or int(value) <= 63:
            return value
    raise ValueError(f"invalid DSCP value {value!r}: must be 0-63 or a DSCP name")


class ProtoPort(Model):
    """A failsafe port: ``{protocol: TCP|UDP|SCTP, port, net?}``."""

    protocol: StrictStr = ""
    port: Annotated[StrictInt, Field(ge=0, le=65535)]
    net: CIDR | None = None

    def check(self, path: str, problems: Problems) -> None:
        if self.protocol not in ("TCP", "UDP", "SCTP"):
            problems.add(f"{path}.protocol", "protocol must be 'TCP' or 'UDP' or 'SCTP'")


class HealthTimeoutOverride(Model):
    name: Annotated[StrictStr, _regex(r"^[a-zA-Z0-9_ -]+$", "health timeout override name")]
    timeout: NonNegDuration


class RouteTableRange(Model):
    min: StrictInt
    max: StrictInt

    def check(self, path: str, problems: Problems) -> None:
        why = "must be a range of route table indices within 1..250"
        if self.min < 1:
            problems.add(f"{path}.min", f"{why} (min {self.min} < 1)")
        elif self.max > 250:
            problems.add(f"{path}.max", f"{why} (max {self.max} > 250)")
        elif self.max < self.min:
            problems.add(f"{path}.max", f"{why} (max {self.max} < min {self.min})")


class RouteTableIDRange(Model):
    min: StrictInt
    max: StrictInt

    def check(self, path: str, problems: Problems) -> None:
        if self.min > self.max:
            problems.add(f"{path}.min", "min value cannot be greater than max value")
        if self.min < 1:
            problems.add(f"{path}.min", "cannot target indices < 1")
        if self.max > ROUTE_TABLE_MAX_LINUX:
            problems.add(f"{path}.max", "max index too high")


class BPFConntrackTimeouts(Model):
    creationGracePeriod: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None
    tcpSynSent: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None
    tcpEstablished: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None
    tcpFinsSeen: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None
    tcpResetSeen: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None
    udpTimeout: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None
    genericTimeout: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None
    icmpTimeout: Annotated[StrictStr, _regex(_CT_TIMEOUT, "timeout")] | None = None


class FelixConfigurationSpec(Model):
    # --- dataplane driver, general ---
    useInternalDataplaneDriver: Bool = None
    dataplaneDriver: Str = None
    dataplaneWatchdogTimeout: Dur = None
    ipv6Support: Bool = None
    ipForwarding: EnabledDisabled = None
    featureDetectOverride: Annotated[StrictStr, _regex(KeyValueList, "key=value list")] | None = (
        None
    )
    featureGates: Annotated[StrictStr, _regex(FeatureGates, "feature gate list")] | None = None
    cgroupV2Path: Str = None
    requireMTUFile: Bool = None
    # --- refresh intervals / timeouts ---
    routeRefreshInterval: Dur = None
    interfaceRefreshInterval: Dur = None
    iptablesRefreshInterval: Dur = None
    iptablesPostWriteCheckInterval: Dur = None
    iptablesLockFilePath: Str = None
    iptablesLockTimeout: Dur = None
    iptablesLockProbeInterval: Dur = None
    ipsetsRefreshInterval: Dur = None
    xdpRefreshInterval: Dur = None
    netlinkTimeout: Dur = None
    nftablesRefreshInterval: Dur = None
    maxIpsetSize: NonNeg = None
    # --- iptables / nftables ---
    iptablesBackend: Literal["Legacy", "NFT", "Auto"] | None = None
    nftablesMode: Literal["Disabled", "Enabled", "Auto"] | None = None
    chainInsertMode: Annotated[StrictStr, _ci_words("Insert", "Append")] | None = None
    defaultEndpointToHostAction: (
        Annotated[StrictStr, _ci_words("Drop", "Accept", "Return")] | None
    ) = None
    iptablesFilterAllowAction: Annotated[StrictStr, _ci_words("Accept", "Return")] | None = None
    iptablesMangleAllowAction: Annotated[StrictStr, _ci_words("Accept", "Return")] | None = None
    iptablesFilterDenyAction: Annotated[StrictStr, _ci_words("Drop", "Reject")] | None = None
    nftablesFilterAllowAction: Annotated[StrictStr, _ci_words("Accept", "Return")] | None = None
    nftablesMangleAllowAction: Annotated[StrictStr, _ci_words("Accept", "Return")] | None = None
    nftablesFilterDenyAction: Annotated[StrictStr, _ci_words("Drop", "Reject")] | None = None
    iptablesMarkMask: Uint32 = None
    nftablesMarkMask: Uint32 = None
    iptablesNATOutgoingInterfaceFilter: IfaceFilter | None = None
    disableConntrackInvalidCheck: Bool = None
    # --- metadata / openstack ---
    metadataAddr: Str = None
    metadataPort: PortNum = None
    openstackRegion: Annotated[StrictStr, AfterValidator(_openstack_region)] | None = None
    interfacePrefix: Str = None
    interfaceExclude: Str = None
    # --- logging ---
    logPrefix: Annotated[StrictStr, _regex(r"^([a-zA-Z0-9%: /_-])*$", "log prefix")] | None = None
    logFilePath: Str = None
    logSeverityFile: LogLevel | None = None
    logSeverityScreen: LogLevel | None = None
    logSeveritySys: LogLevel | None = None
    logDebugFilenameRegex: Regexp = None
    logActionRateLimit: (
        Annotated[StrictStr, _regex(r"^[1-9]\d{0,3}/(?:second|minute|hour|day)$", "rate limit")]
        | None
    ) = None
    logActionRateLimitBurst: Annotated[StrictInt, Field(ge=0, le=9999)] | None = None
    # --- encapsulation ---
    ipipEnabled: Bool = None
    ipipMTU: NonNeg = None
    vxlanEnabled: Bool = None
    vxlanMTU: NonNeg = None
    vxlanMTUV6: NonNeg = None
    vxlanPort: PortNum = None
    vxlanVNI: Annotated[StrictInt, Field(ge=0, le=0xFFFFFF)] | None = None
    allowVXLANPacketsFromWorkloads: Bool = None
    allowIPIPPacketsFromWorkloads: Bool = None
    # --- reporting / health / metrics ---
    reportingInterval: Dur = None
    reportingTTL: Dur = None
    endpointReportingEnabled: Bool = None
    endpointReportingDelay: Dur = None
    endpointStatusPathPrefix: Str = None
    healthEnabled: Bool = None
    healthHost: Str = None
    healthPort: PortNum = None
    healthTimeoutOverrides: list[HealthTimeoutOverride] | None = None
    prometheusMetricsEnabled: Bool = None
    prometheusMetricsHost: (
        Annotated[StrictStr, _regex(r"^[a-zA-Z0-9:._+-]{1,64}$", "host")] | None
    ) = None
    prometheusMetricsPort: PortNum = None
    prometheusGoMetricsEnabled: Bool = None
    prometheusProcessMetricsEnabled: Bool = None
    prometheusWireGuardMetricsEnabled: Bool = None
    prometheusMetricsCAFile: Str = None
    prometheusMetricsCertFile: Str = None
    prometheusMetricsKeyFile: Str = None
    prometheusMetricsClientAuth: Str = None
    usageReportingEnabled: Bool = None
    usageReportingInitialDelay: Dur = None
    usageReportingInterval: Dur = None
    # --- failsafe, node ports, NAT ---
    failsafeInboundHostPorts: list[ProtoPort] | None = None
    failsafeOutboundHostPorts: list[ProtoPort] | None = None
    kubeNodePortRanges: Annotated[list[NumericPort], Field(max_length=7)] | None = None
    policySyncPathPrefix: Str = None
    natPortRange: NumericPort | None = None
    natOutgoingAddress: IPv4Addr | None = None
    natOutgoingExclusions: Literal["IPPoolsOnly", "IPPoolsAndHostIPs"] | None = None
    externalNodesList: list[StrictStr] | None = None
    # --- routes ---
    deviceRouteSourceAddress: IPv4Addr | None = None
    deviceRouteSourceAddressIPv6: IPv6Addr | None = None
    deviceRouteProtocol: Annotated[StrictInt, Field(ge=0, le=255)] | None = None
    removeExternalRoutes: Bool = None
    programClusterRoutes: (
        Literal["Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"] | None
    ) = None
    routeSource: Annotated[StrictStr, _ci_words("WorkloadIPs", "CalicoIPAM")] | None = None
    routeTableRanges: list[RouteTableIDRange] | None = None
    routeTableRange: RouteTableRange | None = None
    routeSyncDisabled: Bool = None
    ipv4NormalRoutePriority: RoutePriority | None = None
    ipv4ElevatedRoutePriority: RoutePriority | None = None
    ipv6NormalRoutePriority: RoutePriority | None = None
    ipv6ElevatedRoutePriority: RoutePriority | None = None
    liveMigrationRouteConvergenceTime: Dur = None
    localSubnetL2Reachability: Literal["Disabled", "PodsAndLoadBalancers"] | None = None
    localSubnetL2ReachabilityRefreshInterval: Dur = None
    # --- debug ---
    debugMemoryProfilePath: Str = None
    debugDisableLogDropping: Bool = None
    debugSimulateCalcGraphHangAfter: Dur = None
    debugSimulateDataplaneHangAfter: Dur = None
    debugSimulateDataplaneApplyDelay: Dur = None
    debugHost: Str = None
    debugPort: PortNum = None
    # --- XDP / sidecar ---
    sidecarAccelerationEnabled: Bool = None
    xdpEnabled: Bool = None
    genericXDPEnabled: Bool = None
    # --- BPF dataplane ---
    bpfEnabled: Bool = None
    bpfDisableUnprivileged: Bool = None
    bpfLogLevel: Annotated[StrictStr, _ci_words("Off", "Info", "Debug")] | None = None
    bpfConntrackLogLevel: Literal["Off", "Debug"] | None = None
    bpfConntrackMode: Literal["Auto", "Userspace", "BPFProgram"] | None = None
    bpfConntrackTimeouts: BPFConntrackTimeouts | None = None
    bpfLogFilters: dict[str, StrictStr] | None = None
    bpfCTLBLogFilter: Str = None
    bpfDataIfacePattern: Regexp = None
    bpfL3IfacePattern: Regexp = None
    bpfConnectTimeLoadBalancingEnabled: Bool = None
    bpfConnectTimeLoadBalancing: Literal["TCP", "Enabled", "Disabled"] | None = None
    bpfHostNetworkedNATWithoutCTLB: EnabledDisabled = None
    bpfExternalServiceMode: Annotated[StrictStr, _ci_words("Tunnel", "DSR")] | None = None
    bpfDSROptoutCIDRs: list[CIDR] | None = None
    bpfExtToServiceConnmark: Uint32 = None
    bpfKubeProxyIptablesCleanupEnabled: Bool = None
    bpfKubeProxyMinSyncPeriod: Dur = None
    bpfKubeProxyEndpointSlicesEnabled: Bool = None
    bpfKubeProxyHealthzPort: PortNum = None
    bpfPSNATPorts: NumericPort | None = None
    bpfMapSizeNATFrontend: NonNeg = None
    bpfMapSizeNATBackend: NonNeg = None
    bpfMapSizeNATAffinity: NonNeg = None
    bpfMapSizeRoute: NonNeg = None
    bpfMapSizeConntrack: NonNeg = None
    bpfMapSizePerCpuConntrack: NonNeg = None
    bpfMapSizeConntrackScaling: (
        Annotated[StrictStr, _ci_words("Disabled", "DoubleIfFull")] | None
    ) = None
    bpfMapSizeConntrackCleanupQueue: Annotated[StrictInt, Field(ge=1)] | None = None
    bpfMapSizeIPSets: NonNeg = None
    bpfMapSizeIfState: NonNeg = None
    bpfHostConntrackBypass: Bool = None
    bpfEnforceRPF: Annotated[StrictStr, _ci_words("Disabled", "Strict", "Loose")] | None = None
    bpfPolicyDebugEnabled: Bool = None
    bpfForceTrackPacketsFromIfaces: list[IfaceFilter] | None = None
    bpfDisableGROForIfaces: Regexp = None
    bpfExcludeCIDRsFromNAT: list[CIDR] | None = None
    bpfExportBufferSizeMB: NonNeg = None
    bpfRedirectToPeer: Literal["Enabled", "Disabled", "L2Only"] | None = None
    bpfProfiling: EnabledDisabled = None
    bpfAttachType: Literal["TC", "TCX"] | None = None
    bpfJITHardening: Literal["Auto", "Strict"] | None = None
    bpfIPFragTimeout: Dur = None
    bpfIPFragmentReassemblyEnabled: Bool = None
    bpfMaglevMaxEndpointsPerService: Annotated[StrictInt, Field(ge=1, le=3000)] | None = None
    bpfMaglevMaxServices: Annotated[StrictInt, Field(ge=1, le=3000)] | None = None
    bpfOverlayHostSourceIP: Literal["TunnelAddress", "HostAddress"] | None = None
    # --- flow logs ---
    flowLogsFlushInterval: Dur = None
    flowLogsCollectorDebugTrace: Bool = None
    flowLogsGoldmaneServer: Str = None
    flowLogsLocalReporter: Literal["Disabled", "Enabled"] | None = None
    flowLogsPolicyEvaluationMode: Literal["None", "Continuous"] | None = None
    # Calico Enterprise's file-reporter names (pycalico: the local SQLite store) and
    # pycalico's own (docs/flowlogs.md).
    flowLogsFileEnabled: Bool = None
    flowLogsFileDirectory: Str = None
    flowLogsFileMaxFileSizeMB: Annotated[StrictInt, Field(ge=1)] | None = None
    flowLogsRetention: Dur = None
    flowLogsAPIPort: Annotated[StrictInt, Field(ge=0, le=65535)] | None = None
    flowLogsMaxFlows: Annotated[StrictInt, Field(ge=1)] | None = None
    flowLogsAPIHost: Annotated[StrictStr, _regex(r"^[a-zA-Z0-9:._-]{1,253}$", "host")] | None = None
    flowLogsAPITokenFile: Str = None
    flowLogsAPICertFile: Str = None
    flowLogsAPIKeyFile: Str = None
    flowLogsAPICAFile: Str = None
    # --- WireGuard ---
    wireguardEnabled: Bool = None
    wireguardEnabledV6: Bool = None
    wireguardThreadingEnabled: Bool = None
    wireguardListeningPort: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    wireguardListeningPortV6: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    wireguardRoutingRulePriority: Annotated[StrictInt, Field(ge=1, le=32765)] | None = None
    wireguardInterfaceName: Annotated[StrictStr, AfterValidator(_interface_name)] | None = None
    wireguardInterfaceNameV6: Annotated[StrictStr, AfterValidator(_interface_name)] | None = None
    wireguardMTU: NonNeg = None
    wireguardMTUV6: NonNeg = None
    wireguardHostEncryptionEnabled: Bool = None
    wireguardKeepAlive: Dur = None
    # --- misc ---
    awsSrcDstCheck: Literal["DoNothing", "Enable", "Disable"] | None = None
    serviceLoopPrevention: Annotated[StrictStr, _ci_words("Drop", "Reject", "Disabled")] | None = (
        None
    )
    workloadSourceSpoofing: Annotated[StrictStr, _ci_words("Disabled", "Any")] | None = None
    mtuIfacePattern: Regexp = None
    floatingIPs: EnabledDisabled = None
    windowsManageFirewallRules: EnabledDisabled = None
    goGCThreshold: GoSetting = None
    goMemoryLimitMB: GoSetting = None
    goMaxProcs: GoSetting = None
    istioAmbientMode: EnabledDisabled = None
    istioDSCPMark: Annotated[StrictInt | StrictStr, AfterValidator(_dscp)] | None = None
    nodeSelector: Annotated[StrictStr, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _defaults(self) -> FelixConfigurationSpec:
        """The defaults Calico's CRD schema fills on write."""
        if self.nftablesMode is None:
            self.nftablesMode = "Auto"
        if self.floatingIPs is None:
            self.floatingIPs = "Disabled"
        if self.bpfConnectTimeLoadBalancing is None:
            self.bpfConnectTimeLoadBalancing = "TCP"
        if self.bpfHostNetworkedNATWithoutCTLB is None:
            self.bpfHostNetworkedNATWithoutCTLB = "Enabled"
        return self

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        p = f"{path}." if path else ""
        check_selector(self.nodeSelector, p + "nodeSelector", problems)
        for i, cidr in enumerate(self.externalNodesList or []):
            try:
                if parse_cidr(cidr).version != 4:
                    problems.add(f"{p}externalNodesList[{i}]", f"{cidr!r} is not an IPv4 CIDR")
            except ValueError:
                problems.add(f"{p}externalNodesList[{i}]", f"invalid CIDR {cidr!r}")
        for key in self.bpfLogFilters or {}:
            if not re.match(_IFACE, key):
                problems.add(p + "bpfLogFilters", f"invalid interface name {key!r}")
        if self.routeTableRange is not None and self.routeTableRanges is not None:
            problems.add(
                p + "routeTableRange", "routeTableRange and routeTableRanges cannot both be set"
            )
        if self.routeTableRanges:
            total = sum(r.max - r.min + 1 for r in self.routeTableRanges)
            if total > ROUTE_TABLE_RANGE_MAX_TABLES:
                problems.add(
                    p + "routeTableRanges",
                    f"targets too many tables ({total} > {ROUTE_TABLE_RANGE_MAX_TABLES})",
                )


def is_scoped_name(name: str) -> bool:
    """True for ``default`` and ``node.<name>`` FelixConfiguration/BGPConfiguration names."""
    return name == "default" or name.startswith("node.")


@register("FelixConfiguration", aliases=("felixconfiguration", "felixconfig", "felixconfigs"))
class FelixConfiguration(Resource):
    """Felix settings: ``default`` (global), ``node.<name>`` or selector-scoped."""

    kind: str = "FelixConfiguration"
    spec: Annotated[FelixConfigurationSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=lambda: FelixConfigurationSpec.model_validate({})
    )

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.spec.nodeSelector is not None and is_scoped_name(self.metadata.name):
            problems.add(
                "spec.nodeSelector",
                "nodeSelector must not be set on the 'default' or per-node ('node.*') "
                "FelixConfiguration",
            )
