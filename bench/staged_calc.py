"""Cost of the pending (staged-as-enforced) view in the Felix calculation graph.

The cluster of ``bench/policy_calc.py`` (N local + remote endpoints, P policies), plus S
staged policies (default 10% of P: a third replace an enforced policy of the same name, a
third are staged deletes, a third are new). Measures:
- from scratch, ``CalcGraph(pending_view=False)`` vs ``True``: seconds to feed, flush (and
  ``flush_pending``);
- per-label-change latency (``on_update`` + both flushes), p50 / p99 ms, with and without;
- the flow-log interface: ``PolicyViews.apply`` + ``snapshot()`` per batch (ms), and
  ``PolicySnapshot.evaluate`` per (endpoint, direction, packet) in microseconds.

Writes bench/results/staged_calc.json.
Usage: python bench/staged_calc.py [--endpoints 1000] [--policies 500] [--changes 300]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from policy_calc import N_APPS, N_NS, policy, wep  # noqa: E402
from pycalico.felix.calc import CalcGraph, Packet, PolicyViews  # noqa: E402

Update = tuple[str, dict[str, Any]]


def staged(j: int, pols: list[Update]) -> Update:
    key, base = pols[j]
    kind = "Staged" + str(base["kind"])
    body = dict(base, kind=kind)
    if j % 3 == 1:  # a staged delete of the enforced policy
        body["spec"] = {"stagedAction": "Delete"}
    elif j % 3 == 2:  # a new policy: another name
        body["metadata"] = dict(base["metadata"], name=f"new{j}")
    else:  # a replacement: deny where the enforced one allows
        spec = dict(base["spec"])
        spec["ingress"] = [dict(spec["ingress"][0], action="Deny")]
        body["spec"] = spec
    return f"staged/{key}/{body['metadata']['name']}", body


def run(updates: list[Update], local: list[Update], pending: bool, changes: int) -> dict[str, Any]:
    rng = random.Random(2)
    g = CalcGraph("node1", pending_view=pending)
    t0 = time.perf_counter()
    for k, v in updates:
        g.on_update(k, v)
    g.on_in_sync()
    msgs, pmsgs = g.flush(), g.flush_pending()
    scratch = time.perf_counter() - t0
    views = PolicyViews()
    t = time.perf_counter()
    views.apply(msgs, pmsgs if pending else msgs)
    snap = views.snapshot()
    first_snapshot_ms = (time.perf_counter() - t) * 1000
    lat: list[float] = []
    snap_ms: list[float] = []
    for c in range(changes):
        k, v = local[rng.randrange(len(local))]
        labels = dict(v["metadata"]["labels"], app=f"app{rng.randrange(N_APPS)}", v=str(c))
        v = dict(v, metadata=dict(v["metadata"], labels=labels))
        t = time.perf_counter()
        g.on_update(k, v)
        msgs = g.flush()
        pmsgs = g.flush_pending() if pending else msgs
        lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        views.apply(msgs, pmsgs)
        snap = views.snapshot()
        snap_ms.append((time.perf_counter() - t) * 1000)
    eps = sorted(views.enforced.endpoints)
    pkts = [
        Packet(ip_address(f"10.0.{rng.randrange(4)}.{rng.randrange(256)}"), ip_address("10.0.0.1"),
               6, rng.choice([80, 8080, 81]))
        for _ in range(200)
    ]  # fmt: skip
    t = time.perf_counter()
    n = 0
    differ = 0
    for ep in eps[:100]:
        for pkt in pkts:
            v2 = snap.evaluate(ep, "ingress", pkt)
            n += 1
            differ += bool(v2 and v2.differs)
    eval_us = (time.perf_counter() - t) / n * 1e6
    lat.sort()
    snap_ms.sort()
    return {
        "from_scratch_s": round(scratch, 3),
        "label_change_ms_p50": round(statistics.median(lat), 3),
        "label_change_ms_p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
        "first_snapshot_ms": round(first_snapshot_ms, 2),
        "apply_and_snapshot_ms_p50": round(statistics.median(snap_ms), 3),
        "evaluate_both_views_us": round(eval_us, 1),
        "evaluations": n,
        "evaluations_where_pending_differs": differ,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--remote", type=int, default=2000)
    ap.add_argument("--policies", type=int, default=500)
    ap.add_argument("--staged", type=int, default=None, help="default: 10%% of --policies")
    ap.add_argument("--changes", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(1)
    n_staged = args.policies // 10 if args.staged is None else args.staged
    updates: list[Update] = [
        (f"ns/{n}", {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": f"ns{n}", "labels": {"team": "ab"[n % 2]}}})
        for n in range(N_NS)
    ]  # fmt: skip
    local = [
        wep(i, "node1", rng.randrange(N_APPS), rng.randrange(3)) for i in range(args.endpoints)
    ]
    remote = [
        wep(args.endpoints + i, "node2", rng.randrange(N_APPS), rng.randrange(3))
        for i in range(args.remote)
    ]
    pols = [policy(j) for j in range(args.policies)]
    stg = [staged(j, pols) for j in range(n_staged)]
    updates += pols + stg + local + remote
    rng.shuffle(updates)
    results: dict[str, Any] = {
        "endpoints_local": args.endpoints,
        "endpoints_remote": args.remote,
        "policies": args.policies,
        "staged": n_staged,
    }
    for pending in (False, True):
        r = run(updates, local, pending, args.changes)
        results["pending_view" if pending else "enforced_only"] = r
        print(f"pending_view={pending}: {r}")
    out = ROOT / "bench" / "results" / "staged_calc.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
