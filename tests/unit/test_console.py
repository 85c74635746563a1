"""The web console's application against a memory datastore and fake live sources.

Real pieces: the Starlette app, the templates, PolicyInsight, the api decoder. Fakes (behind
the console's narrow interfaces): node status, the live matrix and a FlowSource.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pycalico.ctl.validate import validate_sources
from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.calc.insight import PolicyInsight
from pycalico.ui import views
from pycalico.ui.app import Console, create_app
from pycalico.ui.cli import ListenError, check_listen
from pycalico.ui.flows import FlowFilter, per_minute
from pycalico.ui.sources import FlowRecord
from tests.kit.builders import (
    ip_pool,
    ipam_block,
    namespace,
    network_policy,
    node,
    workload_endpoint,
)
from tests.kit.fakes import memory_datastore

PODS = [("web", "node1", "10.244.0.1", "web"), ("db", "node2", "10.244.1.1", "db"),
        ("cli", "node2", "10.244.1.2", "cli")]  # fmt: skip

DENY_DB = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-only-web, namespace: shop}
spec:
  selector: app == 'db'
  ingress: [{action: Allow, source: {selector: app == 'web'}}]
"""


def cluster_resources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        node("node1", "198.18.0.1"),
        node("node2", "198.18.0.2", rr_cluster_id="1.0.0.1"),
        ip_pool(cidr="10.244.0.0/16", block_size=26),
        ipam_block("10.244.0.0/26", "node1", held={"10.244.0.1": "node1"}),
        ipam_block("10.244.1.0/26", "node2", held={"10.244.1.1": "node2", "10.244.1.2": "node2"}),
        namespace("shop"),
    ]
    for pod, nd, ip, app in PODS:
        out.append(workload_endpoint(pod, namespace="shop", node=nd, ip=ip, labels={"app": app}))
    return out


class Store:
    """One memory datastore shared by every snapshot (close is a no-op)."""

    def __init__(self, ds: MemoryDatastore) -> None:
        self.ds = ds

    def __call__(self) -> Any:
        ds = self.ds

        class View:
            list_prefix = ds.list_prefix

            def close(self) -> None:
                pass

        return View()


class FakeStatus:
    def __init__(self, statuses: dict[str, Any]) -> None:
        self.statuses = statuses

    def node_statuses(self) -> dict[str, Any]:
        return self.statuses


class FakeLive:
    def __init__(self, flip: tuple[str, str]) -> None:
        self.flip = flip
        self.asked: list[Any] = []

    def probe_matrix(self, ports: Any) -> list[dict[str, Any]]:
        self.asked.append(ports)
        rows = []
        for r in PolicyInsight(cluster_resources()).matrix([(80, 6)]):
            j = r.to_json()
            if (j["from"], j["to"]) == self.flip:
                j["verdict"] = "deny"
            rows.append(j)
        return rows


class FakeFlows:
    def __init__(self, records: list[FlowRecord]) -> None:
        self.records = records

    def flows(self, since: float = 0.0, limit: int = 5000) -> list[FlowRecord]:
        return [r for r in self.records if r.get("end", 0) > since][-limit:]


def mesh_row(peer: str, info: str) -> dict[str, str]:
    return {"peer": peer, "type": "node-to-node mesh", "state": "up", "since": "x", "info": info}


STATUSES = {
    "node1": {"ready": True, "bgp": [mesh_row("198.18.0.2", "Established"),
                                     {**mesh_row("203.0.113.9", "Connect"), "type": "global"}]},
    "node2": {"ready": False, "bgp": [mesh_row("198.18.0.1", "Established")],
              "errors": ["BGP not established with 203.0.113.9"]},
}  # fmt: skip


def flow(end: float, action: str, src: str = "web", dst: str = "db") -> FlowRecord:
    return {
        "start": end - 5, "end": end, "node": "node2", "reporter": "dst",
        "src": {"kind": "wep", "namespace": "shop", "name": src, "ip": "10.244.0.1"},
        "dst": {"kind": "wep", "namespace": "shop", "name": dst, "ip": "10.244.1.1"},
        "proto": "TCP", "dport": 5432, "action": action,
        "policy": {"tier": "default", "kind": "np", "namespace": "shop",
                   "name": "db-only-web", "rule": 0 if action == "allow" else None,
                   "direction": "ingress", "action": action},
        "trace": [{"tier": "default", "name": "db-only-web", "namespace": "shop",
                   "action": action}],
        "pending": {"action": "deny", "trace": [{"tier": "default", "kind": "snp",
                    "name": "staged-x", "namespace": "shop", "rule": 0, "action": "deny"}]},
        "packets_in": 2, "packets_out": 1, "bytes_in": 120, "bytes_out": 60, "connections": 1,
    }  # fmt: skip


