"""The NFLOG and conntrack readers on a real kernel (pycalico.system.nfnetlink and
.ctnetlink), in a fresh namespace: packets hitting ``log prefix ... group N`` rules pass
whether or not anyone listens (NFLOG without a listener never drops); a listener gets each
new connection's prefix and 5-tuple, and a closing TCP connection's conntrack counters
(alone and in a batch with entries that do not exist)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.fixtures.netns import NetnsFactory

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

SCRIPT = r"""
import json, socket, threading, time
from pycalico.system.ctnetlink import ConntrackEvents
from pycalico.system.nfnetlink import NflogSocket, parse_l3l4
open("/proc/sys/net/netfilter/nf_conntrack_acct", "w").write("1")
srv = socket.socket(); srv.bind(("127.0.0.1", 5555)); srv.listen(16)
def serve():
    while True:
        c, _ = srv.accept(); c.sendall(b"r" * 2000); c.recv(65536); c.close()
threading.Thread(target=serve, daemon=True).start()
def connect(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
        s.recv(2000); s.sendall(b"q" * 1000); s.close(); return True
    except OSError:
        return False
out = {"unheard": connect(5555)}
nfl, ct = NflogSocket((1, 2)), ConntrackEvents()
out["heard"] = connect(5555)
out["denied"] = connect(5556)
time.sleep(0.3)
pkts, events = [], []
while (batch := nfl.read(0.2)) is not None:
    pkts += [(p.group, p.prefix, parse_l3l4(p.payload).dport) for p in batch]
while (evs := ct.read(0.2)) is not None:
    events += evs
closing = [e for e in events if e.tcp_state in (5, 6, 7, 8) and e.tuple.dport == 5555]
got = ct.get(closing[-1].tuple) if closing else None
out["pkts"] = pkts
out["counters"] = got and [got.packets_orig, got.bytes_orig, got.packets_reply, got.bytes_reply]
if closing:  # one batch: the entry, and None for a tuple conntrack never saw
    gone = closing[-1].tuple._replace(sport=1)
    out["batch"] = [e and e.bytes_orig for e in ct.get_many([gone, closing[-1].tuple, gone])]
out["malformed"] = nfl.malformed + ct.malformed
print(json.dumps(out))
"""


def test_nflog_and_conntrack_readers(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.netns("fl")
    ns.exec("nft", "-f", "-", input="""
table ip flowtest {
  chain out { type filter hook output priority 0; policy accept;
    tcp dport 5555 ct state new log prefix "API0|gnp/x" group 1 accept
    tcp dport 5556 ct state new log prefix "DPI|default" group 2 drop
  }
}
""")  # fmt: skip
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    p = ns.exec(sys.executable, "-c", SCRIPT, env=dict(os.environ, PYTHONPATH=src), timeout=30)
    out = json.loads(p.stdout)
    assert out["unheard"] is True  # logged, no listener: still accepted
    assert out["heard"] is True and out["denied"] is False
    assert (1, "API0|gnp/x", 5555) in [tuple(x) for x in out["pkts"]]
    assert (2, "DPI|default", 5556) in [tuple(x) for x in out["pkts"]]
    po, bo, pr, br = out["counters"]
    assert po >= 3 and bo >= 1000 + 3 * 40 and pr >= 3 and br >= 2000
    assert out["batch"] == [None, bo, None]
    assert out["malformed"] == 0
