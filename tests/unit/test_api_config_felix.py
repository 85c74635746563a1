"""FelixConfiguration: field types, enum words, ranges, cross-field and name rules."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode, encode, resolve_kind
from pycalico.api.kinds_felix import FELIX_DEFAULTS, FelixConfiguration


def felix(spec: dict[str, Any], name: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": name},
        "spec": spec,
    }


def problems_of(d: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as exc:
        decode(d)
    return [f"{p.path}: {p.reason}" for p in exc.value.problems]


def test_aliases() -> None:
    for word in ("felixconfiguration", "felixconfig", "felixconfigs"):
        assert resolve_kind(word) == "FelixConfiguration"


def test_crd_defaults_and_round_trip() -> None:
    res = decode(felix({"workloadSourceSpoofing": "Any"}))
    assert isinstance(res, FelixConfiguration)
    spec = encode(res)["spec"]
    assert spec == {
        "nftablesMode": "Auto",
        "bpfConnectTimeLoadBalancing": "TCP",
        "bpfHostNetworkedNATWithoutCTLB": "Enabled",
        "workloadSourceSpoofing": "Any",
        "floatingIPs": "Disabled",
    }
    assert encode(decode(encode(res))) == encode(res)
    assert FELIX_DEFAULTS["vxlanVNI"] == 4096 and FELIX_DEFAULTS["healthPort"] == 9099


def test_explicit_crd_defaulted_fields_are_kept() -> None:
    res = decode(felix({"nftablesMode": "Enabled", "floatingIPs": "Enabled"}))
    assert isinstance(res, FelixConfiguration)
    assert (res.spec.nftablesMode, res.spec.floatingIPs) == ("Enabled", "Enabled")


@pytest.mark.parametrize(
    "spec",
    [
        {"iptablesBackend": "NFT"},
        {"iptablesBackend": "Legacy"},
        {"defaultEndpointToHostAction": "drop"},
        {"defaultEndpointToHostAction": "Return"},
        {"iptablesFilterDenyAction": "Reject", "nftablesFilterAllowAction": "return"},
        {"logSeverityScreen": "Fatal", "logSeverityFile": "Debug", "logSeveritySys": "Info"},
        {"externalNodesList": ["1.1.1.1", "1.1.1.2/32", "1.1.3.0/23"]},
        {"iptablesNATOutgoingInterfaceFilter": "cali-123"},
        {"bpfLogLevel": "Off", "bpfExternalServiceMode": "DSR"},
        {"bpfExtToServiceConnmark": 0},
        {"bpfExtToServiceConnmark": 0xFFFFFFFF},
        {"routeTableRange": {"min": 1, "max": 250}},
        {"routeTableRanges": [{"min": 8, "max": 8}, {"min": 7, "max": 7}]},
        {"routeTableRanges": [{"min": 1, "max": 65535}]},
        {"healthTimeoutOverrides": [{"name": "Valid name_1", "timeout": "0s"}]},
        {"ipv4ElevatedRoutePriority": 2147483646, "ipv6NormalRoutePriority": 1},
        {"awsSrcDstCheck": "Enable"},
        {"prometheusMetricsHost": "10.0.0.1"},
        {"prometheusMetricsHost": "fe80::ea7a:70fa:cf74:25d5"},
        {"deviceRouteSourceAddress": "1.2.3.4", "deviceRouteSourceAddressIPv6": "aabb::1"},
        {"natOutgoingAddress": "10.0.0.1", "natPortRange": "32768:65535"},
        {"wireguardInterfaceName": "wg0", "wireguardListeningPort": 12345},
        {"wireguardRoutingRulePriority": 32765},
        {"serviceLoopPrevention": "Disabled"},
        {"bpfForceTrackPacketsFromIfaces": ["docker0", "docker+"]},
        {"kubeNodePortRanges": ["30000:32767", 31000, "1:2", "3:4", "5:6", "7:8", "9:10"]},
        {
            "failsafeInboundHostPorts": [
                {"protocol": "TCP", "port": 22},
                {"protocol": "UDP", "port": 0, "net": "10.0.0.0/8"},
                {"protocol": "SCTP", "port": 20},
            ]
        },
        {"failsafeOutboundHostPorts": []},
        {
            "reportingInterval": "30s",
            "routeRefreshInterval": "1m30s",
            "iptablesLockProbeInterval": "50ms",
        },
        {"bpfDataIfacePattern": "^(en|eth).*", "mtuIfacePattern": "eth.*"},
        {"featureDetectOverride": "SNATFullyRandom=true,MASQFullyRandom=false"},
        {"featureDetectOverride": "RestoreSupportsLock="},
        {"featureGates": "BPFConnectTimeLoadBalancingWorkaround=enabled"},
        {"openstackRegion": "foo"},
        {"goGCThreshold": -1, "goMemoryLimitMB": 512, "goMaxProcs": -1},
        {"bpfMaglevMaxServices": 3000, "bpfMaglevMaxEndpointsPerService": 1},
        {"bpfConntrackTimeouts": {"tcpEstablished": "1h", "tcpFinsSeen": "Auto"}},
        {"logPrefix": "calico-packet %t/%n:"},
        {"istioDSCPMark": 23},
        {"bpfLogFilters": {"all": "tcp", "eth0": "udp port 53"}},
    ],
)
def test_valid_felix(spec: dict[str, Any]) -> None:
    assert isinstance(decode(felix(spec)), FelixConfiguration)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"iptablesBackend": "badVal"}, "spec.iptablesBackend", ""),
        ({"iptablesBackend": "nft"}, "spec.iptablesBackend", ""),
        ({"iptablesMangleAllowAction": "Drop"}, "spec.iptablesMangleAllowAction", ""),
        ({"defaultEndpointToHostAction": "Reject"}, "spec.defaultEndpointToHostAction", ""),
        ({"logSeverityScreen": "badVal"}, "spec.logSeverityScreen", "severity"),
        ({"logSeveritySys": "Critical"}, "spec.logSeveritySys", "severity"),
        ({"kubeNodePortRanges": ["testport"]}, "spec.kubeNodePortRanges[0]", "named port"),
        ({"kubeNodePortRanges": ["1:2"] * 8}, "spec.kubeNodePortRanges", ""),
        ({"kubeNodePortRanges": ["2000:1000"]}, "spec.kubeNodePortRanges[0]", ""),
        ({"natPortRange": "http"}, "spec.natPortRange", "named port"),
        ({"externalNodesList": ["foobar", "1.1.1.1"]}, "spec.externalNodesList[0]", "CIDR"),
        ({"externalNodesList": ["abcd::1"]}, "spec.externalNodesList[0]", "IPv4"),
        ({"openstackRegion": "FOO"}, "spec.openstackRegion", "DNS label"),
        (
            {"openstackRegion": "my-region-has-a-very-long-and-extremely-interesting-name"},
            "spec.openstackRegion",
            "too long",
        ),
        (
            {"iptablesNATOutgoingInterfaceFilter": "cali@123"},
            "spec.iptablesNATOutgoingInterfaceFilter",
            "",
        ),
        ({"bpfLogLevel": "badVal"}, "spec.bpfLogLevel", ""),
        ({"bpfExternalServiceMode": "Foo"}, "spec.bpfExternalServiceMode", ""),
        ({"bpfExtToServiceConnmark": -1}, "spec.bpfExtToServiceConnmark", ""),
        ({"bpfExtToServiceConnmark": 0x100000000}, "spec.bpfExtToServiceConnmark", ""),
        ({"bpfDataIfacePattern": "*"}, "spec.bpfDataIfacePattern", "regular expression"),
        ({"mtuIfacePattern": "*"}, "spec.mtuIfacePattern", "regular expression"),
        ({"routeTableRange": {"min": 0, "max": 250}}, "spec.routeTableRange", "1..250"),
        ({"routeTableRange": {"min": -5, "max": 250}}, "spec.routeTableRange", "1..250"),
        ({"routeTableRange": {"min": 50, "max": 45}}, "spec.routeTableRange", "1..250"),
        ({"routeTableRange": {"min": 1, "max": 253}}, "spec.routeTableRange", "1..250"),
        ({"routeTableRanges": [{"min": 0, "max": 250}]}, "spec.routeTableRanges[0]", "< 1"),
        ({"routeTableRanges": [{"min": 50, "max": 45}]}, "spec.routeTableRanges[0]", "greater"),
        ({"routeTableRanges": [{"min": 1, "max": 0xF00000000}]}, "spec.routeTableRanges", ""),
        ({"routeTableRanges": [{"min": 1, "max": 0x10000}]}, "spec.routeTableRanges", "too many"),
        (
            {
                "routeTableRanges": [
                    {"min": 1, "max": 2},
                    {"min": 3, "max": 4},
                    {"min": 5, "max": 65536},
                ]
            },
            "spec.routeTableRanges",
            "too many",
        ),
        (
            {
                "routeTableRange": {"min": 1, "max": 250},
                "routeTableRanges": [{"min": 1, "max": 250}],
            },
            "spec.routeTableRange",
            "both",
        ),
        (
            {"healthTimeoutOverrides": [{"name": "Valid", "timeout": "-1ns"}]},
            "spec.healthTimeoutOverrides[0].timeout",
            "negative",
        ),
        (
            {"healthTimeoutOverrides": [{"name": "%", "timeout": "10s"}]},
            "spec.healthTimeoutOverrides[0].name",
            "",
        ),
        (
            {"healthTimeoutOverrides": [{"name": "", "timeout": "10s"}]},
            "spec.healthTimeoutOverrides[0].name",
            "",
        ),
        ({"ipv4ElevatedRoutePriority": 0}, "spec.ipv4ElevatedRoutePriority", "between"),
        ({"ipv6NormalRoutePriority": 2147483647}, "spec.ipv6NormalRoutePriority", "between"),
        ({"awsSrcDstCheck": "enable"}, "spec.awsSrcDstCheck", ""),
        ({"bpfHostNetworkedNATWithoutCTLB": "badVal"}, "spec.bpfHostNetworkedNATWithoutCTLB", ""),
        ({"bpfConnectTimeLoadBalancing": "tcp"}, "spec.bpfConnectTimeLoadBalancing", ""),
        ({"natOutgoingAddress": "1.2.3.4/32"}, "spec.natOutgoingAddress", ""),
        ({"natOutgoingAddress": "aabb::1"}, "spec.natOutgoingAddress", "IPv4"),
        ({"natOutgoingAddress": "999.999.999.999"}, "spec.natOutgoingAddress", ""),
        ({"deviceRouteSourceAddress": "fd00::1"}, "spec.deviceRouteSourceAddress", "IPv4"),
        ({"deviceRouteSourceAddressIPv6": "10.0.0.1"}, "spec.deviceRouteSourceAddressIPv6", "IPv6"),
        (
            {"deviceRouteSourceAddressIPv6": "aabb::ffff/128"},
            "spec.deviceRouteSourceAddressIPv6",
            "",
        ),
        ({"prometheusMetricsHost": "0: 1::1"}, "spec.prometheusMetricsHost", ""),
        ({"prometheusMetricsHost": "localhost#"}, "spec.prometheusMetricsHost", ""),
        ({"wireguardInterfaceName": "wg&0"}, "spec.wireguardInterfaceName", ""),
        ({"wireguardListeningPort": 99999}, "spec.wireguardListeningPort", ""),
        ({"wireguardListeningPortV6": 0}, "spec.wireguardListeningPortV6", ""),
        ({"wireguardRoutingRulePriority": 32766}, "spec.wireguardRoutingRulePriority", ""),
        ({"debugPort": 65536}, "spec.debugPort", ""),
        ({"bpfKubeProxyHealthzPort": -1}, "spec.bpfKubeProxyHealthzPort", ""),
        ({"bpfMaglevMaxServices": 0}, "spec.bpfMaglevMaxServices", ""),
        ({"bpfMaglevMaxEndpointsPerService": 3001}, "spec.bpfMaglevMaxEndpointsPerService", ""),
        ({"goGCThreshold": -2}, "spec.goGCThreshold", ""),
        ({"serviceLoopPrevention": "Wibbly"}, "spec.serviceLoopPrevention", ""),
        (
            {"bpfForceTrackPacketsFromIfaces": ["cali-123", "cali@456"]},
            "spec.bpfForceTrackPacketsFromIfaces[1]",
            "",
        ),
        (
            {"failsafeInboundHostPorts": [{"protocol": "jolly-UDP", "port": 0}]},
            "spec.failsafeInboundHostPorts[0].protocol",
            "",
        ),
        (
            {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 65536}]},
            "spec.failsafeInboundHostPorts[0].port",
            "",
        ),
        (
            {"failsafeInboundHostPorts": [{"protocol": "TCP"}]},
            "spec.failsafeInboundHostPorts[0].port",
            "",
        ),
        ({"reportingInterval": "30"}, "spec.reportingInterval", "duration"),
        ({"routeRefreshInterval": "-5s"}, "spec.routeRefreshInterval", "negative"),
        ({"featureDetectOverride": "SNATFullyRandom=maybe"}, "spec.featureDetectOverride", ""),
        ({"logActionRateLimit": "10/week"}, "spec.logActionRateLimit", ""),
        ({"logActionRateLimitBurst": 10000}, "spec.logActionRateLimitBurst", ""),
        (
            {"bpfConntrackTimeouts": {"tcpEstablished": "forever"}},
            "spec.bpfConntrackTimeouts.tcpEstablished",
            "",
        ),
        ({"bpfLogFilters": {"bad iface": "tcp"}}, "spec.bpfLogFilters", "interface"),
        ({"istioDSCPMark": 64}, "spec.istioDSCPMark", "DSCP"),
        ({"ipv6Support": "yes"}, "spec.ipv6Support", ""),
        ({"noSuchField": 1}, "spec.noSuchField", ""),
    ],
)
def test_invalid_felix(spec: dict[str, Any], field: str, reason: str) -> None:
    found = problems_of(felix(spec))
    assert any(p.startswith(field) and reason in p for p in found), found


@pytest.mark.parametrize("name", ["default", "node.worker-1"])
def test_node_selector_forbidden_on_default_and_per_node(name: str) -> None:
    found = problems_of(felix({"nodeSelector": "role == 'edge'"}, name=name))
    assert any(p.startswith("spec.nodeSelector") and "must not be set" in p for p in found)


def test_selector_scoped_configuration() -> None:
    res = decode(felix({"nodeSelector": "role == 'edge'", "bpfEnabled": True}, name="edge-nodes"))
    assert isinstance(res, FelixConfiguration)
    found = problems_of(felix({"nodeSelector": "role == "}, name="edge-nodes"))
    assert any(p.startswith("spec.nodeSelector") for p in found)
