"""calico-lab benchmark: bring-up time and memory per node of a whole lab.

For each size (default 10 and 20 nodes, full BGP mesh, sqlite, no pods) runs the real
``calico-lab up`` and measures:
- up_s: wall time of ``calico-lab up`` (underlay, datastore, every calico-node ready: Felix
  and routes in sync, BIRD running, every BGP session Established);
- per node, after a settle period: RSS of calico-node (the Python agent: Felix, routes, BGP
  driver, DNS) and of its BIRD, and their CPU use over the settle window;
- down_s: wall time of ``calico-lab down``.
With ``--pods N`` the smallest lab then gets N pods on node1 (real CNI) and node1's
calico-node is sampled again: RSS and CPU per 100 endpoints. Sizes are tried in order and the
first that does not come up ends the stepping: the largest lab that came up and the error of
the next are recorded (what limits it).
Prints a table, writes bench/results/lab.json and reports the footprint through
:mod:`harness` (``footprint.*``). Needs root. Each lab gets a private CALICO_LAB_DIR and is
always taken down. QUICK: one 2-node lab, 10 pods, 3 s settle.
Usage: python bench/lab.py [--sizes 10,20] [--settle 10] [--route-reflectors 0] [--pods 100]
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
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402

CALICO_LAB = str(Path(sys.executable).parent / "calico-lab")


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


class LabFailed(Exception):
    pass


def sample(pid: int, settle: float) -> tuple[float, float]:
    """(RSS MiB, CPU % of one core over ``settle`` seconds) of ``pid``."""
    c0 = harness.cpu_s(pid)
    time.sleep(settle)
    return harness.rss_mb(pid), 100 * (harness.cpu_s(pid) - c0) / settle


def add_pods(name: str, n: int, env: dict[str, str]) -> float:
    """Add ``n`` pods on node1 through the real CNI; seconds taken."""
    t0 = time.monotonic()
    for i in range(n):
        argv = [CALICO_LAB, "pod", "add", "--name", name, "--ports", "80/TCP", "node1",
                f"default/fp{i}"]  # fmt: skip
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise LabFailed(f"pod add {i}: {p.stderr[-300:]}")
    return time.monotonic() - t0


def one(size: int, settle: float, rrs: int, env: dict[str, str], pods: int = 0) -> dict[str, Any]:
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
            raise LabFailed(f"calico-lab up --nodes {size} failed after {up_s:.0f}s: "
                            f"{(p.stdout + p.stderr)[-600:]}")  # fmt: skip
        state = json.loads((Path(env["CALICO_LAB_DIR"]) / name / "state.json").read_text())
        procs: list[tuple[str, int, int]] = []  # node, agent pid, bird pid
        for n in state["nodes"]:
            birds = netns_pids(n["netns"], "bird")
            procs.append((n["name"], n["pid"], birds[0] if birds else 0))
        c0 = {pid: harness.cpu_s(pid) for _, a, b in procs for pid in (a, b) if pid}
        time.sleep(settle)
        c1 = {pid: harness.cpu_s(pid) for pid in c0}
        rows = []
        for node, agent, bird in procs:
            rows.append(
                {
                    "node": node,
                    "agent_rss_mb": harness.rss_mb(agent),
                    "bird_rss_mb": harness.rss_mb(bird) if bird else 0.0,
                    "agent_cpu_pct": 100 * (c1[agent] - c0[agent]) / settle,
                    "bird_cpu_pct": 100 * (c1[bird] - c0[bird]) / settle if bird else 0,
                }
            )
        with_pods: dict[str, Any] = {}
        if pods:
            agent = procs[0][1]
            rss0, cpu0 = rows[0]["agent_rss_mb"], rows[0]["agent_cpu_pct"]
            add_s = add_pods(name, pods, env)
            rss1, cpu1 = sample(agent, settle)
            with_pods = {
                "pods": pods, "add_s": round(add_s, 2), "agent_rss_mb": rss1,
                "agent_cpu_pct": cpu1,
                "rss_mb_per_100_endpoints": (rss1 - rss0) * 100 / pods,
                "cpu_pct_per_100_endpoints": (cpu1 - cpu0) * 100 / pods,
            }  # fmt: skip
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
        "with_pods": with_pods,
    }


def main() -> None:
    quick = harness.quick()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2" if quick else "10,20")
    ap.add_argument("--settle", type=float, default=3.0 if quick else 10.0,
                    help="seconds idle before sampling")  # fmt: skip
    ap.add_argument("--route-reflectors", type=int, default=0)
    ap.add_argument("--pods", type=int, default=10 if quick else 100)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lab.json"))
    args = ap.parse_args()
    results = []
    limit = ""
    with tempfile.TemporaryDirectory(prefix="calico-lab-bench-") as d:
        env = dict(os.environ, CALICO_LAB_DIR=d)
        for k, size in enumerate(int(s) for s in args.sizes.split(",")):
            try:
                r = one(size, args.settle, args.route_reflectors, env, args.pods if k == 0 else 0)
            except LabFailed as e:
                limit = str(e)
                print(f"{size:>3} nodes: did not come up: {limit}", flush=True)
                break
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
        "largest_lab_up": max((r["nodes"] for r in results), default=0),
        "limit": limit,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    harness.write_part("footprint", footprint_figures(args, results),
                       largest_lab_up=out["largest_lab_up"], limit=limit,
                       sizes_tried=args.sizes)  # fmt: skip
    print(f"wrote {args.out}")


def footprint_figures(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Any]:
    if not results:
        return []
    cmd = (f"python bench/lab.py --sizes {args.sizes} --settle {args.settle} "
           f"--pods {args.pods}")  # fmt: skip
    first = results[0]
    n = first["nodes"]
    figs = [
        harness.value("footprint.idle_rss", f"idle calico-node RSS ({n}-node lab, per node)",
                      "MiB", [r["agent_rss_mb"] for r in first["per_node"]], command=cmd),
        harness.value("footprint.idle_cpu", f"idle calico-node CPU ({n}-node lab, per node)",
                      "% of a core", [r["agent_cpu_pct"] for r in first["per_node"]],
                      command=cmd),
        harness.value("footprint.bird_rss", f"BIRD RSS ({n}-node lab, per node)", "MiB",
                      [r["bird_rss_mb"] for r in first["per_node"]], command=cmd),
    ]  # fmt: skip
    wp = first.get("with_pods") or {}
    if wp:
        figs += [
            harness.value("footprint.rss_per_100_endpoints",
                          f"calico-node RSS growth per 100 local endpoints ({wp['pods']} added)",
                          "MiB", [wp["rss_mb_per_100_endpoints"]], command=cmd),
            harness.value("footprint.cpu_per_100_endpoints",
                          f"calico-node idle CPU growth per 100 local endpoints ({wp['pods']} "
                          "added)", "% of a core", [wp["cpu_pct_per_100_endpoints"]],
                          command=cmd),
        ]  # fmt: skip
    for r in results:
        figs.append(harness.value(f"footprint.lab_up_s.{r['nodes']}",
                                  f"calico-lab up, {r['nodes']} nodes (all ready)", "s",
                                  [r["up_s"]], command=cmd))  # fmt: skip
    return figs


if __name__ == "__main__":
    main()
