"""The calc graph never fails on a stored resource (issue 16, fix 1).

A resource that reached the datastore may be odd (written by an older version, by hand, or
by a tool that skipped validation). Whatever it holds, ``CalcGraph.on_update`` and
``flush`` must not raise: a resource that cannot be parsed is skipped as if deleted, logged
and listed in ``rejected``; every other resource is still programmed. Hypothesis replaces a
random field of valid resources with random JSON values.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.felix.calc import CalcGraph, DataplaneView, PolicyInsight
from pycalico.felix.rules import RuleRenderer
from tests.kit import (
    global_network_policy,
    global_network_set,
    host_endpoint,
    k8s_network_policy,
    key_of,
    namespace,
    network_policy,
    network_set,
    profile,
    service_account,
    tier,
    workload_endpoint,
)

PORTS = [{"name": "pg", "protocol": "TCP", "port": 5432}, {"name": "dns", "port": 53}]


def _valid() -> list[dict[str, Any]]:
    return [
        namespace("a", labels={"team": "x"}),
        service_account("sa", "a", labels={"role": "db"}),
        workload_endpoint(
            "db",
            namespace="a",
            ip="10.0.0.2",
            labels={"app": "db"},
            ports=PORTS,
            service_account="sa",
        ),
        workload_endpoint("web", namespace="a", ip="10.0.0.1", labels={"app": "web"}),
        host_endpoint("h", interface_name="eth0", expected_ips=["198.18.0.1"]),
        tier("sec", order=10, default_action="Pass"),
        profile("p", ingress=[{"action": "Allow"}], labels_to_apply={"x": "y"}),
        network_set("ns", ["192.0.2.0/24"], namespace="a", labels={"app": "db"}),
        global_network_set("gns", ["203.0.113.0/24"], labels={"app": "web"}),
        global_network_policy(
            "g",
            tier="sec",
            order=1,
            selector="app == 'db'",
            namespaceSelector="team == 'x'",
            serviceAccountSelector="role == 'db'",
            ingress=[
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["pg", 80]}},
                {"action": "Allow", "destination": {"ports": ["pg", "dns"]}},
                {"action": "Deny", "source": {"serviceAccounts": {"names": ["sa"]}}},
                {"action": "Pass", "icmp": {"type": 8}, "protocol": "ICMP"},
            ],
        ),
        network_policy(
            "n",
            namespace="a",
            order=1,
            egress=[{"action": "Allow", "destination": {"selector": "app == 'db'"}}],
        ),
        k8s_network_policy(
            "k",
            namespace="a",
            ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}],
        ),
    ]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["all()", "a == 'b'", "pg", "TCP", "10.0.0.0/8", "1:2", "Deny"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``obj`` below its top level (dict keys and list indexes)."""
    out = []
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for k, v in items:
        if prefix == () and k in ("apiVersion", "kind"):
            continue
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


def _mutate(res: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(res)
    cur: Any = out
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return out


@st.composite
def odd_states(draw: st.DrawFn) -> tuple[list[dict[str, Any]], set[str]]:
    resources = _valid()
    bad: set[str] = set()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(resources) - 1))
        paths = _paths(resources[i])
        path = draw(st.sampled_from(paths))
        resources[i] = _mutate(resources[i], path, draw(JSON))
        if path[0] in ("metadata",) and path[-1] in ("name", "namespace"):
            bad.add(str(i))  # identity changed: not comparable, only must not crash
    return resources, bad


def _run(resources: list[dict[str, Any]]) -> CalcGraph:
    g = CalcGraph("node1")
    view = DataplaneView()
    renderer = RuleRenderer()
    for r in resources:
        g.on_update(key_of(r) if _keyable(r) else f"/odd/{id(r)}", r)
        msgs = g.flush()
        view.apply(msgs)
        renderer.apply(msgs)
    g.on_in_sync()
    msgs = g.flush()
    renderer.apply(msgs)
    renderer.tables()
    return g


def _keyable(r: dict[str, Any]) -> bool:
    meta = r.get("metadata")
    return isinstance(meta, dict) and isinstance(meta.get("name"), str) and bool(meta["name"])


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(odd_states())
def test_graph_never_raises_on_stored_resources(state: Any) -> None:
    resources, _ = state
    _run(resources)
    # Policy insight over the same state answers (and lists what it skipped).
    ins = PolicyInsight(resources)
    ins.matrix([(5432, 6), (53, 17)])


def test_bad_resource_is_skipped_reported_and_the_rest_programmed() -> None:
    good = _valid()
    bad_pol = global_network_policy("bad", ingress=[{"action": "Allow", "icmp": "nope"}])
    bad_wep = workload_endpoint("odd", namespace="a", ip="10.0.0.9")
    bad_wep["spec"]["ipNetworks"] = ["not-an-ip"]
    g = CalcGraph("node1")
    for r in [*good, bad_pol, bad_wep]:
        g.on_update(key_of(r), r)
    view = DataplaneView()
    view.apply(g.flush())
    assert set(g.rejected) == {key_of(bad_pol), key_of(bad_wep)}
    assert g.rejected_total == 2
    assert all(g.rejected.values())
    # The good policies are active, the bad one is not.
    assert {str(p) for p in view.policies} >= {"gnp/g", "np/a/n"}
    assert not any(p.name == "bad" for p in view.policies)
    # Fixing the resource clears the report.
    g.on_update(key_of(bad_pol), global_network_policy("bad", ingress=[{"action": "Allow"}]))
    g.flush()
    assert set(g.rejected) == {key_of(bad_wep)}
    ins = PolicyInsight([*good, bad_pol])
    assert len(ins.warnings) == 1 and "bad" in ins.warnings[0]


def test_named_port_with_and_without_protocol_does_not_crash() -> None:
    """The minimized crash: the same named port in a rule with a protocol and in one
    without (SetSpec(protocol=6) vs SetSpec(protocol=None) were compared while sorting)."""
    res = [
        namespace("a"),
        workload_endpoint("db", namespace="a", ip="10.0.0.2", labels={"app": "db"}, ports=PORTS),
        workload_endpoint("web", namespace="a", ip="10.0.0.1", labels={"app": "web"}),
        global_network_policy(
            "p",
            selector="app == 'db'",
            ingress=[
                {"action": "Deny", "protocol": "UDP", "destination": {"ports": ["pg"]}},
                {"action": "Allow", "destination": {"ports": ["pg"]}},
            ],
        ),
    ]
    ins = PolicyInsight(res)
    # No protocol: the named port matches with the endpoint port's own protocol (TCP).
    assert ins.explain("a/web", "a/db", 5432, "TCP").verdict == "allow"
    assert ins.explain("a/web", "a/db", 5432, "UDP").verdict == "deny"
