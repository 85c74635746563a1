"""Node, ClusterInformation, KubeControllersConfiguration, IPAMConfiguration, BlockAffinity,
CalicoNodeStatus: defaults and validation rules."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode, encode, resolve_kind
from pycalico.api.kinds_cluster import (
    BlockAffinity,
    CalicoNodeStatus,
    ClusterInformation,
    IPAMConfiguration,
    KubeControllersConfiguration,
)
from pycalico.api.kinds_node import Node

WG_KEY = "jlkVyQYooZYzI2wFfNhSZez5eWh44yfq1wKVjLvSXgY="


def res(
    kind: str, spec: dict[str, Any] | None, name: str = "default", **extra: Any
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
    d.update(extra)
    return d


def assert_rejected(d: dict[str, Any], field: str, reason: str = "") -> None:
    with pytest.raises(ValidationFailed) as exc:
        decode(d)
    found = [f"{p.path}: {p.reason}" for p in exc.value.problems]
    assert any(p.startswith(field) and reason in p for p in found), found


@pytest.mark.parametrize(
    ("words", "kind"),
    [
        (("node", "nodes", "no", "nos"), "Node"),
        (("kubecontrollersconfiguration", "kcc"), "KubeControllersConfiguration"),
        (("ipamconfiguration", "ipamconfig"), "IPAMConfiguration"),
        (("blockaffinity", "blockaffinities", "affinity", "affinities"), "BlockAffinity"),
        (("clusterinformation", "clusterinfo"), "ClusterInformation"),
        (
            ("caliconodestatus", "caliconodestatuses", "nodestatus", "nodestatuses"),
            "CalicoNodeStatus",
        ),
    ],
)
def test_aliases(words: tuple[str, ...], kind: str) -> None:
    assert {resolve_kind(w) for w in words} == {kind}


# --- Node ------------------------------------------------------------------------------------


def test_node_full_spec() -> None:
    node = decode(
        res(
            "Node",
            {
                "bgp": {
                    "asNumber": "1.2",
                    "ipv4Address": "10.0.0.5/24",
                    "ipv6Address": "fd00::5/64",
                    "ipv4IPIPTunnelAddr": "192.168.0.1",
                    "routeReflectorClusterID": "245.0.0.1",
                },
                "ipv4VXLANTunnelAddr": "192.168.1.0",
                "vxlanTunnelMACAddr": "66:c3:2f:8a:11:04",
                "ipv6VXLANTunnelAddr": "fd00:1::1",
                "orchRefs": [{"nodeName": "k8s-node-1", "orchestrator": "k8s"}],
                "addresses": [{"address": "10.0.0.5", "type": "CalicoNodeIP"}],
                "interfaces": [{"name": "eth0", "addresses": ["10.0.0.5"]}],
                "wireguard": {"interfaceIPv4Address": "10.10.0.1"},
            },
            name="node-1",
            status={"wireguardPublicKey": WG_KEY, "podCIDRs": ["10.244.0.0/24"]},
        )
    )
    assert isinstance(node, Node)
    assert node.spec.bgp is not None
    assert node.spec.bgp.asNumber == 65538
    assert node.spec.bgp.ipv4_interface() == ipaddress.IPv4Interface("10.0.0.5/24")
    assert encode(decode(encode(node))) == encode(node)


def test_node_null_spec_and_bare_node() -> None:
    assert isinstance(
        decode(res("Node", None, name="n1", status={"wireguardPublicKey": WG_KEY})), Node
    )
    bare = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "node-03"}}
    assert isinstance(decode(bare), Node)


@pytest.mark.parametrize(
    ("spec", "status", "field", "reason"),
    [
        ({"bgp": {}}, None, "spec.bgp", "empty"),
        ({"bgp": {"ipv4Address": "aabb::1/128"}}, None, "spec.bgp.ipv4Address", "IPv4"),
        ({"bgp": {"ipv6Address": "1.2.3.4/32"}}, None, "spec.bgp.ipv6Address", "IPv6"),
        ({"bgp": {"ipv4Address": "10.0.0.1/33"}}, None, "spec.bgp.ipv4Address", ""),
        (
            {"bgp": {"ipv4Address": "1.2.3.4/32", "routeReflectorClusterID": "abcdef"}},
            None,
            "spec.bgp.routeReflectorClusterID",
            "",
        ),
        (
            {"bgp": {"ipv4Address": "1.2.3.4/32", "routeReflectorClusterID": "300.34.3.1"}},
            None,
            "spec.bgp.routeReflectorClusterID",
            "",
        ),
        ({"bgp": {"ipv4IPIPTunnelAddr": "10.0.0.1/32"}}, None, "spec.bgp.ipv4IPIPTunnelAddr", ""),
        ({"wireguard": {"interfaceIPv4Address": "foo.bar"}}, None, "spec.wireguard", ""),
        ({"vxlanTunnelMACAddr": "zz:zz:zz:zz:zz:zz"}, None, "spec.vxlanTunnelMACAddr", "MAC"),
        ({"ipv6VXLANTunnelAddr": "10.0.0.1"}, None, "spec.ipv6VXLANTunnelAddr", "IPv6"),
        (
            {"addresses": [{"address": "10.0.0.5", "type": "Public"}]},
            None,
            "spec.addresses[0].type",
            "",
        ),
        ({"orchRefs": [{"nodeName": "x"}]}, None, "spec.orchRefs[0].orchestrator", ""),
        ({}, {"wireguardPublicKey": "foobar"}, "status.wireguardPublicKey", "WireGuard"),
    ],
)
def test_invalid_nodes(
    spec: dict[str, Any], status: dict[str, Any] | None, field: str, reason: str
) -> None:
    extra = {"status": status} if status is not None else {}
    assert_rejected(res("Node", spec, name="n1", **extra), field, reason)


# --- ClusterInformation / CalicoNodeStatus --------------------------------------------------


def test_cluster_information() -> None:
    ci = decode(
        res(
            "ClusterInformation",
            {
                "clusterGUID": "abc",
                "clusterType": "k8s,bgp",
                "calicoVersion": "v3.31.0",
                "datastoreReady": True,
            },
        )
    )
    assert isinstance(ci, ClusterInformation)
    assert ci.spec.datastoreReady is True
    assert_rejected(res("ClusterInformation", {"datastoreReady": "yes"}), "spec.datastoreReady")


def test_calico_node_status() -> None:
    spec = {
        "classes": ["Agent", "BGP", "Routes"],
        "node": "my-kadm-node-0",
        "updatePeriodSeconds": 10,
    }
    status = {"agent": {"birdV4": {"state": "Ready"}}, "bgp": {"numberEstablishedV4": 1}}
    cns = decode(res("CalicoNodeStatus", spec, name="s1", status=status))
    assert isinstance(cns, CalicoNodeStatus)
    assert cns.spec.classes == ["Agent", "BGP", "Routes"]
    base = {"node": "n1", "classes": ["BGP"]}
    assert_rejected(
        res("CalicoNodeStatus", {**spec, "classes": ["Disk"]}, name="s"), "spec.classes[0]"
    )
    assert_rejected(
        res("CalicoNodeStatus", {**base, "updatePeriodSeconds": -1}, name="s"),
        "spec.updatePeriodSeconds",
    )
    assert_rejected(
        res("CalicoNodeStatus", {**base, "updatePeriodSeconds": 86401}, name="s"),
        "spec.updatePeriodSeconds",
    )
    for ok in (0, 86400):
        doc = res("CalicoNodeStatus", {**base, "updatePeriodSeconds": ok}, name="s")
        assert isinstance(decode(doc), CalicoNodeStatus)
    # libcalico-go's validator: node, classes and updatePeriodSeconds are required.
    for field in ("node", "classes", "updatePeriodSeconds"):
        partial = {k: v for k, v in spec.items() if k != field}
        assert_rejected(res("CalicoNodeStatus", partial, name="s"), f"spec.{field}")
    dup = {**spec, "classes": ["BGP", "BGP"]}
    assert_rejected(res("CalicoNodeStatus", dup, name="s"), "spec.classes")


# --- KubeControllersConfiguration -------------------------------------------------------------


def test_kcc_defaults() -> None:
    kcc = decode(res("KubeControllersConfiguration", {"controllers": {}}))
    assert isinstance(kcc, KubeControllersConfiguration)
    spec = encode(kcc)["spec"]
    assert spec["healthChecks"] == "Enabled"
    assert spec["prometheusMetricsPort"] == 9094
    zero = decode(res("KubeControllersConfiguration", {"prometheusMetricsPort": 0}))
    assert isinstance(zero, KubeControllersConfiguration)
    assert zero.spec.prometheusMetricsPort == 0


@pytest.mark.parametrize(
    "spec",
    [
        {"logSeverityScreen": "Trace", "etcdV3CompactionPeriod": "12m"},
        {
            "controllers": {
                "node": {
                    "reconcilerPeriod": "5m",
                    "syncLabels": "Disabled",
                    "leakGracePeriod": "15m",
                }
            }
        },
        {"controllers": {"node": {"hostEndpoint": {}}}},
        {
            "controllers": {
                "serviceAccount": {"reconcilerPeriod": "5m30s"},
                "namespace": {},
                "policy": {},
            }
        },
        {"controllers": {"loadBalancer": {"assignIPs": "RequestedServicesOnly"}}},
        {
            "controllers": {
                "node": {
                    "hostEndpoint": {
                        "autoCreate": "Enabled",
                        "createDefaultHostEndpoint": "Disabled",
                        "templates": [
                            {
                                "generateName": "custom-",
                                "interfaceCIDRs": ["10.0.1.0/24", "10.0.10.0/32"],
                                "labels": {"role": "edge"},
                                "annotations": {"projectcalico.org/note": "ok"},
                                "nodeSelector": "has(edge)",
                            }
                        ],
                    }
                }
            }
        },
    ],
)
def test_valid_kcc(spec: dict[str, Any]) -> None:
    assert isinstance(
        decode(res("KubeControllersConfiguration", spec)), KubeControllersConfiguration
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"healthChecks": "invalid"}, "spec.healthChecks"),
        ({"logSeverityScreen": "None"}, "spec.logSeverityScreen"),
        ({"prometheusMetricsPort": 65536}, "spec.prometheusMetricsPort"),
        ({"etcdV3CompactionPeriod": "often"}, "spec.etcdV3CompactionPeriod"),
        ({"controllers": {"node": {"syncLabels": "yes"}}}, "spec.controllers.node.syncLabels"),
        (
            {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Totally"}}}},
            "spec.controllers.node.hostEndpoint.autoCreate",
        ),
        (
            {
                "controllers": {
                    "node": {"hostEndpoint": {"templates": [{"generateName": "test$set"}]}}
                }
            },
            "spec.controllers.node.hostEndpoint.templates[0].generateName",
        ),
        (
            {
                "controllers": {
                    "node": {"hostEndpoint": {"templates": [{"annotations": {"not a key": "v"}}]}}
                }
            },
            "spec.controllers.node.hostEndpoint.templates[0].annotations",
        ),
        (
            {
                "controllers": {
                    "node": {"hostEndpoint": {"templates": [{"interfaceCIDRs": ["10.0.0.0/33"]}]}}
                }
            },
            "spec.controllers.node.hostEndpoint.templates[0].interfaceCIDRs[0]",
        ),
        (
            {"controllers": {"loadBalancer": {"assignIPs": "Some"}}},
            "spec.controllers.loadBalancer.assignIPs",
        ),
    ],
)
def test_invalid_kcc(spec: dict[str, Any], field: str) -> None:
    assert_rejected(res("KubeControllersConfiguration", spec), field)


# --- IPAMConfiguration ------------------------------------------------------------------------


def test_ipam_configuration_defaults() -> None:
    cfg = decode(res("IPAMConfiguration", {}))
    assert isinstance(cfg, IPAMConfiguration)
    assert encode(cfg)["spec"] == {
        "strictAffinity": False,
        "maxBlocksPerHost": 0,
        "autoAllocateBlocks": True,
    }
    assert cfg.spec.set_problems() == []


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"maxBlocksPerHost": -1}, "spec.maxBlocksPerHost", ""),
        ({"maxBlocksPerHost": 1_000_001}, "spec.maxBlocksPerHost", ""),
        ({"ipCooldownSeconds": 1201}, "spec.ipCooldownSeconds", ""),
        ({"ipCooldownSeconds": -1}, "spec.ipCooldownSeconds", ""),
        ({"autoAllocateBlocks": False}, "spec.autoAllocateBlocks", "strictAffinity"),
        ({"kubeVirtVMAddressPersistence": "Maybe"}, "spec.kubeVirtVMAddressPersistence", ""),
    ],
)
def test_invalid_ipam_configuration(spec: dict[str, Any], field: str, reason: str) -> None:
    assert_rejected(res("IPAMConfiguration", spec), field, reason)


def test_ipam_configuration_valid_combinations() -> None:
    cfg = decode(
        res(
            "IPAMConfiguration",
            {
                "strictAffinity": True,
                "autoAllocateBlocks": False,
                "maxBlocksPerHost": 4,
                "ipCooldownSeconds": 1200,
            },
        )
    )
    assert isinstance(cfg, IPAMConfiguration)
    assert cfg.spec.set_problems() == []
    loose = decode(res("IPAMConfiguration", {"maxBlocksPerHost": 4}))
    assert isinstance(loose, IPAMConfiguration)
    assert loose.spec.set_problems() == [
        "maxBlocksPerHost can only be set when strictAffinity is true"
    ]


# --- BlockAffinity ------------------------------------------------------------------------------


def test_block_affinity() -> None:
    spec = {"state": "confirmed", "node": "node-1", "cidr": "10.0.0.0/26", "deleted": "false"}
    ba = decode(res("BlockAffinity", spec, name="node-1-10-0-0-0-26"))
    assert isinstance(ba, BlockAffinity)
    assert ba.spec.type == "host"
    for t in ("host", "virtual"):
        assert isinstance(
            decode(res("BlockAffinity", {**spec, "type": t}, name="a")), BlockAffinity
        )
    as_bool = decode(res("BlockAffinity", {**spec, "deleted": False}, name="a"))
    assert isinstance(as_bool, BlockAffinity)
    assert as_bool.spec.deleted == "false"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "bogus"}, "spec.type"),
        ({"state": "claimed"}, "spec.state"),
        ({"deleted": "true"}, "spec.deleted"),
        ({"cidr": "10.0.0.1/26"}, "spec.cidr"),
        ({"node": None}, "spec.node"),
    ],
)
def test_invalid_block_affinity(change: dict[str, Any], field: str) -> None:
    spec = {"state": "pending", "node": "node-1", "cidr": "10.0.0.0/26", **change}
    assert_rejected(res("BlockAffinity", spec, name="a"), field)
