"""Flow-log benchmark (root; its own network namespaces): what logging costs the data path.

Two real workloads (veth, Calico wiring, one node namespace) and the minimal policy table
(profile allow), in three modes:
  off       — the table rendered without flow logs (the collector idles: no NFLOG rules);
  on        — the table with NFLOG attribution and a flow collector listening in the node
              namespace (pycalico.flows: NFLOG + conntrack readers, aggregation, SQLite);
  unheard   — the table with NFLOG attribution and no listener (a dead collector).
Paired rounds through ``bench/harness.py``: every round runs ``off`` and ``on`` back to back
(the order alternating, ABBA...), each one iperf3 TCP run (one long connection: established
traffic never logs) and one new-connection-rate run (every connection's first packet logs
once per direction); the figures are the per-round ratios (median, IQR, min-max). Then the
collector is stopped and ``unheard`` is paired with ``off`` the same way. Absolute figures:
the collector's CPU per new connection (from /proc/<pid>/stat around each run) and its RSS
after each ``on`` run, with the connection rate it saw (flows/min).

Writes bench/results/parts/flows.json (``bench/run.py`` merges it).
Usage: sudo .venv/bin/python bench/flows.py [--seconds 3] [--rounds 11] [--profile FILE]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.netns import NetnsFactory  # noqa: E402
from tests.netns.test_felix_dataplane import SERVER, Cluster  # noqa: E402

import harness  # noqa: E402
from policy import _datapath_once, _weps  # noqa: E402
from pycalico.felix.calc import CalcGraph  # noqa: E402
from pycalico.felix.dataplane import ReplaceTable, SubprocessNftRunner  # noqa: E402
from pycalico.felix.rules import RenderConfig, RuleRenderer  # noqa: E402

PY = sys.executable
COLLECTOR = r"""
import json, os, signal, sys, threading, time, types
from pycalico.felix.rules.nflog import RuleRef
from pycalico.flows.collector import FlowCollector, PeerResolver
from pycalico.model.felixconfig import FelixConfig
cfg = FelixConfig(flow_logs_file_enabled=True, flow_logs_file_directory=sys.argv[1],
                  flow_logs_api_port=0, flow_logs_flush_interval=5.0)
# As in calico-node: prefixes resolved through Felix's map, peers through the endpoints.
spec = json.load(open(os.path.join(sys.argv[1], "bench-collector.json")))
refs = {p: RuleRef.from_json(r) for p, r in spec["refs"].items()}
ds = types.SimpleNamespace(list=lambda kind: types.SimpleNamespace(items=spec["weps"]))
c = FlowCollector("bench", lambda: cfg, lambda: refs, PeerResolver(ds))
prof = None
if os.environ.get("FLOWS_PROFILE"):
    import cProfile
    prof = cProfile.Profile()
    run = c._run
    def profiled():
        prof.enable()
        try:
            run()
        finally:
            prof.disable()
    c._run = profiled
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
if prof is not None:
    prof.dump_stats(os.environ["FLOWS_PROFILE"])
