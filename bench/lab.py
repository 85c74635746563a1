"""calico-lab benchmark: bring-up time and memory per node of a whole lab.

For each size (default 10 and 20 nodes, full BGP mesh, sqlite, no pods) runs the real
``calico-lab up`` and measures:
- up_s: wall time of ``calico-lab up`` (underlay, datastore, every calico-node ready: Felix
  and routes in sync, BIRD running, every BGP session Established);
- per node, after a settle period: RSS of calico-node (the Python agent: Felix, routes, BGP
  driver, DNS) and of its BIRD, and their CPU use over the settle window;
- down_s: wall time of ``calico-lab down``.
Prints a table and writes bench/results/lab.json. Needs root. Each lab gets a private
CALICO_LAB_DIR and is always taken down.
Usage: python bench/lab.py [--sizes 10,20] [--settle 10] [--route-reflectors 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CALICO_LAB = str(Path(sys.executable).parent / "calico-lab")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def netns_pids(ns: str, comm: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    pids = []
    for p in out.split():
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == comm:
                pids.append(int(p))
        except OSError:
            continue
    return pids


def one(size: int, settle: float, rrs: int, env: dict[str, str]) -> dict[str, Any]:
    name = f"b{size}"
    t0 = time.monotonic()
    p = subprocess.run(
        [CALICO_LAB, "up", "--name", name, "--nodes", str(size), "--timeout", "600",
         "--route-reflectors", str(rrs)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    up_s = time.monotonic() - t0
    try:
        if p.returncode != 0:
            raise SystemExit(f"calico-lab up --nodes {size} failed:\n{p.stdout}\n{p.stderr}")
        state = json.loads((Path(env["CALICO_LAB_DIR"]) / name / "state.json").read_text())
        procs: list[tuple[str, int, int]] = []  # node, agent pid, bird pid
        for n in state["nodes"]:
            birds = netns_pids(n["netns"], "bird")
            procs.append((n["name"], n["pid"], birds[0] if birds else 0))
        c0 = {pid: cpu_ticks(pid) for _, a, b in procs for pid in (a, b) if pid}
        time.sleep(settle)
        c1 = {pid: cpu_ticks(pid) for pid in c0}
        rows = []
        for node, agent, bird in procs:
            rows.append(
                {
                    "node": node,
                    "agent_rss_mb": rss_kb(agent) / 1024,
                    "bird_rss_mb": rss_kb(bird) / 1024 if bird else 0.0,
                    "agent_cpu_pct": 100 * (c1[agent] - c0[agent]) / TICKS / settle,
                    "bird_cpu_pct": 100 * (c1[bird] - c0[bird]) / TICKS / settle if bird else 0,
                }
            )
    finally:
        t1 = time.monotonic()
        subprocess.run([CALICO_LAB, "down", "--name", name], env=env, capture_output=True)
        down_s = time.monotonic() - t1

    def stat(key: str) -> dict[str, float]:
        vals = [float(r[key]) for r in rows]
        return {"mean": statistics.fmean(vals), "max": max(vals)}

    return {
        "nodes": size,
        "route_reflectors": rrs,
        "bgp_sessions": size * (size - 1) // 2 if rrs == 0 else rrs * (size - rrs),
        "up_s": round(up_s, 2),
        "down_s": round(down_s, 2),
        "agent_rss_mb": stat("agent_rss_mb"),
        "bird_rss_mb": stat("bird_rss_mb"),
        "agent_cpu_pct": stat("agent_cpu_pct"),
        "bird_cpu_pct": stat("bird_cpu_pct"),
        "total_rss_mb": sum(r["agent_rss_mb"] + r["bird_rss_mb"] for r in rows),
        "per_node": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,20")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds idle before sampling")
    ap.add_argument("--route-reflectors", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lab.json"))
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="calico-lab-bench-") as d:
        env = dict(os.environ, CALICO_LAB_DIR=d)
        for size in (int(s) for s in args.sizes.split(",")):
            r = one(size, args.settle, args.route_reflectors, env)
            results.append(r)
            print(
                f"{size:>3} nodes  up {r['up_s']:6.1f}s  down {r['down_s']:5.1f}s  "
                f"calico-node RSS {r['agent_rss_mb']['mean']:5.1f} MiB "
                f"(max {r['agent_rss_mb']['max']:5.1f})  BIRD RSS "
                f"{r['bird_rss_mb']['mean']:4.1f} MiB  idle CPU calico-node "
                f"{r['agent_cpu_pct']['mean']:4.1f}% BIRD {r['bird_cpu_pct']['mean']:4.1f}%  "
                f"total {r['total_rss_mb']:6.0f} MiB",
                flush=True,
            )
    out = {
        "benchmark": "calico-lab up/down and per-node memory",
        "machine": {"cpus": os.cpu_count()},
        "settle_s": args.settle,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