def parse_grids(html: str) -> dict[tuple[str, str, int, str], tuple[str, str]]:
    """(from, to, port, PROTOCOL) -> (cell classes, live verdict) of the rendered matrices."""
    out = {}
    tables = re.finditer(
        r'<table class="matrix" data-port="(\d+)" data-protocol="(\w+)">(.*?)</table>', html, re.S
    )
    for t in tables:
        port, proto, body = int(t.group(1)), t.group(2), t.group(3)
        names = re.findall(r'<th class="col"><span>(.*?)</span></th>', body)
        for row in re.finditer(r"<tr><th>(.*?)</th>(.*?)</tr>", body):
            tds = re.findall(r'<td class="([^"]*)"(?: data-live="(\w+)")?></td>', row.group(2))
            assert len(tds) == len(names)
            for dst, (cls, live) in zip(names, tds, strict=True):
                if row.group(1) != dst:
                    out[(row.group(1), dst, port, proto)] = (cls, live)
    return out


@pytest.fixture
def ds() -> MemoryDatastore:
    return memory_datastore(*cluster_resources())


def client(ds: MemoryDatastore, **kw: Any) -> TestClient:
    kw.setdefault("status", FakeStatus(STATUSES))
    return TestClient(create_app(Console(open_store=Store(ds), **kw)))


def test_cluster_view_nodes_sessions_pools_and_pods(ds: MemoryDatastore) -> None:
    data = client(ds).get("/api/cluster").json()
    assert [(n["name"], n["state"], n["established"]) for n in data["nodes"]] == [
        ("node1", "ready", 1),
        ("node2", "not-ready", 1),
    ]
    edges = {e["data"]["id"]: (e["data"]["state"], e["classes"]) for e in data["graph"]["edges"]}
    assert edges == {
        "node:node1--node:node2": ("Established", "established mesh"),
        "node:node1--peer:203.0.113.9": ("Connect", "down"),
    }
    classes = {v["data"]["id"]: v["classes"] for v in data["graph"]["nodes"]}
    assert classes == {"node:node1": "ready", "node:node2": "not-ready rr",
                       "peer:203.0.113.9": "external"}  # fmt: skip
    (pool,) = data["pools"]
    assert pool["nodes"] == {"node1": {"blocks": 1, "used": 1, "size": 64},
                             "node2": {"blocks": 1, "used": 2, "size": 64}}  # fmt: skip
    per_node = {n["name"]: [p["name"] for p in n["pods"]] for n in data["nodes"]}
    assert per_node == {"node1": ["shop/web"], "node2": ["shop/cli", "shop/db"]}


def test_every_page_renders(ds: MemoryDatastore) -> None:
    c = client(ds)
    pages = [("/cluster", "bgp-graph"), ("/reachability", 'table class="matrix"'),
             ("/policy", "whatif-yaml"), ("/flows", "Flow logs not available")]  # fmt: skip
    for path, needle in pages:
        r = c.get(path)
        assert r.status_code == 200, path
        assert needle in r.text, path
    for asset in ("vendor/htmx.min.js", "vendor/cytoscape.min.js", "vendor/chart.umd.min.js",
                  "console.js", "console.css"):  # fmt: skip
        assert c.get(f"/static/{asset}").status_code == 200


def test_unknown_status_is_unknown_not_down(ds: MemoryDatastore) -> None:
    data = client(ds, status=FakeStatus({})).get("/api/cluster").json()
    assert {n["state"] for n in data["nodes"]} == {"unknown"}
    assert data["graph"]["edges"] == []


def test_matrix_is_policy_insight_cell_by_cell(ds: MemoryDatastore) -> None:
    ds.create(dict(views.overlay([], DENY_DB)[0]))
    want = [r.to_json() for r in PolicyInsight(ds.list_prefix("/calico/").items).matrix()]
    c = client(ds)
    assert c.get("/api/matrix").json() == {"probes": want}
    shown = parse_grids(c.get("/reachability").text)
    assert {k: v[0] for k, v in shown.items()} == {
        (r["from"], r["to"], r["port"], r["protocol"]): r["verdict"] for r in want
    }
    assert shown[("shop/cli", "shop/db", 80, "TCP")] == ("deny", "")
    ex = c.get("/reachability/explain", params={"from": "shop/cli", "to": "shop/db",
                                                "port": "80", "protocol": "TCP"})  # fmt: skip
    assert 'data-verdict="deny"' in ex.text and "ingress" in ex.text
    bad = c.get("/reachability/explain", params={"from": "shop/nope", "to": "shop/db"})
    assert bad.status_code == 400 and "unknown endpoint" in bad.text


