"""Policy-family kinds: names, tiers, staged policies, endpoints, network sets, k8s kinds."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode

V3 = "projectcalico.org/v3"


def doc(kind: str, name: str, spec: Any = None, api: str = V3, **meta: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name, **meta}}
    if spec is not None:
        out["spec"] = spec
    return out


def paths(d: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationFailed) as info:
        decode(d)
    return {p.path for p in info.value.problems}


@pytest.mark.parametrize(
    ("kind", "name", "ok"),
    [
        ("NetworkPolicy", "allow-db", True),
        ("NetworkPolicy", "tier1.allow-db", True),
        ("NetworkPolicy", "knp.default.some.thing", True),
        ("NetworkPolicy", "a.b.c", False),
        ("NetworkPolicy", "Upper", False),
        ("NetworkPolicy", "x" * 253, True),
        ("NetworkPolicy", "x" * 254, False),
        ("GlobalNetworkPolicy", "tier1.allow", True),
        ("GlobalNetworkPolicy", "knp.default.x", False),
        ("StagedNetworkPolicy", "a.b.c", False),
        ("StagedGlobalNetworkPolicy", "ok-name", True),
    ],
)
def test_policy_names(kind: str, name: str, ok: bool) -> None:
    d = doc(kind, name, {})
    if ok:
        assert decode(d).metadata.name == name
    else:
        assert paths(d) == {"metadata.name"}


def test_namespaced_kinds_default_to_namespace_default() -> None:
    assert decode(doc("NetworkPolicy", "p")).metadata.namespace == "default"
    assert decode(doc("NetworkPolicy", "p", namespace="ns1")).metadata.namespace == "ns1"
    assert decode(doc("NetworkSet", "s")).metadata.namespace == "default"
    assert decode(doc("GlobalNetworkSet", "s")).metadata.namespace is None
    assert paths(doc("NetworkPolicy", "p", namespace="Bad_NS")) == {"metadata.namespace"}
    sa = decode(doc("ServiceAccount", "sa1", api="v1", labels={"team": "a"}))
    assert sa.metadata.namespace == "default"


def test_tiers() -> None:
    t = decode(doc("Tier", "security", {"order": 100}))
    assert t.spec.defaultAction == "Deny"
    assert decode(doc("Tier", "web", {"defaultAction": "Pass"})).spec.defaultAction == "Pass"
    assert paths(doc("Tier", "web", {"defaultAction": "Allow"})) == {"spec.defaultAction"}
    assert paths(doc("Tier", "a.b", {})) == {"metadata.name"}
    assert paths(doc("Tier", "x" * 64, {})) == {"metadata.name"}
    assert paths(doc("Tier", "kube-admin", {"order": 5, "defaultAction": "Pass"})) == {"spec.order"}
    # defaultAction defaults to Deny before the reserved-tier rules run (as the CRD does).
    assert paths(doc("Tier", "kube-admin", {})) == {"spec.defaultAction"}
    assert paths(doc("Tier", "default", {"defaultAction": "Pass"})) == {"spec.defaultAction"}
    base = decode(doc("Tier", "kube-baseline", {"defaultAction": "Pass"}))
    assert (base.spec.order, base.spec.defaultAction) == (10_000_000, "Pass")


def test_staged_policies() -> None:
    snp = decode(doc("StagedNetworkPolicy", "p", {"selector": "all()"}))
    assert snp.spec.stagedAction == "Set"
    decode(doc("StagedNetworkPolicy", "eng.p", {"stagedAction": "Delete", "tier": "eng"}))
    assert paths(doc("StagedNetworkPolicy", "p", {"stagedAction": "Delete", "order": 1})) == {
        "spec.order"
    }
    assert paths(doc("StagedGlobalNetworkPolicy", "p", {"stagedAction": "Later"})) == {
        "spec.stagedAction"
    }
    sknp = decode(
        doc("StagedKubernetesNetworkPolicy", "k", {"podSelector": {}, "policyTypes": ["Egress"]})
    )
    assert sknp.metadata.namespace == "default"
    bad = doc("StagedKubernetesNetworkPolicy", "k", {"stagedAction": "Delete", "podSelector": {}})
    assert paths(bad) == {"spec.podSelector"}


def test_profile() -> None:
    decode(doc("Profile", "kns.default", {"ingress": [{"action": "Allow"}]}))
    assert paths(doc("Profile", "p", {"labelsToApply": {"a": "b c"}})) == {"spec.labelsToApply"}


def hep(**spec: Any) -> dict[str, Any]:
    return doc("HostEndpoint", "h", spec)


def test_host_endpoints() -> None:
    decode(hep(node="n1", interfaceName="*"))
    decode(hep(node="n1", expectedIPs=["10.0.0.1", "fd00::1"]))
    decode(
        hep(
            node="n1", interfaceName="eth0", ports=[{"name": "http", "protocol": "TCP", "port": 80}]
        )
    )
    assert paths(hep(interfaceName="eth0")) == {"spec.node"}
    assert paths(hep(node="n1")) == {"spec.interfaceName"}
    assert paths(hep(node="n1", interfaceName="way-too-long-iface0")) == {"spec.interfaceName"}
    assert paths(hep(node="n1", expectedIPs=["10.0.0.0/8"])) == {"spec.expectedIPs[0]"}
    bad_port = {"name": "http", "protocol": "ICMP", "port": 80}
    assert paths(hep(node="n1", interfaceName="eth0", ports=[bad_port])) == {
        "spec.ports[0].protocol"
    }
    assert paths(hep(node="n1", interfaceName="eth0", profiles=["ok", "-bad"])) == {
        "spec.profiles[1]"
    }


def wep(**spec: Any) -> dict[str, Any]:
    spec.setdefault("interfaceName", "cali0123456789a")
    return doc("WorkloadEndpoint", "node1-k8s-pod-eth0", spec, namespace="ns1")


def test_workload_endpoints() -> None:
    good = wep(
        node="node1",
        orchestrator="k8s",
        pod="pod",
        endpoint="eth0",
        containerID="abc123",
        interfaceName="cali0123456789a",
        mac="ee:ee:ee:ee:ee:ee",
        ipNetworks=["10.0.0.1/32", "fd00::1/128"],
        ipNATs=[{"internalIP": "10.0.0.1", "externalIP": "192.0.2.1"}],
        ipv4Gateway="169.254.1.1",
        profiles=["kns.ns1", "ksa.ns1.default"],
        ports=[
            {"name": "http", "protocol": "TCP", "port": 80},
            {"protocol": "UDP", "port": 53, "hostPort": 5353},
        ],
    )
    assert decode(good).spec.interfaceName == "cali0123456789a"
    assert paths(wep(ipNetworks=["10.0.0.0/24"])) == {"spec.ipNetworks[0]"}
    assert paths(
        wep(
            ipNetworks=["10.0.0.1/32"], ipNATs=[{"internalIP": "10.0.0.2", "externalIP": "1.1.1.1"}]
        )
    ) == {"spec.ipNATs[0]"}
    assert paths(wep(containerID="a_b")) == {"spec.containerID"}
    assert paths(wep(interfaceName="eth0!")) == {"spec.interfaceName"}
    assert paths(wep(ipv4Gateway="fd00::1")) == {"spec.ipv4Gateway"}
    assert paths(wep(ports=[{"protocol": "TCP", "port": 80}])) == {"spec.ports[0].name"}
    assert paths(wep(mac="zz")) == {"spec.mac"}
    assert paths(wep(interfaceName="")) == {"spec.interfaceName"}


def test_network_sets() -> None:
    decode(doc("NetworkSet", "s", {"nets": ["10.0.0.1", "fd00::/64"]}))
    assert paths(doc("GlobalNetworkSet", "s", {"nets": ["nope"]})) == {"spec.nets[0]"}
    labelled = doc("GlobalNetworkSet", "s", {}, labels={"projectcalico.org/namespace": "x"})
    assert paths(labelled) == {"metadata.labels"}


K8S = "networking.k8s.io/v1"


def knp(spec: dict[str, Any]) -> dict[str, Any]:
    return doc("NetworkPolicy", "k", spec, api=K8S)


def test_k8s_network_policy() -> None:
    full = {
        "podSelector": {
            "matchLabels": {"app": "db"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}],
        },
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                    {"namespaceSelector": {"matchLabels": {"p": "x"}}, "podSelector": {}},
                ],
                "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}, {"port": "http"}],
            }
        ],
        "egress": [{"to": [{"podSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}],
    }
    res = decode(knp(full))
    assert res.metadata.namespace == "default"
    assert res.spec.effective_policy_types() == ["Ingress", "Egress"]
    assert decode(knp({"podSelector": {}, "egress": [{}]})).spec.effective_policy_types() == [
        "Ingress",
        "Egress",
    ]
    exp = {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}
    assert paths(knp({"podSelector": exp})) == {"spec.podSelector.matchExpressions[0].values"}
    block = {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}
    assert paths(knp({"ingress": [{"from": [block]}]})) == {
        "spec.ingress[0].from[0].ipBlock.except[0]"
    }
    mixed = {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}
    assert paths(knp({"ingress": [{"from": [mixed]}]})) == {"spec.ingress[0].from[0]"}
    assert paths(knp({"egress": [{"ports": [{"port": "http", "endPort": 90}]}]})) == {
        "spec.egress[0].ports[0].endPort"
    }
    assert paths(knp({"egress": [{"ports": [{"port": 100, "endPort": 90}]}]})) == {
        "spec.egress[0].ports[0].endPort"
    }
    assert paths(knp({"egress": [{"ports": [{"protocol": "ICMP"}]}]})) == {
        "spec.egress[0].ports[0].protocol"
    }
    assert paths(knp({"policyTypes": ["Sideways"]})) == {"spec.policyTypes[0]"}


def test_namespace() -> None:
    ns = decode(doc("Namespace", "team-a", api="v1", labels={"env": "prod"}))
    # The API server's label is added (the stored Namespace stands in for it).
    want = {"env": "prod", "kubernetes.io/metadata.name": "team-a"}
    assert ns.metadata.labels == want and ns.metadata.namespace is None
    assert paths(doc("Namespace", "a.b", api="v1")) == {"metadata.name"}
