"""Policy insight semantics: tiers, Pass, Log, defaultAction, profiles, rule matches."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.felix.calc import InsightError, PolicyInsight, format_explanation, format_matrix
from pycalico.felix.calc.insight import parse_port_list
from tests.kit import global_network_policy, global_network_set, namespace, workload_endpoint
from tests.kit import tier as kit_tier


def ns(name: str, **labels: str) -> dict[str, Any]:
    return namespace(name, labels=labels)


def wep(
    name: str,
    namespace: str,
    ip: str,
    labels: dict[str, str] | None = None,
    profiles: list[str] | None = None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return workload_endpoint(
        name,
        namespace=namespace,
        node="n1",
        ip=ip,
        labels=labels or {"app": name},
        profiles=profiles,
        ports=ports or [],
        interface_name=None,
    )


def gnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return global_network_policy(name, **spec)


def tier(name: str, order: float | None, action: str = "Deny") -> dict[str, Any]:
    return kit_tier(name, order=order, default_action=action)


BASE = [
    ns("a", team="x"),
    ns("b", team="y"),
    wep("web", "a", "10.0.0.1"),
    wep("db", "a", "10.0.0.2", ports=[{"name": "pg", "protocol": "TCP", "port": 5432}]),
    wep("cli", "b", "10.0.1.1"),
]


def verdict(
    resources: list[dict[str, Any]],
    src: str,
    dst: str,
    port: int | None = 80,
    proto: str = "TCP",
    **kw: Any,
) -> str:
    return PolicyInsight(BASE + resources).explain(src, dst, port, proto, **kw).verdict


def test_no_policy_namespace_profile_allows() -> None:
    ex = PolicyInsight(BASE).explain("b/cli", "a/web", 80, "TCP")
    assert ex.verdict == "allow"
    assert ex.egress.reason == ex.ingress.reason == "profile-rule"
    assert ex.ingress.profile == "kns.a"


def test_tiers_pass_log_and_default_actions() -> None:
    sec = [
        tier("sec", 10),
        tier("soft", 20, "Pass"),
        gnp(
            "sec.pass",
            {
                "tier": "sec",
                "selector": "app == 'web'",
                "ingress": [{"action": "Log"}, {"action": "Pass"}],
            },
        ),
        gnp(
            "soft.nomatch",
            {
                "tier": "soft",
                "selector": "app == 'web'",
                "ingress": [{"action": "Deny", "protocol": "UDP"}],
            },
        ),
    ]
    # Pass -> soft tier: no rule matches, defaultAction Pass -> default tier absent -> profile.
    ex = PolicyInsight(BASE + sec).explain("b/cli", "a/web", 80, "TCP")
    assert ex.verdict == "allow" and ex.ingress.reason == "profile-rule"
    assert any("Log" in t for t in ex.ingress.trace)
    # UDP hits the Deny in the soft tier.
    assert verdict(sec, "b/cli", "a/web", 80, "UDP") == "deny"
    # A default-tier policy that matches nothing: end of tier Deny.
    deny_end = [
        *sec,
        gnp(
            "d", {"selector": "app == 'web'", "ingress": [{"action": "Allow", "protocol": "SCTP"}]}
        ),
    ]
    ex = PolicyInsight(BASE + deny_end).explain("b/cli", "a/web", 80, "TCP")
    assert ex.verdict == "deny" and ex.ingress.reason == "tier-default"
    assert ex.ingress.tier == "default"


def test_tier_order_and_policy_order() -> None:
    res = [
        tier("first", 1),
        tier("second", 2),
        gnp(
            "z-allow",
            {"tier": "first", "order": 1, "selector": "all()", "ingress": [{"action": "Allow"}]},
        ),
        gnp(
            "a-deny",
            {"tier": "second", "order": 0, "selector": "all()", "ingress": [{"action": "Deny"}]},
        ),
        gnp(
            "unordered-deny",
            {"tier": "first", "selector": "all()", "ingress": [{"action": "Deny"}]},
        ),
    ]
    ex = PolicyInsight(BASE + res).explain("b/cli", "a/web", 80, "TCP")
    assert (ex.ingress.tier, ex.ingress.policy, ex.ingress.rule) == ("first", "gnp/z-allow", 0)


def test_missing_or_no_profiles_fail_closed() -> None:
    res = [wep("lonely", "nons", "10.9.0.1"), wep("bare", "a", "10.9.0.2", profiles=[])]
    ins = PolicyInsight(BASE + res)
    assert ins.explain("a/web", "nons/lonely", 80, "TCP").ingress.reason == "missing-profile"
    ex = ins.explain("a/web", "a/bare", 80, "TCP")
    assert ex.verdict == "deny" and ex.ingress.reason == "no-profile-match"


def test_protocol_icmp_ipversion_and_source_ports() -> None:
    res = [
        gnp(
            "p",
            {
                "selector": "app == 'web'",
                "ingress": [
                    {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}},
                    {"action": "Allow", "ipVersion": 6},
                    {"action": "Allow", "protocol": "UDP", "source": {"ports": ["1000:2000"]}},
                    {"action": "Allow", "notProtocol": "TCP", "protocol": "SCTP"},
                ],
            },
        )
    ]
    assert verdict(res, "b/cli", "a/web", None, "ICMP") == "allow"  # ping = type 8
    assert verdict(res, "b/cli", "a/web", 80, "TCP") == "deny"  # v4 only
    assert verdict(res, "b/cli", "a/web", 53, "UDP") == "deny"  # source port unknown
    assert verdict(res, "b/cli", "a/web", 53, "UDP", src_port=1500) == "allow"
    assert verdict(res, "b/cli", "a/web", 53, "SCTP") == "allow"


def test_named_ports_nets_and_network_sets() -> None:
    res = [
        global_network_set("ext", ["192.0.2.0/24"], labels={"zone": "ext"}),
        gnp(
            "db-in",
            {
                "selector": "app == 'db'",
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "destination": {"ports": ["pg"]},
                        "source": {"namespaceSelector": "team == 'y'"},
                    },
                    {
                        "action": "Allow",
                        "source": {"namespaceSelector": "global()", "selector": "zone == 'ext'"},
                    },
                ],
            },
        ),
    ]
    assert verdict(res, "b/cli", "a/db", 5432) == "allow"
    assert verdict(res, "b/cli", "a/db", 5433) == "deny"
    assert verdict(res, "a/web", "a/db", 5432) == "deny"  # ns a is team x
    assert verdict(res, "192.0.2.7", "a/db", 1) == "allow"  # in the global network set
    assert verdict(res, "198.51.100.1", "a/db", 1) == "deny"
    assert verdict(res, "a/db", "198.51.100.1", 1) == "allow"  # external: egress only


def test_explain_json_and_text() -> None:
    res = [gnp("p", {"selector": "app == 'web'", "ingress": [{"action": "Deny"}]})]
    ex = PolicyInsight(BASE + res).explain("a/db", "a/web", 80, "TCP")
    js = ex.to_json()
    assert js["verdict"] == "deny"
    assert js["ingress"]["policy"] == "gnp/p" and js["ingress"]["rule"] == 0
    assert js["egress"]["verdict"] == "allow"
    text = format_explanation(ex)
    assert "DENY" in text and "policy gnp/p, rule 0" in text


def test_matrix_names_ports_and_errors() -> None:
    ins = PolicyInsight(BASE)
    assert ins.default_ports() == [(5432, 6)]
    results = ins.matrix()
    assert {(r.src, r.dst) for r in results} == {
        (s, d) for s in ("a/web", "a/db", "b/cli") for d in ("a/web", "a/db", "b/cli") if s != d
    }
    assert all(r.verdict == "allow" for r in results)
    assert "a/db 5432/TCP" in format_matrix(results)
    assert parse_port_list("80/TCP,81/udp,53") == [(80, 6), (81, 17), (53, 6)]
    with pytest.raises(InsightError, match="--ports"):
        parse_port_list("80/FOO")
    with pytest.raises(InsightError, match="unknown endpoint"):
        ins.explain("a/nope", "a/web", 80)


def test_builtin_default_allow_profile() -> None:
    res = [wep("open", "a", "10.9.0.3", profiles=["projectcalico-default-allow"])]
    ex = PolicyInsight(BASE + res).explain("b/cli", "a/open", 80, "TCP")
    assert ex.verdict == "allow" and ex.ingress.profile == "projectcalico-default-allow"