def test_live_matrix_marks_disagreeing_cells(ds: MemoryDatastore) -> None:
    live = FakeLive(("shop/web", "shop/db"))
    c = client(ds, live=live)
    assert "run live matrix" in c.get("/reachability").text
    r = c.post("/reachability/live", params={"ports": "80/TCP"})
    assert live.asked == [[(80, "TCP")]]
    assert "6 probes, 1 disagree" in r.text
    marked = {k: v for k, v in parse_grids(r.text).items() if "disagree" in v[0]}
    assert marked == {("shop/web", "shop/db", 80, "TCP"): ("allow disagree", "deny")}
    assert client(ds).post("/reachability/live").status_code == 400


def test_policy_page_orders_and_selects(ds: MemoryDatastore) -> None:
    ds.create(network_policy("b-second", namespace="shop", selector="all()", order=200))
    ds.create(network_policy("a-first", namespace="shop", selector="app == 'db'", order=100))
    tiers = views.policy_view(PolicyInsight(ds.list_prefix("/calico/").items))
    assert [t["name"] for t in tiers] == ["default"]
    pols = [(p["name"], p["selects"]) for p in tiers[0]["policies"]]
    assert pols == [("a-first", ["shop/db"]), ("b-second", ["shop/cli", "shop/db", "shop/web"])]


def test_whatif_delta_and_never_writes(ds: MemoryDatastore) -> None:
    before = ds.list_prefix("/calico/")
    r = client(ds).post("/policy/whatif", data={"yaml": DENY_DB, "ports": "80/TCP"},
                        headers={"accept": "application/json"})  # fmt: skip
    assert r.status_code == 200
    assert r.json()["changes"] == [
        {"from": "shop/cli", "to": "shop/db", "port": 80, "protocol": "TCP",
         "before": "allow", "after": "deny"},
    ]  # fmt: skip
    after = ds.list_prefix("/calico/")
    assert after.revision == before.revision and after.items == before.items
    html = client(ds).post("/policy/whatif", data={"yaml": DENY_DB}).text
    assert "1 of 6 cells would change" in html


