"""RuleRenderer: golden structure, determinism, minimal deltas, names, rule translation."""

from __future__ import annotations

import random
from ipaddress import ip_network
from typing import Any

import pytest

from pycalico.felix.calc import CalcGraph
from pycalico.felix.calc.messages import ResolvedRule
from pycalico.felix.dataplane import AddElements, DeleteElements, TableState, plan
from pycalico.felix.rules import IPV4, IPV6, RenderConfig, RenderError, RuleRenderer
from pycalico.felix.rules import names as N
from pycalico.felix.rules.policy import rule_bodies
from pycalico.model import PolicyID, PortRange
from tests.kit import workload_endpoint

NODE = "node1"
HTTP_PORT = {"name": "http", "protocol": "TCP", "port": 8080}


def wep(name: str, ip: str, labels: dict[str, str], ns: str = "ns1") -> dict[str, Any]:
    return workload_endpoint(name, namespace=ns, node=NODE, ip=ip, labels=labels, ports=[HTTP_PORT])


def state() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}},
        {"apiVersion": "projectcalico.org/v3", "kind": "Tier",
         "metadata": {"name": "sec"}, "spec": {"order": 10, "defaultAction": "Pass"}},
        wep("a", "10.0.0.1", {"app": "a"}),
        wep("b", "10.0.0.2", {"app": "b"}),
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "b-in", "namespace": "ns1"},
            "spec": {
                "selector": "app == 'b'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Allow", "protocol": "TCP",
                     "source": {"selector": "app == 'a'"},
                     "destination": {"ports": ["http", 9000]}},
                ],
            },
        },
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "sec.pass-all"},
            "spec": {"tier": "sec", "selector": "all()", "types": ["Ingress"],
                     "ingress": [{"action": "Pass"}]},
        },
    ]  # fmt: skip


def render(resources: list[dict[str, Any]], **cfg: Any) -> RuleRenderer:
    g = CalcGraph(NODE)
    g.load(resources)
    r = RuleRenderer(RenderConfig(**cfg))
    r.apply(g.flush())
    return r


def test_golden_structure() -> None:
    t = render(state()).tables()["ip"]
    fwd = t.chains["filter-FORWARD"]
    assert fwd.hook is not None and (fwd.hook.hook, fwd.hook.priority) == ("forward", 0)
    assert {"filter-INPUT", "filter-OUTPUT"} <= set(t.chains)
    bodies = [r.body for r in fwd.rules]
    assert bodies[:3] == [
        # First: the evaluated mark, established packets too (the tc guard requires it of
        # every forwarded workload packet; felix/dataplane/tcguard.py).
        "meta mark set meta mark | 0x40000",
        "ct state established,related accept",
        'iifname "cali*" fib saddr . iif oif missing drop',
    ]
    for base in ("filter-INPUT", "filter-OUTPUT"):
        assert t.chains[base].rules[0].body == "meta mark set meta mark | 0x40000"
    assert 'iifname "cali*" jump cali-from-wl-dispatch' in bodies
    # Dispatch: a verdict map keyed by interface name; unknown cali* drops.
    assert t.sets["cali-tw-dispatch"].elements == {
        '"calia" : goto cali-tw-calia',
        '"calib" : goto cali-tw-calib',
    }
    assert [r.body for r in t.chains["cali-to-wl-dispatch"].rules] == [
        "oifname vmap @cali-tw-dispatch",
        "drop",
    ]
    tw_b = [r.body for r in t.chains["cali-tw-calib"].rules]
    pi_sec = N.policy_chain(PolicyID("gnp", "", "sec.pass-all"), True)
    pi_b = N.policy_chain(PolicyID("np", "ns1", "b-in"), True)
    assert tw_b == [
        "ct state established,related accept",
        "ct state invalid drop",
        "meta mark set meta mark & 0xffe4ffff",
        "meta mark set meta mark & 0xfffdffff",  # tier sec
        f"meta mark & 0x20000 == 0 meta mark set meta mark | 0x100000 jump {pi_sec}",
        # accept: return; still pending (the policy chain was flushed): drop
        "meta mark & 0x110000 vmap { 0x10000 : return, 0x100000 : drop }",
        # sec has defaultAction Pass: no end-of-tier drop
        "meta mark set meta mark & 0xfffdffff",  # tier default
        f"meta mark & 0x20000 == 0 meta mark set meta mark | 0x100000 jump {pi_b}",
        "meta mark & 0x110000 vmap { 0x10000 : return, 0x100000 : drop }",
        "meta mark & 0x20000 == 0 drop",
        "jump cali-pri-kns.ns1",
        "meta mark & 0x10000 == 0x10000 return",
        "drop",
    ]
    fw_a = [r.body for r in t.chains["cali-fw-calia"].rules]
    assert "meta l4proto 17 th dport 4789 drop" in fw_a and "meta l4proto 4 drop" in fw_a
    # The policy rule: selector set AND (numeric port OR named-port set).
    pol = [r.body for r in t.chains[pi_b].rules]
    assert len(pol) == 3
    assert all(b.startswith("meta l4proto 6 ip saddr @cali40s-") for b in pol[:2])
    # An Allow sets the accept mark and clears the pending one in one statement ...
    assert "th dport 9000 meta mark set meta mark & 0xffefffff | 0x10000 return" in pol[0]
    # ... and a complete chain's last rule clears the pending mark (nothing matched).
    assert pol[2] == "meta mark set meta mark & 0xffefffff"
    assert "ip daddr . meta l4proto . th dport @cali40n-" in pol[1]
    named = [s for s in t.sets.values() if s.name.startswith("cali40n-")]
    assert [s.elements for s in named] == [
        frozenset({"10.0.0.1 . 6 . 8080", "10.0.0.2 . 6 . 8080"})
    ]
    # Every rule carries its hash as a comment.
    assert all(r.text().endswith(f'comment "cali:{r.hash}"') for r in fwd.rules)


