"""Order independence of the calc graph (DESIGN principle 1), with the kit's state expanders.

Each test gives a sequence of whole datastore states; every expander of
:mod:`tests.kit.expanders` turns it into update batches (in order, reversed keys, split,
squashed, empty batches, deletes/adds first, states backwards, ...). At every state an
expansion reaches, the rendered nft tables, the active state the graph's messages describe
and the graph's reference counts must equal those of a fresh graph fed that state in one
batch. Hypothesis adds random state sequences over a small universe of resources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.felix.calc import CalcGraph, DataplaneView
from pycalico.felix.rules import RuleRenderer
from tests.kit import (
    global_network_policy,
    global_network_set,
    host_endpoint,
    k8s_network_policy,
    keyed,
    namespace,
    network_policy,
    network_set,
    profile,
    service_account,
    tier,
    workload_endpoint,
)
from tests.kit.expanders import (
    EXPANDERS,
    State,
    Update,
    check_expansions,
    diff,
    draw_states,
    run_steps,
    split,
)

NODE = "node1"


class CalcHarness:
    """CalcGraph -> RuleRenderer (and a DataplaneView of the messages), fed batch by batch."""

    def __init__(self) -> None:
        self.graph = CalcGraph(NODE)
        self.graph.on_in_sync()
        self.renderer = RuleRenderer()
        self.view = DataplaneView()

    def feed(self, updates: Sequence[Update]) -> None:
        for k, v in updates:
            self.graph.on_update(k, v)
        msgs = self.graph.flush()
        self.view.apply(msgs)
        self.renderer.apply(msgs)

    def result(self) -> dict[str, Any]:
        g, v = self.graph, self.view
        return {
            "tables": self.renderer.tables(),
            "net_sets": {k: sorted(map(str, s.nets)) for k, s in v.net_sets.items()},
            "ip_port_sets": dict(v.ip_port_sets),
            "policies": dict(v.policies),
            "profiles": dict(v.profiles),
            "endpoints": dict(v.endpoints),
            # Reference counts: a leak here is order dependence waiting to show.
            "spec_refs": {s: n for s, n in g._spec_refs.items() if n},
            "sel_refs": {s: n for s, n in g._sel_refs.items() if n},
            "profile_refs": {p: n for p, n in g._profile_refs.items() if n},
            "policy_matches": {p: n for p, n in g._policy_matches.items() if n},
            "profile_users": {p: frozenset(u) for p, u in g._profile_users.items() if u},
            "ep_policies": {e: frozenset(p) for e, p in g._ep_policies.items() if p},
        }


def check(states: Sequence[Sequence[Mapping[str, Any]]]) -> None:
    """``states`` as lists of resources; every expansion must agree with from-scratch."""
    n = check_expansions(CalcHarness, [keyed(s) for s in states])
    assert n >= len(EXPANDERS)


# --- building blocks ------------------------------------------------------------------------
NS = [namespace("ns1", labels={"team": "a"}), namespace("ns2", labels={"team": "b"})]
PG = [{"name": "pg", "protocol": "TCP", "port": 5432}]


def web(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"namespace": "ns1", "ip": "10.1.0.1", "labels": {"app": "web"}}
    return workload_endpoint("web", **(args | kw))


def db(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "namespace": "ns1",
        "ip": "10.1.0.2",
        "labels": {"app": "db"},
        "ports": PG,
    }
    return workload_endpoint("db", **(args | kw))


def remote_db(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "namespace": "ns2",
        "node": "node2",
        "ip": "10.2.0.2",
        "labels": {"app": "db"},
        "ports": PG,
    }
    return workload_endpoint("db2", **(args | kw))


def to_db(**kw: Any) -> dict[str, Any]:
    rule = {
        "action": "Allow",
        "protocol": "TCP",
        "destination": {"selector": "app == 'db'", "ports": ["pg", 8080]},
    }
    args: dict[str, Any] = {"namespace": "ns1", "selector": "app == 'web'", "egress": [rule]}
    return network_policy("to-db", **(args | kw))


SEC = tier("security", order=100, default_action="Pass")


def sec_policy(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "tier": "security",
        "order": 5,
        "selector": "all()",
        "ingress": [
            {"action": "Deny", "source": {"namespaceSelector": "team == 'b'"}},
            {"action": "Pass"},
        ],
    }
    return global_network_policy("security.guard", **(args | kw))


# --- scenarios --------------------------------------------------------------------------------
SCENARIOS: dict[str, list[list[dict[str, Any]]]] = {
    "endpoints come and go": [
        [*NS, web()],
        [*NS, web(), db(), remote_db()],
        [*NS, db(), remote_db()],
        [*NS],
        [],
    ],
    "label change changes selector matches": [
        [*NS, web(), db(), remote_db(), to_db()],
        [*NS, web(labels={"app": "db"}), db(labels={"app": "web"}), remote_db(), to_db()],
        [*NS, web(labels={"app": "other"}), db(), remote_db(labels={"app": "x"}), to_db()],
        [*NS, web(), db(), remote_db(), to_db(selector="all()")],
    ],
    "policies in tiers, tier deleted while referenced": [
        [*NS, web(), db(), SEC, sec_policy(), to_db()],
        [*NS, web(), db(), sec_policy(), to_db()],  # tier gone: sorts last, Deny
        [*NS, web(), db(), tier("security", order=1), sec_policy(order=1), to_db(order=3)],
        [*NS, web(), db(), SEC, sec_policy(tier="security"), to_db(tier="default")],
        [*NS, web(), db(), to_db()],
    ],
    "profiles and namespaces": [
        [*NS, web(), db(service_account="sa1"), service_account("sa1", "ns1")],
        [
            namespace("ns1", labels={"team": "b"}),
            web(profiles=["extra", "kns.ns1"]),
            db(service_account="sa1"),
            profile("extra", labels_to_apply={"app": "db", "color": "blue"}),
            service_account("sa1", "ns1", labels={"role": "fe"}),
            sec_policy(),
            SEC,
        ],
        [
            web(profiles=["extra", "kns.ns1"]),
            db(service_account="sa1"),
            profile("extra", ingress=[{"action": "Allow"}]),
            sec_policy(),
            SEC,
        ],
        [*NS, web(profiles=["missing"]), db()],
    ],
    "network sets": [
        [*NS, web(), to_db(), network_set("dbs", ["192.0.2.0/24"], namespace="ns1")],
        [
            *NS,
            web(),
            to_db(),
            network_set("dbs", ["192.0.2.0/25", "198.51.100.7/32"], namespace="ns1"),
            global_network_set("g-dbs", ["203.0.113.0/24"], labels={"app": "db"}),
        ],
        [
            *NS,
            web(),
            to_db(),
            network_set("dbs", ["192.0.2.0/25"], namespace="ns1", labels={"app": "db"}),
            global_network_set("g-dbs", ["203.0.113.0/24"], labels={"app": "web"}),
        ],
        [*NS, web(), to_db()],
    ],
    "named ports": [
        [*NS, web(), db(), remote_db(), to_db()],
        [*NS, web(), db(ports=[{"name": "pg", "protocol": "TCP", "port": 6432}]), to_db()],
        [*NS, web(), db(ports=[{"name": "pg", "protocol": "UDP", "port": 5432}]), to_db()],
        [*NS, web(), db(ports=[]), remote_db(), to_db()],
    ],
    "host endpoints and k8s policy": [
        [
            *NS,
            web(),
            host_endpoint(
                "node1-eth0", interface_name="eth0", expected_ips=["198.18.0.1"], labels={"h": "y"}
            ),
            global_network_policy(
                "hep-pre",
                selector="h == 'y'",
                preDNAT=True,
                applyOnForward=True,
                ingress=[{"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}}],
            ),
            k8s_network_policy(
                "knp-web",
                namespace="ns1",
                pod_selector={"matchLabels": {"app": "web"}},
                ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
            ),
        ],
        [
            *NS,
            web(labels={"app": "api"}),
            host_endpoint("node1-eth0", interface_name="*", labels={"h": "y"}),
            global_network_policy("hep-pre", selector="h == 'y'", doNotTrack=True, ingress=[]),
            k8s_network_policy("knp-web", namespace="ns1", pod_selector={}),
        ],
        [*NS, web()],
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_expansion_agrees(name: str) -> None:
    check(SCENARIOS[name])


def test_final_state_renders_as_from_scratch() -> None:
    """The last state of a long churn equals a fresh graph+renderer loaded in one go (the
    way Felix starts), including the order policies reach the renderer."""
    states = [keyed(s) for s in SCENARIOS["policies in tiers, tier deleted while referenced"]]
    churned = run_steps(CalcHarness, split(states))[len(states) - 1]
    g = CalcGraph(NODE)
    g.load(list(states[-1].values()))
    r = RuleRenderer()
    r.apply(g.flush())
    assert churned["tables"] == r.tables()


def test_expanders_reach_every_state() -> None:
    states = [keyed(s) for s in SCENARIOS["endpoints come and go"]]
    for name, expand in EXPANDERS.items():
        reached = {s.reached for s in expand(states) if s.reached is not None}
        want = {len(states) - 1} if name == "from_scratch_to_last" else None
        if name == "squashed":
            want = set(range(0, len(states), 2)) | {len(states) - 1}
        assert reached == (want if want is not None else set(range(len(states)))), name


# --- random state sequences --------------------------------------------------------------------
def _universe() -> dict[str, list[dict[str, Any]]]:
    """Per datastore key, the versions a random state may hold (or the key is absent)."""
    versions: list[list[dict[str, Any]]] = [
        [namespace("ns1", labels={"team": t}) for t in ("a", "b")],
        [namespace("ns2", labels={"team": "b"})],
        [
            web(),
            web(labels={"app": "db"}),
            web(profiles=["extra", "kns.ns1"]),
            web(node="node2"),  # moves off this node: no longer local
            web(ipNetworks=["not-a-net"]),  # invalid: treated as deleted
        ],
        [db(), db(ports=[{"name": "pg", "protocol": "TCP", "port": 1}]), db(labels={})],
        [remote_db(), remote_db(labels={"app": "web"})],
        [to_db(), to_db(selector="all()", tier="security"), to_db(order=1)],
        [sec_policy(), sec_policy(selector="app == 'db'", order=50)],
        [SEC, tier("security", order=1, default_action="Deny")],
        [profile("extra", labels_to_apply={"app": "web"}), profile("extra")],
        [network_set("dbs", ["192.0.2.0/24"], namespace="ns1", labels={"app": "db"})],
        [global_network_set("g", ["203.0.113.0/24"], labels={"app": "web"})],
        [
            host_endpoint("h", interface_name="eth0", labels={"app": "web"}),
            host_endpoint("h", interface_name="*", expected_ips=["198.18.0.1"]),
        ],
        [
            global_network_policy("pre", selector="all()", preDNAT=True, applyOnForward=True),
            global_network_policy("pre", selector="has(app)", doNotTrack=True),
            global_network_policy("pre", selector="app == "),  # invalid: treated as deleted
        ],
        [k8s_network_policy("knp", namespace="ns1", pod_selector={"matchLabels": {"app": "db"}})],
    ]
    return {next(iter(keyed(v))): v for v in versions}


UNIVERSE = _universe()


@st.composite
def state_sequences(draw: st.DrawFn) -> list[State]:
    return draw_states(draw, UNIVERSE)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(state_sequences())
def test_random_state_sequences(states: list[State]) -> None:
    check_expansions(CalcHarness, states)


# Routes: tests/unit/test_calc_routes_order.py (the routes calc node inside the graph).


def test_diff_is_minimal() -> None:
    a = keyed([web(), db()])
    b = keyed([web(labels={"x": "y"})])
    ups = diff(a, b)
    assert [(k.rsplit("/", 1)[-1], v is None) for k, v in ups] == [
        ("node1-k8s-db-eth0", True),
        ("node1-k8s-web-eth0", False),
    ]
    assert diff(b, b) == []
