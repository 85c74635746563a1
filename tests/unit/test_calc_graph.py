"""CalcGraph: whole states in any order give the same output; messages are sequenced so every
reference resolves; local filtering, label inheritance, ordering, staged, fail-closed."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pycalico.felix.calc import (
    ActivePolicyUpdate,
    ActiveProfileUpdate,
    CalcGraph,
    DataplaneView,
    EndpointUpdate,
    InSync,
    IPSetUpdate,
    Message,
)
from pycalico.model import ItemID, PolicyID
from tests.kit import key_of, resource, workload_endpoint

STATE: list[dict[str, Any]] = [
    resource("Namespace", "ns1", labels={"team": "a"}, api_version="v1"),
    resource("Namespace", "ns2", labels={"team": "b"}, api_version="v1"),
    resource("ServiceAccount", "sa1", namespace="ns1", labels={"role": "fe"}, api_version="v1"),
    resource("Profile", "extra", {"labelsToApply": {"color": "blue", "app": "from-profile"}}),
    resource("Tier", "security", {"order": 100, "defaultAction": "Pass"}),
    resource(
        "GlobalNetworkPolicy",
        "g1",
        {
            "tier": "security",
            "order": 5,
            "selector": "app == 'web'",
            "ingress": [
                {"action": "Deny", "source": {"namespaceSelector": "team == 'b'"}},
                {"action": "Pass"},
            ],
        },
    ),
    resource(
        "NetworkPolicy",
        "n1",
        {
            "order": 10,
            "selector": "all()",
            "egress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "destination": {"selector": "app == 'db'", "ports": ["pg", 8080]},
                }
            ],
        },
        namespace="ns1",
    ),
    resource(
        "NetworkPolicy",
        "n2",
        {"selector": "app == 'web'", "ingress": [{"action": "Allow"}]},
        namespace="ns1",
    ),
    resource(
        "NetworkPolicy",
        "a-first",
        {"order": 10, "selector": "app == 'web'", "ingress": [{"action": "Log"}]},
        namespace="ns1",
    ),
    resource(
        "NetworkPolicy",
        "knp-web",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}}]}],
        },
        namespace="ns1",
        api_version="networking.k8s.io/v1",
    ),
    resource(
        "StagedNetworkPolicy",
        "staged",
        {"selector": "all()", "types": ["Ingress"]},
        namespace="ns1",
    ),
    workload_endpoint(
        "web",
        namespace="ns1",
        node="node1",
        ip="10.1.0.1",
        labels={"app": "web"},
        service_account="sa1",
    ),
    workload_endpoint(
        "db",
        namespace="ns1",
        node="node1",
        ip="10.1.0.2",
        labels={"app": "db"},
        ports=[{"name": "pg", "protocol": "TCP", "port": 5432}],
    ),
    workload_endpoint(
        "db2",
        namespace="ns2",
        node="node2",
        ip="10.2.0.2",
        labels={"app": "db"},
        ports=[{"name": "pg", "protocol": "TCP", "port": 5433}],
    ),
    workload_endpoint(
        "odd",
        namespace="ns1",
        node="node1",
        ip="10.1.0.9",
        labels={"app": "web"},
        profiles=["extra", "kns.ns1"],
    ),
    resource(
        "HostEndpoint",
        "node1-eth0",
        {
            "node": "node1",
            "interfaceName": "eth0",
            "expectedIPs": ["198.18.0.1"],
            "profiles": ["no-such-profile"],
        },
        labels={"host": "yes"},
    ),
    resource(
        "NetworkSet", "outside", {"nets": ["192.0.2.0/24"]}, namespace="ns2", labels={"app": "db"}
    ),
    resource("GlobalNetworkSet", "g-out", {"nets": ["203.0.113.0/24"]}, labels={"app": "db"}),
    resource(
        "GlobalNetworkPolicy",
        "hep-pre",
        {
            "selector": "host == 'yes'",
            "preDNAT": True,
            "applyOnForward": True,
            "ingress": [{"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}}],
        },
    ),
]


class CheckingView(DataplaneView):
    """A consumer that asserts Calico's sequencing guarantees while applying messages."""

    def apply(self, msgs: list[Message]) -> None:
        ups = [type(m).__name__ for m in msgs if not type(m).__name__.endswith("Remove")]
        rms = [type(m).__name__ for m in msgs if type(m).__name__.endswith("Remove")]
        order = [
            "IPSetUpdate",
            "ActivePolicyUpdate",
            "ActiveProfileUpdate",
            "EndpointUpdate",
            "InSync",
        ]
        assert [order.index(u) for u in ups] == sorted(order.index(u) for u in ups)
        rorder = ["EndpointRemove", "ActiveProfileRemove", "ActivePolicyRemove", "IPSetRemove"]
        assert [rorder.index(r) for r in rms] == sorted(rorder.index(r) for r in rms)
        super().apply(msgs)
        sets = set(self.net_sets) | set(self.ip_port_sets)
        for rules in [
            *(p.ingress + p.egress for p in self.policies.values()),
            *(p.ingress + p.egress for p in self.profiles.values()),
        ]:
            for r in rules:
                for ids in (
                    r.src_ip_set_ids,
                    r.not_src_ip_set_ids,
                    r.dst_ip_set_ids,
                    r.not_dst_ip_set_ids,
                    r.src_named_port_ip_set_ids,
                    r.dst_named_port_ip_set_ids,
                    r.not_src_named_port_ip_set_ids,
                    r.not_dst_named_port_ip_set_ids,
                ):
                    assert set(ids) <= sets
        for ep in self.endpoints.values():
            for t in ep.tiers + ep.forward_tiers + ep.pre_dnat_tiers + ep.untracked_tiers:
                assert set(t.ingress_policies + t.egress_policies) <= set(self.policies)
            assert set(ep.profile_ids) <= set(self.profiles)


