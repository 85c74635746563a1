"""Flow records get their pending verdict from Felix's own calc graph: with flow logs on,
Felix keeps enforced and pending policy views (felix/flowviews.py) fed by the same updates
as its graph, and the collector's evaluator (flows/pending.py) asks them what the staged
policies would have done. With flow logs off there are no views (no cost)."""

from __future__ import annotations

from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.agent import Felix
from pycalico.felix.dataplane import FakeNftRunner
from pycalico.flows.pending import ViewsPending
from pycalico.flows.record import FlowKey, Peer
from tests.kit import felix_configuration, namespace, network_policy, resource, wait_for
from tests.kit import workload_endpoint as wep

A, B = "10.244.1.1", "10.244.1.2"


def key(reporter: str = "dst") -> FlowKey:
    return FlowKey(reporter, Peer("wep", A, "ns1", "a"), Peer("wep", B, "ns1", "b"),  # type: ignore[arg-type]
                   6, 80, "allow", ())  # fmt: skip


def test_staged_deny_shows_as_pending_on_an_allowed_flow() -> None:
    ds = MemoryDatastore()
    ds.create(namespace("ns1"))
    ds.create(wep("a", namespace="ns1", node="n1", ip=A, labels={"app": "a"}))
    ds.create(wep("b", namespace="ns1", node="n1", ip=B, labels={"app": "b"}))
    ds.create(network_policy("allow-b", namespace="ns1", selector="app == 'b'",
                             ingress=[{"action": "Allow"}]))  # fmt: skip
    ds.create(felix_configuration("default", flowLogsFileEnabled=True))
    felix = Felix("n1", ds, FakeNftRunner(), syncer_poll_interval=0.05, watch=False)
    evaluator = ViewsPending(lambda: felix.flow_views.box.latest() if felix.flow_views else None)
    felix.start()
    try:
        assert felix.wait_in_sync(5), felix.error
        wait_for(lambda: felix.flow_views is not None, 5)  # on from the datastore's default
        assert evaluator.pending(key()) is None  # nothing staged: no opinion
        ds.create(resource("StagedNetworkPolicy", "deny-a", {
            "order": 1, "selector": "app == 'b'", "types": ["Ingress"],
            "ingress": [{"action": "Deny", "source": {"selector": "app == 'a'"}}],
        }, namespace="ns1"))  # fmt: skip
        pending = wait_for(lambda: evaluator.pending(key()), 5)
        assert pending["action"] == "deny"
        step = pending["trace"][-1]
        assert (step["kind"], step["namespace"], step["name"], step["rule"]) == (
            "snp",
            "ns1",
            "deny-a",
            0,
        )
        assert step["direction"] == "ingress" and step["action"] == "deny"
        src_side = evaluator.pending(key("src"))  # a's egress: no staged policy applies
        assert src_side is not None and src_side["action"] == "allow"
        # The enforced dataplane is untouched: nothing staged reaches the renderer.
        assert not any("deny-a" in str(p) for p in felix.renderer.tables().values())

        ds.create(felix_configuration("node.n1", flowLogsFileEnabled=False))  # off on this node
        wait_for(lambda: felix.flow_views is None, 5)
        assert evaluator.pending(key()) is None
    finally:
        felix.stop()
