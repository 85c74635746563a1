"""The flow collector end to end on a real kernel, IPv4 and IPv6, in a fresh namespace:
nft rules log a Pass (group 1) and then the deciding Allow (group 1) or end-of-tier Deny
(group 2) for each new connection; the collector (kernel-side NFLOG batching, messages put
back in logging order by their global sequence numbers) records one flow per connection
with the whole trace in order, and the closed IPv6 connection's conntrack byte counts."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.fixtures.netns import NetnsFactory

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

RULES = """
table inet flowtest {
  chain out { type filter hook output priority 0; policy accept;
    tcp dport { 5557, 5558 } ct state new log prefix "PPE0|gnp/sec.pass" group 1
    tcp dport 5557 ct state new log prefix "APE0|gnp/web" group 1 accept
    tcp dport 5558 ct state new log prefix "DPE|default" group 2 drop
  }
}
"""

SCRIPT = r"""
import json, socket, sys, tempfile, threading, time
from pycalico.flows.collector import FlowCollector
from pycalico.flows.record import Peer
from pycalico.flows.store import FlowFilter
from pycalico.model.felixconfig import FelixConfig
for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(fam); srv.bind((addr, 5557)); srv.listen(16)
    def serve(srv=srv):
        while True:
            c, _ = srv.accept(); c.sendall(b"r" * 3000); c.recv(65536); c.close()
    threading.Thread(target=serve, daemon=True).start()
def connect(addr, port):
    try:
        s = socket.create_connection((addr, port), timeout=0.5)
        s.recv(3000); s.sendall(b"q" * 1500); time.sleep(0.05); s.close(); return True
    except OSError:
        return False
tmp = tempfile.mkdtemp()
cfg = FelixConfig(flow_logs_file_enabled=True, flow_logs_file_directory=tmp,
                  flow_logs_api_port=0, flow_logs_flush_interval=60.0)
c = FlowCollector("n1", lambda: cfg, lambda: {}, lambda ip: Peer("net", ip))
c.start()
deadline = time.time() + 5
while c.agg is None and time.time() < deadline:
    time.sleep(0.05)
out = {"v4_allowed": connect("127.0.0.1", 5557), "v6_allowed": connect("::1", 5557),
       "v6_denied": connect("::1", 5558)}
time.sleep(1.5)
out["records"] = [r.to_json() for r in c.query(FlowFilter(), 100)]
out["health"] = c.health()
c.stop()
print(json.dumps(out))
"""


def _trace(rec: dict[str, object]) -> list[tuple[str, str]]:
    steps = rec["trace"]
    assert isinstance(steps, list)
    return [(s["action"], s["name"] or s["tier"]) for s in steps]


def test_collector_records_ipv4_and_ipv6_flows_with_ordered_traces(
    netns_factory: NetnsFactory,
) -> None:
    ns = netns_factory.netns("fc")
    ns.exec("nft", "-f", "-", input=RULES)
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    p = ns.exec(sys.executable, "-c", SCRIPT, env=dict(os.environ, PYTHONPATH=src), timeout=60)
    out = json.loads(p.stdout)
    assert (out["v4_allowed"], out["v6_allowed"], out["v6_denied"]) == (True, True, False)
    recs = {(r["dst"]["ip"], r["dport"]): r for r in out["records"]}
    assert set(recs) == {("127.0.0.1", 5557), ("::1", 5557), ("::1", 5558)}, out
    for key in (("127.0.0.1", 5557), ("::1", 5557)):
        r = recs[key]
        assert r["action"] == "allow" and r["reporter"] == "src" and r["proto"] == "TCP"
        assert _trace(r) == [("pass", "sec.pass"), ("allow", "web")]
        assert r["connections"] == 1
    denied = recs[("::1", 5558)]
    assert denied["action"] == "deny" and denied["src"]["ip"] == "::1"
    assert _trace(denied) == [("pass", "sec.pass"), ("deny", "default")]
    assert denied["policy"]["end_of_tier"] is True
    # the IPv6 connection closed: conntrack's counters are in its record
    v6 = recs[("::1", 5557)]
    assert v6["bytes_in"] >= 3000 and v6["bytes_out"] >= 1500, v6
    assert out["health"]["alive"] is True and out["health"]["error"] == ""
