"""Staged policies: the pending view (as if enforced), never the enforced one.

Semantics (``pycalico.felix.calc.pending``): a staged policy replaces its enforced
counterpart (same kind family, namespace, name) in the pending view; ``stagedAction: Delete``
removes it there; tiers, order and Pass behave exactly as for enforced policies. The
enforced messages (what the nft renderer programs) never change because of a staged policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.ctl.main import cli
from pycalico.felix.calc import CalcGraph, DataplaneView, PolicyInsight, format_explanation
from pycalico.felix.calc.evaluate import Packet, TierDecision
from pycalico.felix.calc.pending import StagedFilter
from pycalico.felix.calc.views import PolicyViews, SnapshotBox
from pycalico.felix.rules import RuleRenderer
from pycalico.model import ItemID
from tests.kit import (
    global_network_policy,
    k8s_network_policy,
    keyed,
    network_policy,
    tier,
)
from tests.kit.expanders import State, Update, check_expansions, draw_states
from tests.unit.test_calc_evaluate import BASE

DENY_WEB = {"selector": "app == 'web'", "ingress": [{"action": "Deny"}]}
ALLOW_WEB = {"selector": "app == 'web'", "ingress": [{"action": "Allow"}]}


def sgnp(name: str, **spec: Any) -> dict[str, Any]:
    return global_network_policy(name, kind="StagedGlobalNetworkPolicy", **spec)


def snp(name: str, namespace: str = "a", **spec: Any) -> dict[str, Any]:
    return network_policy(name, namespace=namespace, kind="StagedNetworkPolicy", **spec)


def sknp(name: str, namespace: str = "a", **kw: Any) -> dict[str, Any]:
    res = k8s_network_policy(name, namespace=namespace, **kw)
    return res | {"apiVersion": "projectcalico.org/v3", "kind": "StagedKubernetesNetworkPolicy"}


def both(resources: list[dict[str, Any]], src: str = "b/cli", dst: str = "a/web") -> str:
    ex = PolicyInsight(BASE + resources).explain(src, dst, 80, "TCP")
    return f"{ex.verdict}/{ex.pending[0]}"


def test_staged_set_is_pending_only() -> None:
    assert both([sgnp("d", **DENY_WEB)]) == "allow/deny"
    ins = PolicyInsight([*BASE, sgnp("d", **DENY_WEB)])
    ex = ins.explain("b/cli", "a/web", 80)
    assert ex.ingress.reason == "profile-rule"
    assert ex.pending[2].policy == "sgnp/d" and ex.pending[2].tier == "default"
    assert ex.pending[2].tiers == (TierDecision("default", "rule", "Deny", "sgnp/d", 0),)
    js = ex.to_json()
    assert js["verdict"] == "allow" and js["pending"]["verdict"] == "deny"
    assert js["pending"]["ingress"]["policy"] == "sgnp/d"
    text = format_explanation(ex)
    assert text.startswith("b/cli -> a/web TCP/80: ALLOW (pending: DENY)")
    assert "ENFORCED" in text and "PENDING" in text and "policy sgnp/d, rule 0 (Deny)" in text


@pytest.mark.parametrize("action", ["Set", "Learn", "Ignore"])
def test_learn_and_ignore_evaluate_like_set(action: str) -> None:
    assert both([sgnp("d", stagedAction=action, **DENY_WEB)]) == "allow/deny"


def test_staged_replaces_enforced_of_same_name() -> None:
    # Enforced deny "p"; staged "p" allows: pending = the staged version only.
    assert both([global_network_policy("p", **DENY_WEB), sgnp("p", **ALLOW_WEB)]) == "deny/allow"
    # Namespaced: snp/a/p replaces np/a/p, not a policy of another namespace or kind.
    np_deny = network_policy("p", namespace="a", **DENY_WEB)
    assert both([np_deny, snp("p", **ALLOW_WEB)]) == "deny/allow"
    assert both([np_deny, snp("p", namespace="b", **ALLOW_WEB)]) == "deny/deny"
    # sgnp/p is no counterpart of np/a/p: it is added, in order, not in np/a/p's place.
    np_first = network_policy("p", namespace="a", order=10, **DENY_WEB)
    assert both([np_first, sgnp("p", order=20, **ALLOW_WEB)]) == "deny/deny"
    assert both([np_first, sgnp("p", order=5, **ALLOW_WEB)]) == "deny/allow"
    # A staged k8s policy replaces the k8s policy of the same name.
    knp = k8s_network_policy(
        "k", namespace="a", pod_selector={"matchLabels": {"app": "web"}}, ingress=[]
    )
    open_ = sknp("k", pod_selector={"matchLabels": {"app": "web"}}, ingress=[{}])
    assert both([knp]) == "deny/deny"
    assert both([knp, open_]) == "deny/allow"
    ex = PolicyInsight([*BASE, knp, open_]).explain("b/cli", "a/web", 80)
    assert ex.pending[2].policy == "sknp/a/knp.default.k"


def test_staged_delete_removes_enforced_in_pending_only() -> None:
    deny = global_network_policy("p", **DENY_WEB)
    delete = global_network_policy("p", kind="StagedGlobalNetworkPolicy", stagedAction="Delete")
    assert both([deny, delete]) == "deny/allow"
    ex = PolicyInsight([*BASE, deny, delete]).explain("b/cli", "a/web", 80)
    assert ex.ingress.policy == "gnp/p" and ex.pending[2].reason == "profile-rule"
    # Deleting what does not exist changes nothing; a staged delete never enforces.
    assert both([delete]) == "allow/allow"
    np_deny = network_policy("p", namespace="a", **DENY_WEB)
    snp_delete = network_policy("p", namespace="a", kind="StagedNetworkPolicy")
    snp_delete["spec"] = {"stagedAction": "Delete"}
    assert both([np_deny, snp_delete]) == "deny/allow"
    knp = k8s_network_policy("k", namespace="a", pod_selector={}, ingress=[])
    sknp_delete = sknp("k")
    sknp_delete["spec"] = {"stagedAction": "Delete"}
    assert both([knp, sknp_delete]) == "deny/allow"


def test_staged_policies_in_tiers() -> None:
    sec = tier("security", order=100)
    # A tier holding only staged policies: skipped when enforced; its end-of-tier Deny
    # applies in the pending view when no staged rule matches.
    nomatch = sgnp("s", tier="security", selector="app == 'web'", ingress=[])
    assert both([sec, nomatch]) == "allow/deny"
    ex = PolicyInsight([*BASE, sec, nomatch]).explain("b/cli", "a/web", 80)
    assert ex.pending[2].reason == "tier-default" and ex.pending[2].tier == "security"
    # A staged Pass in a higher tier skips an enforced deny in that tier only when pending.
    deny = global_network_policy("deny", tier="security", order=200, **DENY_WEB)
    skip = sgnp("skip", tier="security", order=100, selector="app == 'web'")
    skip["spec"]["ingress"] = [{"action": "Pass"}]
    assert both([sec, deny, skip]) == "deny/allow"
    p = PolicyInsight([*BASE, sec, deny, skip]).explain("b/cli", "a/web", 80).pending[2]
    assert [t.tier for t in p.tiers] == ["security"] and p.tiers[0].action == "Pass"
    # Order decides between staged and enforced policies of one tier, as if enforced.
    allow_first = sgnp("allow", tier="security", order=50, **ALLOW_WEB)
    assert both([sec, deny, allow_first]) == "deny/allow"
    allow_late = sgnp("allow", tier="security", order=500, **ALLOW_WEB)
    assert both([sec, deny, allow_late]) == "deny/deny"


def test_matrix_pending_and_cli(tmp_path: Path) -> None:
    ins = PolicyInsight([*BASE, sgnp("d", **DENY_WEB)])
    probes = {(r.src, r.dst): (r.verdict, r.pending) for r in ins.matrix([(80, 6)])}
    assert probes[("b/cli", "a/web")] == ("allow", "deny")
    assert probes[("a/web", "b/cli")] == ("allow", "allow")

    from pycalico.config import load_config
    from pycalico.datastore import open_datastore

    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ds = open_datastore(load_config(None))
        try:
            for r in [*BASE, sgnp("d", **DENY_WEB)]:
                ds.create(r)
        finally:
            ds.close()
    run = CliRunner().invoke
    r = run(cli, ["policy", "matrix", "--ports", "80", "-o", "json"], env=env)
    assert r.exit_code == 0, r.output
    got = {
        (p["from"], p["to"]): (p["verdict"], p["pending"]) for p in json.loads(r.output)["probes"]
    }
    assert got[("b/cli", "a/web")] == ("allow", "deny")
    enforced = run(cli, ["policy", "matrix", "--ports", "80"], env=env).output
    pending = run(cli, ["policy", "matrix", "--ports", "80", "--pending"], env=env).output
    assert "DENY" not in enforced and "DENY" in pending
    r = run(cli, ["policy", "explain", "--from", "b/cli", "--to", "a/web", "--port", "80"], env=env)
    assert r.exit_code == 0 and "(pending: DENY)" in r.output and "sgnp/d" in r.output
    r = run(cli, ["policy", "explain", "--from", "b/cli", "--to", "a/web", "-o", "json"], env=env)
    assert json.loads(r.output)["pending"]["ingress"]["policy"] == "sgnp/d"


# --- the enforced path is untouched; the pending view is order independent -----------------
def _strip_staged(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if not str(v["kind"]).startswith("Staged")}


class PendingHarness:
    """A pending-view graph -> renderer (enforced) and a DataplaneView (pending)."""

    def __init__(self) -> None:
        self.graph = CalcGraph("n1", pending_view=True)
        self.graph.on_in_sync()
        self.renderer = RuleRenderer()
        self.pending = DataplaneView()

    def feed(self, updates: Sequence[Update]) -> None:
        for k, v in updates:
            self.graph.on_update(k, v)
        self.renderer.apply(self.graph.flush())
        self.pending.apply(self.graph.flush_pending())

    def result(self) -> dict[str, Any]:
        v = self.pending
        return {
            "tables": self.renderer.tables(),
            "net_sets": {
                k: sorted(map(str, s.nets)) + sorted(map(str, s.hosts))
                for k, s in v.net_sets.items()
            },
            "policies": dict(v.policies),
            "profiles": dict(v.profiles),
            "endpoints": dict(v.endpoints),
        }


def _enforced() -> list[dict[str, Any]]:
    # BASE's endpoints are on node n1: local to the harness graphs.
    return [*BASE, tier("security", order=100), global_network_policy("p", **DENY_WEB)]


def _states() -> list[dict[str, Any]]:
    enforced = _enforced()
    return [
        keyed(enforced),
        keyed([*enforced, sgnp("p", **ALLOW_WEB), sgnp("q", tier="security", **DENY_WEB)]),
        keyed(
            [
                *enforced,
                global_network_policy("p", kind="StagedGlobalNetworkPolicy", stagedAction="Delete"),
            ]
        ),
        keyed([*enforced[:-1], sgnp("p", **ALLOW_WEB)]),
        keyed(enforced),
    ]


def test_pending_view_is_order_independent() -> None:
    assert check_expansions(PendingHarness, _states()) > 0


def test_enforced_messages_never_see_staged_policies() -> None:
    for state in _states():
        with_staged = CalcGraph("n1", pending_view=True)
        with_staged.load(list(state.values()))
        plain = CalcGraph("n1")
        plain.load(list(_strip_staged(state).values()))
        plain_staged_fed = CalcGraph("n1")  # Felix's graph today: staged fed, no pending view
        plain_staged_fed.load(list(state.values()))
        msgs = with_staged.flush()
        assert msgs == plain.flush() == plain_staged_fed.flush()
        assert not any("staged" in repr(m).lower() or "sgnp" in repr(m) for m in msgs)


def test_filter_restores_enforced_when_staged_goes() -> None:
    f = StagedFilter()
    gnp = global_network_policy("p", **DENY_WEB)
    staged = sgnp("p", **ALLOW_WEB)
    assert f.route("k/gnp", gnp) == [("k/gnp", gnp)]
    assert f.route("k/sgnp", staged) == [("k/gnp", None), ("k/sgnp", staged)]
    assert f.staged_count() == 1
    assert f.route("k/gnp", None) == []  # hidden in the pending world already
    assert f.route("k/gnp", gnp) == []
    assert f.route("k/sgnp", None) == [("k/sgnp", None), ("k/gnp", gnp)]
    assert f.route("k/other", {"kind": "Tier", "metadata": {"name": "t"}})[0][0] == "k/other"


def test_snapshot_for_flow_logs() -> None:
    graph = CalcGraph("n1", pending_view=True)
    state = keyed([*_enforced(), sgnp("p", **ALLOW_WEB)])
    for key, value in state.items():
        graph.on_update(key, value)
    graph.on_in_sync()
    views, box = PolicyViews(), SnapshotBox()
    views.apply(graph.flush(), graph.flush_pending())
    box.publish(views.snapshot())
    snap = box.latest()
    web = snap.endpoint_at(ip_address("10.0.0.1"))
    assert web is not None and snap.has_staged
    pkt = Packet(ip_address("10.0.1.1"), ip_address("10.0.0.1"), 6, 80)
    v = snap.evaluate(web, "ingress", pkt)
    assert v is not None and v.differs
    assert (v.enforced.policy, v.pending.policy) == ("gnp/p", "sgnp/p")
    assert v.to_json()["pending"]["verdict"] == "allow"
    assert snap.evaluate(ItemID("wep", "x", "nope"), "ingress", pkt) is None
    # Later changes never alter a published snapshot.
    graph.on_update(
        next(
            k
            for k, r in state.items()
            if r["kind"] == "StagedGlobalNetworkPolicy" and r["metadata"]["name"] == "p"
        ),
        None,
    )
    views.apply(graph.flush(), graph.flush_pending())
    assert snap.evaluate(web, "ingress", pkt).pending.policy == "sgnp/p"  # type: ignore[union-attr]
    assert views.snapshot().evaluate(web, "ingress", pkt).pending.policy == "gnp/p"  # type: ignore[union-attr]


# --- random mixes of staged and enforced policies vs. promoting them by hand -------------------
def _promote(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An independent oracle: the datastore after promoting every staged policy (write its
    enforced counterpart under the same name; Delete deletes it)."""
    enforced = {
        (r["kind"], r["apiVersion"], r["metadata"].get("namespace"), r["metadata"]["name"]): r
        for r in state.values()
        if not r["kind"].startswith("Staged")
    }
    for r in state.values():
        if not r["kind"].startswith("Staged"):
            continue
        kind = r["kind"].removeprefix("Staged").replace("KubernetesNetworkPolicy", "NetworkPolicy")
        api = "networking.k8s.io/v1" if "Kubernetes" in r["kind"] else r["apiVersion"]
        key = (kind, api, r["metadata"].get("namespace"), r["metadata"]["name"])
        if r["spec"].get("stagedAction") == "Delete":
            enforced.pop(key, None)
        else:
            spec = {k: v for k, v in r["spec"].items() if k != "stagedAction"}
            enforced[key] = r | {"kind": kind, "apiVersion": api, "spec": spec}
    return list(enforced.values())


