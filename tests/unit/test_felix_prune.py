"""Issue 19, "agent memory flat" under pod churn: every structure Felix keeps per endpoint,
policy, profile, namespace or selector is pruned when that object goes.

Each test records the :func:`~tests.kit.footprint.footprint` (the length of every container
reachable from the object, by attribute path), feeds many distinct objects in and deletes
them all again, and asserts that no path is longer than before. Leaks this found and fixed:
the label index kept emptied selector-index entries (one per label name and value any
selector ever named), the calc graph kept a profile's user set and zero reference count
after its last endpoint, the renderer kept a policy's and a profile's (empty) user set after
their last endpoint, and the rule resolver memoised the id of every selector ever seen (now
a bounded memo: the one path allowed to stay longer, up to its bound).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.agent import Felix
from pycalico.felix.calc import CalcGraph
from pycalico.felix.calc import resolve as resolve_mod
from pycalico.felix.calc.labelindex import LabelIndex
from pycalico.felix.calc.resolve import RuleResolver
from pycalico.felix.dataplane import FakeNftRunner
from pycalico.felix.rules.renderer import RuleRenderer
from pycalico.node.tunnels import ensure_tunnel_addresses
from pycalico.selector import parse
from pycalico.system.fakekernel import FakeKernel
from pycalico.system.kernel import Link
from pycalico.system.process import FakeProcessRunner
from pycalico.system.sysctl import FakeSysctl
from pycalico.system.tc import FakeTc
from tests.kit import (
    global_network_policy,
    global_network_set,
    ip_pool,
    key_of,
    namespace,
    network_policy,
    network_set,
    node,
    profile,
    service_account,
    tier,
    wait_for,
    workload_endpoint,
)
from tests.kit.footprint import footprint, grown
from tests.unit.test_dataplane_routing import dataplane, host

N = 12  # distinct objects of each kind per round
MEMO = "_resolver._uids"  # the bounded selector-id memo (tested on its own below)


def churn_objects(rnd: int, n: int = N) -> list[dict[str, Any]]:
    """Pods on this node (odd) and another (even), each with its own labels, named port and
    bandwidth limit, in its own namespace, and policies, sets, a profile and a tier that
    name them by distinct selectors (namespace selectors, named ports, staged too)."""
    out: list[dict[str, Any]] = [tier(f"t{rnd}", order=10 + rnd)]
    for i in range(n):
        ns, app = f"ns{rnd}-{i}", f"a{rnd}-{i}"
        out += [
            namespace(ns, labels={"team": f"team{rnd}-{i}"}),
            service_account(f"sa{i}", namespace=ns, labels={"role": f"r{rnd}-{i}"}),
            profile(f"prof{rnd}-{i}", labels_to_apply={f"pl{rnd}{i}": "x"}),
            workload_endpoint(
                f"p{rnd}x{i}",
                namespace=ns,
                node="n1" if i % 2 else "n2",
                ip=f"10.244.{rnd}.{i + 2}",
                service_account=f"sa{i}",
                labels={"app": app, f"k{rnd}{i}": "v"},
                profiles=[f"kns.{ns}", f"prof{rnd}-{i}"],
                ports=[{"name": f"web{i}", "port": 8000 + i, "protocol": "TCP"}],
                qosControls={"ingressBandwidth": 10**7 + i},
            ),
            network_policy(
                f"np{i}",
                namespace=ns,
                selector=f"app == '{app}'",
                ingress=[
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"namespaceSelector": f"team == 'team{rnd}-{i}'"},
                        "destination": {"ports": [f"web{i}"]},
                    }
                ],
            ),
            global_network_policy(
                f"g{rnd}-{i}",
                tier=f"t{rnd}",
                selector=f"has(k{rnd}{i})",
                egress=[{"action": "Deny", "destination": {"selector": f"set == 's{rnd}{i}'"}}],
            ),
            network_policy(
                f"staged{i}",
                namespace=ns,
                kind="StagedNetworkPolicy",
                selector=f"app in {{'{app}', 'other{i}'}}",
                ingress=[{"action": "Deny"}],
            ),
            network_set(
                f"ns{i}", namespace=ns, nets=[f"10.9.{i}.0/24"], labels={"set": f"s{rnd}{i}"}
            ),
            global_network_set(
                f"gs{rnd}-{i}", nets=[f"10.8.{i}.0/24"], labels={"set": f"s{rnd}{i}"}
            ),
        ]
    return out


def base_objects() -> list[dict[str, Any]]:
    return [ip_pool("p", "10.244.0.0/16", vxlan_mode="Always"), node("n1", "198.18.0.1/24"),
            node("n2", "198.18.0.2/24"), namespace("default")]  # fmt: skip


def only_memo(paths: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """``paths`` without the bounded memo (which may stay full up to its bound)."""
    return {p: v for p, v in paths.items() if not p.endswith(MEMO)}


def test_label_index_prunes_selector_and_item_indexes() -> None:
    idx: LabelIndex[str, str] = LabelIndex(lambda s, i: None, lambda s, i: None)
    empty = footprint(idx)
    for rnd in range(2):
        for i in range(30):
            idx.update_selector(f"eq{i}", f"app == 'a{rnd}{i}' && has(x{i})")
            idx.update_selector(f"in{i}", f"k{i} in {{'v{rnd}', 'w{i}'}}")
            idx.update_selector(f"has{i}", f"has(h{rnd}{i})")
            idx.update_selector(f"all{i}", f"!has(never{rnd}{i})")
            idx.update_item(f"i{i}", {"app": f"a{rnd}{i}", f"x{i}": "1", f"k{i}": f"w{i}"})
        assert idx.matches("eq3") == {"i3"} and idx.matches("in4") == {"i4"}
        for i in range(30):  # relabel (old values unindexed), then move selectors away
            idx.update_item(f"i{i}", {f"h{rnd}{i}": "y"})
            idx.update_selector(f"eq{i}", f"app == 'moved{rnd}{i}'")
        assert idx.matches("has7") == {"i7"}
        for i in range(30):
            for sid in ("eq", "in", "has", "all"):
                idx.remove_selector(f"{sid}{i}")
            idx.remove_item(f"i{i}")
        assert grown(empty, footprint(idx)) == {}


def test_rule_resolver_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve_mod, "UID_MEMO_MAX", 8)
    r = RuleResolver()
    sels = [f"app == 'a{i}'" for i in range(50)]
    for s in sels:
        assert r.uid(s) == parse(s).unique_id()
        assert len(r._uids) <= 8
    assert r.uid(sels[-1]) == parse(sels[-1]).unique_id()  # still answers from the memo


def test_calc_graph_and_renderer_return_to_their_size() -> None:
    g = CalcGraph("n1", pending_view=True)
    r = RuleRenderer()

    def feed(objs: list[dict[str, Any]], delete: bool = False) -> None:
        for o in objs:
            g.on_update(key_of(o), None if delete else o)
        r.apply(g.flush())
        g.flush_pending()

    feed(base_objects())
    g.on_in_sync()
    r.apply(g.flush())
    g.flush_pending()
    r.tables()
    before_g, before_r = footprint(g), footprint(r)
    for rnd in (1, 2):
        objs = churn_objects(rnd)
        feed(objs)
        r.tables()
        counts = r.counts()
        assert counts["active_local_endpoints"] == N // 2 and counts["active_profiles"] >= N
        assert counts["active_local_policies"] >= N
        feed(list(reversed(objs)), delete=True)
        r.tables()
        assert only_memo(grown(before_g, footprint(g))) == {}, rnd
        assert grown(before_r, footprint(r)) == {}, rnd


@pytest.fixture
def felix() -> Any:
    ds = MemoryDatastore()
    for o in base_objects():
        ds.create(o)
    for n in ("n1", "n2"):
        ensure_tunnel_addresses(ds, n)
    kernel, tc = host(), FakeTc()
    f = Felix("n1", ds, FakeNftRunner(), routes=dataplane(kernel)[0], tc=tc, watch=False,
              syncer_poll_interval=0.02, overrides={"flowLogsFileEnabled": True})  # fmt: skip
    f.start()
    try:
        assert f.wait_in_sync(10), f.error
        yield f, ds, kernel, tc
    finally:
        f.stop()


def settle(f: Felix, tc: FakeTc, endpoints: int) -> None:
    """Wait until the owner loop has programmed ``endpoints`` local pods (and their limits)."""

    def done() -> bool:
        f.barrier()
        return f.renderer.counts()["active_local_endpoints"] == endpoints == len(tc.tbfs)

    wait_for(done, 10.0, 0.02)
    f.barrier()


def test_felix_returns_to_its_size_after_pods_and_policies_churn(felix: Any) -> None:
    """The whole agent (calc graphs incl. the flow-log views' pending graph, renderer, route
    and QoS loops) after two rounds of pods and policies created and deleted: no container
    is longer than after the first sync (the fakes' own call records are not walked)."""
    f, ds, kernel, tc = felix
    skip = (MemoryDatastore, FakeNftRunner, FakeKernel, FakeTc, FakeProcessRunner, FakeSysctl)
    settle(f, tc, 0)
    before = footprint(f, skip)
    for rnd in (1, 2):
        objs = churn_objects(rnd)
        for o in objs:  # the CNI made the local pods' interfaces
            if o["kind"] == "WorkloadEndpoint" and o["spec"]["node"] == "n1":
                dev = o["spec"]["interfaceName"]
                kernel.add_link(Link(dev, "veth", 1500, "ee:ee:ee:ee:ee:ee", True))
                tc.links[dev] = 1500
            ds.create(o)
        settle(f, tc, N // 2)  # every local pod has its chains and its bandwidth limit
        assert f.error is None, f.error
        for o in reversed(objs):
            m = o["metadata"]
            ds.delete(o["kind"], m["name"], m.get("namespace", ""))
            if o["kind"] == "WorkloadEndpoint" and o["spec"]["node"] == "n1":
                dev = o["spec"]["interfaceName"]  # the CNI deleted the veth, and with it
                kernel.links.pop(dev, None)  # its qdiscs
                tc.links.pop(dev, None)
                tc.tbfs.pop(dev, None)
        settle(f, tc, 0)
        time.sleep(0.1)  # anything still queued (the syncer's last events) is applied
        f.barrier()
        assert only_memo(grown(before, footprint(f, skip))) == {}, rnd
