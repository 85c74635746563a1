"""Randomized differential test of Calico policy (issue 16): a hypothesis state machine.

The machine keeps a datastore (key -> stored resource) and changes it one resource at a time:
namespaces, service accounts (one name longer than 63 characters), workload endpoints (labels
incl. spoofed ``pcns.``/``pcsa.`` ones, service accounts, named ports with and without a
protocol), Calico NetworkPolicy / GlobalNetworkPolicy (orders with ties, names that are
prefixes of each other, tiers, Allow/Deny/Pass/Log rules, selectors, namespace and
service-account selectors, named and numeric ports), a Kubernetes NetworkPolicy, a tier and
a profile. After every step, for every probe (ordered pair of workloads x port/protocol):

1. the INCREMENTAL calc graph (fed only the change, then flushed into one long-lived
   :class:`DataplaneView`) and a FROM-SCRATCH graph over the same state give the same
   decision (verdict and what decided it) at both ends;
2. ``PolicyInsight`` over the state gives the same verdict;
3. the independent reference evaluator (:mod:`tests.kit.refpolicy`, written from Calico's
   semantics, no model conversion or IP sets) gives the same verdict.

Default scale (CI): ``DIFF_EXAMPLES`` (60) runs of up to ``DIFF_STEPS`` (12) steps; set
the environment variables for longer runs.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pycalico.felix.calc import CalcGraph, DataplaneView, Packet, PolicyInsight
from pycalico.felix.calc.insight import Peer
from pycalico.model import Endpoint
from tests.kit import (
    global_network_policy,
    k8s_network_policy,
    key_of,
    namespace,
    network_policy,
    profile,
    service_account,
    tier,
    workload_endpoint,
)
from tests.kit.refpolicy import Reference

LONG_SA = "sa-" + "l" * 70
NAMESPACES = ["a", "b"]
SAS = ["sa1", LONG_SA]
SLOTS = {"w0": "10.0.0.1", "w1": "10.0.0.2", "w2": "10.0.0.3", "w3": "10.0.0.4"}
POLICY_NAMES = ["web", "web-allow", "web.v2", "default-deny", "default-deny-egress"]
PROBES = [(80, 6), (80, 17), (8080, 6)]
SELECTORS = ["", "all()", "app == 'web'", "app == 'db'", "has(tier)", "app != 'web'"]

named_port = st.sampled_from(
    [
        {"name": "http", "protocol": "TCP", "port": 80},
        {"name": "http", "protocol": "UDP", "port": 80},
        {"name": "http", "port": 8080},  # protocol defaults to TCP
        {"name": "alt", "protocol": "TCP", "port": 8080},
    ]
)

source = st.sampled_from(
    [
        {},
        {"selector": "app == 'web'"},
        {"selector": "app == 'db'", "namespaceSelector": "all()"},
        {"namespaceSelector": "team == 'x'"},
        {"namespaceSelector": "kubernetes.io/metadata.name == 'b'"},
        {"serviceAccounts": {"names": ["sa1"]}},
        {"serviceAccounts": {"names": [LONG_SA]}},
        {"serviceAccounts": {"selector": "role == 'db'"}},
        {"serviceAccounts": {"selector": "all()"}},
        {"notSelector": "app == 'db'"},
    ]
)

destination = st.sampled_from(
    [
        {},
        {"ports": [80]},
        {"ports": ["http"]},
        {"ports": ["http", 8080]},
        {"notPorts": ["http"]},
        {"ports": ["alt"], "selector": "app == 'db'"},
    ]
)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    r: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Pass", "Log"]))}
    proto = draw(st.sampled_from([None, "TCP", "UDP"]))
    src, dst = draw(source), draw(destination)
    numeric = any(isinstance(p, int) for p in dst.get("ports", []) + dst.get("notPorts", []))
    if proto is None and numeric:
        proto = "TCP"  # Calico's validator: numeric ports need a protocol
    if proto:
        r["protocol"] = proto
    if src:
        r["source"] = src
    if dst:
        r["destination"] = dst
    return r


rule_lists = st.lists(rules(), max_size=3)


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, dict[str, Any]] = {}
        self.slot_keys: dict[str, str] = {}
        self.graph = CalcGraph(hostname=None)
        self.graph.on_in_sync()
        self.view = DataplaneView()
        self.probes = 0

    @initialize()
    def baseline(self) -> None:
        """Two namespaces, their service accounts and four workloads: every probe starts
        out allowed by the namespace profiles, and each step changes one thing."""
        self.put_namespace("a", "x")
        self.put_namespace("b", None)
        self.put_service_account("a", "sa1", True)
        self.put_service_account("b", LONG_SA, False)
        http = [{"name": "http", "protocol": "TCP", "port": 80}]
        self.put_workload("w0", "a", "web", {}, "", http, False)
        self.put_workload("w1", "a", "db", {}, "sa1", [], False)
        self.put_workload("w2", "b", "web", {"pcns.team": "x"}, LONG_SA, [], False)
        self.put_workload(
            "w3", "b", "db", {"tier": "1"}, "", [{"name": "http", "port": 8080}], False
        )

    # --- changes ----------------------------------------------------------------------------
    def _put(self, res: dict[str, Any] | None, key: str | None = None) -> None:
        key = key or key_of(res or {})
        if res is None:
            self.state.pop(key, None)
        else:
            self.state[key] = res
        self.graph.on_update(key, res)
        self.view.apply(self.graph.flush())

    @rule(name=st.sampled_from(NAMESPACES), team=st.sampled_from([None, "x", "y"]))
    def put_namespace(self, name: str, team: str | None) -> None:
        self._put(namespace(name, labels={"team": team} if team else None))

    @rule(ns=st.sampled_from(NAMESPACES), name=st.sampled_from(SAS), role=st.booleans())
    def put_service_account(self, ns: str, name: str, role: bool) -> None:
        self._put(service_account(name, ns, labels={"role": "db"} if role else None))

    @rule(
        slot=st.sampled_from(sorted(SLOTS)),
        ns=st.sampled_from(NAMESPACES),
        app=st.sampled_from(["web", "db"]),
        extra=st.sampled_from([{}, {"tier": "1"}, {"pcns.team": "x"}, {"pcsa.role": "db"}]),
        sa=st.sampled_from(["", *SAS]),
        ports=st.lists(named_port, max_size=2, unique_by=lambda p: (p["name"], p["port"])),
        with_profile=st.booleans(),
    )
    def put_workload(
        self,
        slot: str,
        ns: str,
        app: str,
        extra: dict[str, str],
        sa: str,
        ports: list[dict[str, Any]],
        with_profile: bool,
    ) -> None:
        profiles = [f"kns.{ns}"] + ([f"ksa.{ns}.{sa}"] if sa else [])
        if with_profile:
            profiles.append("extra")
        res = workload_endpoint(
            slot,
            namespace=ns,
            ip=SLOTS[slot],
            labels={"app": app, **extra},
            service_account=sa,
            ports=ports,
            profiles=profiles,
        )
        old = self.slot_keys.get(slot)
        if old is not None and old != key_of(res):
            self._put(None, old)
        self.slot_keys[slot] = key_of(res)
        self._put(res)

    @rule(
        kind=st.sampled_from(["np-a", "np-b", "gnp"]),
        name=st.sampled_from(POLICY_NAMES),
        tier_name=st.sampled_from([None, "sec"]),
        order=st.sampled_from([None, 100, 100.0, 5]),
        selector=st.sampled_from(SELECTORS),
        ns_selector=st.sampled_from([None, "all()", "team == 'x'", "!has(team)"]),
        sa_selector=st.sampled_from([None, None, "all()", "role == 'db'", "!has(role)"]),
        ingress=rule_lists,
        egress=rule_lists,
        both=st.booleans(),
    )
    def put_policy(
        self,
        kind: str,
        name: str,
        tier_name: str | None,
        order: float | None,
        selector: str,
        ns_selector: str | None,
        sa_selector: str | None,
        ingress: list[dict[str, Any]],
        egress: list[dict[str, Any]],
        both: bool,
    ) -> None:
        common: dict[str, Any] = {
            "tier": tier_name,
            "order": order,
            "selector": selector or None,
            "ingress": ingress,
            "egress": egress,
            "types": ["Ingress", "Egress"] if both else None,
        }
        if sa_selector:
            common["serviceAccountSelector"] = sa_selector
        if kind == "gnp":
            if ns_selector:
                common["namespaceSelector"] = ns_selector
            self._put(global_network_policy(name, **common))
        else:
            self._put(network_policy(name, namespace=kind[-1], **common))

    @rule(
        ns=st.sampled_from(NAMESPACES),
        name=st.sampled_from(["web", "zzz"]),
        from_ns=st.sampled_from([None, {}, {"kubernetes.io/metadata.name": "b"}, {"team": "x"}]),
    )
    def put_k8s_policy(self, ns: str, name: str, from_ns: dict[str, str] | None) -> None:
        peer = [] if from_ns is None else [{"namespaceSelector": {"matchLabels": from_ns}}]
        self._put(
            k8s_network_policy(
                name,
                namespace=ns,
                pod_selector={"matchLabels": {"app": "web"}},
                ingress=[{"from": peer}] if peer else [{}],
            )
        )

    @rule(
        order=st.sampled_from([None, 10, 1_000_000, 2_000_000]),
        action=st.sampled_from(["Deny", "Pass"]),
    )
    def put_tier(self, order: float | None, action: str) -> None:
        self._put(tier("sec", order=order, default_action=action))

    @rule(
        ingress=rule_lists,
        egress=rule_lists,
        lta=st.sampled_from([None, {"tier": "1"}, {"app": "db"}]),
    )
    def put_profile(
        self, ingress: list[dict[str, Any]], egress: list[dict[str, Any]], lta: Any
    ) -> None:
        self._put(profile("extra", ingress=ingress, egress=egress, labels_to_apply=lta))

    @rule(data=st.data())
    def delete_one(self, data: st.DataObject) -> None:
        if not self.state:
            return
        key = data.draw(st.sampled_from(sorted(self.state)))
        for slot, k in list(self.slot_keys.items()):
            if k == key:
                del self.slot_keys[slot]
        self._put(None, key)

    # --- the comparison ---------------------------------------------------------------------
    @invariant()
    def all_agree(self) -> None:
        resources = list(self.state.values())
        scratch = CalcGraph(hostname=None)
        scratch.load(resources)
        sview = DataplaneView()
        sview.apply(scratch.flush())
        assert not scratch.rejected and not self.graph.rejected
        insight = PolicyInsight(resources)
        ref = Reference(resources)
        eps = [e for e in scratch.local_endpoints() if e.nets]
        assert sorted(e.id for e in eps) == sorted(self.view.endpoints)
        for s in eps:
            for d in eps:
                if s is d:
                    continue
                for port, proto in PROBES:
                    self._probe(s, d, port, proto, sview, insight, ref)

    def _probe(
        self,
        s: Endpoint,
        d: Endpoint,
        port: int,
        proto: int,
        sview: DataplaneView,
        insight: PolicyInsight,
        ref: Reference,
    ) -> None:
        sip, dip = s.nets[0].network_address, d.nets[0].network_address
        pkt = Packet(sip, dip, proto, port)
        inc = (self.view.evaluate(s.id, "egress", pkt), self.view.evaluate(d.id, "ingress", pkt))
        scr = (sview.evaluate(s.id, "egress", pkt), sview.evaluate(d.id, "ingress", pkt))
        what = f"{s.display_name()} -> {d.display_name()} {port}/{proto}"
        assert inc == scr, f"incremental != from scratch for {what}:\n{inc}\n{scr}"
        verdict = "allow" if all(x.verdict == "allow" for x in scr) else "deny"
        ex = insight.explain_peers(Peer(sip, s), Peer(dip, d), port, proto)
        assert ex.verdict == verdict, f"insight != graph for {what}"
        want = ref.verdict(str(sip), str(dip), proto, port)
        assert verdict == want, (
            f"graph says {verdict}, reference {want} for {what}:\n"
            f"egress {scr[0].to_json()}\ningress {scr[1].to_json()}"
        )
        self.probes += 1


PolicyMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DIFF_EXAMPLES", "60")),
    stateful_step_count=int(os.environ.get("DIFF_STEPS", "12")),
    deadline=None,
    derandomize=os.environ.get("DIFF_RANDOM") is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPolicyDifferential = PolicyMachine.TestCase