def _variants() -> dict[str, list[dict[str, Any]]]:
    deny_db = {"selector": "app == 'db'", "ingress": [{"action": "Deny"}]}
    knp_web = {"pod_selector": {"matchLabels": {"app": "web"}}}
    delete = {"stagedAction": "Delete"}
    versions = [
        [global_network_policy("p", **DENY_WEB), global_network_policy("p", order=5, **deny_db)],
        [
            sgnp("p", **ALLOW_WEB),
            sgnp("p", tier="security", **deny_db),
            sgnp("p", stagedAction="Delete"),
        ],
        [network_policy("q", namespace="a", **ALLOW_WEB)],
        [snp("q", **DENY_WEB), snp("q", stagedAction="Learn", **deny_db), snp("q", **delete)],
        [k8s_network_policy("k", namespace="a", ingress=[], **knp_web)],
        [sknp("k", ingress=[{}], **knp_web), sknp("k") | {"spec": delete}],
        [sgnp("only", tier="security", selector="app == 'db'", ingress=[])],
        [tier("security", order=100), tier("security", order=100, default_action="Pass")],
    ]
    return {next(iter(keyed(v))): v for v in versions}


VARIANTS = _variants()
FLOWS = [(s, d, p) for s in ("a/web", "a/db", "b/cli") for d in ("a/web", "a/db") for p in (80,)]