def test_deterministic_regardless_of_input_order() -> None:
    texts = set()
    for seed in range(4):
        res = state()
        random.Random(seed).shuffle(res)
        tables = render(res).tables()
        texts.add(tables["ip"].text() + tables["ip6"].text())
    assert len(texts) == 1


def test_label_change_is_set_element_delta_only() -> None:
    g = CalcGraph(NODE)
    g.load([*state(), wep("c", "10.0.0.3", {"app": "c"})])
    r = RuleRenderer()
    r.apply(g.flush())
    before = r.tables()["ip"]
    relabelled = wep("c", "10.0.0.3", {"app": "a"})
    g.on_update("projectcalico.org/v3/WorkloadEndpoint/ns1/node1-k8s-c-eth0", relabelled)
    r.apply(g.flush())
    ops = plan(TableState.from_spec(before), r.tables()["ip"])
    assert ops is not None and ops
    assert all(isinstance(o, (AddElements, DeleteElements)) for o in ops), ops
    assert any("10.0.0.3/32" in o.elements for o in ops if isinstance(o, AddElements))


def test_missing_profile_fails_closed() -> None:
    res = state()
    res[2]["spec"]["profiles"] = ["nope"]
    t = render(res).tables()["ip"]
    fw = [r.body for r in t.chains["cali-fw-calia"].rules]
    assert fw[-3:] == ["jump cali-pro-nope", "meta mark & 0x10000 == 0x10000 return", "drop"]
    assert [r.body for r in t.chains["cali-pro-nope"].rules] == [
        "drop",
        "meta mark set meta mark & 0xffefffff",
    ]


def test_endpoint_to_host_action_and_bad_config() -> None:
    for action, verdict in (("Drop", "drop"), ("Return", "return"), ("Accept", "accept")):
        t = render(state(), endpoint_to_host_action=action).tables()["ip"]
        bodies = [r.body for r in t.chains["cali-wl-to-host"].rules]
        dns = "ip daddr { 169.254.25.10 } meta l4proto { tcp, udp } th dport 53 accept"
        # The dispatch must come back with the accept mark (fail closed when flushed).
        clear, no_verdict = "meta mark set meta mark & 0xfffeffff", "meta mark & 0x10000 == 0 drop"
        assert bodies == [clear, "jump cali-from-wl-dispatch", no_verdict, dns, verdict]
    # Workload DNS is accepted after egress policy, before the endpoint-to-host verdict; it
    # can be turned off, and the IPv6 table has no IPv4 rule.
    t = render(state(), workload_dns_v4=()).tables()["ip"]
    assert [r.body for r in t.chains["cali-wl-to-host"].rules] == [
        clear,
        "jump cali-from-wl-dispatch",
        no_verdict,
        "drop",
    ]
    v6 = render(state()).tables()["ip6"]
    assert not any("169.254.25.10" in r.body for r in v6.chains["cali-wl-to-host"].rules)
    with pytest.raises(RenderError, match="defaultEndpointToHostAction"):
        RenderConfig(endpoint_to_host_action="Maybe")


def test_set_config_rerenders_static_and_endpoint_chains() -> None:
    r = render(state())
    before = r.tables()["ip"]
    r.set_config(RenderConfig(endpoint_to_host_action="Accept", allow_vxlan_from_workloads=True))
    after = r.tables()["ip"]
    assert before.chains["cali-wl-to-host"] != after.chains["cali-wl-to-host"]
    fw = [x.body for x in after.chains["cali-fw-calia"].rules]
    assert "meta l4proto 17 th dport 4789 drop" not in fw


