"""BGP kinds of the v3 API: BGPConfiguration, BGPPeer, BGPFilter (+ small shared config types).

Owns Calico's field names, types and validation for these kinds (``bgpconfig.go``,
``bgppeer.go``, ``bgpfilter.go`` and the matching Go-validator / CRD CEL rules). Also owns the
small value types the other "config" kind modules reuse: :data:`ASNumber` (int or dotted
``a.b``, normalised to an int), :data:`Duration` (Go ``time.ParseDuration`` syntax, kept as
written; :func:`duration_seconds` parses it), :class:`BGPPassword` (``secretKeyRef``) and IP
helpers that reject what Go's ``net.ParseIP`` rejects.

Invariants: field-format problems are pydantic errors naming the field; cross-field rules live in
``check``; decode fills only the defaults Calico's CRDs fill (``logSeverityScreen: Info``,
``serviceLoadBalancerAggregation: Enabled``, ``programClusterRoutes: EnabledNoEncapOnly``);
the other effective defaults are constants here (:data:`DEFAULT_AS_NUMBER`,
:data:`DEFAULT_LISTEN_PORT`) for consumers to apply.
"""

from __future__ import annotations

import ipaddress
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

from pycalico.api.base import DNS1123_SUBDOMAIN, Model, Problems, Resource, register
from pycalico.api.common import check_selector, parse_cidr
from pycalico.model.durations import parse_duration

DEFAULT_AS_NUMBER = 64512
DEFAULT_LISTEN_PORT = 179
MAX_ROUTE_PRIORITY = 2147483646

# --- shared small types ---------------------------------------------------------------------


def _as_number(value: Any) -> int:
    """numorstring.ASNumber: uint32, or ``"a.b"`` (two 16-bit halves), or a numeric string."""
    if isinstance(value, bool):
        raise ValueError("AS number must be an integer or 'a.b'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"\d+", value):
        n = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value):
        hi, lo = (int(p) for p in value.split("."))
        if hi > 0xFFFF or lo > 0xFFFF:
            raise ValueError(f"invalid AS number {value!r}: each dotted half must be 0-65535")
        n = (hi << 16) | lo
    else:
        raise ValueError(f"invalid AS number {value!r}: must be an integer or 'a.b'")
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"invalid AS number {value!r}: must be 0-4294967295")
    return n


ASNumber = Annotated[int, BeforeValidator(_as_number)]


def duration_seconds(text: str) -> float:
    """Parse a Go duration (``1h2m3.5s``, ``-1ns``, ``0``) into seconds; ValueError if invalid
    (:func:`pycalico.model.durations.parse_duration`, Go's strict signed form)."""
    return parse_duration(text, bare_numbers=False, negative=True)


def _duration(value: str) -> str:
    duration_seconds(value)
    return value


def _nonneg_duration(value: str) -> str:
    if duration_seconds(value) < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return value


Duration = Annotated[StrictStr, AfterValidator(_duration)]
"""A Go duration string, kept as written (may be negative)."""
NonNegDuration = Annotated[StrictStr, AfterValidator(_nonneg_duration)]


