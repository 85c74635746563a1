"""BGPConfiguration, BGPPeer, BGPFilter: defaults, value types and every validation rule."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode, encode, resolve_kind
from pycalico.api.kinds_bgp import (
    BGPConfiguration,
    BGPFilter,
    BGPPeer,
    duration_seconds,
    split_peer_ip,
)


def doc(kind: str, spec: dict[str, Any], name: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def problems_of(d: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as exc:
        decode(d)
    return [f"{p.path}: {p.reason}" for p in exc.value.problems]


def assert_rejected(d: dict[str, Any], field: str, reason: str = "") -> None:
    found = problems_of(d)
    assert any(p.startswith(field) and reason in p for p in found), found


# --- shared value types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("120s", 120.0), ("5m30s", 330.0), ("1h", 3600.0), ("1.5s", 1.5), ("0", 0.0), ("-1ns", -1e-9)],
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "5 m", "abc", "1d", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        duration_seconds(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(64512, 64512), ("64512", 64512), ("1.10", 65546), (4294967295, 4294967295)],
)
def test_as_number_forms(value: Any, expected: int) -> None:
    res = decode(doc("BGPConfiguration", {"asNumber": value}))
    assert isinstance(res, BGPConfiguration)
    assert res.spec.asNumber == expected


@pytest.mark.parametrize("value", [-1, 4294967296, "1.65536", "abc", True])
def test_bad_as_numbers(value: Any) -> None:
    assert_rejected(doc("BGPConfiguration", {"asNumber": value}), "spec.asNumber")


# --- BGPConfiguration ------------------------------------------------------------------------


def test_bgpconfiguration_crd_defaults() -> None:
    res = decode(doc("BGPConfiguration", {"nodeToNodeMeshEnabled": False, "asNumber": 64512}))
    spec = encode(res)["spec"]
    assert spec["logSeverityScreen"] == "Info"
    assert spec["serviceLoadBalancerAggregation"] == "Enabled"
    assert spec["programClusterRoutes"] == "EnabledNoEncapOnly"
    assert spec["nodeToNodeMeshEnabled"] is False
    assert "listenPort" not in spec  # effective default 179 is applied by consumers


@pytest.mark.parametrize(
    "spec",
    [
        {"logSeverityScreen": "info"},
        {"logSeverityScreen": "Debug"},
        {"serviceClusterIPs": [{"cidr": "1.2.3.4"}], "serviceExternalIPs": [{"cidr": "fdf5::/64"}]},
        {"serviceLoadBalancerIPs": [{"cidr": "10.96.0.0/12"}]},
        {"ignoredInterfaces": ["valid_iface*", "interface_name"]},
        {"nodeToNodeMeshEnabled": True, "nodeMeshMaxRestartTime": "200s"},
        {"nodeMeshPassword": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"listenPort": 1790, "bindMode": "NodeIP"},
        {"localWorkloadPeeringIPV4": "1.2.3.4", "localWorkloadPeeringIPV6": "aabb::1"},
        {"ipv4NormalRoutePriority": 1024, "ipv6NormalRoutePriority": 2147483646},
        {
            "communities": [{"name": "c1", "value": "65535:65535"}],
            "prefixAdvertisements": [{"cidr": "10.0.0.0/24", "communities": ["c1", "0065535:01"]}],
        },
        {
            "prefixAdvertisements": [
                {"cidr": "2001:4860::/128", "communities": ["100:5964:4294967295", "100:5223"]}
            ]
        },
    ],
)
def test_valid_bgpconfigurations(spec: dict[str, Any]) -> None:
    assert isinstance(decode(doc("BGPConfiguration", spec)), BGPConfiguration)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"logSeverityScreen": "invalidLvl"}, "spec.logSeverityScreen", ""),
        ({"serviceExternalIPs": [{"cidr": "y.y.y.y"}]}, "spec.serviceExternalIPs[0].cidr", ""),
        ({"serviceClusterIPs": [{"cidr": "10.0.0.1/8"}]}, "spec.serviceClusterIPs[0].cidr", "mask"),
        ({"ignoredInterfaces": ["*"]}, "spec.ignoredInterfaces[0]", "interface"),
        ({"ignoredInterfaces": ["averyveryverylongname"]}, "spec.ignoredInterfaces[0]", ""),
        (
            {"nodeToNodeMeshEnabled": False, "nodeMeshPassword": {}},
            "spec.nodeMeshPassword",
            "nodeToNodeMeshEnabled",
        ),
        (
            {"nodeToNodeMeshEnabled": False, "nodeMeshMaxRestartTime": "120s"},
            "spec.nodeMeshMaxRestartTime",
            "nodeToNodeMeshEnabled",
        ),
        ({"nodeMeshMaxRestartTime": "2 minutes"}, "spec.nodeMeshMaxRestartTime", "duration"),
        ({"listenPort": 0}, "spec.listenPort", ""),
        ({"listenPort": 65536}, "spec.listenPort", ""),
        ({"bindMode": "All"}, "spec.bindMode", ""),
        ({"localWorkloadPeeringIPV4": "999.999.999.999"}, "spec.localWorkloadPeeringIPV4", ""),
        ({"localWorkloadPeeringIPV6": "1.2.3.4"}, "spec.localWorkloadPeeringIPV6", "IPv6"),
        ({"ipv4NormalRoutePriority": 0}, "spec.ipv4NormalRoutePriority", "between"),
        ({"communities": [{"name": "c", "value": "1:2"}]}, "spec.communities", "not used"),
        (
            {
                "communities": [{"value": "536:785"}],
                "prefixAdvertisements": [{"cidr": "10.0.0.0/24", "communities": ["1:1"]}],
            },
            "spec.communities[0].name",
            "",
        ),
        (
            {
                "communities": [{"name": "c", "value": "65536:1"}],
                "prefixAdvertisements": [{"cidr": "10.0.0.0/24", "communities": ["c"]}],
            },
            "spec.communities[0].value",
            "16 bit",
        ),
        (
            {
                "communities": [{"name": "c", "value": "4294967296:1:1"}],
                "prefixAdvertisements": [{"cidr": "10.0.0.0/24", "communities": ["c"]}],
            },
            "spec.communities[0].value",
            "32 bit",
        ),
        (
            {
                "communities": [{"name": "c", "value": "1:2:3:4"}],
                "prefixAdvertisements": [{"cidr": "10.0.0.0/24", "communities": ["c"]}],
            },
            "spec.communities[0].value",
            "",
        ),
        (
            {"prefixAdvertisements": [{"cidr": "10.0.0.0/24", "communities": ["nonexistent"]}]},
            "spec.prefixAdvertisements[0].communities[0]",
            "not defined",
        ),
        (
            {"prefixAdvertisements": [{"cidr": "2001:4860::/128", "communities": ["100:65536"]}]},
            "spec.prefixAdvertisements[0].communities[0]",
            "",
        ),
        (
            {"prefixAdvertisements": [{"communities": ["1:1"]}]},
            "spec.prefixAdvertisements[0].cidr",
            "",
        ),
        ({"prefixAdvertisements": [{"cidr": "10.0.0.0/24"}]}, "spec.prefixAdvertisements[0]", ""),
        ({"programClusterRoutes": "Sometimes"}, "spec.programClusterRoutes", ""),
    ],
)
def test_invalid_bgpconfigurations(spec: dict[str, Any], field: str, reason: str) -> None:
    assert_rejected(doc("BGPConfiguration", spec), field, reason)


def test_bgp_aliases() -> None:
    assert {resolve_kind(w) for w in ("bgpconfiguration", "bgpconfig", "bgpconfigs")} == {
        "BGPConfiguration"
    }
    assert {resolve_kind(w) for w in ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps")} == {
        "BGPPeer"
    }
    assert {resolve_kind(w) for w in ("bgpfilter", "bgpfilters")} == {"BGPFilter"}


# --- BGPPeer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("10.0.0.1", "10.0.0.1", None),
        ("10.0.0.1:179", "10.0.0.1", 179),
        ("[fd00::1]:179", "fd00::1", 179),
        ("fd00::1:179", "fd00::1:179", None),
        ("fd00::1", "fd00::1", None),
    ],
)
def test_split_peer_ip(text: str, ip: str, port: int | None) -> None:
    assert split_peer_ip(text) == (ip, port)


@pytest.mark.parametrize(
    "spec",
    [
        {"peerIP": "1.2.3.4"},
        {"peerIP": "192.168.1.1:500"},
        {"peerIP": "[9000::]:500"},
        {"peerIP": "[aabb::ffff]:4444", "reachableBy": "aabb:aabb::ffff"},
        {"peerIP": "9.9.9.9:4444", "reachableBy": "1.2.3.4"},
        {"nodeSelector": "has(calico-route-reflector)", "peerSelector": "has(rr)"},
        {"node": "rack1-host1", "peerIP": "192.168.1.1", "asNumber": 63400},
        {"localWorkloadSelector": "all()", "asNumber": 64512},
        {"peerIP": "10.0.0.1", "asNumber": 64512, "keepOriginalNextHop": True},
        {"peerIP": "10.0.0.1", "asNumber": 64512, "nextHopMode": "Keep"},
        {"sourceAddress": "None", "maxRestartTime": "10s", "keepaliveTime": "20s"},
        {"password": {"secretKeyRef": {"name": "bgp-passwords", "key": "my-peering"}}},
        {"ttlSecurity": 255, "numAllowedLocalASNumbers": 2, "filters": ["f1", "f2"]},
        {"reversePeering": "Manual", "localASNumber": "1.1"},
    ],
)
def test_valid_peers(spec: dict[str, Any]) -> None:
    assert isinstance(decode(doc("BGPPeer", spec, name="peer")), BGPPeer)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"peerIP": "999.999.999.999"}, "spec.peerIP", ""),
        ({"peerIP": "xyz:::"}, "spec.peerIP", ""),
        ({"peerIP": "192.168.0.0:0"}, "spec.peerIP", "port"),
        ({"peerIP": "192.168.0.0:65536"}, "spec.peerIP", "port"),
        ({"peerIP": "[192.168.0.0]:98956"}, "spec.peerIP", "port"),
        ({"peerIP": "192.168.0.330:170"}, "spec.peerIP", ""),
        ({"peerIP": "192.168.0.0:"}, "spec.peerIP", ""),
        ({"peerIP": "[9000::]:"}, "spec.peerIP", ""),
        ({"peerIP": "[9000::FFFFF]:170"}, "spec.peerIP", ""),
        ({"peerIP": ":8552"}, "spec.peerIP", ""),
        ({"peerIP": "[]:8552"}, "spec.peerIP", ""),
        ({"node": "my-node", "nodeSelector": "has(x)"}, "spec.node", "nodeSelector"),
        ({"peerIP": "1.2.3.4", "peerSelector": "has(x)"}, "spec.peerIP", "peerSelector"),
        ({"peerSelector": "has(x)", "asNumber": 61234}, "spec.asNumber", "peerSelector"),
        ({"localWorkloadSelector": "has(x)"}, "spec.asNumber", "required"),
        (
            {"localWorkloadSelector": "all()", "asNumber": 1, "peerIP": "10.0.0.1"},
            "spec.peerIP",
            "localWorkloadSelector",
        ),
        (
            {"localWorkloadSelector": "all()", "asNumber": 1, "peerSelector": "all()"},
            "spec.peerSelector",
            "localWorkloadSelector",
        ),
        ({"reachableBy": "100.200.0.0"}, "spec.reachableBy", "peerIP is empty"),
        ({"peerIP": "1.2.3.4", "reachableBy": "aabb::1"}, "spec.reachableBy", "family"),
        ({"peerIP": "[aabb::ffff]:4444", "reachableBy": "1.2.3.4"}, "spec.reachableBy", "family"),
        ({"peerIP": "9.9.9.9:4444", "reachableBy": "999.999.999.999"}, "spec.reachableBy", ""),
        ({"keepOriginalNextHop": True, "nextHopMode": "Auto"}, "spec.keepOriginalNextHop", ""),
        ({"nextHopMode": "Sideways"}, "spec.nextHopMode", ""),
        ({"sourceAddress": "rubbish"}, "spec.sourceAddress", ""),
        ({"nodeSelector": "kubernetes.io/hostname: == 'n4'"}, "spec.nodeSelector", "selector"),
        ({"maxRestartTime": "ten seconds"}, "spec.maxRestartTime", "duration"),
        ({"ttlSecurity": 256}, "spec.ttlSecurity", ""),
        ({"node": "Not_A_Name"}, "spec.node", "name"),
        ({"password": {"secretKeyRef": {"name": "s"}}}, "spec.password.secretKeyRef.key", ""),
    ],
)
def test_invalid_peers(spec: dict[str, Any], field: str, reason: str) -> None:
    assert_rejected(doc("BGPPeer", spec, name="peer"), field, reason)


# --- BGPFilter -------------------------------------------------------------------------------


def test_filter_documentation_example() -> None:
    res = decode(
        doc(
            "BGPFilter",
            {
                "exportV4": [
                    {"action": "Accept", "matchOperator": "In", "cidr": "77.0.0.0/16"},
                    {"action": "Reject", "source": "RemotePeers"},
                    {"action": "Reject", "interface": "*.calico"},
                ],
                "importV6": [
                    {"action": "Accept", "matchOperator": "Equal", "cidr": "5000::0/64"},
                    {"action": "Reject"},
                ],
                "importV4": [
                    {
                        "action": "Accept",
                        "communities": {"values": ["65000:100"]},
                        "operations": [{"setPriority": {"value": 512}}],
                    }
                ],
                "exportV6": [
                    {
                        "action": "Accept",
                        "peerType": "eBGP",
                        "priority": 512,
                        "asPathPrefix": [65000],
                        "operations": [
                            {"addCommunity": {"value": "65000:100"}},
                            {"prependASPath": {"prefix": [65000, "1.1"]}},
                        ],
                    }
                ],
            },
            name="my-filter",
        )
    )
    assert isinstance(res, BGPFilter)
    assert res.spec.exportV6 is not None
    ops = res.spec.exportV6[0].operations
    assert ops is not None and ops[1].prependASPath is not None
    assert ops[1].prependASPath.prefix == [65000, 65537]


@pytest.mark.parametrize(
    ("rules", "field", "reason"),
    [
        (
            {"exportV4": [{"interface": "%face", "action": "Reject"}]},
            "spec.exportV4[0].interface",
            "",
        ),
        ({"exportV6": [{"source": "xyz", "action": "Reject"}]}, "spec.exportV6[0].source", ""),
        ({"exportV4": [{"action": "ActionX"}]}, "spec.exportV4[0].action", ""),
        ({"exportV4": [{"cidr": "10.0.0.0/8"}]}, "spec.exportV4[0].action", ""),
        (
            {"exportV4": [{"cidr": "10.0.10.0/32", "action": "Reject"}]},
            "spec.exportV4[0].matchOperator",
            "required",
        ),
        (
            {"exportV6": [{"matchOperator": "Equal", "action": "Accept"}]},
            "spec.exportV6[0].cidr",
            "required",
        ),
        (
            {"exportV4": [{"cidr": "fd00::/64", "matchOperator": "In", "action": "Accept"}]},
            "spec.exportV4[0].cidr",
            "IPv4",
        ),
        (
            {"importV6": [{"cidr": "10.0.0.0/8", "matchOperator": "In", "action": "Accept"}]},
            "spec.importV6[0].cidr",
            "IPv6",
        ),
        (
            {"exportV4": [{"cidr": "10.0.0.1/8", "matchOperator": "In", "action": "Accept"}]},
            "spec.exportV4[0].cidr",
            "masked",
        ),
        (
            {"exportV4": [{"cidr": "10.0.0.0/8", "matchOperator": "Like", "action": "Accept"}]},
            "spec.exportV4[0].matchOperator",
            "",
        ),
        (
            {
                "exportV4": [
                    {
                        "cidr": "10.0.0.0/24",
                        "matchOperator": "In",
                        "action": "Reject",
                        "prefixLength": {"max": 64},
                    }
                ]
            },
            "spec.exportV4[0].prefixLength.max",
            "",
        ),
        (
            {"exportV6": [{"action": "Reject", "prefixLength": {"min": 129}, "cidr": "fd::/64"}]},
            "spec.exportV6[0].prefixLength.min",
            "",
        ),
        (
            {
                "exportV6": [
                    {"interface": "*.calico", "action": "Reject", "prefixLength": {"min": 1}}
                ]
            },
            "spec.exportV6[0].cidr",
            "prefixLength",
        ),
        (
            {"exportV4": [{"action": "Accept", "operations": [{}]}]},
            "spec.exportV4[0].operations[0]",
            "",
        ),
        (
            {
                "exportV4": [
                    {
                        "action": "Accept",
                        "operations": [
                            {"addCommunity": {"value": "65000:1"}, "setPriority": {"value": 100}}
                        ],
                    }
                ]
            },
            "spec.exportV4[0].operations[0]",
            "exactly one",
        ),
        (
            {"exportV4": [{"action": "Reject", "operations": [{"setPriority": {"value": 1}}]}]},
            "spec.exportV4[0].operations",
            "Accept",
        ),
        (
            {"exportV4": [{"action": "Accept", "operations": [{"setPriority": {"value": 0}}]}]},
            "spec.exportV4[0].operations[0].setPriority.value",
            "",
        ),
        (
            {"importV4": [{"action": "Accept", "communities": {"values": ["1:2", "3:4"]}}]},
            "spec.importV4[0].communities.values",
            "",
        ),
        (
            {"importV4": [{"action": "Accept", "communities": {"values": ["65536:1"]}}]},
            "spec.importV4[0].communities.values[0]",
            "",
        ),
        (
            {"importV4": [{"action": "Reject", "source": "RemotePeers"}]},
            "spec.importV4[0].source",
            "",
        ),
        ({"exportV4": [{"action": "Accept", "peerType": "BGP"}]}, "spec.exportV4[0].peerType", ""),
    ],
)
def test_invalid_filters(rules: dict[str, Any], field: str, reason: str) -> None:
    assert_rejected(doc("BGPFilter", rules, name="f"), field, reason)