def test_names_are_length_limited_and_distinct() -> None:
    a = N.policy_chain(PolicyID("np", "some-namespace", "a-very-long-policy-name-1"), True)
    b = N.policy_chain(PolicyID("np", "some-namespace", "a-very-long-policy-name-2"), True)
    assert a != b and len(a) <= N.MAX_NAME and len(b) <= N.MAX_NAME
    assert a.startswith("cali-pi-_")
    assert N.policy_chain(PolicyID("gnp", "", "short"), False) == "cali-po-gnp/short"
    assert N.set_name("cali40", "s:abc") == "cali40s-abc"


def _names(set_id: str) -> str:
    return "S" + set_id


def test_rule_translation_families_and_negations() -> None:
    v4 = ip_network("10.0.0.0/8")
    v6 = ip_network("fd00::/64")
    r = ResolvedRule("Deny", src_nets=(v4, v6), not_dst_nets=(ip_network("10.1.0.0/16"),))
    assert rule_bodies(r, IPV4, _names) == ["ip saddr 10.0.0.0/8 ip daddr != 10.1.0.0/16 drop"]
    assert rule_bodies(r, IPV6, _names) == ["ip6 saddr fd00::/64 drop"]
    only6 = ResolvedRule("Allow", src_nets=(v6,))
    assert rule_bodies(only6, IPV4, _names) == []  # can never match in IPv4
    assert rule_bodies(ResolvedRule("Allow", ip_version=6), IPV4, _names) == []
    assert rule_bodies(ResolvedRule("Allow", unmatchable=True), IPV4, _names) == []
    icmp = ResolvedRule("Allow", protocol=1, not_icmp_type=8, not_icmp_code=0)
    assert rule_bodies(icmp, IPV4, _names)[0].startswith(
        "meta l4proto 1 icmp type . icmp code != { 8 . 0 }"
    )
    assert rule_bodies(icmp, IPV6, _names) == []
    ports = ResolvedRule(
        "Pass",
        protocol=17,
        dst_ports=(PortRange(53, 53), PortRange(1000, 2000)),
        not_src_ports=(PortRange(7, 7),),
        not_dst_ip_set_ids=("s:x",),
    )
    assert rule_bodies(ports, IPV4, _names) == [
        "meta l4proto 17 th sport != 7 ip daddr != @Ss:x th dport { 53, 1000-2000 } "
        "meta mark set meta mark & 0xffefffff | 0x20000 return"
    ]


def test_log_with_alternatives_logs_once() -> None:
    r = ResolvedRule(
        "Log", protocol=6, dst_ports=(PortRange(80, 80),), dst_named_port_ip_set_ids=("n:p",)
    )
    bodies = rule_bodies(r, IPV4, _names)
    assert bodies[0] == "meta mark set meta mark & 0xfff7ffff"
    assert bodies[-1] == 'meta mark & 0x80000 == 0x80000 log prefix "calico-packet"'
    assert sum("log prefix" in b for b in bodies) == 1
    assert len(bodies) == 4


def test_named_host_endpoint_chains_with_failsafe() -> None:
    hep = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "HostEndpoint",
        "metadata": {"name": "n1-eth0", "labels": {"role": "host"}},
        "spec": {"node": NODE, "interfaceName": "eth0", "expectedIPs": ["192.0.2.1"]},
    }
    gnp = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "host-in"},
        "spec": {
            "selector": "role == 'host'",
            "types": ["Ingress"],
            "ingress": [{"action": "Allow"}],
        },
    }
    t = render(
        [*state(), hep, gnp], failsafe_inbound=(("tcp", 22), ("udp", 68), ("tcp", 179))
    ).tables()["ip"]
    assert t.sets["cali-fh-dispatch"].elements == {'"eth0" : goto cali-fh-eth0'}
    assert t.sets["cali-th-dispatch"].elements == {'"eth0" : goto cali-th-eth0'}
    fh = [r.body for r in t.chains["cali-fh-eth0"].rules]
    th = [r.body for r in t.chains["cali-th-eth0"].rules]
    assert fh[:3] == [
        "ct state established,related accept",
        "ct state invalid drop",
        "jump cali-failsafe-in",
    ]
    assert th[2] == "jump cali-failsafe-out"
    assert any("jump cali-pi-gnp/host-in" in b for b in fh)  # ingress policy on "from host"
    assert not any("cali-pi-" in b or "cali-po-" in b for b in th)  # no egress policy
    assert th[-1] == "drop" and "4789" not in " ".join(fh)  # no profile: drop; no VXLAN rule
    assert [r.body for r in t.chains["cali-failsafe-in"].rules] == [
        "tcp dport { 22, 179 } accept",
        "udp dport 68 accept",
    ]
