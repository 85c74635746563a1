"""v3 / k8s dict -> calc model conversion: defaults, selector namespacing, k8s translation."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from pycalico.model import (
    Endpoint,
    ModelError,
    NamedPort,
    Policy,
    PortRange,
    convert,
    convert_wep_tolerant,
    k8s_to_v3_spec,
)
from pycalico.model.convert import entity_selector
from pycalico.selector import parse


def canon(text: str) -> str:
    return str(parse(text))


def pol(
    kind: str, spec: dict[str, Any], ns: str = "ns1", api: str = "projectcalico.org/v3"
) -> Policy:
    meta: dict[str, Any] = {"name": "p"}
    if ns:
        meta["namespace"] = ns
    out = convert({"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}).obj
    assert isinstance(out, Policy)
    return out


def test_policy_defaults() -> None:
    p = pol("NetworkPolicy", {"selector": "a == 'b'"})
    assert p.tier == "default" and p.order is None
    assert p.types == {"Ingress"}
    # Calico's term order: the selector as written, then the namespace term.
    assert p.selector == canon("(a == 'b') && projectcalico.org/namespace == 'ns1'")
    assert pol("NetworkPolicy", {"egress": [{"action": "Allow"}]}).types == {"Egress"}
    both = pol("NetworkPolicy", {"egress": [{"action": "Allow"}], "ingress": [{"action": "Deny"}]})
    assert both.types == {"Ingress", "Egress"}
    g = pol("GlobalNetworkPolicy", {}, ns="")
    assert g.selector == "all()" and g.id.namespace == ""


def test_gnp_namespace_and_service_account_selectors() -> None:
    g = pol(
        "GlobalNetworkPolicy",
        {
            "selector": "app == 'x'",
            "namespaceSelector": "team == 'a'",
            "serviceAccountSelector": "role == 'fe'",
        },
        ns="",
    )
    assert g.selector == canon("((app == 'x') && pcns.team == 'a') && pcsa.role == 'fe'")


@pytest.mark.parametrize(
    ("er", "ns", "expected"),
    [
        ({"selector": "a == 'b'"}, "ns1", "projectcalico.org/namespace == 'ns1' && a == 'b'"),
        ({"selector": "a == 'b'"}, "", "a == 'b'"),
        ({"notSelector": "a == 'b'"}, "ns1", "projectcalico.org/namespace == 'ns1'"),
        ({"nets": ["10.0.0.0/8"]}, "ns1", None),
        ({"namespaceSelector": "team == 'b'"}, "ns1", "pcns.team == 'b'"),
        (
            {"namespaceSelector": "all()", "selector": "x == 'y'"},
            "",
            "has(projectcalico.org/namespace) && x == 'y'",
        ),
        ({"namespaceSelector": "global()"}, "", "!has(projectcalico.org/namespace)"),
        (
            {"serviceAccounts": {"names": ["a", "b"]}},
            "ns1",
            "projectcalico.org/namespace == 'ns1' && projectcalico.org/serviceaccount in {'a','b'}",
        ),
        ({"serviceAccounts": {"selector": "role == 'x'"}}, "", "pcsa.role == 'x'"),
    ],
)
def test_rule_selector_namespacing(er: dict[str, Any], ns: str, expected: str | None) -> None:
    got = entity_selector(er, ns, "rule")
    if expected is None:
        assert got is None
    else:
        assert got is not None
        # Compare by behaviour on a few label maps.
        probes = [
            {
                "projectcalico.org/namespace": "ns1",
                "a": "b",
                "pcns.team": "b",
                "x": "y",
                "projectcalico.org/serviceaccount": "a",
                "pcsa.role": "x",
            },
            {"projectcalico.org/namespace": "ns2", "a": "b"},
            {"a": "b", "pcsa.role": "x", "x": "y"},
            {"projectcalico.org/namespace": "ns1", "a": "c"},
        ]
        for labels in probes:
            assert parse(got).evaluate(labels) == parse(expected).evaluate(labels), labels


def test_not_selector_kept_unnamespaced_and_ports_parsed() -> None:
    p = pol(
        "NetworkPolicy",
        {
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"notSelector": "a == 'b'", "notNets": ["10.1.2.3/8"]},
                    "destination": {"ports": [80, "8000:8080", "http"], "notPorts": ["9000"]},
                }
            ]
        },
    )
    (r,) = p.ingress
    assert r.protocol == 6
    assert r.src.not_selector == canon("a == 'b'")
    assert r.src.not_nets == (ip_network("10.0.0.0/8"),)
    assert r.dst.ports == (PortRange(80, 80), PortRange(8000, 8080))
    assert r.dst.named_ports == ("http",)
    assert r.dst.not_ports == (PortRange(9000, 9000),)


def test_k8s_translation() -> None:
    spec = k8s_to_v3_spec(
        {
            "podSelector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}],
            },
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}, "namespaceSelector": {}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    ],
                    "ports": [
                        {"port": 80},
                        {"port": 81, "endPort": 90, "protocol": "UDP"},
                        {"protocol": "SCTP"},
                    ],
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["order"] == 1000.0 and spec["tier"] == "default"
    assert spec["types"] == ["Ingress"]
    # One rule per protocol x peer, protocols sorted.
    assert [r["protocol"] for r in spec["ingress"]] == ["SCTP", "SCTP", "TCP", "TCP", "UDP", "UDP"]
    assert "destination" not in spec["ingress"][0]  # SCTP: all ports
    assert spec["ingress"][2]["destination"] == {"ports": [80]}
    assert spec["ingress"][4]["destination"] == {"ports": ["81:90"]}
    assert spec["ingress"][2]["source"]["namespaceSelector"] == "all()"
    assert spec["ingress"][3]["source"] == {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}
    p = pol("NetworkPolicy", {"podSelector": {}, "egress": [{}]}, api="networking.k8s.io/v1")
    assert p.id.kind == "knp" and p.id.name == "knp.default.p"
    assert p.types == {"Ingress", "Egress"}  # API-server defaulting of policyTypes
    assert p.egress[0].action == "Allow" and p.egress[0].dst.is_empty()


def test_endpoint_labels_and_staged() -> None:
    wep = convert(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": "n-k8s-p-eth0", "namespace": "ns1", "labels": {"a": "b"}},
            "spec": {
                "orchestrator": "k8s",
                "node": "n",
                "pod": "p",
                "serviceAccountName": "sa",
                "ipNetworks": ["10.0.0.1/32"],
                "profiles": ["kns.ns1"],
                "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
            },
        }
    ).obj
    assert wep is not None and dict(wep.labels) == {  # type: ignore[union-attr]
        "a": "b",
        "projectcalico.org/namespace": "ns1",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "sa",
    }
    staged = convert(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "StagedNetworkPolicy",
            "metadata": {"name": "x", "namespace": "y"},
            "spec": {},
        }
    ).obj
    # A staged policy converts under its staged kind; only the pending view evaluates it.
    assert isinstance(staged, Policy) and staged.staged_action == "Set"
    assert str(staged.id) == "snp/y/x" and str(staged.id.enforced()) == "np/y/x"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"selector": "a =="}, "spec.selector"),
        ({"ingress": [{"action": "Accept"}]}, "spec.ingress[0].action"),
        (
            {"ingress": [{"action": "Allow", "source": {"nets": ["nope"]}}]},
            "spec.ingress[0].source.nets[0]",
        ),
        (
            {"ingress": [{"action": "Allow", "destination": {"ports": ["9:1"]}}]},
            "spec.ingress[0].destination.ports[0]",
        ),
        ({"ingress": [{"action": "Allow", "protocol": "FOO"}]}, "spec.ingress[0].protocol"),
        ({"order": "high"}, "spec.order"),
    ],
)
def test_bad_input_names_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ModelError, match=field.replace("[", r"\[").replace("]", r"\]")):
        pol("NetworkPolicy", spec)


def _wep(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "n-k8s-p-eth0", "namespace": "ns1"},
        "spec": {"node": "n", **spec},
    }


def test_wep_pod_workload_and_named_ports() -> None:
    ep = convert(
        _wep(
            {
                "pod": "p",
                "workload": "w",
                "ipNetworks": ["10.0.0.1/32", ""],
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80},
                    {"name": "", "protocol": "TCP", "port": 81},  # unnamed: filtered out
                    {"name": "dns", "port": 53},  # protocol defaults to TCP
                ],
            }
        )
    ).obj
    assert isinstance(ep, Endpoint)
    assert (ep.pod, ep.workload, ep.namespace) == ("p", "w", "ns1")
    assert ep.nets == (ip_network("10.0.0.1/32"),)
    assert ep.ports == (NamedPort("http", 6, 80), NamedPort("dns", 6, 53))
    plain = convert(_wep({"workload": "w"})).obj
    assert isinstance(plain, Endpoint) and (plain.pod, plain.workload) == ("", "w")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"ipNetworks": ["10.0.0.1/32", "nope"]}, "spec.ipNetworks[1]"),
        ({"ports": [{"name": "x", "protocol": "TCP", "port": "80"}]}, "spec.ports[0].port"),
        ({"ports": [{"name": "x", "protocol": "TCP", "port": 0}]}, "spec.ports[0].port"),
        ({"ports": [{"name": "x", "protocol": "TCP", "port": 65536}]}, "spec.ports[0].port"),
        ({"ports": [{"name": "x", "protocol": "FOO", "port": 80}]}, "spec.ports[0].protocol"),
    ],
)
def test_wep_strict_and_tolerant(spec: dict[str, Any], field: str) -> None:
    """Felix's conversion rejects the WEP (as Calico's update processor does); the tolerant
    one (DNS) drops just the bad entry and names it in a warning."""
    res = _wep({"pod": "p", "ipNetworks": ["10.0.0.2/32"], **spec})
    with pytest.raises(ModelError, match=field.replace("[", r"\[").replace("]", r"\]")):
        convert(res)
    conv = convert_wep_tolerant(res)
    assert isinstance(conv.obj, Endpoint) and conv.obj.pod == "p"
    assert len(conv.warnings) == 1 and conv.warnings[0].startswith(field)
    assert len(conv.obj.nets) == 1  # the good address survives


def test_wep_tolerant_rejects_malformed_resource() -> None:
    with pytest.raises(ModelError):
        convert_wep_tolerant({"kind": "WorkloadEndpoint", "spec": "junk"})
    with pytest.raises(ModelError, match=r"metadata\.name"):
        convert_wep_tolerant({"kind": "WorkloadEndpoint", "spec": {"pod": "p"}})
