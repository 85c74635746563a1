"""Flow-log benchmark (root; its own network namespaces): what logging costs the data path.

Two real workloads (veth, Calico wiring, one node namespace) and the minimal policy table
(profile allow), interleaved N times in three modes:
  off       — the table rendered without flow logs;
  on        — the table with NFLOG attribution and a flow collector listening in the node
              namespace (pycalico.flows: NFLOG + conntrack readers, aggregation, SQLite);
  unheard   — the table with NFLOG attribution and no listener (a dead collector).
Measures iperf3 TCP throughput (one long connection: established traffic never logs) and
the new-connection rate (every connection's first packet logs once per direction), the
collector's RSS after the runs, and what it recorded (connections seen vs made).

Writes bench/results/flows.json.
Usage: sudo .venv/bin/python bench/flows.py [--seconds 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.netns import NetnsFactory  # noqa: E402
from tests.netns.test_felix_dataplane import SERVER, Cluster  # noqa: E402

from policy import _datapath_once, _weps  # noqa: E402
from pycalico.felix.calc import CalcGraph  # noqa: E402
from pycalico.felix.dataplane import ReplaceTable, SubprocessNftRunner  # noqa: E402
from pycalico.felix.rules import RenderConfig, RuleRenderer  # noqa: E402

PY = sys.executable
COLLECTOR = r"""
import json, signal, sys, threading, time
from pycalico.flows.collector import FlowCollector
from pycalico.flows.record import Peer
from pycalico.model.felixconfig import FelixConfig
cfg = FelixConfig(flow_logs_file_enabled=True, flow_logs_file_directory=sys.argv[1],
                  flow_logs_api_port=0, flow_logs_flush_interval=5.0)
c = FlowCollector("bench", lambda: cfg, lambda: {}, lambda ip: Peer("net", ip))
c.start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
print("ready", flush=True)
done.wait()
agg = c.agg
stats = dict(agg.stats()) if agg else {}
conns = sum(r.connections for r in agg.records.values()) if agg else 0
rss = int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1])
rows = c.store.count() if c.store else 0
import resource
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rss_kb": rss, "stats": stats, "open_bucket_connections": conns,
                  "lost": dict(c.lost), "stored_rows": rows, "alive": c.alive(),
                  "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
                  "error": c.error}), flush=True)
c.stop()
"""


def tables(c: Cluster) -> dict[str, Any]:
    out = {}
    for name, on in (("off", False), ("on", True)):
        g = CalcGraph("node1")
        g.load(_weps(c))
        r = RuleRenderer(RenderConfig(flow_logs=on), families=("ip",))
        r.apply(g.flush())
        out[name] = r.tables()["ip"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    with NetnsFactory(tag="bfl") as f, tempfile.TemporaryDirectory() as tmp:
        c = Cluster(f, Path(tmp) / "dp.db")
        c.add_pod("client", "100.64.255.1")
        c.add_pod("server", "100.64.255.2")
        c.finish_routes()
        p = c.pods["server"][0].popen(PY, "-c", SERVER, "100.64.255.2", "tcp/80",
                                      stdout=subprocess.PIPE)  # fmt: skip
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t = tables(c)
        assert "log prefix" in t["on"].text() and "log prefix" not in t["off"].text()
        runner = SubprocessNftRunner(netns=c.node.name)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        coll = c.node.popen(PY, "-c", COLLECTOR, tmp, stdout=subprocess.PIPE, env=env)
        assert coll.stdout is not None and coll.stdout.readline().strip() == "ready"
        runs: dict[str, list[tuple[float, float]]] = {"off": [], "on": [], "unheard": []}
        try:
            for _ in range(args.repeats):
                for mode in ("off", "on"):
                    runner.transact("ip", "calico", [ReplaceTable(t[mode])])
                    runs[mode].append(_datapath_once(c, args.seconds))
        finally:
            coll.send_signal(signal.SIGTERM)
            report = json.loads(coll.stdout.readlines()[-1])
            coll.wait(10)
        assert report["alive"] and report["stats"].get("nflog_messages"), report
        # No listener at all (the collector is gone): logging rules stay, packets pass.
        runner.transact("ip", "calico", [ReplaceTable(t["on"])])
        for _ in range(args.repeats):
            runs["unheard"].append(_datapath_once(c, args.seconds))

    def med(key: str, i: int) -> float:
        return statistics.median(x[i] for x in runs[key])

    made = sum(x[1] * args.seconds for x in runs["on"])
    out.update({
        "throughput_gbps_off": round(med("off", 0), 2),
        "throughput_gbps_on": round(med("on", 0), 2),
        "throughput_gbps_unheard": round(med("unheard", 0), 2),
        "throughput_ratio_on_vs_off": round(med("on", 0) / med("off", 0), 3),
        "conn_per_s_off": round(med("off", 1)),
        "conn_per_s_on": round(med("on", 1)),
        "conn_per_s_unheard": round(med("unheard", 1)),
        "conn_rate_ratio_on_vs_off": round(med("on", 1) / med("off", 1), 3),
        "collector": report,
        "connections_made_while_on_approx": round(made),
        "collector_cpu_us_per_connection": round(report["cpu_s"] * 1e6 / max(made, 1)),
        "runs": {k: [[round(a, 2), round(b)] for a, b in v] for k, v in runs.items()},
    })  # fmt: skip
    out["targets"] = {
        "throughput_ratio>=0.98": out["throughput_ratio_on_vs_off"] >= 0.98,
        "conn_rate_ratio>=0.8": out["conn_rate_ratio_on_vs_off"] >= 0.8,
    }
    out["load_average_at_end"] = list(os.getloadavg())
    (ROOT / "bench" / "results" / "flows.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
