"""Flow-log attribution: Calico's NFLOG prefix format, hashing, and the renderer's map."""

from __future__ import annotations

import re

from pycalico.felix.rules import RenderConfig
from pycalico.felix.rules.nflog import (
    MAX_PREFIX,
    RuleRef,
    log_statement,
    maybe_hash,
    parse_prefix,
    prefix_for,
)
from tests.unit.test_rules_renderer import render, state

_PREFIX = re.compile(r'log prefix "([^"]*)" group (\d+)')


def test_prefix_format_matches_calico() -> None:
    ref = RuleRef("allow", "ingress", "policy", "default", "np", "ns1", "b-in", 0)
    assert prefix_for(ref) == "API0|np/ns1/b-in"
    assert prefix_for(RuleRef("deny", "egress", "policy", "default", "gnp", "", "x", 12)) == (
        "DPE12|gnp/x"
    )
    assert prefix_for(RuleRef("pass", "ingress", "policy", "sec", "gnp", "", "p", 0)) == (
        "PPI0|gnp/p"
    )
    assert prefix_for(RuleRef("deny", "ingress", "policy", tier="sec")) == "DPI|sec"
    assert prefix_for(RuleRef("deny", "egress", "profile")) == "DRE"
    assert prefix_for(RuleRef("allow", "egress", "profile", name="kns.ns1", rule=0)) == (
        "ARE0|kns.ns1"
    )
    assert log_statement("DRE", "deny") == 'log prefix "DRE" group 2'
    assert log_statement("ARE0|kns.ns1", "allow").endswith("group 1")


def test_long_prefixes_are_hashed_to_63_chars_keeping_both_ends() -> None:
    name = "x" * 80
    p = prefix_for(RuleRef("allow", "ingress", "policy", "default", "gnp", "", name, 3))
    assert len(p) == MAX_PREFIX
    assert p.startswith("API3|gnp/x") and p.endswith("_" + "x" * 10)
    other = prefix_for(RuleRef("allow", "ingress", "policy", "default", "gnp", "", name + "y", 3))
    assert other != p
    assert maybe_hash("A" * 62) == "A" * 62  # 62 chars: kept; 63 or more: hashed
    assert len(maybe_hash("A" * 63)) == MAX_PREFIX and maybe_hash("A" * 63) != "A" * 63


def test_parse_prefix_round_trips_unhashed_and_rejects_garbage() -> None:
    refs = [
        RuleRef("allow", "ingress", "policy", "", "np", "ns1", "b-in", 0),
        RuleRef("deny", "egress", "policy", "", "gnp", "", "x", 7),
        RuleRef("deny", "ingress", "policy", tier="sec"),
        RuleRef("deny", "egress", "profile"),
        RuleRef("allow", "ingress", "profile", name="kns.ns1", rule=0),
        RuleRef("deny", "ingress", "host"),
    ]
    for ref in refs:
        assert parse_prefix(prefix_for(ref)) == ref
        assert RuleRef.from_json(ref.to_json()) == ref
    for bad in ("", "calico-packet", "XPI0|a/b", "APX0|a/b", "APIa|a/b", "API0|", "API0|a/b/c/d",
                "DRI0", "ARIx|p", "DHI0", "DHX"):  # fmt: skip
        assert parse_prefix(bad) is None, bad


def test_renderer_logs_every_deciding_rule_and_maps_every_prefix() -> None:
    r = render(state(), flow_logs=True)
    tables = r.tables()
    text = tables["ip"].text()
    used = {m.group(1): int(m.group(2)) for m in _PREFIX.finditer(text)}
    assert used, "no NFLOG statements rendered"
    assert set(used) <= set(r.attribution), set(used) - set(r.attribution)
    # Allow rule of b-in, the pass-all rule, the profile allows, end of tier, no profile.
    assert "API0|np/ns1/b-in" in used and used["API0|np/ns1/b-in"] == 1
    assert "PPI0|gnp/sec.pass-all" in used
    assert r.attribution["API0|np/ns1/b-in"].tier == "default"
    assert r.attribution["PPI0|gnp/sec.pass-all"].tier == "sec"
    assert used["DPI|default"] == 2  # end of the default tier drops (tier "sec" passes)
    assert "DPI|sec" not in used
    assert used["DRI"] == 2 and used["DRE"] == 2
    # The NFLOG comes before the verdict in the same rule.
    assert re.search(r'log prefix "API0\|np/ns1/b-in" group 1 meta mark set .* return', text)
    assert re.search(r'log prefix "DPI\|default" group 2 drop', text)


