"""ClusterNetworkPolicy: API validation (field-naming errors), the conversion Calico applies
(tiers kube-admin/kube-baseline, order = priority, kind ``kcnp``, fail-closed rules), and
its semantics through the policy model, the calc graph Felix runs and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.api import ValidationFailed, decode, resolve_kind
from pycalico.datastore.base import storage_kind
from pycalico.felix.agent import FELIX_KINDS
from pycalico.felix.calc import CalcGraph, PolicyInsight
from pycalico.felix.calc.messages import ActivePolicyUpdate, EndpointUpdate
from pycalico.model import Policy, PolicyID, PortRange, convert, implied_tier
from tests.kit import keyed, namespace, resource, workload_endpoint

API = "policy.networking.k8s.io/v1alpha2"
NS = "kubernetes.io/metadata.name"


def cnp(name: str, tier: str = "Admin", priority: int = 10, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tier": tier,
        "priority": priority,
        "subject": spec.pop("subject", {"namespaces": {"matchLabels": {NS: "a"}}}),
    }
    body.update(spec)
    return resource("ClusterNetworkPolicy", name, body, api_version=API)


def to_ns(name: str) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {NS: name}}}


def rule(action: str, peers: list[dict[str, Any]], egress: bool = True, **kw: Any) -> dict:
    return {"action": action, ("to" if egress else "from"): peers, **kw}


PORTS = [
    {"name": "web", "protocol": "TCP", "port": 80},
    {"name": "dns", "protocol": "UDP", "port": 53},
]


def cluster(*policies: dict[str, Any]) -> list[dict[str, Any]]:
    """Namespaces a, b, c (labelled as the API server does), one pod each serving PORTS."""
    out: list[dict[str, Any]] = []
    for i, ns in enumerate("abc", 1):
        out.append(namespace(ns, labels={NS: ns}))
        out.append(
            workload_endpoint("p", namespace=ns, ip=f"10.0.0.{i}", labels={"app": ns}, ports=PORTS)
        )
    return out + list(policies)


def verdict(resources: list[dict[str, Any]], src: str, dst: str, port: int, proto: str) -> str:
    return PolicyInsight(resources).explain(f"{src}/p", f"{dst}/p", port, proto).verdict


def _policy(obj: dict[str, Any]) -> Policy:
    pol = convert(obj).obj
    assert isinstance(pol, Policy)
    return pol


# --- conversion -----------------------------------------------------------------------------


def test_conversion_tier_order_identity_and_types() -> None:
    pol = _policy(cnp("x", "Baseline", 7, ingress=[rule("Deny", [to_ns("b")], egress=False)]))
    assert pol.id == PolicyID("kcnp", "", "x")
    assert (pol.tier, pol.order, pol.types) == ("kube-baseline", 7.0, frozenset({"Ingress"}))
    assert 'pcns.kubernetes.io/metadata.name == "a"' in pol.selector
    assert 'projectcalico.org/orchestrator == "k8s"' in pol.selector
    assert _policy(cnp("y", "Admin", 0)).tier == "kube-admin"
    # no rules in a direction: the policy does not apply to it at all
    assert _policy(cnp("z")).types == frozenset()
    # the static tiers and what happens at their end (Calico: defaultAction Pass)
    assert (implied_tier("kube-admin").order, implied_tier("kube-admin").default_action) == (
        1000.0,
        "Pass",
    )
    baseline = implied_tier("kube-baseline")
    assert (baseline.order, baseline.default_action) == (10_000_000.0, "Pass")


def test_conversion_actions_ports_and_peers() -> None:
    pol = _policy(
        cnp(
            "x",
            egress=[
                rule("Accept", [to_ns("b")], protocols=[{"destinationNamedPort": "web"}]),
                rule(
                    "Pass",
                    [{"pods": {"podSelector": {"matchLabels": {"app": "c"}}}}],
                    protocols=[
                        {"udp": {"destinationPort": {"number": 53}}},
                        {"tcp": {"destinationPort": {"range": {"start": 80, "end": 90}}}},
                    ],
                ),
                rule("Deny", [{"networks": ["10.1.2.3/8"]}]),
            ],
        )
    )
    accept, pass_tcp, pass_udp, deny = pol.egress
    assert accept.action == "Allow" and accept.protocol is None
    assert accept.dst.named_ports == ("web",)
    assert (pass_tcp.action, pass_tcp.protocol, pass_tcp.dst.ports) == (
        "Pass",
        6,
        (PortRange(80, 90),),
    )
    assert (pass_udp.protocol, pass_udp.dst.ports) == (17, (PortRange(53, 53),))
    assert pass_udp.dst.selector is not None and 'app == "c"' in pass_udp.dst.selector
    assert "has(projectcalico.org/namespace)" in pass_udp.dst.selector  # empty nsSelector: all
    assert deny.action == "Deny" and [str(n) for n in deny.dst.nets] == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    ("action", "expected"),
    [("Deny", ("Deny",)), ("Pass", ("Deny",)), ("Accept", ())],
)
def test_unsupported_peers_fail_closed(action: str, expected: tuple[str, ...]) -> None:
    """Calico does not convert nodes/domainNames peers: Deny/Pass rules deny everything,
    Accept rules are dropped; the policy still converts (with a warning)."""
    peer = {"domainNames": ["example.com"]} if action == "Accept" else {"nodes": {}}
    conv = convert(cnp("x", egress=[rule(action, [to_ns("b"), peer])]))
    assert isinstance(conv.obj, Policy)
    assert tuple(r.action for r in conv.obj.egress) == expected
    assert all(r.dst.is_empty() and r.protocol is None for r in conv.obj.egress)
    assert conv.warnings and "spec.egress[0].to[1]" in conv.warnings[0]


def test_unconvertible_policy_is_skipped_by_the_graph() -> None:
    bad = cnp("x", egress=[rule("Deny", [to_ns("b")])])
    bad["spec"]["tier"] = "Middle"
    assert verdict(cluster(bad), "a", "b", 80, "TCP") == "allow"


# --- semantics through the model -----------------------------------------------------------


def test_accept_ends_evaluation_and_beats_a_lower_priority_deny() -> None:
    accept = cnp("accept", priority=5, egress=[rule("Accept", [to_ns("b")])])
    deny = cnp("deny", priority=6, egress=[rule("Deny", [to_ns("b")])])
    assert verdict(cluster(accept, deny), "a", "b", 80, "TCP") == "allow"
    accept["spec"]["priority"] = 7
    assert verdict(cluster(accept, deny), "a", "b", 80, "TCP") == "deny"
    # Accept also skips a NetworkPolicy isolating the source for egress
    knp = resource(
        "NetworkPolicy",
        "iso",
        {"podSelector": {}, "policyTypes": ["Egress"]},
        namespace="a",
        api_version="networking.k8s.io/v1",
    )
    assert verdict(cluster(knp), "a", "b", 80, "TCP") == "deny"
    assert verdict(cluster(knp, _with(accept, priority=1)), "a", "b", 80, "TCP") == "allow"


def _with(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["spec"].update(spec)
    return out


def test_pass_skips_to_networkpolicy_then_baseline() -> None:
    admin_pass = cnp("p", priority=1, ingress=[rule("Pass", [to_ns("a")], egress=False)])
    admin_deny = cnp("d", priority=2, ingress=[rule("Deny", [to_ns("a")], egress=False)])
    admin_deny["spec"]["subject"] = {"namespaces": {"matchLabels": {NS: "b"}}}
    admin_pass["spec"]["subject"] = admin_deny["spec"]["subject"]
    baseline = cnp("bl", "Baseline", ingress=[rule("Deny", [to_ns("a")], egress=False)])
    baseline["spec"]["subject"] = admin_deny["spec"]["subject"]
    # Pass at priority 1 skips the Admin Deny; Baseline Deny decides
    assert verdict(cluster(admin_pass, admin_deny, baseline), "a", "b", 80, "TCP") == "deny"
    # a NetworkPolicy selecting the pod decides before Baseline
    knp = resource(
        "NetworkPolicy",
        "allow-a",
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NS: "a"}}}]}],
        },
        namespace="b",
        api_version="networking.k8s.io/v1",
    )
    res = cluster(admin_pass, admin_deny, baseline, knp)
    assert verdict(res, "a", "b", 80, "TCP") == "allow"
    assert verdict(res, "c", "b", 80, "TCP") == "deny"  # NP isolation, Baseline not reached
    # no policy decides at all: default allow
    assert verdict(cluster(admin_pass), "a", "b", 80, "TCP") == "allow"


def test_named_port_matches_its_protocol_and_ranges_are_inclusive() -> None:
    named = cnp(
        "n",
        egress=[
            rule("Accept", [to_ns("b")], protocols=[{"destinationNamedPort": "dns"}]),
            rule(
                "Accept",
                [to_ns("b")],
                protocols=[{"tcp": {"destinationPort": {"range": {"start": 8000, "end": 8080}}}}],
            ),
            rule("Deny", [to_ns("b")]),
        ],
    )
    res = cluster(named)
    assert verdict(res, "a", "b", 53, "UDP") == "allow"
    assert verdict(res, "a", "b", 53, "TCP") == "deny"  # "dns" is UDP/53 on the pod
    assert verdict(res, "a", "b", 80, "TCP") == "deny"
    assert [verdict(res, "a", "b", p, "TCP") for p in (7999, 8000, 8080, 8081)] == [
        "deny",
        "allow",
        "allow",
        "deny",
    ]


def test_networks_match_pod_ips_and_pods_peers() -> None:
    deny_all = cnp(
        "internet",
        egress=[rule("Deny", [{"networks": ["0.0.0.0/0", "::/0"]}])],
    )
    assert verdict(cluster(deny_all), "a", "b", 80, "TCP") == "deny"
    one = cnp("one", egress=[rule("Deny", [{"networks": ["10.0.0.3/32"]}])])
    assert verdict(cluster(one), "a", "b", 80, "TCP") == "allow"
    assert verdict(cluster(one), "a", "c", 80, "TCP") == "deny"
    pods = cnp(
        "pods",
        subject={"pods": {"podSelector": {"matchLabels": {"app": "a"}}}},
        egress=[rule("Deny", [{"pods": {"namespaceSelector": {}, "podSelector": {}}}])],
    )
    assert verdict(cluster(pods), "a", "c", 80, "TCP") == "deny"
    assert verdict(cluster(pods), "b", "c", 80, "TCP") == "allow"


def test_felix_graph_programs_cnp_in_the_static_tier() -> None:
    deny = cnp("d", egress=[rule("Deny", [to_ns("b")])])
    graph = CalcGraph("node1")
    for key, res in keyed(cluster(deny)).items():
        graph.on_update(key, res)
    graph.on_in_sync()
    msgs = graph.flush()
    pols = [m for m in msgs if isinstance(m, ActivePolicyUpdate)]
    assert [(m.policy_id, m.tier, m.order) for m in pols] == [
        (PolicyID("kcnp", "", "d"), "kube-admin", 10.0)
    ]
    eps = {m.endpoint.namespace: m for m in msgs if isinstance(m, EndpointUpdate)}
    assert [(t.name, t.default_action, t.egress_policies) for t in eps["a"].tiers] == [
        ("kube-admin", "Pass", (PolicyID("kcnp", "", "d"),))
    ]
    assert eps["b"].tiers == ()
    assert "ClusterNetworkPolicy" in FELIX_KINDS
    assert storage_kind(API, "ClusterNetworkPolicy") == "ClusterNetworkPolicy"


# --- API validation -------------------------------------------------------------------------

GOOD = cnp(
    "good",
    ingress=[rule("Pass", [{"pods": {"podSelector": {}}}], egress=False, name="r")],
    egress=[
        rule(
            "Accept",
            [{"domainNames": ["*.example.com"]}, {"nodes": {"matchLabels": {"x": "y"}}}],
            protocols=[{"udp": {"destinationPort": {"range": {"start": 1, "end": 2}}}}],
        )
    ],
)


def test_valid_manifest_and_kind_names() -> None:
    decode(GOOD)
    assert {resolve_kind(w) for w in ("cnp", "clusternetworkpolicies", "ClusterNetworkPolicy")} == {
        "ClusterNetworkPolicy"
    }


def _bad(path: list[Any], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(GOOD)
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return obj


BAD = [
    (["spec", "tier"], "Middle", "spec.tier"),
    (["spec", "tier"], KeyError, "spec.tier"),
    (["spec", "priority"], 1001, "spec.priority"),
    (["spec", "priority"], -1, "spec.priority"),
    (["spec", "subject"], {}, "spec.subject"),
    (["spec", "subject"], {"namespaces": {}, "pods": {"podSelector": {}}}, "spec.subject"),
    (["spec", "subject"], {"pods": {"namespaceSelector": {}}}, "spec.subject.pods.podSelector"),
    (["spec", "ingress"], [GOOD["spec"]["ingress"][0]] * 26, "spec.ingress"),
    (["spec", "ingress", 0, "name"], "n" * 101, "spec.ingress[0].name"),
    (["spec", "ingress", 0, "action"], "Allow", "spec.ingress[0].action"),
    (["spec", "ingress", 0, "from"], [], "spec.ingress[0].from"),
    (["spec", "ingress", 0, "from"], [{"pods": {"podSelector": {}}}] * 26, "spec.ingress[0].from"),
    (["spec", "ingress", 0, "from", 0], {"networks": ["10.0.0.0/8"]}, "spec.ingress[0].from[0]"),
    (["spec", "ingress", 0, "from", 0], {}, "spec.ingress[0].from[0]"),
    (["spec", "egress", 0, "to", 0], {"networks": ["10.0.0.0/33"]}, "spec.egress[0].to[0]"),
    (["spec", "egress", 0, "to", 0], {"networks": []}, "spec.egress[0].to[0].networks"),
    (["spec", "egress", 0, "to", 0], {"domainNames": ["a..b"]}, "spec.egress[0].to[0]"),
    (["spec", "egress", 0, "action"], "Deny", "spec.egress[0].to[0].domainNames"),
    (["spec", "egress", 0, "protocols"], [], "spec.egress[0].protocols"),
    (["spec", "egress", 0, "protocols"], [{}], "spec.egress[0].protocols[0]"),
    (["spec", "egress", 0, "protocols"], [{"tcp": {}}], "spec.egress[0].protocols[0].tcp"),
    (
        ["spec", "egress", 0, "protocols"],
        [{"destinationNamedPort": "web"}],
        "spec.egress[0].to[0]",
    ),
    (
        ["spec", "egress", 0, "protocols", 0, "udp", "destinationPort"],
        {"range": {"start": 2, "end": 2}},
        "spec.egress[0].protocols[0].udp.destinationPort.range",
    ),
    (
        ["spec", "egress", 0, "protocols", 0, "udp", "destinationPort"],
        {"number": 0},
        "spec.egress[0].protocols[0].udp.destinationPort.number",
    ),
    (
        ["spec", "egress", 0, "protocols", 0, "udp", "destinationPort"],
        {"number": 5, "range": {"start": 1, "end": 2}},
        "spec.egress[0].protocols[0].udp.destinationPort",
    ),
    (["spec", "extra"], 1, "spec.extra"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD, ids=[b[2] for b in BAD])
def test_invalid_manifests_name_the_field(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        decode(_bad(path, value))
    assert any(p.path.startswith(field) for p in exc.value.problems), exc.value.problems


def test_calicoctl_apply_get_explain_delete(tmp_path: Path) -> None:
    from pycalico.ctl.main import cli

    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    run = CliRunner(env=env).invoke
    docs = cluster(cnp("d", egress=[rule("Deny", [to_ns("b")], name="no-b")]))
    (tmp_path / "all.json").write_text(json.dumps({"kind": "List", "items": docs}))
    r = run(cli, ["apply", "-f", str(tmp_path / "all.json")])
    assert r.exit_code == 0, r.output
    r = run(cli, ["get", "cnp"])
    assert r.exit_code == 0 and r.output.split() == ["NAME", "TIER", "PRIORITY", "d", "Admin", "10"]
    r = run(cli, ["policy", "explain", "--from", "a/p", "--to", "b/p", "--port", "80"])
    assert r.exit_code == 0, r.output
    assert "DENY" in r.output and "kube-admin" in r.output and "kcnp/d" in r.output
    bad = _bad(["spec", "priority"], 5000)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = run(cli, ["apply", "-f", str(tmp_path / "bad.json")])
    assert r.exit_code != 0 and "spec.priority" in r.output
    r = run(cli, ["delete", "cnp", "d"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["policy", "explain", "--from", "a/p", "--to", "b/p", "--port", "80"])
    assert "ALLOW" in r.output
