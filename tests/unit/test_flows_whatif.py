"""What-if (policy diff): recorded flows replayed with proposed resources applied."""

from __future__ import annotations

from typing import Any

from pycalico.felix.rules.nflog import RuleRef
from pycalico.flows.record import FlowKey, FlowRecord, Peer
from pycalico.flows.whatif import apply_proposed, format_whatif, observed, policy_diff
from tests.kit import global_network_policy, namespace, workload_endpoint

IPS = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}


def current() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [dict(namespace("ns1"))]
    out += [
        dict(workload_endpoint(n, namespace="ns1", ip=ip, labels={"app": n}))
        for n, ip in IPS.items()
    ]
    out.append(dict(global_network_policy(
        "b-in", selector="app == 'b'", types=["Ingress"],
        ingress=[{"action": "Allow", "source": {"selector": "app == 'a'"}}],
    )))  # fmt: skip
    return out


def rec(src: str, dst: str, action: str, reporter: str = "dst", end: float = 100.0) -> FlowRecord:
    ref = RuleRef("deny" if action == "deny" else "allow", "ingress", "policy", tier="default")
    key = FlowKey(
        reporter,  # type: ignore[arg-type]
        Peer("wep", IPS[src], "ns1", src),
        Peer("wep", IPS[dst], "ns1", dst),
        6, 80, action, (ref,),  # type: ignore[arg-type]
    )  # fmt: skip
    return FlowRecord(end - 15, end, "n", key)


def test_apply_proposed_replaces_by_identity_and_adds() -> None:
    cur = current()
    new = dict(global_network_policy("b-in", selector="all()", types=["Ingress"]))
    extra = dict(global_network_policy("x", selector="all()"))
    out = apply_proposed(cur, [new, extra])
    names = [r["metadata"]["name"] for r in out if r["kind"] == "GlobalNetworkPolicy"]
    assert sorted(names) == ["b-in", "x"] and new in out and len(out) == len(cur) + 1


def test_observed_takes_the_latest_records_and_deny_wins_across_reporters() -> None:
    flows = observed([rec("a", "b", "deny", end=10), rec("a", "b", "allow", end=20),
                      rec("c", "b", "allow", "src"), rec("c", "b", "deny", "dst")])  # fmt: skip
    assert flows[("ns1/a", "ns1/b", 6, 80)][0] == "allow"
    assert flows[("ns1/c", "ns1/b", 6, 80)][0] == "deny"


def test_policy_diff_lists_flows_that_change_and_the_matrix_delta() -> None:
    records = [rec("a", "b", "allow"), rec("c", "b", "deny"), rec("a", "c", "allow")]
    proposed = [dict(global_network_policy(
        "b-in", selector="app == 'b'", types=["Ingress"],
        ingress=[{"action": "Allow", "source": {"selector": "app == 'c'"}}],
    ))]  # fmt: skip
    w = policy_diff(records, current(), proposed)
    assert w.observed == 3
    got = {(c.src, c.dst, c.recorded, c.proposed) for c in w.changes}
    assert got == {("ns1/a", "ns1/b", "allow", "deny"), ("ns1/c", "ns1/b", "deny", "allow")}
    deny = next(c for c in w.changes if c.proposed == "deny")
    assert deny.decided_by == "ingress end of tier default"
    assert {(m["from"], m["to"]) for m in w.matrix_delta} == {
        ("ns1/a", "ns1/b"),
        ("ns1/c", "ns1/b"),
    }
    text = format_whatif(w)
    assert "would change verdict: 2" in text and "Reachability matrix delta: 2" in text
    # The unchanged proposal changes nothing.
    assert policy_diff(records, current(), []).changes == []


def test_a_flow_the_nodes_host_default_dropped_is_skipped_not_a_change() -> None:
    """A pod's connection to its own node: the source's egress allowed it, the node's
    ``defaultEndpointToHostAction: Drop`` dropped it. The model knows policies, not that
    Felix setting, so the flow is listed as skipped (with why), never as a change."""
    src, node = Peer("wep", IPS["a"], "ns1", "a"), Peer("net", "198.18.0.1")
    allow = RuleRef("allow", "egress", "profile", name="kns.ns1", rule=0)
    host = RuleRef("deny", "ingress", "host")
    records = [
        FlowRecord(85, 100, "n", FlowKey("src", src, node, 6, 179, "allow", (allow,))),
        FlowRecord(85, 100, "n", FlowKey("dst", src, node, 6, 179, "deny", (host,))),
    ]
    w = policy_diff(records, current(), [])
    assert w.changes == [] and w.observed == 1
    assert len(w.skipped) == 1 and "defaultEndpointToHostAction" in w.skipped[0]
