"""The node's flow API (HTTP+JSON on loopback) and its client, over a fake collector:
filters, authentication (token, TLS client certificates, fail-closed token files, the safe
bind address) and ``calicoctl flows`` with and without credentials."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from pycalico.felix.rules.nflog import RuleRef
from pycalico.flows.api import FlowAPI, FlowAPIError, fetch_flows
from pycalico.flows.auth import ClientCredentials, ServerAuth
from pycalico.flows.collector import PeerResolver
from pycalico.flows.record import FlowKey, FlowRecord, Peer
from pycalico.flows.store import FlowFilter
from tests.kit import workload_endpoint

REF = RuleRef("deny", "ingress", "policy", tier="default")
A, B = Peer("wep", "10.0.0.1", "ns1", "a"), Peer("wep", "10.0.0.2", "ns1", "b")


class FakeCollector:
    node_name = "node1"
    enabled = True

    def __init__(self) -> None:
        self.records = [
            FlowRecord(0, 15, "node1", FlowKey("dst", A, B, 6, 80, "deny", (REF,))),
            FlowRecord(0, 15, "node1", FlowKey("dst", B, A, 6, 80, "allow", (REF,))),
        ]

    def query(self, flt: FlowFilter, limit: int = 10000) -> list[FlowRecord]:
        return [r for r in self.records if flt.matches(r)][:limit]

    def health(self) -> dict[str, Any]:
        return {"node": self.node_name, "alive": True}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_api_serves_filtered_records_and_rejects_bad_filters() -> None:
    api, port = FlowAPI(FakeCollector(), ServerAuth(token=TOKEN)), _port()
    api.serve("127.0.0.1", port)
    creds = ClientCredentials(token=TOKEN)
    try:
        url = f"http://127.0.0.1:{port}"
        node, recs = fetch_flows(url, FlowFilter(action="deny"), creds=creds)
        assert node == "node1" and [r.key.src.name for r in recs] == ["a"]
        assert len(fetch_flows(url, FlowFilter(), creds=creds)[1]) == 2
        bad = urllib.request.Request(url + "/flows?action=drop", headers=AUTH)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=5)
        assert e.value.code == 400 and "action" in json.load(e.value)["error"]
        health = urllib.request.Request(url + "/health", headers=AUTH)
        with urllib.request.urlopen(health, timeout=5) as resp:
            assert json.load(resp) == {"node": "node1", "alive": True}
    finally:
        api.stop()
    with pytest.raises(FlowAPIError, match=r"127\.0\.0\.1"):
        fetch_flows(f"http://127.0.0.1:{port}", FlowFilter(), timeout=1, creds=creds)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": f"Bearer {TOKEN}x"}],
)  # fmt: skip
def test_api_refuses_requests_without_the_token(headers: dict[str, str]) -> None:
    api, port = FlowAPI(FakeCollector(), ServerAuth(token=TOKEN)), _port()
    api.serve("127.0.0.1", port)
    try:
        for path in ("/flows", "/health", "/nope"):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == 401 and e.value.headers["WWW-Authenticate"].startswith("Bearer")
            assert json.load(e.value) == {"error": "authentication required (accepted: token)"}
        with pytest.raises(FlowAPIError, match="401 authentication required"):
            fetch_flows(f"http://127.0.0.1:{port}", FlowFilter())
    finally:
        api.stop()


def test_api_without_usable_credentials_refuses_everyone() -> None:
    api, port = FlowAPI(FakeCollector(), ServerAuth()), _port()
    api.serve("127.0.0.1", port)
    try:
        with pytest.raises(FlowAPIError, match="401"):
            fetch_flows(f"http://127.0.0.1:{port}", FlowFilter(), creds=ClientCredentials("x"))
    finally:
        api.stop()


class FakeDatastore:
    def __init__(self) -> None:
        self.calls = 0

    def list(self, kind: str) -> Any:
        self.calls += 1
        wep = workload_endpoint("a", namespace="ns1", ip="10.0.0.1", labels={"app": "a"})

        return type("ListResult", (), {"items": (wep,)})()


def test_peer_resolver_maps_workload_ips_and_falls_back_to_net() -> None:
    ds = FakeDatastore()
    r = PeerResolver(ds, refresh=60)
    a = r("10.0.0.1")
    assert (a.kind, a.namespace, a.name, dict(a.labels)["app"]) == ("wep", "ns1", "a", "a")
    assert r("192.0.2.1") == Peer("net", "192.0.2.1")
    assert ds.calls == 1  # a miss right after a load does not reload