def snapshot(view: DataplaneView) -> tuple[Any, ...]:
    return (
        {
            k: (frozenset(v.hosts), tuple(sorted(map(str, v.nets))))
            for k, v in view.net_sets.items()
        },
        dict(view.ip_port_sets),
        dict(view.policies),
        dict(view.profiles),
        dict(view.endpoints),
    )


def run(
    ops: list[tuple[str, dict[str, Any] | None]], rng: random.Random | None = None
) -> tuple[CheckingView, CalcGraph]:
    g = CalcGraph("node1")
    view = CheckingView()
    for k, v in ops:
        g.on_update(k, v)
        if rng is not None and rng.random() < 0.3:
            view.apply(g.flush())
    g.on_in_sync()
    view.apply(g.flush())
    return view, g


def reference() -> tuple[CheckingView, CalcGraph]:
    return run([(key_of(r), r) for r in STATE])


@pytest.mark.parametrize("seed", range(25))
def test_same_final_output_in_any_order_with_churn(seed: int) -> None:
    ref, _ = reference()
    rng = random.Random(seed)
    ops: list[tuple[str, dict[str, Any] | None]] = []
    for r in STATE:
        ops.append((key_of(r), r))
        if rng.random() < 0.3:  # an earlier version that is later replaced
            junk = dict(r, metadata=dict(r["metadata"], labels={"junk": str(seed)}))
            ops.insert(rng.randrange(len(ops)), (key_of(r), junk))
    rng.shuffle(ops)
    final = {key_of(r): r for r in STATE}
    seen: set[str] = set()
    ordered: list[tuple[str, dict[str, Any] | None]] = []
    for k, v in ops:  # make the last write of every key its final value
        ordered.append((k, v))
        if rng.random() < 0.2:
            ordered.append((k, None))  # deleted in between
    for k in {k for k, _ in ordered}:
        seen.add(k)
    ordered += [(k, final[k]) for k in sorted(seen)]
    view, _ = run(ordered, rng)
    assert snapshot(view) == snapshot(ref)


def test_deleting_everything_removes_everything() -> None:
    view, g = reference()
    for r in reversed(STATE):
        g.on_update(key_of(r), None)
    view.apply(g.flush())
    assert snapshot(view) == ({}, {}, {}, {}, {})


def test_nothing_resent_when_nothing_changed() -> None:
    _view, g = reference()
    assert g.flush() == []
    g.on_update(key_of(STATE[0]), STATE[0])
    assert g.flush() == []


def test_in_sync_sent_once_after_state() -> None:
    g = CalcGraph("node1")
    for r in STATE:
        g.on_update(key_of(r), r)
    assert not any(isinstance(m, InSync) for m in g.flush())
    g.on_in_sync()
    msgs = g.flush()
    assert msgs == [InSync()]
    assert g.flush() == []


def ep(view: DataplaneView, name: str, ns: str = "ns1") -> EndpointUpdate:
    return view.endpoints[ItemID("wep", ns, f"node1-k8s-{name}-eth0")]