def test_the_endpoint_to_host_drop_logs_as_the_host_default() -> None:
    """A workload's packet to its own host that its egress policy allowed, then dropped by
    ``defaultEndpointToHostAction: Drop``: the drop logs ``DHI`` (the host's ingress
    decision), so flow logs do not report the connection as allowed only."""
    ref = RuleRef("deny", "ingress", "host")
    assert prefix_for(ref) == "DHI" and ref.label() == "endpoint-to-host-default"
    assert ref.to_json()["kind"] == "host" and not ref.end_of_tier
    r = render(state(), flow_logs=True)
    to_host = r.tables()["ip"].chains["cali-wl-to-host"].rules
    assert to_host[-1].body.endswith('log prefix "DHI" group 2 drop'), to_host[-1]
    assert r.attribution["DHI"] == ref
    for action, verdict in (("Accept", "accept"), ("Return", "return")):
        other = render(state(), flow_logs=True, endpoint_to_host_action=action)
        assert other.tables()["ip"].chains["cali-wl-to-host"].rules[-1].body == verdict
        assert "DHI" not in other.attribution
    plain = render(state())
    assert plain.tables()["ip"].chains["cali-wl-to-host"].rules[-1].body == "drop"


def test_flow_logs_off_renders_no_log_and_switching_rerenders_policy_chains() -> None:
    r = render(state())
    assert "log prefix" not in r.tables()["ip"].text() and not r.attribution
    r.set_config(RenderConfig(flow_logs=True))
    on = r.tables()["ip"].text()
    assert 'log prefix "API0|np/ns1/b-in"' in on
    r.set_config(RenderConfig(flow_logs=False))
    assert "log prefix" not in r.tables()["ip"].text()


def test_untracked_and_pre_dnat_policies_do_not_log() -> None:
    untracked = {
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "untracked"},
        "spec": {"selector": "all()", "doNotTrack": True, "applyOnForward": True,
                 "types": ["Ingress"], "ingress": [{"action": "Allow"}]},
    }  # fmt: skip
    res = [*state(), untracked]
    r = render(res, flow_logs=True)
    text = r.tables()["ip"].text()
    assert "API0|gnp/untracked" not in text and not any("untracked" in p for p in r.attribution)
    assert 'log prefix "API0|np/ns1/b-in"' in text


def test_host_endpoint_forward_chains_log_end_of_tier_pre_dnat_and_untracked_do_not() -> None:
    from tests.kit import host_endpoint

    def gnp(name: str, **spec: object) -> dict[str, object]:
        return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": name},
                "spec": {"tier": "hosts", "selector": "role == 'gw'", **spec}}  # fmt: skip

    hosts = {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "hosts"},
             "spec": {"order": 50}}  # fmt: skip
    fwd = gnp(
        "hosts.fwd",
        applyOnForward=True,
        types=["Ingress", "Egress"],
        ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [22]}}],
        egress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [443]}}],
    )
    pre = gnp(
        "hosts.pre",
        preDNAT=True,
        applyOnForward=True,
        types=["Ingress"],
        ingress=[{"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}}],
    )
    raw = gnp(
        "hosts.raw",
        doNotTrack=True,
        applyOnForward=True,
        types=["Ingress"],
        ingress=[{"action": "Deny", "source": {"nets": ["198.51.100.0/24"]}}],
    )
    hep = host_endpoint("gw-eth1", interface_name="eth1", labels={"role": "gw"})
    r = render([*state(), hosts, fwd, pre, raw, hep], flow_logs=True)
    chains = r.tables()["ip"].chains
    fh_fw, th_fw = chains["cali-fhfw-eth1"].block(), chains["cali-thfw-eth1"].block()
    assert re.search(r'log prefix "DPI\|hosts" group 2 drop', fh_fw), fh_fw
    assert re.search(r'log prefix "DPE\|hosts" group 2 drop', th_fw), th_fw
    assert r.attribution["DPI|hosts"] == RuleRef("deny", "ingress", "policy", tier="hosts")
    assert r.attribution["DPE|hosts"] == RuleRef("deny", "egress", "policy", tier="hosts")
    # the forward policies' own rules log (first packets only: conntrack comes first)
    assert r.attribution["API0|gnp/hosts.fwd"].tier == "hosts"
    # pre-DNAT and untracked chains: no end-of-tier verdict, nothing logs
    for name in ("mangle-cali-fh-eth1", "raw-cali-fh-eth1", "raw-cali-th-eth1"):
        assert name in chains and "log prefix" not in chains[name].block(), name
    assert not any("hosts.pre" in p or "hosts.raw" in p for p in r.attribution)
    # with flow logs off the forward chains keep their plain end-of-tier drop
    off = render([*state(), hosts, fwd, hep]).tables()["ip"].chains["cali-fhfw-eth1"].block()
    assert "log prefix" not in off and "drop" in off
