"""Flow-log benchmark (root; its own network namespaces): what logging costs the data path.

Two real workloads (veth, Calico wiring, one node namespace) and the minimal policy table
(profile allow), in three modes:
  off       — the table rendered without flow logs (the collector idles: no NFLOG rules);
  on        — the table with NFLOG attribution and a flow collector listening in the node
              namespace (pycalico.flows: NFLOG + conntrack readers, aggregation, SQLite;
              prefixes resolved through Felix's attribution map, peers through the
              workload endpoints, as in calico-node);
  unheard   — the table with NFLOG attribution and no listener (a dead collector).
The collector runs through ``on`` and ``off`` alike (only the table differs), so both sides
have the same processes and ports. Figures are per-pair ratios (median, IQR, min-max)
through ``bench/harness.py``:
- new connections/s: runs of ``--seconds`` each (``--rounds`` rounds, the order of the
  sides rotating per round); a run makes connections back to back, each logged once per
  direction and closed (RST);
- throughput: ONE iperf3 connection whose table is flipped every ``--window`` s (the
  order rotating per round), each window read from the server pod's interface counter: established
  traffic never reaches a log rule, so the question is only whether the rules' presence
  costs anything, and adjacent 1 s windows share the machine's load (separate iperf3 runs
  seconds apart on a shared 2-core machine differed by +-30% between runs of one mode).
Both parts also measure ``off`` twice per round (an A/A control, ``*.off_vs_off``): its
spread is the noise floor the on/off ratios have to be read against.
Then the collector is stopped and ``unheard`` is paired with ``off`` the same way. Absolute
figures: the collector's CPU per new connection (from /proc/<pid>/stat over each run and
the 0.6 s after it, when its reads of the last connections are due) and its RSS after each
``on`` run, with the connection rate it saw (flows/min). The load average is recorded at
the start, between the parts and at the end.

Writes bench/results/parts/flows.json (``bench/run.py`` merges it).
Usage: sudo .venv/bin/python bench/flows.py [--seconds 3] [--rounds 11] [--window 1]
       [--profile FILE]
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
import time
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
from policy import CONNRATE, _weps  # noqa: E402
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


def _rx_bytes(pid: int, dev: str = "eth0") -> int:
    """Bytes received on ``dev`` of the network namespace process ``pid`` is in."""
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, _, data = line.partition(":")
        if name.strip() == dev:
            return int(data.split()[0])
    raise RuntimeError(f"no {dev} in the namespace of pid {pid}")


def interleaved_throughput(
    c: Cluster,
    server_pid: int,
    flip: Callable[[str], None],
    sides: list[str],
    rounds: int,
    window: float,
) -> dict[str, list[float]]:
    """One long iperf3 TCP connection; each round flips the table to every side once
    (``flip(side)``; the order rotating by one per round, as ``harness.interleave``) and
    reads ``window`` seconds of throughput from the server pod's interface counter (the
    same clock as the flips). The sides of one round are adjacent in time: the other users
    of the machine load them alike, which separate iperf3 runs seconds apart do not."""
    cli_ns, _ = c.pods["client"]
    srv_ns, srv_ip = c.pods["server"]
    rounds = max(rounds, harness.MIN_ROUNDS)
    length = int(rounds * len(sides) * (window + 0.6) + 10)  # generous: flips take time
    ip3 = srv_ns.popen("iperf3", "-s", "-1", "-B", srv_ip, stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    cli = cli_ns.popen("iperf3", "-c", srv_ip, "-t", str(length), stdout=subprocess.DEVNULL)
    out: dict[str, list[float]] = {side: [] for side in sides}
    try:
        time.sleep(1.0)  # connected and past slow start
        for i in range(rounds):
            k = i % len(sides)
            for side in sides[k:] + sides[:k]:
                flip(side)
                time.sleep(0.1)
                r0, t0 = _rx_bytes(server_pid), time.monotonic()
                time.sleep(window)
                r1, t1 = _rx_bytes(server_pid), time.monotonic()
                out[side].append((r1 - r0) * 8 / (t1 - t0) / 1e9)
            if cli.poll() is not None:
                raise RuntimeError(f"iperf3 client ended early (exit {cli.returncode})")
            print(f"round {i + 1}: " + ", ".join(f"{s} {out[s][-1]:.2f}" for s in sides)
                  + " Gbit/s", flush=True)  # fmt: skip
    finally:
        for proc in (cli, ip3):
            harness.stop_process(proc, 10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0 if harness.quick() else 3.0)
    ap.add_argument("--rounds", type=int, default=harness.MIN_ROUNDS if harness.quick() else 11)
    ap.add_argument("--window", type=float, default=1.0,
                    help="seconds per throughput window (one side of a pair)")  # fmt: skip
    ap.add_argument("--profile", default="", help="cProfile of the collector's reader thread")
    args = ap.parse_args()
    secs = args.seconds
    cmd = (f"sudo .venv/bin/python bench/flows.py --seconds {secs:g} --rounds {args.rounds} "
           f"--window {args.window:g}")  # fmt: skip
    load: dict[str, list[float]] = {"start": [round(x, 2) for x in os.getloadavg()]}
    with NetnsFactory(tag="bfl") as f, tempfile.TemporaryDirectory() as tmp:
        c = Cluster(f, Path(tmp) / "dp.db")
        c.add_pod("client", "100.64.255.1")
        c.add_pod("server", "100.64.255.2")
        c.finish_routes()
        # A connection closed with RST stays in conntrack 10 s (CLOSE); its destroy event
        # would land in a later run, perhaps of the other mode. 1 s: each run pays for its
        # own connections' events (both modes alike; the collector reads them at 0.5 s).
        c.node.sysctl("net.netfilter.nf_conntrack_tcp_timeout_close", 1)
        p = c.pods["server"][0].popen(PY, "-c", SERVER, "100.64.255.2", "tcp/80",
                                      stdout=subprocess.PIPE)  # fmt: skip
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t, refs = tables(c)
        assert "log prefix" in t["on"].text() and "log prefix" not in t["off"].text()
        spec = {"refs": refs, "weps": [w for w in _weps(c) if w["kind"] == "WorkloadEndpoint"]}
        (Path(tmp) / "bench-collector.json").write_text(json.dumps(spec))
        runner = SubprocessNftRunner(netns=c.node.name)

        def flip(mode: str) -> None:  # "off2": the off table again (the A/A control)
            runner.transact("ip", "calico", [ReplaceTable(t[mode.rstrip("2")])])

        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), FLOWS_PROFILE=args.profile)
        coll = c.node.popen(PY, "-c", COLLECTOR, tmp, stdout=subprocess.PIPE, env=env)
        assert coll.stdout is not None and coll.stdout.readline().strip() == "ready"
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        rss: list[float] = []
        rates: list[float] = []
        cli_ns, _ = c.pods["client"]

        def conn_rate(mode: str) -> float:
            """One connection-rate run; the collector's CPU is taken over the run and the
            0.6 s after it (its reads of the run's last connections are due 0.5 s late)."""
            flip(mode)
            cpu0 = harness.cpu_s(coll.pid)
            rate = float(cli_ns.exec(PY, "-c", CONNRATE, "100.64.255.2", "80", str(secs)).stdout)
            time.sleep(0.6)
            used = harness.cpu_s(coll.pid) - cpu0
            cpu[mode.rstrip("2")].append(used * 1e6 / max(rate * secs, 1.0))
            if mode == "on":
                rss.append(harness.rss_mb(coll.pid))
                rates.append(rate * 60)
            return rate

        sides = ["on", "off", "off2"]
        try:
            rate = harness.interleave({m: lambda m=m: conn_rate(m) for m in sides}, args.rounds)
            load["after_conn_rate"] = [round(x, 2) for x in os.getloadavg()]
            gbps = interleaved_throughput(c, p.pid, flip, sides, args.rounds, args.window)
            load["after_throughput"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            coll.send_signal(signal.SIGTERM)
            report = json.loads(coll.stdout.readlines()[-1])
            coll.wait(10)
        assert report["alive"] and report["stats"].get("nflog_messages"), report
        # No listener at all (the collector is gone): logging rules stay, packets pass.
        unheard_rate = harness.abab(lambda: _conn_rate_only(c, flip, "on", secs),
                                    lambda: _conn_rate_only(c, flip, "off", secs),
                                    harness.MIN_ROUNDS)  # fmt: skip
        unheard_gbps = interleaved_throughput(c, p.pid, flip, ["on", "off"],
                                              harness.MIN_ROUNDS, args.window)  # fmt: skip
        load["end"] = [round(x, 2) for x in os.getloadavg()]

    tput_note = (
        f"one iperf3 connection, the table flipped every {args.window:g} s (on, "
        "off, off again; order rotating per round), each window read from the "
        "server pod's rx counter; established traffic never reaches a log rule"
    )
    rate_note = (
        f"{secs:g} s runs (on, off, off again; order rotating per round); every "
        "connection logs once per direction and closes (RST)"
    )
    aa_note = "A/A control: the same off table measured twice; its spread is the noise floor"
    figs = [
        harness.figure("flows.throughput.on_vs_off",
                       "iperf3 TCP throughput, flow logs on (collector listening) / off",
                       "Gbit/s", harness.pair(gbps, "on", "off"), system="flow logs on",
                       baseline="flow logs off", command=cmd, note=tput_note),
        harness.figure("flows.throughput.off_vs_off",
                       "iperf3 TCP throughput, flow logs off / off (A/A control)",
                       "Gbit/s", harness.pair(gbps, "off2", "off"), system="flow logs off",
                       baseline="flow logs off", command=cmd, note=aa_note),
        harness.figure("flows.conn_rate.on_vs_off",
                       "new TCP connections/s, flow logs on (collector listening) / off",
                       "conn/s", harness.pair(rate, "on", "off"), system="flow logs on",
                       baseline="flow logs off", command=cmd, note=rate_note),
        harness.figure("flows.conn_rate.off_vs_off",
                       "new TCP connections/s, flow logs off / off (A/A control)",
                       "conn/s", harness.pair(rate, "off2", "off"), system="flow logs off",
                       baseline="flow logs off", command=cmd, note=aa_note),
        harness.figure("flows.throughput.unheard_vs_off",
                       "iperf3 TCP throughput, log rules without a listener / off",
                       "Gbit/s", harness.pair(unheard_gbps, "on", "off"),
                       system="log rules, no collector",
                       baseline="flow logs off", command=cmd, note=tput_note),
        harness.figure("flows.conn_rate.unheard_vs_off",
                       "new TCP connections/s, log rules without a listener / off",
                       "conn/s", unheard_rate, system="log rules, no collector",
                       baseline="flow logs off", command=cmd),
        harness.value("flows.collector_cpu_us_per_conn",
                      "collector CPU per new connection (flow logs on)", "us", cpu["on"],
                      command=cmd, note="user+system time of the collector process during "
                      "a connection-rate run and 0.6 s after / connections made in it"),
        harness.value("flows.collector_cpu_us_per_conn_off",
                      "collector CPU per new connection while the rules do not log", "us",
                      cpu["off"], command=cmd,
                      note="conntrack events only (the collector stays subscribed)"),
        harness.value("flows.collector_rss_mb", "collector RSS after each 'on' run", "MB", rss,
                      command=cmd, note=f"new connections/min during the runs: median "
                      f"{statistics.median(rates):.0f}; bounded by flowLogsMaxFlows"),
    ]  # fmt: skip
    path = harness.write_part("flows", figs, collector=report, loadavg=load,
                              flows_per_min=harness.spread(rates))  # fmt: skip
    print(json.dumps({f["id"]: f.get("ratio") or f.get("stats") for f in figs}, indent=1))
    print(json.dumps({"loadavg": load}))
    print(f"wrote {path}")


def _conn_rate_only(c: Cluster, flip: Callable[[str], None], mode: str, secs: float) -> float:
    flip(mode)
    cli_ns, _ = c.pods["client"]
    rate = float(cli_ns.exec(PY, "-c", CONNRATE, "100.64.255.2", "80", str(secs)).stdout)
    time.sleep(0.6)
    return rate


if __name__ == "__main__":
    main()