def test_local_endpoints_only_but_sets_are_cluster_wide() -> None:
    view, _ = reference()
    names = {e.endpoint.id.name for e in view.endpoints.values()}
    assert names == {"node1-k8s-web-eth0", "node1-k8s-db-eth0", "node1-k8s-odd-eth0", "node1-eth0"}
    n1 = view.policies[PolicyID("np", "ns1", "n1")]
    (rule,) = n1.egress
    (db_set,) = rule.dst_ip_set_ids
    # Namespaced selector: only ns1's db (not ns2's db2 or network sets).
    assert view.net_sets[db_set].hosts == {__import__("ipaddress").ip_address("10.1.0.2")}
    (pg_set,) = rule.dst_named_port_ip_set_ids
    assert {(str(a), p, n) for a, p, n in view.ip_port_sets[pg_set]} == {("10.1.0.2", 6, 5432)}


def test_effective_labels_namespace_sa_profile() -> None:
    view, _ = reference()
    web = dict(ep(view, "web").labels)
    assert web["pcns.team"] == "a"
    assert web["pcns.projectcalico.org/name"] == "ns1"
    assert web["pcsa.role"] == "fe"
    assert web["pcsa.projectcalico.org/name"] == "sa1"
    assert web["projectcalico.org/namespace"] == "ns1"
    assert web["projectcalico.org/orchestrator"] == "k8s"
    assert web["projectcalico.org/serviceaccount"] == "sa1"
    odd = dict(ep(view, "odd").labels)
    assert odd["color"] == "blue" and odd["app"] == "web"  # own labels win


def test_tier_and_policy_order() -> None:
    view, _ = reference()
    web = ep(view, "web")
    assert [t.name for t in web.tiers] == ["security", "default"]
    assert web.tiers[0].default_action == "Pass"
    default = web.tiers[1]
    # order 10 (tie by name: a-first < n1), then knp at 1000, then unordered n2.
    assert default.ingress_policies == (
        PolicyID("np", "ns1", "a-first"),
        PolicyID("knp", "ns1", "knp.default.knp-web"),
        PolicyID("np", "ns1", "n2"),
    )
    assert default.egress_policies == (PolicyID("np", "ns1", "n1"),)


def test_staged_never_active_and_missing_profile_fails_closed() -> None:
    view, _ = reference()
    assert {p.name for p in view.policies} == {
        "g1",
        "n1",
        "n2",
        "a-first",
        "knp.default.knp-web",
        "hep-pre",
    }
    hep = view.endpoints[ItemID("hep", "", "node1-eth0")]
    prof = view.profiles["no-such-profile"]
    assert prof.missing and prof.ingress[0].action == "Deny"
    assert hep.tiers == ()
    assert [p for t in hep.pre_dnat_tiers for p in t.ingress_policies] == [
        PolicyID("gnp", "", "hep-pre")
    ]


def test_label_change_reevaluates_few_selectors() -> None:
    g = CalcGraph("node1")
    for i in range(200):
        g.on_update(
            f"p{i}",
            resource(
                "GlobalNetworkPolicy",
                f"p{i}",
                {
                    "selector": f"role == 'r{i}'",
                    "ingress": [{"action": "Allow", "source": {"selector": f"peer == 'q{i}'"}}],
                },
            ),
        )
    for i in range(100):
        g.on_update(
            f"e{i}",
            workload_endpoint(
                f"w{i}",
                namespace="ns1",
                node="node1",
                ip=f"10.0.{i // 250}.{i % 250}",
                labels={"role": f"r{i}", "peer": f"q{i}", "color": "red"},
            ),
        )
    g.flush()
    pol_before, set_before = g.policy_index.evaluations, g.ipset_index.evaluations
    g.on_update(
        "e5",
        workload_endpoint(
            "w5",
            namespace="ns1",
            node="node1",
            ip="10.0.0.5",
            labels={"role": "r6", "peer": "q5", "color": "red"},
        ),
    )
    msgs = g.flush()
    # role changed: only policies p5 (old) and p6 (new) could change; peer/colour sets: none.
    assert g.policy_index.evaluations - pol_before <= 2
    assert g.ipset_index.evaluations - set_before == 0
    ups = [m for m in msgs if isinstance(m, EndpointUpdate)]
    assert len(ups) == 1
    assert ups[0].tiers[0].ingress_policies == (PolicyID("gnp", "", "p6"),)
    # p5 no longer selects a local endpoint: it and its set go; nothing is (re)added.
    assert not [m for m in msgs if isinstance(m, IPSetUpdate | ActivePolicyUpdate)]
    removed = [m for m in msgs if type(m).__name__ in ("ActivePolicyRemove", "IPSetRemove")]
    assert len(removed) == 2