@pytest.mark.parametrize(
    "text",
    [
        "kind: [unclosed",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x}\n"
        "spec: {selector: 'app ==', order: -1x}\n",
        "apiVersion: projectcalico.org/v3\nkind: Bogus\nmetadata: {name: x}\n",
    ],
)
def test_bad_whatif_yaml_gets_validate_errors(
    ds: MemoryDatastore, tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("what-if").write_text(text)  # calicoctl validate -f what-if
    _, expected = validate_sources(["what-if"])
    assert expected
    with pytest.raises(views.WhatIfError) as exc:
        views.overlay([], text)
    assert exc.value.lines == expected
    r = client(ds).post("/policy/whatif", data={"yaml": text})
    assert r.status_code == 200 and "Invalid resources" in r.text
    r = client(ds).post(
        "/policy/whatif", data={"yaml": text}, headers={"accept": "application/json"}
    )
    assert r.status_code == 422 and r.json() == {"errors": expected}


def test_whatif_body_is_capped(ds: MemoryDatastore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body over the cap (declared or streamed) is refused with 413, not buffered."""
    from pycalico.ui import app as appmod

    monkeypatch.setattr(appmod, "MAX_MANIFEST_BYTES", 1000)
    big = {"yaml": "#" * 4000}
    r = client(ds).post("/policy/whatif", data=big, headers={"accept": "application/json"})
    assert r.status_code == 413 and "larger than 3000 bytes" in r.json()["errors"][0]

    def chunks() -> Iterator[bytes]:
        yield b"yaml=" + b"%23" * 600
        yield b"%23" * 600  # no Content-Length: the stream itself is counted

    r = client(ds).post("/policy/whatif", content=chunks())
    assert r.status_code == 413
    r = client(ds).post("/policy/whatif", data={"yaml": DENY_DB})
    assert r.status_code == 200


def test_listen_needs_token_off_loopback() -> None:
    assert check_listen("127.0.0.1:9443", None) == ("127.0.0.1", 9443)
    assert check_listen("[::1]:80", None) == ("::1", 80)
    assert check_listen("0.0.0.0:9443", "t") == ("0.0.0.0", 9443)
    for bad in ("0.0.0.0:9443", "198.18.0.1:1", "example.com:80"):
        with pytest.raises(ListenError, match="token is required"):
            check_listen(bad, None)
    with pytest.raises(ListenError, match="not HOST:PORT"):
        check_listen("127.0.0.1", None)


def test_token_is_required_when_set(ds: MemoryDatastore) -> None:
    c = client(ds, token="s3cret")
    assert c.get("/cluster").status_code == 401
    assert c.get("/api/cluster", headers={"authorization": "Bearer nope"}).status_code == 401
    assert c.get("/api/cluster", headers={"authorization": "Bearer s3cret"}).status_code == 200
    r = c.get("/cluster?token=s3cret", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/cluster")
    assert c.get("/cluster").status_code == 200  # the cookie now


def test_flows_filter_rate_and_stream(ds: MemoryDatastore) -> None:
    if time.time() % 60 < 5:  # the newest record (now - 2 s) must fall in this minute
        time.sleep(5.1 - time.time() % 60)
    now = time.time()
    recs = [flow(now - 130, "allow"), flow(now - 70, "deny", src="cli"), flow(now - 2, "deny")]
    c = client(ds, flow_source=FakeFlows(recs))
    assert "flow-filter" in c.get("/flows").text
    rows = c.get("/api/flows", params={"action": "deny"}).json()["flows"]
    assert [r["src"] for r in rows] == ["shop/cli", "shop/web"]
    assert rows[0]["policy"] == "default/np/shop/db-only-web"
    assert rows[0]["pending"] == ["default/snp/shop/staged-x#0 deny"]
    assert (rows[0]["packets"], rows[0]["bytes"]) == (3, 180)
    assert c.get("/api/flows", params={"pod": "cli"}).json()["flows"][0]["action"] == "deny"
    rate = c.get("/api/flows/rate").json()
    assert sum(rate["allowed"]) == 1 and sum(rate["denied"]) == 2
    assert rate["denied"][-1] == 1
    with c.stream("GET", "/flows/stream", params={"action": "deny"}) as s:
        lines = s.iter_lines()
        assert next(lines) == "event: flows"
        data = json.loads(next(lines)[len("data: ") :])
        assert len(data) == 2


def test_flow_filter_and_buckets_tolerate_missing_fields() -> None:
    assert FlowFilter(namespace="x").matches({}) is False
    assert FlowFilter().matches({}) is True
    assert per_minute([{}, {"end": "x"}], time.time(), 5) == {"allowed": [0] * 5,
                                                               "denied": [0] * 5}  # fmt: skip


WHATIFS = [
    DENY_DB,
    DENY_DB.replace("app == 'db'", "all()").replace("selector: app == 'web'", "nets: [10.0.0.0/8]"),
    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
    "spec: {order: 1, selector: app == 'cli', egress: [{action: Deny}], types: [Egress]}\n",
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: x}}\n",
    "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n"
    "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.p}\n"
    "spec: {tier: sec, selector: all(), ingress: [{action: Pass}]}\n",
]


@pytest.mark.parametrize("text", WHATIFS)
def test_whatif_partial_recompute_equals_full(text: str) -> None:
    base = DENY_DB.replace("db-only-web", "base").replace("app == 'web'", "app == 'cli'")
    stored = views.overlay(cluster_resources(), base)
    stored += [r for r in cluster_resources() if r["kind"] not in ("WorkloadEndpoint", "Namespace")]
    ports = [(80, 6), (81, 17)]
    fast = views.whatif(stored, text, ports)
    assert fast == views.whatif(stored, text, ports, full=True)
    if text == DENY_DB:  # the partial path, with a change
        after = PolicyInsight(views.overlay(stored, text))
        assert views.changed_endpoints(PolicyInsight(stored), after) == {"shop/db"}
        assert len(fast["changes"]) == 2  # web -> db on both ports


def test_whatif_lists_recorded_flows_whose_verdict_changes(ds: MemoryDatastore) -> None:
    now = time.time()
    recs = [flow(now - 10, "allow", src="cli"), flow(now - 5, "allow", src="cli"),
            flow(now - 4, "allow", src="web")]  # fmt: skip
    for r in recs:
        r["dport"] = 80
    r = client(ds, flow_source=FakeFlows(recs)).post(
        "/policy/whatif", data={"yaml": DENY_DB}, headers={"accept": "application/json"}
    )
    assert r.json()["flows"] == [
        {"from": "shop/cli", "to": "shop/db", "protocol": "TCP", "port": 80,
         "recorded": "allow", "before": "allow", "after": "deny"},
    ]  # fmt: skip
    html = client(ds, flow_source=FakeFlows(recs)).post("/policy/whatif", data={"yaml": DENY_DB})
    assert "1 recorded flow(s) of the last hour would change verdict" in html.text
    assert (
        client(ds)
        .post("/policy/whatif", data={"yaml": DENY_DB}, headers={"accept": "application/json"})
        .json()["flows"]
        is None
    )