def go_parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Go ``net.ParseIP``: a bare address, no mask, no zone."""
    if "%" in text or "/" in text:
        raise ValueError(f"invalid IP address {text!r}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid IP address {text!r}") from None


def _ipv4(value: str) -> str:
    if go_parse_ip(value).version != 4:
        raise ValueError(f"{value!r} is not an IPv4 address")
    return value


def _ipv6(value: str) -> str:
    if go_parse_ip(value).version != 6:
        raise ValueError(f"{value!r} is not an IPv6 address")
    return value


def _any_ip(value: str) -> str:
    go_parse_ip(value)
    return value


IPv4Addr = Annotated[StrictStr, AfterValidator(_ipv4)]
IPv6Addr = Annotated[StrictStr, AfterValidator(_ipv6)]
GoIP = Annotated[StrictStr, AfterValidator(_any_ip)]


def _masked_net(value: str) -> str:
    """Calico ``net``: a strictly masked CIDR, or a bare IP (a full-length network)."""
    net = parse_cidr(value)
    if "/" in value and ipaddress.ip_interface(value).ip != net.network_address:
        raise ValueError(f"{value!r} is not a strictly masked network")
    return value


MaskedNet = Annotated[StrictStr, AfterValidator(_masked_net)]


def masked_net_of_family(value: str, version: int) -> str:
    _masked_net(value)
    if parse_cidr(value).version != version:
        raise ValueError(f"{value!r} is not an IPv{version} network")
    return value


def _name(value: str) -> str:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f"invalid name {value!r}: must be lower case alphanumeric characters, '-' or '.'"
        )
    return value


ResourceName = Annotated[StrictStr, AfterValidator(_name)]

_LOG_LEVEL = re.compile(r"^(Trace|Debug|Info|Warning|Error|Fatal)?$", re.IGNORECASE)


def _log_level(value: str) -> str:
    if not _LOG_LEVEL.match(value):
        raise ValueError(
            f"invalid log severity {value!r}: must be one of Trace, Debug, Info, Warning, "
            "Error, Fatal"
        )
    return value


LogLevel = Annotated[StrictStr, AfterValidator(_log_level)]


class SecretKeySelector(Model):
    name: StrictStr = ""
    key: StrictStr
    optional: StrictBool | None = None


class BGPPassword(Model):
    """A BGP password taken from a Kubernetes secret key."""

    secretKeyRef: SecretKeySelector | None = None


def null_to_empty(value: Any) -> Any:
    """Go decodes ``spec: null`` to the zero struct; so do we."""
    return {} if value is None else value


# --- BGPConfiguration -----------------------------------------------------------------------

_IGNORED_IFACE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}$")


def _ignored_interface(value: str) -> str:
    if value == "*" or not _IGNORED_IFACE.match(value):
        raise ValueError(f"invalid interface name {value!r}")
    return value


IgnoredInterface = Annotated[StrictStr, AfterValidator(_ignored_interface)]

_STD_COMMUNITY = re.compile(r"^(\d+):(\d+)$")
_LARGE_COMMUNITY = re.compile(r"^(\d+):(\d+):(\d+)$")


def community_problem(value: str) -> str | None:
    """Why ``value`` is not a BGP community literal (``aa:nn`` 16-bit / ``aa:nn:mm`` 32-bit)."""
    if _STD_COMMUNITY.match(value):
        bits = 16
    elif _LARGE_COMMUNITY.match(value):
        bits = 32
    else:
        return f"invalid community {value!r}: must be 'aa:nn' or 'aa:nn:mm'"
    if any(int(p) >= 1 << bits for p in value.split(":")):
        return f"invalid community value {value!r}, expected {bits} bit values"
    return None


def _community(value: str) -> str:
    why = community_problem(value)
    if why:
        raise ValueError(why)
    return value


CommunityValue = Annotated[StrictStr, AfterValidator(_community)]


class CIDRBlock(Model):
    cidr: MaskedNet | None = None


class Community(Model):
    name: ResourceName
    value: StrictStr

    def check(self, path: str, problems: Problems) -> None:
        why = community_problem(self.value)
        if why:
            problems.add(f"{path}.value", why)


class PrefixAdvertisement(Model):
    cidr: MaskedNet
    communities: list[StrictStr]


def _route_priority(value: int) -> int:
    if not 1 <= value <= MAX_ROUTE_PRIORITY:
        raise ValueError(f"route priority {value} must be between 1 and {MAX_ROUTE_PRIORITY}")
    return value


RoutePriority = Annotated[StrictInt, AfterValidator(_route_priority)]


class BGPConfigurationSpec(Model):
    logSeverityScreen: LogLevel | None = None
    nodeToNodeMeshEnabled: StrictBool | None = None
    asNumber: ASNumber | None = None
    serviceLoadBalancerIPs: list[CIDRBlock] | None = None
    serviceExternalIPs: list[CIDRBlock] | None = None
    serviceClusterIPs: list[CIDRBlock] | None = None
    serviceLoadBalancerAggregation: Literal["Enabled", "Disabled"] | None = None
    communities: list[Community] | None = None
    prefixAdvertisements: list[PrefixAdvertisement] | None = None
    listenPort: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    bindMode: Literal["None", "NodeIP"] | None = None
    nodeMeshPassword: BGPPassword | None = None
    nodeMeshMaxRestartTime: Duration | None = None
    # pycalico's own: BGPPeer's failureDetectionMode for the node-to-node mesh sessions.
    nodeMeshFailureDetectionMode: Literal["None", "BFDIfDirectlyConnected"] | None = None
    ignoredInterfaces: list[IgnoredInterface] | None = None
    localWorkloadPeeringIPV4: IPv4Addr | None = None
    localWorkloadPeeringIPV6: IPv6Addr | None = None
    programClusterRoutes: (
        Literal["Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"] | None
    ) = None
    ipv4NormalRoutePriority: RoutePriority | None = None
    ipv6NormalRoutePriority: RoutePriority | None = None
    ipv4ElevatedRoutePriority: RoutePriority | None = None
    ipv6ElevatedRoutePriority: RoutePriority | None = None

    @model_validator(mode="after")
    def _defaults(self) -> BGPConfigurationSpec:
        if self.logSeverityScreen is None:
            self.logSeverityScreen = "Info"
        if self.serviceLoadBalancerAggregation is None:
            self.serviceLoadBalancerAggregation = "Enabled"
        if self.programClusterRoutes is None:
            self.programClusterRoutes = "EnabledNoEncapOnly"
        return self

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        communities = self.communities or []
        adverts = self.prefixAdvertisements or []
        if communities and not adverts:
            problems.add(
                f"{path}.communities",
                "communities are defined but not used in prefixAdvertisements",
            )
        names = {c.name for c in communities}
        for i, pa in enumerate(adverts):
            for j, c in enumerate(pa.communities):
                if c in names:
                    continue
                why = community_problem(c)
                if why:
                    problems.add(
                        f"{path}.prefixAdvertisements[{i}].communities[{j}]",
                        f"community {c!r} is invalid or not defined ({why})",
                    )
        if self.nodeToNodeMeshEnabled is False:
            if self.nodeMeshPassword is not None:
                problems.add(
                    f"{path}.nodeMeshPassword",
                    "nodeMeshPassword cannot be set when nodeToNodeMeshEnabled is false",
                )
            if self.nodeMeshFailureDetectionMode not in (None, "None"):
                problems.add(
                    f"{path}.nodeMeshFailureDetectionMode",
                    "nodeMeshFailureDetectionMode cannot be set when nodeToNodeMeshEnabled "
                    "is false",
                )
            if self.nodeMeshMaxRestartTime is not None:
                problems.add(
                    f"{path}.nodeMeshMaxRestartTime",
                    "nodeMeshMaxRestartTime cannot be set when nodeToNodeMeshEnabled is false",
                )


@register("BGPConfiguration", aliases=("bgpconfiguration", "bgpconfig", "bgpconfigs"))
class BGPConfiguration(Resource):
    """Cluster (``default``) or per-node (``node.<name>``) BGP settings."""

    kind: str = "BGPConfiguration"
    spec: Annotated[BGPConfigurationSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=lambda: BGPConfigurationSpec.model_validate({})
    )


# --- BGPPeer --------------------------------------------------------------------------------

_IPV4_PORT = re.compile(r"^(\d+).(\d+).(\d+).(\d+):(\d+)$")
_IPV6_PORT = re.compile(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$")


def split_peer_ip(value: str) -> tuple[str, int | None]:
    """Split ``ip``, ``ipv4:port`` or ``[ipv6]:port`` (Calico ``processIPPort``)."""
    port: int | None = None
    ip = value
    m4, m6 = _IPV4_PORT.match(value), _IPV6_PORT.match(value)
    if m4 or m6:
        if m6:
            ip, port_s = m6.group(1), m6.group(2)
        else:
            ip, _, port_s = value.rpartition(":")
        port = int(port_s)
        if not 1 <= port <= 65535:
            raise ValueError(f"invalid peerIP {value!r}: port must be between 1 and 65535")
    try:
        go_parse_ip(ip)
    except ValueError:
        raise ValueError(
            f"invalid peerIP {value!r}: must be '<IP>', '<IPv4>:<port>' or '[<IPv6>]:<port>'"
        ) from None
    return ip, port


def _peer_ip(value: str) -> str:
    split_peer_ip(value)
    return value


PeerIP = Annotated[StrictStr, AfterValidator(_peer_ip)]


class BGPPeerSpec(Model):
    node: ResourceName | None = None
    nodeSelector: StrictStr | None = None
    peerIP: PeerIP | None = None
    asNumber: ASNumber | None = None
    localASNumber: ASNumber | None = None
    peerSelector: StrictStr | None = None
    keepOriginalNextHop: StrictBool | None = None
    nextHopMode: Literal["Auto", "Self", "Keep"] | None = None
    password: BGPPassword | None = None
    sourceAddress: Literal["UseNodeIP", "None"] | None = None
    failureDetectionMode: Literal["None", "BFDIfDirectlyConnected"] | None = None
    restartMode: Literal["GracefulRestart", "LongLivedGracefulRestart"] | None = None
    maxRestartTime: Duration | None = None
    birdGatewayMode: Literal["Recursive", "DirectIfDirectlyConnected"] | None = None
    keepaliveTime: Duration | None = None
    numAllowedLocalASNumbers: Annotated[StrictInt, Field(ge=0, le=2147483647)] | None = None
    ttlSecurity: Annotated[StrictInt, Field(ge=0, le=255)] | None = None
    reachableBy: GoIP | None = None
    filters: list[ResourceName] | None = None
    localWorkloadSelector: StrictStr | None = None
    reversePeering: Literal["Auto", "Manual"] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        p = f"{path}." if path else ""
        for field_name in ("nodeSelector", "peerSelector", "localWorkloadSelector"):
            value = getattr(self, field_name)
            if value:
                if len(value) > 1024:
                    problems.add(p + field_name, "selector is longer than 1024 characters")
                check_selector(value, p + field_name, problems)
        if self.node and self.nodeSelector:
            problems.add(p + "node", "node and nodeSelector cannot both be set")
        if self.peerIP and self.peerSelector:
            problems.add(p + "peerIP", "peerIP and peerSelector cannot both be set")
        if self.asNumber and self.peerSelector:
            problems.add(p + "asNumber", "asNumber must be empty when peerSelector is set")
        if self.localWorkloadSelector:
            if not self.asNumber:
                problems.add(
                    p + "asNumber", "asNumber is required when localWorkloadSelector is set"
                )
            if self.peerIP:
                problems.add(p + "peerIP", "peerIP must be empty when localWorkloadSelector is set")
            if self.peerSelector:
                problems.add(
                    p + "peerSelector",
                    "peerSelector must be empty when localWorkloadSelector is set",
                )
        if self.reachableBy:
            if not self.peerIP:
                problems.add(p + "reachableBy", "reachableBy must be empty when peerIP is empty")
            else:
                try:
                    peer_ip, _ = split_peer_ip(self.peerIP)
                    if go_parse_ip(peer_ip).version != go_parse_ip(self.reachableBy).version:
                        problems.add(
                            p + "reachableBy", "reachableBy and peerIP address family mismatched"
                        )
                except ValueError:
                    pass  # already reported on the field itself
        if self.keepOriginalNextHop and self.nextHopMode is not None:
            problems.add(
                p + "keepOriginalNextHop",
                "keepOriginalNextHop and nextHopMode cannot both be set; keepOriginalNextHop is "
                "deprecated, use nextHopMode instead",
            )


@register("BGPPeer", aliases=("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"))
class BGPPeer(Resource):
    """A BGP peering: which nodes peer with which IP / which other nodes."""

    kind: str = "BGPPeer"
    spec: Annotated[BGPPeerSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=lambda: BGPPeerSpec.model_validate({})
    )


# --- BGPFilter ------------------------------------------------------------------------------

_FILTER_IFACE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}$")


def _filter_interface(value: str) -> str:
    if value != "*" and not _FILTER_IFACE.match(value):
        raise ValueError(f"invalid interface {value!r}")
    return value


class PrefixLengthV4(Model):
    min: Annotated[StrictInt, Field(ge=0, le=32)] | None = None
    max: Annotated[StrictInt, Field(ge=0, le=32)] | None = None


class PrefixLengthV6(Model):
    min: Annotated[StrictInt, Field(ge=0, le=128)] | None = None
    max: Annotated[StrictInt, Field(ge=0, le=128)] | None = None


class CommunityMatch(Model):
    values: Annotated[list[CommunityValue], Field(min_length=1, max_length=1)]


class AddCommunity(Model):
    value: CommunityValue


class PrependASPath(Model):
    prefix: Annotated[list[ASNumber], Field(min_length=1, max_length=10)]


class SetPriority(Model):
    value: RoutePriority


class FilterOperation(Model):
    """Exactly one of addCommunity / prependASPath / setPriority."""

    addCommunity: AddCommunity | None = None
    prependASPath: PrependASPath | None = None
    setPriority: SetPriority | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        n = sum(x is not None for x in (self.addCommunity, self.prependASPath, self.setPriority))
        if n != 1:
            problems.add(path, "exactly one operation must be set")


class _FilterRule(Model):
    interface: Annotated[StrictStr, AfterValidator(_filter_interface)] | None = None
    source: Literal["RemotePeers"] | None = None
    matchOperator: Literal["Equal", "NotEqual", "In", "NotIn"] | None = None
    peerType: Literal["eBGP", "iBGP"] | None = None
    communities: CommunityMatch | None = None
    asPathPrefix: list[ASNumber] | None = None
    priority: RoutePriority | None = None
    action: Literal["Accept", "Reject"]
    operations: Annotated[list[FilterOperation], Field(min_length=1, max_length=10)] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        cidr: str | None = getattr(self, "cidr", None)
        prefix_length = getattr(self, "prefixLength", None)
        if cidr and not self.matchOperator:
            problems.add(f"{path}.matchOperator", "matchOperator is required when cidr is set")
        if self.matchOperator and not cidr:
            problems.add(f"{path}.cidr", "cidr is required when matchOperator is set")
        if prefix_length is not None and not cidr:
            problems.add(f"{path}.cidr", "cidr is required when prefixLength is set")
        if self.operations and self.action != "Accept":
            problems.add(f"{path}.operations", "operations may only be used with action Accept")


class BGPFilterRuleV4(_FilterRule):
    cidr: Annotated[StrictStr, AfterValidator(lambda v: masked_net_of_family(v, 4))] | None = None
    prefixLength: PrefixLengthV4 | None = None


class BGPFilterRuleV6(_FilterRule):
    cidr: Annotated[StrictStr, AfterValidator(lambda v: masked_net_of_family(v, 6))] | None = None
    prefixLength: PrefixLengthV6 | None = None


class BGPFilterSpec(Model):
    exportV4: list[BGPFilterRuleV4] | None = None
    importV4: list[BGPFilterRuleV4] | None = None
    exportV6: list[BGPFilterRuleV6] | None = None
    importV6: list[BGPFilterRuleV6] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        p = f"{path}." if path else ""
        for name in ("importV4", "importV6"):
            for i, rule in enumerate(getattr(self, name) or []):
                if rule.source:
                    problems.add(
                        f"{p}{name}[{i}].source", "source is not applicable to import rules"
                    )


@register("BGPFilter", aliases=("bgpfilter", "bgpfilters"))
class BGPFilter(Resource):
    """Ordered import/export route filter rules, referenced by BGPPeer ``filters``."""

    kind: str = "BGPFilter"
    spec: Annotated[BGPFilterSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=lambda: BGPFilterSpec.model_validate({})
    )