"""


def tables(c: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    """The off/on tables and the attribution map of ``on`` (prefix -> rule JSON)."""
    out = {}
    refs: dict[str, Any] = {}
    for name, on in (("off", False), ("on", True)):
        g = CalcGraph("node1")
        g.load(_weps(c))
        r = RuleRenderer(RenderConfig(flow_logs=on), families=("ip",))
        r.apply(g.flush())
        out[name] = r.tables()["ip"]
        if on:
            refs = {p: ref.to_json() for p, ref in r.attribution.items()}
    return out, refs


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0 if harness.quick() else 3.0)
    ap.add_argument("--rounds", type=int, default=harness.MIN_ROUNDS if harness.quick() else 11)
    ap.add_argument("--profile", default="", help="cProfile of the collector's reader thread")
    args = ap.parse_args()
    secs = args.seconds
    cmd = f"sudo .venv/bin/python bench/flows.py --seconds {secs:g} --rounds {args.rounds}"
    with NetnsFactory(tag="bfl") as f, tempfile.TemporaryDirectory() as tmp:
        c = Cluster(f, Path(tmp) / "dp.db")
        c.add_pod("client", "100.64.255.1")
        c.add_pod("server", "100.64.255.2")
        c.finish_routes()
        p = c.pods["server"][0].popen(PY, "-c", SERVER, "100.64.255.2", "tcp/80",
                                      stdout=subprocess.PIPE)  # fmt: skip
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t, refs = tables(c)
        assert "log prefix" in t["on"].text() and "log prefix" not in t["off"].text()
        spec = {"refs": refs, "weps": [w for w in _weps(c) if w["kind"] == "WorkloadEndpoint"]}
        (Path(tmp) / "bench-collector.json").write_text(json.dumps(spec))
        runner = SubprocessNftRunner(netns=c.node.name)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), FLOWS_PROFILE=args.profile)
        coll = c.node.popen(PY, "-c", COLLECTOR, tmp, stdout=subprocess.PIPE, env=env)
        assert coll.stdout is not None and coll.stdout.readline().strip() == "ready"
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        rss: list[float] = []
        rates: list[float] = []

        def run(mode: str) -> tuple[float, float]:
            runner.transact("ip", "calico", [ReplaceTable(t[mode])])
            cpu0 = _cpu_s(coll.pid)
            gbps, rate = _datapath_once(c, secs)
            cpu[mode].append((_cpu_s(coll.pid) - cpu0) * 1e6 / max(rate * secs, 1.0))
            if mode == "on":
                rss.append(_rss_mb(coll.pid))
                rates.append(rate * 60)
            return gbps, rate

        try:
            on, off = paired(run, "on", "off", args.rounds)
        finally:
            coll.send_signal(signal.SIGTERM)
            report = json.loads(coll.stdout.readlines()[-1])
            coll.wait(10)
        assert report["alive"] and report["stats"].get("nflog_messages"), report
        # No listener at all (the collector is gone): logging rules stay, packets pass.
        unheard, off2 = paired(lambda m: _datapath_once_mode(runner, t, c, secs, m),
                               "on", "off", harness.MIN_ROUNDS)  # fmt: skip

    def split(xs: list[tuple[float, float]], i: int) -> list[float]:
        return [x[i] for x in xs]

    figs = [
        harness.figure("flows.throughput.on_vs_off",
                       "iperf3 TCP throughput, flow logs on (collector listening) / off",
                       "Gbit/s", harness.Abab(split(on, 0), split(off, 0)),
                       system="flow logs on", baseline="flow logs off", command=cmd,
                       note="one long connection: only its first packet reaches a log rule"),
        harness.figure("flows.conn_rate.on_vs_off",
                       "new TCP connections/s, flow logs on (collector listening) / off",
                       "conn/s", harness.Abab(split(on, 1), split(off, 1)),
                       system="flow logs on", baseline="flow logs off", command=cmd,
                       note="every connection logs once per direction and closes (RST)"),
        harness.figure("flows.throughput.unheard_vs_off",
                       "iperf3 TCP throughput, log rules without a listener / off",
                       "Gbit/s", harness.Abab(split(unheard, 0), split(off2, 0)),
                       system="log rules, no collector", baseline="flow logs off",
                       command=cmd),
        harness.figure("flows.conn_rate.unheard_vs_off",
                       "new TCP connections/s, log rules without a listener / off",
                       "conn/s", harness.Abab(split(unheard, 1), split(off2, 1)),
                       system="log rules, no collector", baseline="flow logs off",
                       command=cmd),
        harness.value("flows.collector_cpu_us_per_conn",
                      "collector CPU per new connection (flow logs on)", "us", cpu["on"],
                      command=cmd, note="user+system time of the collector process during "
                      "a run / connections made in it"),
        harness.value("flows.collector_cpu_us_per_conn_off",
                      "collector CPU per new connection while the rules do not log", "us",
                      cpu["off"], command=cmd,
                      note="conntrack events only (the collector stays subscribed)"),
        harness.value("flows.collector_rss_mb", "collector RSS after each 'on' run", "MB", rss,
                      command=cmd, note=f"new connections/min during the runs: median "
                      f"{statistics.median(rates):.0f}; bounded by flowLogsMaxFlows"),
    ]  # fmt: skip
    path = harness.write_part("flows", figs, collector=report,
                              flows_per_min=harness.spread(rates))  # fmt: skip
    print(json.dumps({f["id"]: f.get("ratio") or f.get("stats") for f in figs}, indent=1))
    print(f"wrote {path}")


def _datapath_once_mode(
    runner: SubprocessNftRunner, t: dict[str, Any], c: Cluster, secs: float, mode: str
) -> tuple[float, float]:
    runner.transact("ip", "calico", [ReplaceTable(t[mode])])
    return _datapath_once(c, secs)


def paired(
    run: Callable[[str], tuple[float, float]], system: str, baseline: str, rounds: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """``rounds`` rounds of (system, baseline) back to back, the order alternating (the
    harness's ABAB rule): one round = one sample of each side."""
    a: list[tuple[float, float]] = []
    b: list[tuple[float, float]] = []
    for i in range(max(rounds, harness.MIN_ROUNDS)):
        if i % 2 == 0:
            a.append(run(system))
            b.append(run(baseline))
        else:
            b.append(run(baseline))
            a.append(run(system))
        print(f"round {i + 1}: {system} {a[-1][0]:.2f} Gbit/s {a[-1][1]:.0f}/s, "
              f"{baseline} {b[-1][0]:.2f} Gbit/s {b[-1][1]:.0f}/s", flush=True)  # fmt: skip
    return a, b


if __name__ == "__main__":
    main()