def test_namespace_label_change_updates_sets_and_endpoints() -> None:
    view, g = reference()
    g1 = view.policies[PolicyID("gnp", "", "g1")]
    (deny_set,) = g1.ingress[0].src_ip_set_ids
    assert view.net_sets[deny_set].hosts == {__import__("ipaddress").ip_address("10.2.0.2")}
    g.on_update(
        key_of(STATE[1]), resource("Namespace", "ns2", labels={"team": "c"}, api_version="v1")
    )
    g.on_update(
        key_of(STATE[0]), resource("Namespace", "ns1", labels={"team": "b"}, api_version="v1")
    )
    msgs = g.flush()
    view.apply(msgs)
    assert {str(a) for a in view.net_sets[deny_set].hosts} == {"10.1.0.1", "10.1.0.2", "10.1.0.9"}
    assert dict(ep(view, "web").labels)["pcns.team"] == "b"
    # kns.* rules did not change, so no profile message; labels travel with endpoints.
    assert not any(isinstance(m, ActiveProfileUpdate) for m in msgs)
    assert any(isinstance(m, EndpointUpdate) for m in msgs)


def test_invalid_resource_is_treated_as_deleted() -> None:
    view, g = reference()
    bad = resource("NetworkPolicy", "n2", {"selector": "app == ", "ingress": []}, namespace="ns1")
    g.on_update(key_of(STATE[7]), bad)
    view.apply(g.flush())
    assert PolicyID("np", "ns1", "n2") not in view.policies


def mutate(r: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A random variant of resource ``r`` (labels, selectors, ports, node)."""
    r = json_copy(r)
    meta, spec = r["metadata"], r.get("spec", {})
    choice = rng.randrange(4)
    if choice == 0:
        meta["labels"] = {
            rng.choice(["app", "team", "host", "zone"]): rng.choice(["web", "db", "a", "b", "yes"])
        }
    elif choice == 1 and "selector" in spec:
        spec["selector"] = rng.choice(["all()", "app == 'db'", "app == 'web'", "has(zone)"])
    elif choice == 2 and r["kind"] == "WorkloadEndpoint":
        spec["node"] = rng.choice(["node1", "node2"])
        spec["ports"] = [{"name": "pg", "protocol": "TCP", "port": rng.choice([5432, 6000])}]
    elif choice == 3 and r["kind"] == "Tier":
        spec["order"] = rng.choice([1, 100, 2_000_000])
    return r


def json_copy(r: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(r))  # type: ignore[no-any-return]


@pytest.mark.parametrize("seed", range(20))
def test_incremental_equals_from_scratch(seed: int) -> None:
    rng = random.Random(1000 + seed)
    view, g = reference()
    current = {key_of(r): r for r in STATE}
    for _ in range(40):
        k = rng.choice(sorted(current))
        if rng.random() < 0.2:
            g.on_update(k, None)
            current[k] = None  # type: ignore[assignment]
        else:
            base = next(r for r in STATE if key_of(r) == k)
            current[k] = mutate(base, rng)
            g.on_update(k, current[k])
        if rng.random() < 0.4:
            view.apply(g.flush())
    view.apply(g.flush())
    fresh, _ = run([(k, v) for k, v in current.items() if v is not None])
    assert snapshot(view) == snapshot(fresh)


def test_port_and_address_changes_update_sets_without_label_change() -> None:
    view, g = reference()
    db = next(r for r in STATE if r["metadata"]["name"] == "node1-k8s-db-eth0")
    moved = json_copy(db)
    moved["spec"]["ports"][0]["port"] = 6000
    moved["spec"]["ipNetworks"] = ["10.1.0.3/32"]
    g.on_update(key_of(db), moved)
    view.apply(g.flush())
    (rule,) = view.policies[PolicyID("np", "ns1", "n1")].egress
    (pg_set,) = rule.dst_named_port_ip_set_ids
    assert {(str(a), p, n) for a, p, n in view.ip_port_sets[pg_set]} == {("10.1.0.3", 6, 6000)}
    (db_set,) = rule.dst_ip_set_ids
    assert {str(a) for a in view.net_sets[db_set].hosts} == {"10.1.0.3"}