def _decisions(ins: PolicyInsight, pending: bool) -> list[tuple[Any, ...]]:
    out = []
    for src, dst, port in FLOWS:
        if src == dst:
            continue
        ex = ins.explain(src, dst, port)
        _, egress, ingress = ex.pending if pending else (ex.verdict, ex.egress, ex.ingress)
        for d in (egress, ingress):
            policy = d.policy
            for staged, enforced in (("snp/", "np/"), ("sgnp/", "gnp/"), ("sknp/", "knp/")):
                if policy and pending and policy.startswith(staged):
                    policy = enforced + policy[len(staged) :]
            out.append((d.verdict, d.reason, d.tier, policy, d.rule, d.profile))
    return out


@st.composite
def _mixes(draw: st.DrawFn) -> list[State]:
    return draw_states(draw, VARIANTS, max_states=3)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(_mixes())
def test_random_mixes_match_promotion(states: list[State]) -> None:
    base = keyed(BASE)
    full = [dict(base) | dict(s) for s in states]
    for state in full:
        ins = PolicyInsight(list(state.values()))
        assert _decisions(ins, True) == _decisions(PolicyInsight(_promote(state)), False)
        plain = PolicyInsight([r for r in state.values() if not r["kind"].startswith("Staged")])
        assert _decisions(ins, False) == _decisions(plain, False)
    check_expansions(PendingHarness, full)
